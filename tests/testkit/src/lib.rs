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
//! - [`netns`]: network namespaces joined by a veth pair, removed on drop; raw frame injection.
//! - [`analyzer`]: runs `trustwatch analyze --json` and parses its JSON Lines.
//! - [`demo`]: the incident demo and the live benchmarks (`trustwatch live` against a simulated
//!   KubeEdge on loopback).
//! - [`browser`]: headless Chromium (`--dump-dom`, `--screenshot`) for the status page.
//! - [`prom`]: a real Prometheus on loopback (queries, alerts) and promtool; [`tools`]: kustomize,
//!   kubernetes-validate, checkov and a YAML reader for the deployment tests.

pub mod analyzer;
pub mod browser;
pub mod capture;
pub mod demo;
pub mod hostile;
pub mod netns;
pub mod peers;
pub mod pki;
pub mod prom;
pub mod rewrite;
pub mod tools;
pub mod tshark;

pub use tempfile;

/// Errors of the fixtures: every failure is a test failure, so one boxed type suffices.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// A port nobody listens on right now, distinct from every other this process handed out.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below the kernel's ephemeral range (32768–60999): a port handed out here can never be
    // borrowed as a client's source port by a test running in parallel, which a port from
    // `bind(0)` can (between this call and the server's bind, or while a server restarts).
    // Steps of 3 leave room for the demo's three consecutive ports.
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN / 3 {
        let port = (FIRST + NEXT.fetch_add(3, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port below the ephemeral range".into())
}

/// The workspace `target/` directory (or `CARGO_TARGET_DIR`), for built helpers and caches.
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}
