//! The incident report to share (`analyze --report FILE`): HTML, Markdown or CSV by the file's
//! extension.
//!
//! Consumes connection records, detector events and the final counters; produces one file:
//! - HTML ([`html`]): self-contained (no script, no external resource) — the capture span, a
//!   timeline by CA key on a time axis (handshakes per minute that succeeded and failed under each
//!   key, events marked), the per-replica table, the affected clients, the events and counters;
//! - Markdown ([`markdown`]): the same tables, for an incident ticket;
//! - CSV ([`csv`]): the re-join list — every client that failed, with its first and last failure
//!   and the CA key it last succeeded under.
//!
//! Everything kept is bounded (minutes, CA keys, replicas, clients, events); what did not fit is
//! counted and said in the report.

pub mod csv;
pub mod html;
pub mod markdown;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::base::{KeyId, Timestamp};
use crate::detect::Event;
use crate::export::text::evidence;
use crate::handshake::{Connection, Outcome};

/// Minutes of the per-minute timeline kept (two weeks).
pub const MAX_MINUTES: usize = 20_160;
/// CA keys shown on their own in the timeline; further keys are one lane, "other".
pub const MAX_KEYS: usize = 16;
pub const MAX_REPLICAS: usize = 256;
pub const MAX_CLIENTS: usize = 65_536;
pub const MAX_EVENTS: usize = 1_000;

/// The report format, from the file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Markdown,
    Csv,
}

impl Format {
    /// `.html`/`.htm`, `.md`/`.markdown`, `.csv`; anything else is `None`.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "html" | "htm" => Format::Html,
            "md" | "markdown" => Format::Markdown,
            "csv" => Format::Csv,
            _ => return None,
        })
    }
}

/// Succeeded and failed handshakes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    /// Neither (incomplete).
    pub other: u64,
}

impl Tally {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Established => self.ok += 1,
            Outcome::RejectedByClient | Outcome::RejectedByServer | Outcome::Failed => {
                self.failed += 1
            }
            Outcome::Incomplete => self.other += 1,
        }
    }
    pub fn total(&self) -> u64 {
        self.ok + self.failed + self.other
    }
}

/// A timeline lane: a CA key, connections without one, or the keys beyond [`MAX_KEYS`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    Key(KeyId),
    /// No CA key known (no chain seen, TLS 1.3).
    Unknown,
    Other,
}

impl Lane {
    pub fn label(&self) -> String {
        match self {
            Lane::Key(k) => k.to_string(),
            Lane::Unknown => "unknown CA (chain not seen)".into(),
            Lane::Other => "further CA keys".into(),
        }
    }
    pub fn short(&self) -> String {
        match self {
            Lane::Key(k) => k.short().to_string(),
            Lane::Unknown => "unknown".into(),
            Lane::Other => "other".into(),
        }
    }
}

/// One replica (server address).
#[derive(Clone, Debug, Default)]
pub struct Replica {
    pub keys: BTreeMap<Lane, Tally>,
    pub first: Timestamp,
    pub last: Timestamp,
    pub tally: Tally,
}

/// One client that failed at least once (or succeeded: kept to know its last good CA).
#[derive(Clone, Debug, Default)]
pub struct Client {
    pub first_failure: Option<Timestamp>,
    pub last_failure: Option<Timestamp>,
    pub failures: u64,
    pub successes: u64,
    pub last_success: Option<Timestamp>,
    /// The CA key of its last successful handshake.
    pub last_success_key: Option<KeyId>,
    /// Its latest connection failed.
    pub failing_now: bool,
    last_seen: Timestamp,
}

/// One detector event as reported.
#[derive(Clone, Debug)]
pub struct ReportEvent {
    pub at: Timestamp,
    pub service: String,
    pub kind: &'static str,
    pub text: String,
}

/// Everything the report shows, collected as the analysis runs.
#[derive(Debug, Default)]
pub struct Collected {
    pub connections: Tally,
    pub by_outcome: BTreeMap<&'static str, u64>,
    /// (minute since the epoch, lane) → tally.
    pub minutes: BTreeMap<(i64, Lane), Tally>,
    pub keys: BTreeMap<Lane, Tally>,
    pub key_subjects: HashMap<KeyId, String>,
    pub replicas: BTreeMap<SocketAddr, Replica>,
    pub clients: HashMap<IpAddr, Client>,
    pub events: Vec<ReportEvent>,
    /// What did not fit: minutes, replicas, clients, events.
    pub left_out: LeftOut,
    /// First and last packet of the capture.
    pub span: Option<(Timestamp, Timestamp)>,
    /// Counters (label, value) of the packet path and detector, non-zero ones.
    pub counters: Vec<(&'static str, u64)>,
}

/// Items not kept for the report (its bounds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub minutes: u64,
    pub replicas: u64,
    pub clients: u64,
    pub events: u64,
}

fn minute(t: Timestamp) -> i64 {
    t.micros().div_euclid(60_000_000)
}

