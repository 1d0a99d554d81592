//! Per-service sliding window and trust state machine.
//!
//! Consumes classified observations (one per connection) and presented CA keys (chains, probes);
//! keeps bounded counts per client, per server address and per CA key over the window, and emits
//! the service's events: collapse, recovery, CA change, divergence (presented keys, alternation,
//! outcome split) and inconsistency with the trusted reference.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use super::classify::{Class, RejectingSide};
use super::event::{
    CaChange, CaSource, Collapse, Divergence, DivergenceBasis, Event, EventDetail, Inconsistent,
    Recovered, Replica,
};
use super::{DetectConfig, DetectStats};
use crate::base::Timestamp;
use crate::trust::{PresentedCa, TrustedReference};

/// Trust state of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustState {
    Healthy,
    /// Certificate failures in the window, below the collapse rule.
    Degraded,
    Collapsed,
    /// Successes resumed after a collapse.
    Recovered,
}

/// One connection as the window keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Obs {
    pub t: Timestamp,
    pub client: IpAddr,
    pub server: SocketAddr,
    pub class: Class,
    pub ca: Option<Arc<str>>,
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
    fn apply(&mut self, class: Class, add: bool) {
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
    fn is_zero(&self) -> bool {
        self.handshakes == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Last {
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

#[derive(Clone, Debug)]
struct PerServer {
    server: SocketAddr,
    ok: u32,
    rejected: u32,
}

/// A client address in the window.
#[derive(Clone, Debug)]
struct ClientStat {
    /// Observations of this client in the window.
    n: u32,
    last: Last,
    last_t: Timestamp,
    /// Start of the current run of certificate failures.
    fail_since: Option<Timestamp>,
    per_server: Vec<PerServer>,
}

/// The CA key a server address presents.
#[derive(Clone, Debug)]
struct PresentedKey {
    key: Arc<str>,
    ca: PresentedCa,
    source: CaSource,
    last_seen: Timestamp,
}

#[derive(Clone, Debug, Default)]
struct ServerStat {
    counts: Counts,
    presented: Option<PresentedKey>,
    /// Keys this address presented before its current one, with when they were last seen.
    replaced: Vec<(PresentedCa, Timestamp)>,
}

/// Keys this small are kept per address for the alternation check.
const MAX_REPLACED: usize = 4;

fn same_ca(a: &PresentedCa, b: &PresentedCa) -> bool {
    match (&a.der_sha256, &b.der_sha256) {
        (Some(x), Some(y)) if x == y => return true,
        _ => {}
    }
    a.key_ids.iter().any(|k| b.key_ids.contains(k))
}

/// All window state of one service.
#[derive(Debug)]
pub(crate) struct ServiceState {
    name: Arc<str>,
    window: VecDeque<Obs>,
    clients: HashMap<IpAddr, ClientStat>,
    n_failing: u32,
    n_succeeding: u32,
    servers: BTreeMap<SocketAddr, ServerStat>,
    ca_keys: BTreeMap<Arc<str>, Counts>,
    counts: Counts,
    /// Certificate failures in the window by rejecting side `[client, server, unknown]`.
    rejecters: [u32; 3],
    state: TrustState,
    state_since: Option<Timestamp>,
    collapsed_at: Option<Timestamp>,
    collapse_prev_ca: Option<Arc<str>>,
    ok_since_collapse: HashSet<IpAddr>,
    last_good_ca: Option<Arc<str>>,
    last_fail_ca: Option<Arc<str>>,
    last_fail_server: Option<SocketAddr>,
    /// The key set of the divergence last reported (None when the replicas agree).
    divergence_keys: Option<Vec<Arc<str>>>,
    split_active: bool,
    /// The servers of this service are replicas of one CloudCore (a configured port), so CA
    /// divergence between them is checked.
    replicas: bool,
    inconsistent_seen: HashSet<(Option<SocketAddr>, Arc<str>)>,
    /// Failures started since the last [`ServiceState::take_probe_request`].
    probe_request: bool,
}

impl ServiceState {
    pub fn new(name: Arc<str>, replicas: bool) -> Self {
        ServiceState {
            name,
            window: VecDeque::new(),
            clients: HashMap::new(),
            n_failing: 0,
            n_succeeding: 0,
            servers: BTreeMap::new(),
            ca_keys: BTreeMap::new(),
            counts: Counts::default(),
            rejecters: [0; 3],
            state: TrustState::Healthy,
            state_since: None,
            collapsed_at: None,
            collapse_prev_ca: None,
            ok_since_collapse: HashSet::new(),
            last_good_ca: None,
            last_fail_ca: None,
            last_fail_server: None,
            divergence_keys: None,
            split_active: false,
            replicas,
            inconsistent_seen: HashSet::new(),
            probe_request: false,
        }
    }

    pub fn state(&self) -> TrustState {
        self.state
    }

    /// The CA key `server` presents (chains, probes), if known.
    pub fn presented_key(&self, server: SocketAddr) -> Option<Arc<str>> {
        self.servers
            .get(&server)
            .and_then(|s| s.presented.as_ref())
            .map(|p| p.key.clone())
    }

    pub fn take_probe_request(&mut self) -> bool {
        std::mem::take(&mut self.probe_request)
    }

    fn event(&self, at: Timestamp, detail: EventDetail) -> Event {
        Event {
            at,
            service: self.name.clone(),
            detail,
        }
    }

    /// Adds one connection, then re-evaluates the rules at its time.
    pub fn observe(
        &mut self,
        obs: Obs,
        cfg: &DetectConfig,
        stats: &mut DetectStats,
        out: &mut Vec<Event>,
    ) {
        let now = obs.t;
        self.expire(now, cfg);
        if self.window.len() >= cfg.limits.max_window_entries {
            stats.window_entries_dropped += 1;
            return;
        }
        if !self.clients.contains_key(&obs.client) && self.clients.len() >= cfg.limits.max_clients {
            stats.clients_dropped += 1;
            return;
        }
        if !self.servers.contains_key(&obs.server) && !self.make_room_for_server(cfg) {
            stats.servers_dropped += 1;
            return;
        }
        // Attribute a TLS 1.3 connection to the key its server presents (probe), when fresh.
        let mut obs = obs;
        if obs.ca.is_none() {
            obs.ca = self
                .servers
                .get(&obs.server)
                .and_then(|s| s.presented.as_ref())
                .filter(|p| now.since(p.last_seen) <= cfg.window_us)
                .map(|p| p.key.clone());
        }
        if let Some(ca) = &obs.ca
            && !self.ca_keys.contains_key(ca)
            && self.ca_keys.len() >= cfg.limits.max_ca_keys
        {
            stats.ca_keys_dropped += 1;
            obs.ca = None;
        }

        self.add(&obs, cfg);
        match obs.class {
            Class::Success => {
                if let Some(ca) = &obs.ca {
                    self.last_good_ca = Some(ca.clone());
                }
                if self.state == TrustState::Collapsed {
                    self.ok_since_collapse.insert(obs.client);
                }
            }
            Class::CertFailure(_) => {
                self.last_fail_server = Some(obs.server);
                if obs.ca.is_some() {
                    self.last_fail_ca = obs.ca.clone();
                }
                if matches!(self.state, TrustState::Healthy | TrustState::Recovered) {
                    self.set_state(TrustState::Degraded, now);
                    self.probe_request = true;
                }
            }
            Class::OtherFailure => {}
        }
        self.evaluate(now, cfg, out);
        if !self.split_active && self.client_is_split(obs.client) {
            self.check_split(now, cfg, out);
        }
    }

    /// Window expiry at packet time `now`; re-evaluates what expiry can change.
    pub fn tick(&mut self, now: Timestamp, cfg: &DetectConfig, out: &mut Vec<Event>) {
        self.expire(now, cfg);
        self.evaluate(now, cfg, out);
        if self.split_active {
            self.split_active = self.split_evidence(cfg).is_some();
        }
        self.check_key_divergence(now, cfg, out);
    }

    fn make_room_for_server(&mut self, cfg: &DetectConfig) -> bool {
        if self.servers.len() < cfg.limits.max_servers {
            return true;
        }
        // Evict an address with nothing in the window (only its last presented key is lost).
        let idle = self
            .servers
            .iter()
            .filter(|(_, s)| s.counts.is_zero())
            .min_by_key(|(_, s)| s.presented.as_ref().map(|p| p.last_seen));
        match idle.map(|(a, _)| *a) {
            Some(a) => {
                self.servers.remove(&a);
                true
            }
            None => false,
        }
    }

    fn add(&mut self, obs: &Obs, _cfg: &DetectConfig) {
        self.counts.apply(obs.class, true);
        if let Class::CertFailure(side) = obs.class
            && let Some(r) = self.rejecters.get_mut(side.index())
        {
            *r = r.saturating_add(1);
        }
        if let Some(s) = self.servers.get_mut(&obs.server) {
            s.counts.apply(obs.class, true);
        } else {
            let mut s = ServerStat::default();
            s.counts.apply(obs.class, true);
            self.servers.insert(obs.server, s);
        }
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
            None if c.per_server.len() < 64 => {
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
        self.window.push_back(obs.clone());
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

    fn expire(&mut self, now: Timestamp, cfg: &DetectConfig) {
        while let Some(front) = self.window.front() {
            if now.since(front.t) <= cfg.window_us {
                break;
            }
            let Some(obs) = self.window.pop_front() else {
                break;
            };
            self.counts.apply(obs.class, false);
            if let Class::CertFailure(side) = obs.class
                && let Some(r) = self.rejecters.get_mut(side.index())
            {
                *r = r.saturating_sub(1);
            }
            if let Some(s) = self.servers.get_mut(&obs.server) {
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

    fn set_state(&mut self, s: TrustState, now: Timestamp) {
        self.state = s;
        self.state_since = Some(now);
    }

    fn share(&self) -> f64 {
        let total = self.n_failing + self.n_succeeding;
        if total == 0 {
            0.0
        } else {
            f64::from(self.n_failing) / f64::from(total)
        }
    }

    /// The trust state machine.
    fn evaluate(&mut self, now: Timestamp, cfg: &DetectConfig, out: &mut Vec<Event>) {
        match self.state {
            TrustState::Degraded if self.n_failing == 0 => self.set_state(TrustState::Healthy, now),
            TrustState::Degraded
                if self.n_failing as usize >= cfg.min_failing_clients
                    && self.share() >= cfg.min_failure_share =>
            {
                let e = self.collapse_event(now, cfg);
                self.collapsed_at = Some(now);
                self.collapse_prev_ca = self.last_good_ca.clone();
                self.ok_since_collapse.clear();
                self.set_state(TrustState::Collapsed, now);
                out.push(e);
            }
            TrustState::Collapsed
                if self.ok_since_collapse.len() >= cfg.recover_min_clients
                    && self.share() < cfg.min_failure_share =>
            {
                let collapsed_at = self.collapsed_at.unwrap_or(now);
                let e = self.event(
                    now,
                    EventDetail::TrustRecovered(Recovered {
                        collapsed_at,
                        ca_key_id: self.last_good_ca.as_deref().map(str::to_string),
                        previous_ca_key_id: self.collapse_prev_ca.as_deref().map(str::to_string),
                        succeeding_clients: self.n_succeeding,
                        failing_clients: self.n_failing,
                    }),
                );
                self.ok_since_collapse.clear();
                self.set_state(TrustState::Recovered, now);
                out.push(e);
            }
            _ => {}
        }
    }

    fn collapse_event(&self, now: Timestamp, cfg: &DetectConfig) -> Event {
        let mut failing: Vec<(Timestamp, IpAddr)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.last == Last::CertFailure)
            .map(|(ip, c)| (c.fail_since.unwrap_or(c.last_t), *ip))
            .collect();
        failing.sort();
        // The collapse began with the earliest failure run that started within one window of the
        // detection; a client failing for longer (misconfigured) does not date it.
        let first_failure = failing
            .iter()
            .map(|(t, _)| *t)
            .find(|t| now.since(*t) <= cfg.window_us)
            .or_else(|| failing.first().map(|(t, _)| *t))
            .unwrap_or(now);
        let current = self.last_fail_ca.clone().or_else(|| {
            self.last_fail_server
                .and_then(|s| self.servers.get(&s))
                .and_then(|s| s.presented.as_ref())
                .map(|p| p.key.clone())
        });
        let servers: Vec<SocketAddr> = self
            .servers
            .iter()
            .filter(|(_, s)| s.counts.cert_failures > 0)
            .map(|(a, _)| *a)
            .collect();
        self.event(
            now,
            EventDetail::TrustCollapse(Collapse {
                previous_ca_key_id: self.last_good_ca.as_deref().map(str::to_string),
                current_ca_key_id: current.as_deref().map(str::to_string),
                rejecting_side: RejectingSide::from_counts(self.rejecters),
                failing_clients: self.n_failing,
                succeeding_clients: self.n_succeeding,
                failure_share: self.share(),
                clients: failing
                    .iter()
                    .take(cfg.limits.max_listed_clients)
                    .map(|(_, ip)| *ip)
                    .collect(),
                handshakes: self.counts.handshakes,
                cert_failures: self.counts.cert_failures,
                first_failure,
                servers,
            }),
        )
    }

    fn client_is_split(&self, ip: IpAddr) -> bool {
        self.clients.get(&ip).is_some_and(|c| {
            c.per_server.iter().any(|a| {
                a.ok > 0
                    && c.per_server
                        .iter()
                        .any(|b| b.rejected > 0 && b.server != a.server)
            })
        })
    }

    /// TLS 1.3 passive divergence: clients that succeed on replica A and are rejected on
    /// certificate grounds by replica B in the window. Returns the strongest pair `(A, B)`, its
    /// client count, and distinct ok / rejected clients per address.
    fn split_evidence(&self, cfg: &DetectConfig) -> Option<SplitEvidence> {
        let mut pairs: HashMap<(SocketAddr, SocketAddr), u32> = HashMap::new();
        let mut ok_clients: HashMap<SocketAddr, u32> = HashMap::new();
        let mut bad_clients: HashMap<SocketAddr, u32> = HashMap::new();
        for c in self.clients.values() {
            for p in &c.per_server {
                if p.ok > 0 {
                    *ok_clients.entry(p.server).or_default() += 1;
                }
                if p.rejected > 0 {
                    *bad_clients.entry(p.server).or_default() += 1;
                }
            }
            for a in c.per_server.iter().filter(|p| p.ok > 0) {
                for b in c
                    .per_server
                    .iter()
                    .filter(|p| p.rejected > 0 && p.server != a.server)
                {
                    *pairs.entry((a.server, b.server)).or_default() += 1;
                }
            }
        }
        let (pair, n) = pairs
            .into_iter()
            .filter(|(_, n)| *n as usize >= cfg.split_min_clients)
            .max_by_key(|((a, b), n)| (*n, std::cmp::Reverse(*a), std::cmp::Reverse(*b)))?;
        Some(SplitEvidence {
            pair,
            n,
            ok_clients,
            bad_clients,
        })
    }

    fn check_split(&mut self, now: Timestamp, cfg: &DetectConfig, out: &mut Vec<Event>) {
        if !self.replicas {
            return;
        }
        let Some(SplitEvidence {
            pair: (good, bad),
            n,
            ok_clients,
            bad_clients,
        }) = self.split_evidence(cfg)
        else {
            return;
        };
        self.split_active = true;
        let replicas = [good, bad]
            .iter()
            .map(|addr| {
                self.replica(
                    *addr,
                    ok_clients.get(addr).copied(),
                    bad_clients.get(addr).copied(),
                    now,
                    cfg,
                )
            })
            .collect::<Vec<_>>();
        let ca_key_ids = distinct_keys(&replicas);
        out.push(self.event(
            now,
            EventDetail::CaDivergence(Divergence {
                basis: DivergenceBasis::OutcomeSplit,
                replicas,
                split_clients: n,
                ca_key_ids,
            }),
        ));
    }

    fn replica(
        &self,
        addr: SocketAddr,
        ok: Option<u32>,
        bad: Option<u32>,
        now: Timestamp,
        cfg: &DetectConfig,
    ) -> Replica {
        let s = self.servers.get(&addr);
        let p = s
            .and_then(|s| s.presented.as_ref())
            .filter(|p| now.since(p.last_seen) <= cfg.window_us);
        let (ok, bad) = match (ok, bad) {
            (None, None) => self.clients_on(addr),
            (ok, bad) => (ok.unwrap_or(0), bad.unwrap_or(0)),
        };
        Replica {
            address: addr,
            ca_key_id: p.map(|p| p.key.to_string()),
            ca_source: p.map(|p| p.source),
            successes: s.map_or(0, |s| s.counts.successes),
            cert_failures: s.map_or(0, |s| s.counts.cert_failures),
            clients_succeeded: ok,
            clients_rejected: bad,
        }
    }

    fn clients_on(&self, addr: SocketAddr) -> (u32, u32) {
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

    /// A server address presented `ca` (chain, probe): CA change, divergence, inconsistency.
    #[allow(clippy::too_many_arguments)]
    pub fn present(
        &mut self,
        server: SocketAddr,
        ca: PresentedCa,
        source: CaSource,
        now: Timestamp,
        cfg: &DetectConfig,
        reference: &TrustedReference,
        stats: &mut DetectStats,
        out: &mut Vec<Event>,
    ) {
        let Some(key) = ca.key_ids.first().map(|k| Arc::<str>::from(k.as_str())) else {
            return;
        };
        if !self.servers.contains_key(&server) && !self.make_room_for_server(cfg) {
            stats.servers_dropped += 1;
            return;
        }
        self.check_reference(
            Some(server),
            &key,
            &ca,
            source,
            now,
            cfg,
            reference,
            stats,
            out,
        );
        let s = self.servers.entry(server).or_default();
        let previous = s.presented.take();
        match previous {
            Some(mut p) if same_ca(&p.ca, &ca) => {
                p.last_seen = p.last_seen.max(now);
                if p.ca.der_sha256.is_none() {
                    p.ca.der_sha256 = ca.der_sha256;
                }
                s.presented = Some(p);
                return;
            }
            Some(p) => {
                let back = s
                    .replaced
                    .iter()
                    .any(|(old, seen)| same_ca(old, &ca) && now.since(*seen) <= cfg.window_us);
                s.replaced.retain(|(old, _)| !same_ca(old, &ca));
                if s.replaced.len() >= MAX_REPLACED {
                    s.replaced.remove(0);
                }
                s.replaced.push((p.ca.clone(), p.last_seen));
                let prev_key = p.key.clone();
                s.presented = Some(PresentedKey {
                    key: key.clone(),
                    ca,
                    source,
                    last_seen: now,
                });
                if back {
                    let mut keys = vec![prev_key.clone(), key.clone()];
                    keys.sort();
                    if self.divergence_keys.as_ref() != Some(&keys) {
                        self.divergence_keys = Some(keys.clone());
                        let replica = self.replica(server, None, None, now, cfg);
                        out.push(self.event(
                            now,
                            EventDetail::CaDivergence(Divergence {
                                basis: DivergenceBasis::Alternating,
                                replicas: vec![replica],
                                split_clients: 0,
                                ca_key_ids: keys.iter().map(|k| k.to_string()).collect(),
                            }),
                        ));
                    }
                } else {
                    out.push(self.event(
                        now,
                        EventDetail::CaChanged(CaChange {
                            server: Some(server),
                            previous_ca_key_id: prev_key.to_string(),
                            current_ca_key_id: key.to_string(),
                            source,
                        }),
                    ));
                }
            }
            None => {
                s.presented = Some(PresentedKey {
                    key,
                    ca,
                    source,
                    last_seen: now,
                })
            }
        }
        self.check_key_divergence(now, cfg, out);
    }

    /// Different addresses presenting different CA keys at the same time (within the window).
    fn check_key_divergence(&mut self, now: Timestamp, cfg: &DetectConfig, out: &mut Vec<Event>) {
        if !self.replicas {
            return;
        }
        let fresh: Vec<(SocketAddr, &PresentedKey)> = self
            .servers
            .iter()
            .filter_map(|(a, s)| s.presented.as_ref().map(|p| (*a, p)))
            .filter(|(_, p)| now.since(p.last_seen) <= cfg.window_us)
            .collect();
        let mut groups: Vec<&PresentedKey> = Vec::new();
        for (_, p) in &fresh {
            if !groups.iter().any(|g| same_ca(&g.ca, &p.ca)) {
                groups.push(p);
            }
        }
        if groups.len() < 2 {
            if self.divergence_keys.as_ref().is_some_and(|k| k.len() >= 2)
                && !self.alternating_fresh(now, cfg)
            {
                self.divergence_keys = None;
            }
            return;
        }
        let mut keys: Vec<Arc<str>> = groups.iter().map(|g| g.key.clone()).collect();
        keys.sort();
        if self.divergence_keys.as_ref() == Some(&keys) {
            return;
        }
        self.divergence_keys = Some(keys.clone());
        let addrs: Vec<SocketAddr> = fresh.iter().map(|(a, _)| *a).collect();
        let replicas = addrs
            .into_iter()
            .map(|a| self.replica(a, None, None, now, cfg))
            .collect();
        out.push(self.event(
            now,
            EventDetail::CaDivergence(Divergence {
                basis: DivergenceBasis::PresentedKeys,
                replicas,
                split_clients: 0,
                ca_key_ids: keys.iter().map(|k| k.to_string()).collect(),
            }),
        ));
    }

    fn alternating_fresh(&self, now: Timestamp, cfg: &DetectConfig) -> bool {
        self.servers.values().any(|s| {
            s.replaced
                .iter()
                .any(|(_, t)| now.since(*t) <= cfg.window_us)
        })
    }

    /// Compares a presented CA with the reference; reports each (address, key) once.
    #[allow(clippy::too_many_arguments)]
    pub fn check_reference(
        &mut self,
        server: Option<SocketAddr>,
        key: &Arc<str>,
        ca: &PresentedCa,
        source: CaSource,
        now: Timestamp,
        cfg: &DetectConfig,
        reference: &TrustedReference,
        stats: &mut DetectStats,
        out: &mut Vec<Event>,
    ) {
        if reference.is_empty() {
            return;
        }
        let id = (server, key.clone());
        // A hash-only reference can compare a DER-bearing sighting later: key on the hash too.
        if ca.der_sha256.is_none() && self.inconsistent_seen.contains(&id) {
            return;
        }
        let disagreements = reference.check(ca);
        if disagreements.is_empty() {
            return;
        }
        let id = match &ca.der_sha256 {
            Some(h) => (server, Arc::<str>::from(format!("{key}/{h}"))),
            None => id,
        };
        if self.inconsistent_seen.contains(&id) {
            return;
        }
        if self.inconsistent_seen.len()
            >= cfg
                .limits
                .max_servers
                .saturating_mul(cfg.limits.max_ca_keys)
        {
            stats.inconsistencies_unreported += 1;
            return;
        }
        self.inconsistent_seen.insert(id);
        out.push(self.event(
            now,
            EventDetail::CaInconsistent(Inconsistent {
                server,
                presented: ca.clone(),
                source,
                disagreements,
            }),
        ));
    }

    /// The reference changed: every presented key is compared again.
    pub fn recheck_reference(
        &mut self,
        now: Timestamp,
        cfg: &DetectConfig,
        reference: &TrustedReference,
        stats: &mut DetectStats,
        out: &mut Vec<Event>,
    ) {
        self.inconsistent_seen.clear();
        let presented: Vec<(SocketAddr, PresentedKey)> = self
            .servers
            .iter()
            .filter_map(|(a, s)| s.presented.clone().map(|p| (*a, p)))
            .collect();
        for (addr, p) in presented {
            self.check_reference(
                Some(addr),
                &p.key,
                &p.ca,
                p.source,
                now,
                cfg,
                reference,
                stats,
                out,
            );
        }
    }

    pub fn snapshot(&self, cfg: &DetectConfig) -> ServiceSnapshot {
        let mut failing: Vec<ClientSnapshot> = self
            .clients
            .iter()
            .filter(|(_, c)| c.last == Last::CertFailure)
            .map(|(ip, c)| ClientSnapshot {
                address: *ip,
                failing_since: c.fail_since.map(Timestamp::rfc3339),
                last_seen: c.last_t.rfc3339(),
            })
            .collect();
        failing.sort_by_key(|c| c.address);
        failing.truncate(cfg.limits.max_listed_clients);
        ServiceSnapshot {
            service: self.name.to_string(),
            state: self.state,
            state_since: self.state_since.map(Timestamp::rfc3339),
            window: self.counts,
            failing_clients: self.n_failing,
            succeeding_clients: self.n_succeeding,
            failing_client_list: failing,
            rejecting_side: RejectingSide::from_counts(self.rejecters),
            last_good_ca_key_id: self.last_good_ca.as_deref().map(str::to_string),
            ca_keys: self
                .ca_keys
                .iter()
                .map(|(k, c)| CaKeySnapshot {
                    ca_key_id: k.to_string(),
                    successes: c.successes,
                    failures: c.cert_failures,
                })
                .collect(),
            servers: self
                .servers
                .iter()
                .map(|(a, s)| ServerSnapshot {
                    address: *a,
                    presented_ca_key_id: s.presented.as_ref().map(|p| p.key.to_string()),
                    presented_source: s.presented.as_ref().map(|p| p.source),
                    presented_seen: s.presented.as_ref().map(|p| p.last_seen.rfc3339()),
                    window: s.counts,
                })
                .collect(),
            divergent_ca_key_ids: self
                .divergence_keys
                .as_ref()
                .map(|k| {
                    k.iter()
                        .map(|k| k.to_string())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

struct SplitEvidence {
    pair: (SocketAddr, SocketAddr),
    n: u32,
    ok_clients: HashMap<SocketAddr, u32>,
    bad_clients: HashMap<SocketAddr, u32>,
}

fn distinct_keys(replicas: &[Replica]) -> Vec<String> {
    let set: BTreeSet<String> = replicas
        .iter()
        .filter_map(|r| r.ca_key_id.clone())
        .collect();
    set.into_iter().collect()
}

/// A failing client in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClientSnapshot {
    pub address: IpAddr,
    pub failing_since: Option<String>,
    pub last_seen: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaKeySnapshot {
    pub ca_key_id: String,
    pub successes: u32,
    pub failures: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerSnapshot {
    pub address: SocketAddr,
    pub presented_ca_key_id: Option<String>,
    pub presented_source: Option<CaSource>,
    pub presented_seen: Option<String>,
    pub window: Counts,
}

/// One service, for the HTTP API, metrics and the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceSnapshot {
    pub service: String,
    pub state: TrustState,
    pub state_since: Option<String>,
    /// Handshake counts in the window.
    pub window: Counts,
    pub failing_clients: u32,
    pub succeeding_clients: u32,
    /// Up to `max_listed_clients` failing clients.
    pub failing_client_list: Vec<ClientSnapshot>,
    pub rejecting_side: RejectingSide,
    pub last_good_ca_key_id: Option<String>,
    /// CA keys seen in the window with their success / certificate-failure counts.
    pub ca_keys: Vec<CaKeySnapshot>,
    /// CA presented per server address, with that address's window counts.
    pub servers: Vec<ServerSnapshot>,
    /// Non-empty while replicas present different CA keys.
    pub divergent_ca_key_ids: Vec<String>,
}
