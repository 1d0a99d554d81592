//! The human-readable summary printed by `trustwatch analyze`.
//!
//! Consumes [`Connection`]s, detector [`Event`]s and the counters ([`Stats`], [`DetectStats`]);
//! produces a text report: per service, connections by outcome and TLS version, alerts by code and
//! sender, every CA key id with its subject and how many handshakes succeeded and failed under it,
//! the clients that failed most, every non-zero counter (from the same lists `/metrics` exports),
//! and the trust timeline. Memory is bounded: at most [`MAX_KEYS`] CA keys and [`MAX_CLIENTS`]
//! clients per service are tracked (the rest are counted as "other"), at most [`MAX_TIMELINE`]
//! timeline lines (the rest are counted).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use crate::base::{Counter, CounterKind, KeyId, Timestamp, human};
use crate::cert::Presented;
use crate::detect::{DetectStats, Event};
use crate::export::text::timeline_line;
use crate::handshake::{Alert, Connection, Outcome};
use crate::stats::Stats;
use crate::tls::{Version, alert};

pub const MAX_KEYS: usize = 256;
pub const MAX_CLIENTS: usize = 4096;
/// Timeline lines kept for the report (events beyond are still written as JSON and counted).
pub const MAX_TIMELINE: usize = 10_000;

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
    versions: BTreeMap<Cow<'static, str>, u64>,
    /// (sender, plaintext code or None for encrypted) → count
    alerts: BTreeMap<(&'static str, Option<u8>), u64>,
    ca_keys: BTreeMap<KeyId, CaKey>,
    other_keys: u64,
    failing_clients: BTreeMap<IpAddr, u64>,
    other_clients: u64,
    /// Certificate problems at handshake time (code → connections).
    cert_problems: BTreeMap<&'static str, u64>,
    /// Established handshakes with a certificate problem.
    established_unhealthy: u64,
}

/// Aggregates connection records for the report.
#[derive(Default)]
pub struct Summary {
    services: BTreeMap<Arc<str>, Service>,
    connections: u64,
    timeline: Vec<(Arc<str>, String)>,
    events: u64,
    /// Handshakes per minute since the epoch: (ok, failed), at most [`MAX_MINUTES`] minutes.
    minutes: BTreeMap<i64, (u64, u64)>,
    /// Minutes of the events in the timeline (the per-minute table is printed around them).
    event_minutes: Vec<i64>,
}

/// Minutes of per-minute counts kept for the summary (two weeks).
const MAX_MINUTES: usize = 20_160;
/// Minutes shown before and after each event.
const AROUND_EVENT_MIN: i64 = 3;

