//! trustwatch-testkit: fixtures for trustwatch's end-to-end tests.
//!
//! Everything here produces ground truth that the analyzer's output is checked against:
//! - [`pki`]: CAs and certificates made with rcgen (DER, PEM files, fingerprints, SKI/AKI, serials).
//! - [`capture`]: a libpcap capture on `lo` written to a pcap file.
//! - [`peers`]: real TLS stacks talking over loopback: rustls (in threads), the OpenSSL CLI, and a Go
//!   program (`tests/go`) that behaves like KubeEdge's CloudCore and EdgeCore.
//! - [`rewrite`]: variants of a capture (reordered, duplicated, VLAN/QinQ, IPv6, other link types,
//!   pcapng) that must analyze the same.
//! - [`tshark`]: what is on the wire, read by an independent dissector.
//! - [`analyzer`]: runs `trustwatch analyze --json` and parses its JSON Lines.
//! - [`demo`]: the incident demo and the live benchmarks (`trustwatch live` against a simulated
//!   KubeEdge on loopback).

pub mod analyzer;
pub mod capture;
pub mod demo;
pub mod peers;
pub mod pki;
pub mod rewrite;
pub mod tshark;

pub use tempfile;

/// Errors of the fixtures: every failure is a test failure, so one boxed type suffices.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// A port nobody listens on right now (bind to port 0, read it back, release it).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The workspace `target/` directory (or `CARGO_TARGET_DIR`), for built helpers and caches.
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}
