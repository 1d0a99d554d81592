//! The sliding window of one service: every judged connection for `--trust-window` of packet time,
//! with running tallies so the rules never rescan it.
//!
//! Consumes [`Obs`]ervations (one per connection) and the current time; keeps per client its
//! latest verdict and per-server outcomes, per CA key and overall handshake [`Counts`], and
//! certificate failures by rejecting side. Expiry removes what fell out of the window and keeps the
//! tallies exact.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::servers::Servers;
use crate::base::{KeyId, Timestamp};
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

/// A client's outcomes on one server address in the window.
#[derive(Clone, Debug)]
pub(super) struct PerServer {
    pub server: SocketAddr,
    pub ok: u32,
    pub rejected: u32,
}

/// Server addresses remembered per client (for the outcome split).
const MAX_SERVERS_PER_CLIENT: usize = 64;

/// A client address in the window.
#[derive(Clone, Debug)]
pub(super) struct ClientStat {
    /// Observations of this client in the window.
    pub n: u32,
    pub last: Last,
    pub last_t: Timestamp,
    /// Start of the current run of certificate failures.
    pub fail_since: Option<Timestamp>,
    pub per_server: Vec<PerServer>,
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

/// The window and its tallies.
#[derive(Debug, Default)]
pub(super) struct Window {
    entries: VecDeque<Obs>,
    pub clients: HashMap<IpAddr, ClientStat>,
    /// Clients whose latest verdict is a certificate failure / a success.
    pub n_failing: u32,
    pub n_succeeding: u32,
    pub ca_keys: BTreeMap<KeyId, Counts>,
    pub counts: Counts,
    pub rejecters: Rejecters,
}

impl Window {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Failing clients / (failing + succeeding clients).
    pub fn share(&self) -> f64 {
        let total = self.n_failing + self.n_succeeding;
        if total == 0 {
            0.0
        } else {
            f64::from(self.n_failing) / f64::from(total)
        }
    }

    /// Adds one observation (the caller checked the bounds); `servers` get their counts.
    pub fn add(&mut self, obs: &Obs, servers: &mut Servers) {
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
        let class = obs.class;
        let c = self.clients.entry(obs.client).or_insert(ClientStat {
            n: 0,
            last: Last::Other,
            last_t: obs.t,
            fail_since: None,
            per_server: Vec::new(),
        });
        let before = if c.n == 0 { None } else { Some(c.last) };
        c.n = c.n.saturating_add(1);
        if before.is_none() || obs.t >= c.last_t {
            if Last::from(class) == Last::CertFailure && c.last != Last::CertFailure {
                c.fail_since = Some(obs.t);
            }
            if before.is_none() && Last::from(class) == Last::CertFailure {
                c.fail_since = Some(obs.t);
            }
            c.last = class.into();
            c.last_t = obs.t;
        }
        let ps = match c.per_server.iter_mut().position(|p| p.server == obs.server) {
            Some(i) => c.per_server.get_mut(i),
            None if c.per_server.len() < MAX_SERVERS_PER_CLIENT => {
                c.per_server.push(PerServer {
                    server: obs.server,
                    ok: 0,
                    rejected: 0,
                });
                c.per_server.last_mut()
            }
            None => None,
        };
        if let Some(p) = ps {
            match class {
                Class::Success => p.ok += 1,
                Class::CertFailure(_) => p.rejected += 1,
                Class::OtherFailure => {}
            }
        }
        let after = Some(c.last);
        self.retally(before, after);
        self.entries.push_back(obs.clone());
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

    /// Removes what is older than `window_us` before `now`.
    pub fn expire(&mut self, now: Timestamp, window_us: i64, servers: &mut Servers) {
        while let Some(front) = self.entries.front() {
            if now.since(front.t) <= window_us {
                break;
            }
            let Some(obs) = self.entries.pop_front() else {
                break;
            };
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
            let mut removed = None;
            if let Some(c) = self.clients.get_mut(&obs.client) {
                c.n = c.n.saturating_sub(1);
                if let Some(i) = c.per_server.iter().position(|p| p.server == obs.server)
                    && let Some(p) = c.per_server.get_mut(i)
                {
                    match obs.class {
                        Class::Success => p.ok = p.ok.saturating_sub(1),
                        Class::CertFailure(_) => p.rejected = p.rejected.saturating_sub(1),
                        Class::OtherFailure => {}
                    }
                    if p.ok == 0 && p.rejected == 0 {
                        c.per_server.swap_remove(i);
                    }
                }
                if c.n == 0 {
                    removed = Some(c.last);
                }
            }
            if let Some(last) = removed {
                self.clients.remove(&obs.client);
                self.retally(Some(last), None);
            }
        }
    }

    /// Clients whose latest verdict is a certificate failure: (start of their failure run, address).
    pub fn failing(&self) -> impl Iterator<Item = (Timestamp, IpAddr)> + '_ {
        self.clients
            .iter()
            .filter(|(_, c)| c.last == Last::CertFailure)
            .map(|(ip, c)| (c.fail_since.unwrap_or(c.last_t), *ip))
    }

    /// The client succeeded on one server address and was rejected by another in the window.
    pub fn client_is_split(&self, ip: IpAddr) -> bool {
        self.clients.get(&ip).is_some_and(|c| {
            c.per_server.iter().any(|a| {
                a.ok > 0
                    && c.per_server
                        .iter()
                        .any(|b| b.rejected > 0 && b.server != a.server)
            })
        })
    }

    /// Distinct clients with a success / a certificate failure on `addr` in the window.
    pub fn clients_on(&self, addr: SocketAddr) -> (u32, u32) {
        let mut ok = 0;
        let mut bad = 0;
        for p in self
            .clients
            .values()
            .flat_map(|c| c.per_server.iter())
            .filter(|p| p.server == addr)
        {
            ok += u32::from(p.ok > 0);
            bad += u32::from(p.rejected > 0);
        }
        (ok, bad)
    }
}
