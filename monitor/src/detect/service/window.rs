//! The sliding window of one service, kept so that no traffic can blind it.
//!
//! Two structures, both bounded:
//! - **Clients**: one aggregate per client address — its latest verdict, when its current run of
//!   certificate failures began, its latest success and failure, and its outcomes per server
//!   address. The collapse rule reads only these, so a flood of handshakes from a few addresses
//!   costs a few entries. When the map is full, the entry that matters least goes, chosen among
//!   the least recently seen: first clients that never reached a certificate decision, then
//!   clients that only succeeded, then failing ones; a client that succeeded before and now fails
//!   goes last. Ties go against the address whose prefix (/24, /64) holds the most entries, so one
//!   prefix cannot take the window.
//! - **Handshakes**: the window's connections, for the counts (per service, server address, CA key
//!   and rejecting side). When full, the oldest is evicted: counts then undercount, the rule does
//!   not.
//!
//! Every eviction is counted, and the window is *saturated* for one window after one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use hashlink::LinkedHashMap;
use serde::Serialize;

use super::servers::Servers;
use crate::base::{KeyId, Timestamp};
use crate::detect::DetectStats;
use crate::detect::classify::{Class, RejectingSide};

/// One connection as the window keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Obs {
    pub t: Timestamp,
    pub client: IpAddr,
    pub server: SocketAddr,
    pub class: Class,
    pub ca: Option<KeyId>,
}

/// Handshake counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub handshakes: u32,
    pub successes: u32,
    pub cert_failures: u32,
    pub other_failures: u32,
}

impl Counts {
    pub(super) fn apply(&mut self, class: Class, add: bool) {
        let step = |v: &mut u32| {
            *v = if add {
                v.saturating_add(1)
            } else {
                v.saturating_sub(1)
            }
        };
        step(&mut self.handshakes);
        match class {
            Class::Success => step(&mut self.successes),
            Class::CertFailure(_) => step(&mut self.cert_failures),
            Class::OtherFailure => step(&mut self.other_failures),
        }
    }
    pub(super) fn is_zero(&self) -> bool {
        self.handshakes == 0
    }
}

/// A client's latest verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Last {
    Success,
    CertFailure,
    Other,
}

impl From<Class> for Last {
    fn from(c: Class) -> Last {
        match c {
            Class::Success => Last::Success,
            Class::CertFailure(_) => Last::CertFailure,
            Class::OtherFailure => Last::Other,
        }
    }
}

/// A client's latest outcomes on one server address.
#[derive(Clone, Debug)]
pub(super) struct PerServer {
    pub server: SocketAddr,
    pub ok: Option<Timestamp>,
    pub rejected: Option<Timestamp>,
}

/// Server addresses remembered per client (for the outcome split).
const MAX_SERVERS_PER_CLIENT: usize = 16;
/// CA keys remembered per client (the ones it succeeded under).
const MAX_KEYS_PER_CLIENT: usize = 4;
/// Least recently seen clients looked at for the one to evict.
const EVICT_SCAN: usize = 64;

/// What one client address did in the window.
#[derive(Clone, Debug)]
pub(super) struct ClientStat {
    pub last: Last,
    pub last_t: Timestamp,
    /// Start of the current run of certificate failures.
    pub fail_since: Option<Timestamp>,
    pub last_ok: Option<Timestamp>,
    /// The CA key of its latest success, when known: the CA it trusts (the re-join list).
    pub ok_ca: Option<KeyId>,
    /// The CA keys it succeeded under, with the latest time (a client that trusts two CAs during
    /// a planned rotation succeeds under both).
    pub ok_keys: Vec<(KeyId, Timestamp)>,
    pub last_fail: Option<Timestamp>,
    pub per_server: Vec<PerServer>,
}

