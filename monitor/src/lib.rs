//! trustwatch: passive TLS handshake monitor for KubeEdge CloudCore.
//!
//! The data path, one module per stage:
//!
//! ```text
//! capture ──Packet──▶ decode ──TcpSegment──▶ flow (reassembly) ──bytes per direction──▶ tls
//!   ──TlsEvent──▶ handshake (one Connection per TCP connection) ──▶ detect ──▶ export
//! ```
//!
//! [`pipeline::Pipeline`] wires the stages; every source (pcap file, live libpcap, eBPF) produces the
//! same [`capture::Packet`], and nothing downstream knows which one did.

// The module docs are written for whoever works on the code and name private items too:
// `cargo doc --document-private-items` renders them.
#![allow(rustdoc::private_intra_doc_links)]

pub mod base;
pub mod capture;
pub mod cert;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod error;
pub mod export;
pub mod flow;
#[doc(hidden)]
pub mod fuzz;
pub mod handshake;
pub mod pipeline;
pub mod runtime;
pub mod select;
pub mod serve;
pub mod stats;
pub mod tls;
pub mod trust;