impl Collected {
    fn lane(&mut self, key: Option<&KeyId>) -> Lane {
        match key {
            None => Lane::Unknown,
            Some(k) => {
                let lane = Lane::Key(k.clone());
                let keys = self
                    .keys
                    .keys()
                    .filter(|l| matches!(l, Lane::Key(_)))
                    .count();
                if self.keys.contains_key(&lane) || keys < MAX_KEYS {
                    lane
                } else {
                    Lane::Other
                }
            }
        }
    }

    pub fn connection(&mut self, c: &Connection) {
        self.connections.add(c.outcome);
        *self.by_outcome.entry(c.outcome.as_str()).or_default() += 1;
        let lane = self.lane(c.ca_key_id.as_ref());
        if let (Some(k), Some(leaf)) = (&c.ca_key_id, c.server_chain.first().and_then(|p| p.info()))
            && self.key_subjects.len() < MAX_KEYS * 4
        {
            self.key_subjects
                .entry(k.clone())
                .or_insert_with(|| leaf.issuer.clone());
        }
        self.keys.entry(lane.clone()).or_default().add(c.outcome);
        let m = (minute(c.start), lane.clone());
        if self.minutes.contains_key(&m) || self.minutes.len() < MAX_MINUTES * 2 {
            self.minutes.entry(m).or_default().add(c.outcome);
        } else {
            self.left_out.minutes += 1;
        }
        let replicas = self.replicas.len();
        match self.replicas.get_mut(&c.server) {
            Some(r) => {
                r.keys.entry(lane.clone()).or_default().add(c.outcome);
                r.tally.add(c.outcome);
                r.first = r.first.min(c.start);
                r.last = r.last.max(c.start);
            }
            None if replicas < MAX_REPLICAS => {
                let mut r = Replica {
                    first: c.start,
                    last: c.start,
                    ..Default::default()
                };
                r.keys.entry(lane).or_default().add(c.outcome);
                r.tally.add(c.outcome);
                self.replicas.insert(c.server, r);
            }
            None => self.left_out.replicas += 1,
        }
        let clients = self.clients.len();
        let client = match self.clients.get_mut(&c.client.ip()) {
            Some(cl) => cl,
            None if clients < MAX_CLIENTS => self.clients.entry(c.client.ip()).or_default(),
            None => {
                self.left_out.clients += 1;
                return;
            }
        };
        let mut t = Tally::default();
        t.add(c.outcome);
        if t.ok == 1 {
            client.successes += 1;
            client.last_success = Some(c.start);
            client.last_success_key = c.ca_key_id.clone();
        } else if t.failed == 1 {
            client.failures += 1;
            client.first_failure.get_or_insert(c.start);
            client.last_failure = Some(c.start);
        }
        if t.other == 0 && c.start >= client.last_seen {
            client.failing_now = t.failed == 1;
            client.last_seen = c.start;
        }
    }

    pub fn event(&mut self, e: &Event) {
        if self.events.len() >= MAX_EVENTS {
            self.left_out.events += 1;
            return;
        }
        self.events.push(ReportEvent {
            at: e.at,
            service: e.service.to_string(),
            kind: e.name(),
            text: evidence(e),
        });
    }

    /// Clients that failed at least once, first failure first (then address).
    pub fn failing_clients(&self) -> Vec<(&IpAddr, &Client)> {
        let mut v: Vec<(&IpAddr, &Client)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.failures > 0)
            .collect();
        v.sort_by(|a, b| a.1.first_failure.cmp(&b.1.first_failure).then(a.0.cmp(b.0)));
        v
    }

    /// The lanes of the timeline in order of their first minute.
    pub fn lanes(&self) -> Vec<Lane> {
        let mut first: BTreeMap<Lane, i64> = BTreeMap::new();
        for (m, l) in self.minutes.keys() {
            first.entry(l.clone()).or_insert(*m);
        }
        let mut v: Vec<(Lane, i64)> = first.into_iter().collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(l, _)| l).collect()
    }

    /// Per minute, every lane's tally (minutes with connections only).
    pub fn per_minute(&self) -> BTreeMap<i64, BTreeMap<Lane, Tally>> {
        let mut out: BTreeMap<i64, BTreeMap<Lane, Tally>> = BTreeMap::new();
        for ((m, l), t) in &self.minutes {
            out.entry(*m).or_default().insert(l.clone(), *t);
        }
        out
    }

    /// Renders the report in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Html => html::render(self),
            Format::Markdown => markdown::render(self),
            Format::Csv => csv::render(self),
        }
    }
}

/// `HH:MM` UTC of a minute since the epoch, with the date when `with_date`.
pub fn minute_label(m: i64, with_date: bool) -> String {
    let t = Timestamp(m.saturating_mul(60_000_000)).rfc3339();
    if with_date {
        format!("{} {}", &t[..10], &t[11..16])
    } else {
        t[11..16].to_string()
    }
}

/// A timestamp as shown in tables: RFC 3339 to the millisecond.
pub fn when(t: Timestamp) -> String {
    let s = t.rfc3339();
    // 2026-11-26T17:49:30.123456Z → 2026-11-26T17:49:30.123Z
    if s.len() == 27 {
        format!("{}Z", &s[..23])
    } else {
        s
    }
}

#[cfg(test)]
mod tests;