impl ClientStat {
    /// How much losing this client costs the rules (least first).
    fn value(&self) -> u8 {
        match (self.last, self.last_ok.is_some()) {
            (Last::CertFailure, true) => 3,
            (Last::CertFailure, false) => 2,
            (Last::Success, _) => 1,
            (Last::Other, _) => u8::from(self.last_ok.is_some() || self.last_fail.is_some()),
        }
    }
}

/// An address's neighbourhood for fairness: its /24 (IPv4) or /64 (IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Prefix(u128);

impl Prefix {
    fn of(ip: IpAddr) -> Prefix {
        match ip {
            IpAddr::V4(v4) => Prefix(u128::from(v4.to_bits() >> 8)),
            IpAddr::V6(v6) => Prefix((v6.to_bits() >> 64) | 1 << 127),
        }
    }
}

/// Certificate failures in the window by the side that rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rejecters {
    pub client: u32,
    pub server: u32,
    pub unknown: u32,
}

impl Rejecters {
    fn slot(&mut self, side: RejectingSide) -> &mut u32 {
        match side {
            RejectingSide::Client => &mut self.client,
            RejectingSide::Server => &mut self.server,
            RejectingSide::Both | RejectingSide::Unknown => &mut self.unknown,
        }
    }

    /// Which side the window's certificate failures come from.
    pub fn side(&self) -> RejectingSide {
        match (self.client > 0, self.server > 0) {
            (true, true) => RejectingSide::Both,
            (true, false) => RejectingSide::Client,
            (false, true) => RejectingSide::Server,
            (false, false) => RejectingSide::Unknown,
        }
    }
}

/// Bounds of the window (from the detector's limits).
#[derive(Clone, Copy, Debug)]
pub(super) struct WindowLimits {
    pub window_us: i64,
    pub max_clients: usize,
    pub max_entries: usize,
}

/// The window and its tallies.
#[derive(Debug, Default)]
pub(super) struct Window {
    entries: VecDeque<Obs>,
    /// Least recently seen first.
    pub clients: LinkedHashMap<IpAddr, ClientStat>,
    prefixes: HashMap<Prefix, u32>,
    /// Clients whose latest verdict is a certificate failure / a success.
    pub n_failing: u32,
    pub n_succeeding: u32,
    pub ca_keys: BTreeMap<KeyId, Counts>,
    pub counts: Counts,
    pub rejecters: Rejecters,
    /// Until when the window counts as saturated (an eviction happened within one window).
    saturated_until: Option<Timestamp>,
}

impl Window {
    /// Failing clients / (failing + succeeding clients).
    pub fn share(&self) -> f64 {
        let total = self.n_failing + self.n_succeeding;
        if total == 0 {
            0.0
        } else {
            f64::from(self.n_failing) / f64::from(total)
        }
    }

    /// Evictions happened within the last window: the verdict may be degraded.
    pub fn saturated(&self, now: Timestamp) -> bool {
        self.saturated_until.is_some_and(|t| now <= t)
    }

    fn saturate(&mut self, now: Timestamp, window_us: i64) {
        self.saturated_until = Some(Timestamp(now.0.saturating_add(window_us)));
    }

    /// Adds one observation; evicts to stay within `limits`, counting into `stats`.
    pub fn add(
        &mut self,
        obs: &Obs,
        servers: &mut Servers,
        limits: WindowLimits,
        stats: &mut DetectStats,
    ) {
        if self.entries.len() >= limits.max_entries {
            self.evict_entry(servers);
            stats.window_entries_evicted += 1;
            self.saturate(obs.t, limits.window_us);
        }
        self.count(obs, servers);
        self.entries.push_back(obs.clone());

        if !self.clients.contains_key(&obs.client) && self.clients.len() >= limits.max_clients {
            self.evict_client();
            stats.clients_evicted += 1;
            self.saturate(obs.t, limits.window_us);
        }
        self.client(obs);
    }

