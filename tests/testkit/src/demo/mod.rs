//! The incident demo and the live benchmarks: `trustwatch live` capturing on `lo` while a
//! simulated KubeEdge runs over loopback — Go (crypto/tls) cloudhub and certsvc servers with a
//! KubeEdge-style CA_A, a dozen Go edges from 127.0.0.11.. that trust only CA_A — until the
//! servers "restart" with CA_B (same `CN=KubeEdge`, same serial 1024, another key).
//!
//! - [`scenario`]: runs it, narrates it (the monitor's events as they arrive, `/metrics`), and
//!   returns what happened when ([`scenario::Report`]), with detection latencies measured against
//!   the edges' own logs.
//! - [`load`]: a paced rustls handshake generator and the monitor's CPU at a given rate.
//! - [`sources`]: eBPF against libpcap on the same traffic (bulk, reconnect storm).
//! - [`proc`]: child processes, their output lines, Ctrl-C; [`http`]: GET and metric sums.

pub mod bpf_floor;
pub mod http;
pub mod load;
pub mod proc;
pub mod scenario;
pub mod soak;
pub mod sources;

use std::net::{SocketAddr, TcpListener};

/// The loopback ports of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub cloudhub: u16,
    pub certsvc: u16,
    /// The monitor's HTTP server (status page, /metrics, /api/state).
    pub http: u16,
}

impl Default for Ports {
    /// KubeEdge's and trustwatch's defaults: 10000, 10002, 9877.
    fn default() -> Self {
        Ports {
            cloudhub: 10000,
            certsvc: 10002,
            http: 9877,
        }
    }
}

impl Ports {
    /// cloudhub on `base`, the status page on `base + 1`, certsvc on `base + 2`.
    pub fn from_base(base: u16) -> Option<Ports> {
        Some(Ports {
            cloudhub: base,
            http: base.checked_add(1)?,
            certsvc: base.checked_add(2)?,
        })
    }

    /// Three free ports `b, b+1, b+2` on 127.0.0.1 (for tests).
    pub fn free() -> crate::Result<Ports> {
        for _ in 0..50 {
            let base = crate::free_port()?;
            if let Some(p) = Ports::from_base(base)
                && p.check().is_ok()
            {
                return Ok(p);
            }
        }
        Err("no three consecutive free ports on 127.0.0.1".into())
    }

    pub fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Fails with a message naming the first busy port and what to do.
    pub fn check(&self) -> crate::Result<()> {
        for (port, what) in [
            (self.cloudhub, "cloudhub"),
            (self.certsvc, "certsvc"),
            (self.http, "the monitor's status page"),
        ] {
            if let Err(e) = TcpListener::bind(Ports::addr(port)) {
                return Err(format!(
                    "port {port} ({what}) on 127.0.0.1 is not available ({e}); stop what uses it, \
                     or pick other ports with --base-port N (cloudhub N, status page N+1, certsvc N+2)"
                )
                .into());
            }
        }
        Ok(())
    }
}