impl Summary {
    pub fn add(&mut self, c: &Connection) {
        self.connections += 1;
        let m = c.start.micros().div_euclid(60_000_000);
        if self.minutes.len() < MAX_MINUTES || self.minutes.contains_key(&m) {
            let e = self.minutes.entry(m).or_default();
            match c.outcome {
                Outcome::Established => e.0 += 1,
                Outcome::RejectedByClient | Outcome::RejectedByServer | Outcome::Failed => e.1 += 1,
                Outcome::Incomplete => {}
            }
        }
        let s = self.services.entry(c.service.clone()).or_default();
        s.port = c.server.port();
        *s.outcomes.entry(c.outcome).or_default() += 1;
        let version = c.version.map_or(Cow::Borrowed("none"), Version::name);
        *s.versions.entry(version).or_default() += 1;
        let mut problems = c.certificate_problems().peekable();
        if problems.peek().is_some() && c.outcome == Outcome::Established {
            s.established_unhealthy += 1;
        }
        for p in problems {
            *s.cert_problems.entry(p).or_default() += 1;
        }
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

    /// One detector event, for the trust timeline.
    pub fn event(&mut self, e: &Event) {
        self.events += 1;
        if self.event_minutes.len() < MAX_TIMELINE {
            self.event_minutes
                .push(e.at.micros().div_euclid(60_000_000));
        }
        if self.timeline.len() < MAX_TIMELINE {
            self.timeline.push((e.service.clone(), timeline_line(e)));
        }
    }

    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Renders the report.
    pub fn render(
        &self,
        stats: &Stats,
        detect: &DetectStats,
        span: Option<(Timestamp, Timestamp)>,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "trustwatch: {} in {} ({})",
            human::count(self.connections, "TLS connection", "TLS connections"),
            human::count(stats.packets, "packet", "packets"),
            human::bytes(stats.bytes)
        );
        if let Some((first, last)) = span {
            let _ = writeln!(
                out,
                "capture span: {first} to {last} ({})",
                human::duration_us(last.since(first))
            );
        }
        for (name, s) in &self.services {
            let total: u64 = s.outcomes.values().sum();
            let _ = writeln!(
                out,
                "\n{name} (port {}): {}",
                s.port,
                human::count(total, "connection", "connections")
            );
            let outcomes: Vec<String> = s
                .outcomes
                .iter()
                .map(|(o, n)| format!("{} {n}", o.as_str()))
                .collect();
            let _ = writeln!(out, "  outcomes: {}", outcomes.join(", "));
            if !s.cert_problems.is_empty() {
                let problems: Vec<String> = s
                    .cert_problems
                    .iter()
                    .map(|(p, n)| format!("{p} {n}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "  certificate problems at handshake time: {}{}",
                    problems.join(", "),
                    if s.established_unhealthy > 0 {
                        format!(
                            " ({} not healthy)",
                            human::count(
                                s.established_unhealthy,
                                "established handshake",
                                "established handshakes"
                            )
                        )
                    } else {
                        String::new()
                    }
                );
            }
            // Connections that ended before a ServerHello negotiated no version: said so, not
            // listed as a version called "none".
            let versions: Vec<String> = s
                .versions
                .iter()
                .map(|(v, n)| match v.as_ref() {
                    "none" => format!("no version negotiated (no ServerHello) {n}"),
                    _ => format!("{v} {n}"),
                })
                .collect();
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
        let all = || stats.values().chain(detect.values());
        let _ = writeln!(
            out,
            "\ncapture: {}",
            counter_line(all(), CounterKind::Volume)
        );
        let _ = writeln!(out, "losses: {}", counter_line(all(), CounterKind::Loss));
        self.render_timeline(&mut out);
        self.render_minutes(&mut out);
        out
    }

    /// Handshakes per minute around each event (a few minutes either side).
    fn render_minutes(&self, out: &mut String) {
        if self.event_minutes.is_empty() {
            return;
        }
        let near = |m: i64| {
            self.event_minutes
                .iter()
                .any(|e| (m - e).abs() <= AROUND_EVENT_MIN)
        };
        out.push_str("\nper minute around the events (UTC, handshakes ok / failed):\n");
        let mut last_shown: Option<i64> = None;
        for (m, (ok, failed)) in self.minutes.iter().filter(|(m, _)| near(**m)) {
            if last_shown.is_some_and(|l| *m > l + 1) {
                out.push_str("    ...\n");
            }
            let label = Timestamp(m.saturating_mul(60_000_000)).rfc3339();
            let marker = if self.event_minutes.contains(m) {
                "  <- event"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} {}  ok {ok:>6}  failed {failed:>6}{marker}",
                &label[..10],
                &label[11..16]
            );
            last_shown = Some(*m);
        }
    }

    /// The trust timeline, grouped by service in time order.
    fn render_timeline(&self, out: &mut String) {
        out.push_str("\ntrust timeline:\n");
        if self.timeline.is_empty() {
            out.push_str("  no trust events (healthy throughout)\n");
            return;
        }
        let mut services: Vec<&Arc<str>> = self.timeline.iter().map(|(s, _)| s).collect();
        services.sort();
        services.dedup();
        for service in services {
            let _ = writeln!(out, "  {service}:");
            for (_, line) in self.timeline.iter().filter(|(s, _)| s == service) {
                let _ = writeln!(out, "    {line}");
            }
        }
        let shown = self.timeline.len() as u64;
        if self.events > shown {
            let _ = writeln!(
                out,
                "  (+{} more events in the JSON output)",
                self.events - shown
            );
        }
    }
}

/// The non-zero counters of one kind, `label value` comma-separated (the same list `/metrics`
/// exports).
fn counter_line<'a>(
    counters: impl Iterator<Item = (&'a Counter, u64)>,
    kind: CounterKind,
) -> String {
    let parts: Vec<String> = counters
        .filter(|(c, n)| c.kind == kind && *n > 0)
        .map(|(c, n)| format!("{} {n}", c.label))
        .collect();
    match (parts.is_empty(), kind) {
        (true, CounterKind::Loss) => "none".to_string(),
        (true, CounterKind::Volume) => "nothing".to_string(),
        _ => parts.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::cert::verdict::Validity;
    use crate::detect::{CaChange, CaSource, EventDetail};
    use crate::flow::Side;

    fn record(client: &str, start_s: i64, outcome: Outcome) -> Connection {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let start = Timestamp::from_micros(start_s * 1_000_000);
        Connection {
            outcome,
            version: Some(Version::TLS12),
            ..Connection::test_record(at(client), at("10.0.0.2:10000"), start, start)
        }
    }

    /// The report's lines for a small mix: counts add up (not multiply), an unhealthy
    /// established handshake needs both a problem and the establishment, failures are
    /// attributed to their key and client.
    #[test]
    fn summary_lines_count_outcomes_problems_keys_and_failing_clients() {
        let key = KeyId::parse("aabbccdd").unwrap();
        let mut s = Summary::default();
        // Two healthy handshakes under the key.
        for n in 0..2 {
            s.add(&Connection {
                ca_key_id: Some(key.clone()),
                ..record(
                    &format!("192.168.1.1:{}", 40000 + n),
                    60,
                    Outcome::Established,
                )
            });
        }
        // An established handshake over an expired client certificate.
        let mut unhealthy = record("192.168.1.2:40000", 61, Outcome::Established);
        unhealthy.certificates.client.validity = Some(Validity::Expired);
        s.add(&unhealthy);
        // Three rejections by the client (bad_certificate) from one edge, under the key; two
        // with an expired client certificate: problems, but not established ones.
        for n in 0..3 {
            let mut c = Connection {
                ca_key_id: Some(key.clone()),
                alerts: vec![Alert::Plain {
                    from: Side::Client,
                    level: 2,
                    code: 42,
                    ts: Timestamp(0),
                }],
                ..record(
                    &format!("192.168.1.3:{}", 40000 + n),
                    120,
                    Outcome::RejectedByClient,
                )
            };
            if n > 0 {
                c.certificates.client.validity = Some(Validity::Expired);
            }
            s.add(&c);
        }
        // One that ended before a ServerHello.
        s.add(&Connection {
            version: None,
            ..record("192.168.1.4:40000", 121, Outcome::Incomplete)
        });
        assert_eq!(s.connections(), 7);
        s.event(&Event {
            at: Timestamp::from_micros(125_000_000),
            service: Arc::from("cloudhub"),
            detail: EventDetail::CaChanged(CaChange {
                server: None,
                previous_ca_key_id: key.clone(),
                current_ca_key_id: KeyId::parse("eeff").unwrap(),
                source: CaSource::Passive,
            }),
        });

        let report = s.render(&Stats::default(), &DetectStats::default(), None);
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines[0], "trustwatch: 7 TLS connections in 0 packets (0 B)");
        let at = lines
            .iter()
            .position(|l| *l == "cloudhub (port 10000): 7 connections")
            .unwrap_or_else(|| panic!("no service line in:\n{report}"));
        assert_eq!(
            lines[at + 1..at + 8],
            [
                "  outcomes: established 3, rejected_by_client 3, incomplete 1",
                "  certificate problems at handshake time: client_certificate_expired 3 \
                 (1 established handshake not healthy)",
                "  versions: TLS 1.2 6, no version negotiated (no ServerHello) 1",
                "  alerts: bad_certificate(42) from client 3",
                "  issuing CA keys (by key id, not name):",
                "    aabbccdd  ?  ok 2  failed 3",
                "  clients failing most (1 distinct): 192.168.1.3 3",
            ]
        );
        assert!(report.contains("\nlosses: none\n"), "{report}");
        // Minute 0 has no handshakes; 1 had three established; 2 had three failed (the
        // incomplete one counts as neither) and the event.
        let tail = report
            .split_once("\nper minute around the events")
            .unwrap()
            .1;
        assert_eq!(
            tail.lines().skip(1).collect::<Vec<_>>(),
            [
                "    1970-01-01 00:01  ok      3  failed      0",
                "    1970-01-01 00:02  ok      0  failed      3  <- event",
            ]
        );
    }
}