    fn count(&mut self, obs: &Obs, servers: &mut Servers) {
        self.counts.apply(obs.class, true);
        if let Class::CertFailure(side) = obs.class {
            let r = self.rejecters.slot(side);
            *r = r.saturating_add(1);
        }
        servers.entry(obs.server).counts.apply(obs.class, true);
        if let Some(ca) = &obs.ca {
            self.ca_keys
                .entry(ca.clone())
                .or_default()
                .apply(obs.class, true);
        }
    }

    fn uncount(&mut self, obs: &Obs, servers: &mut Servers) {
        self.counts.apply(obs.class, false);
        if let Class::CertFailure(side) = obs.class {
            let r = self.rejecters.slot(side);
            *r = r.saturating_sub(1);
        }
        if let Some(s) = servers.get_mut(&obs.server) {
            s.counts.apply(obs.class, false);
        }
        if let Some(ca) = &obs.ca
            && let Some(c) = self.ca_keys.get_mut(ca)
        {
            c.apply(obs.class, false);
            if c.is_zero() {
                self.ca_keys.remove(ca);
            }
        }
    }

    fn evict_entry(&mut self, servers: &mut Servers) {
        if let Some(obs) = self.entries.pop_front() {
            self.uncount(&obs, servers);
        }
    }

    /// Removes the client that matters least among the least recently seen.
    fn evict_client(&mut self) {
        let prefixes = &self.prefixes;
        let victim = self
            .clients
            .iter()
            .take(EVICT_SCAN)
            .min_by_key(|(ip, c)| {
                let crowd = prefixes.get(&Prefix::of(**ip)).copied().unwrap_or(0);
                (c.value(), std::cmp::Reverse(crowd))
            })
            .map(|(ip, _)| *ip);
        if let Some(ip) = victim {
            self.remove_client(ip);
        }
    }

    fn remove_client(&mut self, ip: IpAddr) {
        let Some(c) = self.clients.remove(&ip) else {
            return;
        };
        let prefix = Prefix::of(ip);
        if let Some(n) = self.prefixes.get_mut(&prefix) {
            *n -= 1;
            if *n == 0 {
                self.prefixes.remove(&prefix);
            }
        }
        self.retally(Some(c.last), None);
    }

    /// Updates the client's aggregate with one observation.
    fn client(&mut self, obs: &Obs) {
        let class = obs.class;
        let known = self.clients.contains_key(&obs.client);
        if !known {
            *self.prefixes.entry(Prefix::of(obs.client)).or_default() += 1;
        }
        let c = self
            .clients
            .entry(obs.client)
            .or_insert_with(|| ClientStat {
                last: Last::Other,
                last_t: obs.t,
                fail_since: None,
                last_ok: None,
                ok_ca: None,
                ok_keys: Vec::new(),
                last_fail: None,
                per_server: Vec::new(),
            });
        let before = known.then_some(c.last);
        // Records can arrive slightly out of time order (decided vs closed): the latest wins.
        if !known || obs.t >= c.last_t {
            if Last::from(class) == Last::CertFailure && (c.last != Last::CertFailure || !known) {
                c.fail_since = Some(obs.t);
            }
            c.last = class.into();
            c.last_t = obs.t;
        }
        match class {
            Class::Success => {
                c.last_ok = c.last_ok.max(Some(obs.t));
                if let Some(ca) = &obs.ca {
                    c.ok_ca = Some(ca.clone());
                    match c.ok_keys.iter().position(|(k, _)| k == ca) {
                        Some(i) => {
                            if let Some((_, t)) = c.ok_keys.get_mut(i) {
                                *t = (*t).max(obs.t);
                            }
                        }
                        None if c.ok_keys.len() < MAX_KEYS_PER_CLIENT => {
                            c.ok_keys.push((ca.clone(), obs.t));
                        }
                        None => {}
                    }
                }
            }
            Class::CertFailure(_) => c.last_fail = c.last_fail.max(Some(obs.t)),
            Class::OtherFailure => {}
        }
        let ps = match c.per_server.iter_mut().position(|p| p.server == obs.server) {
            Some(i) => c.per_server.get_mut(i),
            None if c.per_server.len() < MAX_SERVERS_PER_CLIENT => {
                c.per_server.push(PerServer {
                    server: obs.server,
                    ok: None,
                    rejected: None,
                });
                c.per_server.last_mut()
            }
            None => None,
        };
        if let Some(p) = ps {
            match class {
                Class::Success => p.ok = p.ok.max(Some(obs.t)),
                Class::CertFailure(_) => p.rejected = p.rejected.max(Some(obs.t)),
                Class::OtherFailure => {}
            }
        }
        let after = Some(c.last);
        self.clients.to_back(&obs.client);
        self.retally(before, after);
    }

