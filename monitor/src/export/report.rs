//! The human-readable summary printed by `trustwatch analyze`.
//!
//! Consumes [`Connection`]s (and the pipeline's [`Stats`]); produces a text report: per service,
//! connections by outcome and TLS version, alerts by code and sender, every CA key id with its
//! subject and how many handshakes succeeded and failed under it, and the clients that failed
//! most. Memory is bounded: at most [`MAX_KEYS`] CA keys and [`MAX_CLIENTS`] clients per service
//! are tracked (the rest are counted as "other").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::cert::Presented;
use crate::handshake::{Alert, Connection, Outcome};
use crate::stats::Stats;
use crate::tls::alert;

pub const MAX_KEYS: usize = 256;
pub const MAX_CLIENTS: usize = 4096;

#[derive(Default)]
struct CaKey {
    subject: String,
    ok: u64,
    failed: u64,
}

#[derive(Default)]
struct Service {
    port: u16,
    outcomes: BTreeMap<Outcome, u64>,
    versions: BTreeMap<String, u64>,
    /// (sender, plaintext code or None for encrypted) → count
    alerts: BTreeMap<(&'static str, Option<u8>), u64>,
    ca_keys: BTreeMap<String, CaKey>,
    other_keys: u64,
    failing_clients: BTreeMap<IpAddr, u64>,
    other_clients: u64,
}

/// Aggregates connection records for the report.
#[derive(Default)]
pub struct Summary {
    services: BTreeMap<String, Service>,
    connections: u64,
}

impl Summary {
    pub fn add(&mut self, c: &Connection) {
        self.connections += 1;
        let s = self.services.entry(c.service.to_string()).or_default();
        s.port = c.server.port();
        *s.outcomes.entry(c.outcome).or_default() += 1;
        let version = c.version.map_or_else(|| "none".to_string(), |v| v.name());
        *s.versions.entry(version).or_default() += 1;
        for a in &c.alerts {
            let key = match *a {
                Alert::Plain { from, code, .. } => (from.as_str(), Some(code)),
                Alert::Encrypted { from, .. } => (from.as_str(), None),
            };
            *s.alerts.entry(key).or_default() += 1;
        }
        let failed = matches!(
            c.outcome,
            Outcome::RejectedByClient | Outcome::RejectedByServer | Outcome::Failed
        );
        if let Some(key) = &c.ca_key_id {
            if let Some(entry) = s.ca_keys.get_mut(key) {
                entry.ok += u64::from(!failed);
                entry.failed += u64::from(failed);
            } else if s.ca_keys.len() < MAX_KEYS {
                let subject = match c.server_chain.first() {
                    Some(Presented::Parsed(leaf)) => leaf.issuer.clone(),
                    _ => String::new(),
                };
                s.ca_keys.insert(
                    key.clone(),
                    CaKey {
                        subject,
                        ok: u64::from(!failed),
                        failed: u64::from(failed),
                    },
                );
            } else {
                s.other_keys += 1;
            }
        }
        if failed {
            let ip = c.client.ip();
            if let Some(n) = s.failing_clients.get_mut(&ip) {
                *n += 1;
            } else if s.failing_clients.len() < MAX_CLIENTS {
                s.failing_clients.insert(ip, 1);
            } else {
                s.other_clients += 1;
            }
        }
    }

    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Renders the report.
    pub fn render(&self, stats: &Stats) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "trustwatch: {} TLS connections in {} packets ({} bytes)",
            self.connections, stats.packets, stats.bytes
        );
        for (name, s) in &self.services {
            let total: u64 = s.outcomes.values().sum();
            let _ = writeln!(out, "\n{name} (port {}): {total} connections", s.port);
            let outcomes: Vec<String> = s
                .outcomes
                .iter()
                .map(|(o, n)| format!("{} {n}", o.as_str()))
                .collect();
            let _ = writeln!(out, "  outcomes: {}", outcomes.join(", "));
            let versions: Vec<String> =
                s.versions.iter().map(|(v, n)| format!("{v} {n}")).collect();
            let _ = writeln!(out, "  versions: {}", versions.join(", "));
            if !s.alerts.is_empty() {
                let alerts: Vec<String> = s
                    .alerts
                    .iter()
                    .map(|((from, code), n)| match code {
                        Some(code) => format!("{}({code}) from {from} {n}", alert::name(*code)),
                        None => format!("encrypted (inferred) from {from} {n}"),
                    })
                    .collect();
                let _ = writeln!(out, "  alerts: {}", alerts.join(", "));
            }
            if !s.ca_keys.is_empty() {
                let _ = writeln!(out, "  issuing CA keys (by key id, not name):");
                for (key, k) in &s.ca_keys {
                    let _ = writeln!(
                        out,
                        "    {key}  {}  ok {}  failed {}",
                        if k.subject.is_empty() {
                            "?"
                        } else {
                            &k.subject
                        },
                        k.ok,
                        k.failed
                    );
                }
                if s.other_keys > 0 {
                    let _ = writeln!(
                        out,
                        "    (+{} connections under further keys)",
                        s.other_keys
                    );
                }
            }
            if !s.failing_clients.is_empty() {
                let mut clients: Vec<(&IpAddr, &u64)> = s.failing_clients.iter().collect();
                clients.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let top: Vec<String> = clients
                    .iter()
                    .take(10)
                    .map(|(ip, n)| format!("{ip} {n}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "  clients failing most ({} distinct): {}",
                    clients.len() as u64 + s.other_clients,
                    top.join(", ")
                );
            }
        }
        let _ = writeln!(out, "\ncapture: {}", counters(stats));
        out
    }
}

/// Non-zero drop/error counters as one line.
fn counters(s: &Stats) -> String {
    let items = [
        ("not TCP", s.not_tcp),
        ("IP fragments skipped", s.ip_fragments),
        ("malformed packets", s.malformed_packets),
        ("flows", s.flows_opened),
        ("flows evicted", s.flows_evicted),
        ("flows timed out", s.flows_timed_out),
        ("reassembly gaps", s.reassembly_gaps),
        ("gap bytes", s.gap_bytes),
        ("overlap conflicts", s.overlap_conflicts),
        ("window-dropped bytes", s.window_dropped_bytes),
        ("malformed records", s.malformed_records),
        ("malformed handshakes", s.malformed_handshakes),
        ("alerts over the per-connection limit", s.alerts_dropped),
        ("chain certificates over --max-chain", s.chain_certs_dropped),
        ("certificates", s.certificates),
        ("malformed certificates", s.malformed_certificates),
    ];
    let parts: Vec<String> = items
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if parts.is_empty() {
        "no drops".to_string()
    } else {
        parts.join(", ")
    }
}