    fn retally(&mut self, before: Option<Last>, after: Option<Last>) {
        if before == after {
            return;
        }
        match before {
            Some(Last::Success) => self.n_succeeding = self.n_succeeding.saturating_sub(1),
            Some(Last::CertFailure) => self.n_failing = self.n_failing.saturating_sub(1),
            _ => {}
        }
        match after {
            Some(Last::Success) => self.n_succeeding += 1,
            Some(Last::CertFailure) => self.n_failing += 1,
            _ => {}
        }
    }

    /// Removes what is older than the window before `now`.
    pub fn expire(&mut self, now: Timestamp, window_us: i64, servers: &mut Servers) {
        while let Some(front) = self.entries.front() {
            if now.since(front.t) <= window_us {
                break;
            }
            self.evict_entry(servers);
        }
        while let Some((ip, c)) = self.clients.front() {
            if now.since(c.last_t) <= window_us {
                break;
            }
            let ip = *ip;
            self.remove_client(ip);
        }
    }

    /// Clients whose latest verdict is a certificate failure: (start of their failure run, address).
    pub fn failing(&self) -> impl Iterator<Item = (Timestamp, IpAddr)> + '_ {
        self.clients
            .iter()
            .filter(|(_, c)| c.last == Last::CertFailure)
            .map(|(ip, c)| (c.fail_since.unwrap_or(c.last_t), *ip))
    }

    /// The client succeeded on one server address and was rejected by another, within the window.
    pub fn client_is_split(&self, ip: IpAddr, now: Timestamp, window_us: i64) -> bool {
        let fresh = |t: Option<Timestamp>| t.is_some_and(|t| now.since(t) <= window_us);
        self.clients.get(&ip).is_some_and(|c| {
            c.per_server.iter().any(|a| {
                fresh(a.ok)
                    && c.per_server
                        .iter()
                        .any(|b| fresh(b.rejected) && b.server != a.server)
            })
        })
    }

    /// Some client succeeded, within the window, under at least two of `keys`: it trusts both,
    /// as clients do during a planned rotation.
    pub fn a_client_trusts_several(&self, keys: &[KeyId], now: Timestamp, window_us: i64) -> bool {
        self.clients.values().any(|c| {
            c.ok_keys
                .iter()
                .filter(|(k, t)| now.since(*t) <= window_us && keys.contains(k))
                .count()
                >= 2
        })
    }

    /// Distinct clients with a success / a certificate failure on `addr` within the window.
    pub fn clients_on(&self, addr: SocketAddr, now: Timestamp, window_us: i64) -> (u32, u32) {
        let fresh = |t: Option<Timestamp>| t.is_some_and(|t| now.since(t) <= window_us);
        let mut ok = 0;
        let mut bad = 0;
        for p in self
            .clients
            .values()
            .flat_map(|c| c.per_server.iter())
            .filter(|p| p.server == addr)
        {
            ok += u32::from(fresh(p.ok));
            bad += u32::from(fresh(p.rejected));
        }
        (ok, bad)
    }
}

#[cfg(test)]
mod tests;
