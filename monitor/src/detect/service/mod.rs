//! One service's detector state: its sliding window and the rules evaluated on it.
//!
//! Consumes classified observations (one per connection) and presented CA keys (chains, probes);
//! produces the service's events. One file per concern:
//!
//! | file | concern |
//! |---|---|
//! | [`window`] | the sliding window and its tallies (clients, CA keys, rejecting side) |
//! | [`servers`] | server addresses: window counts and the CA key each presents |
//! | [`collapse`] | the trust state machine: degraded, collapse, recovery |
//! | [`divergence`] | replicas that disagree: CA changes, presented keys, alternation, outcome split |
//! | [`reference`] | presented CAs against the trusted reference |
//! | [`snapshot`] | the service as `/api/state`, metrics and the report show it |
//!
//! Every rule gets the same [`Ctx`]: the configuration, the trusted reference, the counters and
//! where events go.

mod collapse;
mod divergence;
mod reference;
mod servers;
mod snapshot;
mod window;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use hashlink::DefaultHashBuilder;

pub use collapse::TrustState;
pub use snapshot::{CaKeySnapshot, ClientSnapshot, ServerSnapshot, ServiceSnapshot};
pub use window::Counts;
pub(crate) use window::Obs;

use super::event::{Event, EventDetail};
use super::{DetectConfig, DetectStats};
use crate::base::{KeyId, Timestamp};
use crate::trust::TrustedReference;
use collapse::TrustMachine;
use divergence::DivergenceState;
use servers::Servers;
use window::{Window, WindowLimits};

/// What every rule of a service needs besides its own state.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a DetectConfig,
    pub reference: &'a TrustedReference,
    pub stats: &'a mut DetectStats,
    pub out: &'a mut Vec<Event>,
}

/// All detector state of one service.
#[derive(Debug)]
pub(crate) struct ServiceState {
    name: Arc<str>,
    /// The servers of this service are replicas of one CloudCore (a configured port or a probed
    /// target), so CA divergence between them is checked.
    replicas: bool,
    /// Its clients verify the server's chain (not the certificate service): a client that
    /// succeeds under two CA keys trusts both (a rotation).
    clients_verify: bool,
    window: Window,
    servers: Servers,
    trust: TrustMachine,
    divergence: DivergenceState,
    /// (server, key, sha256 of the CA when seen) already reported as inconsistent. Hashed with
    /// foldhash (seeded per process): the keys come from presented certificates.
    inconsistent_seen: HashSet<(Option<SocketAddr>, KeyId, Option<String>), DefaultHashBuilder>,
}

impl ServiceState {
    pub fn new(name: Arc<str>, replicas: bool) -> Self {
        ServiceState {
            clients_verify: name.as_ref() != crate::config::CERT_SERVICE,
            name,
            replicas,
            window: Window::default(),
            servers: Servers::default(),
            trust: TrustMachine::default(),
            divergence: DivergenceState::default(),
            inconsistent_seen: HashSet::default(),
        }
    }

    pub fn state(&self) -> TrustState {
        self.trust.state
    }

    /// The CA key `server` presents (chains, probes), if known.
    pub fn presented_key(&self, server: SocketAddr) -> Option<KeyId> {
        self.servers
            .get(&server)
            .and_then(|s| s.presented.as_ref())
            .map(|p| p.key.clone())
    }

    /// True once after certificate failures start: probe the replicas (their answer is awaited).
    pub fn take_probe_request(&mut self, now: Timestamp) -> bool {
        let taken = std::mem::take(&mut self.trust.probe_request);
        if taken {
            self.trust.probe_pending_since = Some(now);
        }
        taken
    }

    /// A probe that started at `started` answered: a collapse awaiting the probes that failures
    /// asked for (started after the request) waits no longer.
    pub fn probe_answered(&mut self, started: Timestamp) {
        if self
            .trust
            .probe_pending_since
            .is_some_and(|asked| started >= asked)
        {
            self.trust.probe_pending_since = None;
        }
    }

    fn event(&self, at: Timestamp, detail: EventDetail) -> Event {
        Event {
            at,
            service: self.name.clone(),
            detail,
        }
    }

    /// Adds one connection, then re-evaluates the rules at its time.
    pub fn observe(&mut self, obs: Obs, ctx: &mut Ctx<'_>) {
        let now = obs.t;
        let cfg = ctx.cfg;
        self.window.expire(now, cfg.window_us, &mut self.servers);
        if !self.servers.contains(&obs.server) && !self.servers.make_room(cfg.limits.max_servers) {
            ctx.stats.servers_dropped += 1;
            return;
        }
        // Attribute a TLS 1.3 connection to the key its server presents (probe), when fresh.
        let mut obs = obs;
        if obs.ca.is_none() {
            obs.ca = self
                .servers
                .fresh_key(&obs.server, now, cfg.window_us)
                .map(|p| p.key.clone());
        }
        if let Some(ca) = &obs.ca
            && !self.window.ca_keys.contains_key(ca)
            && self.window.ca_keys.len() >= cfg.limits.max_ca_keys
        {
            ctx.stats.ca_keys_dropped += 1;
            obs.ca = None;
        }

        let limits = WindowLimits {
            window_us: cfg.window_us,
            max_clients: cfg.limits.max_clients,
            max_entries: cfg.limits.max_window_entries,
        };
        self.window.add(&obs, &mut self.servers, limits, ctx.stats);
        self.trust.observed(&obs, now);
        self.evaluate(now, ctx);
        if !self.divergence.split_active
            && self.window.client_is_split(obs.client, now, cfg.window_us)
        {
            self.check_split(now, ctx);
        }
    }

    /// Window expiry at packet time `now`; re-evaluates what expiry can change.
    pub fn tick(&mut self, now: Timestamp, ctx: &mut Ctx<'_>) {
        self.window
            .expire(now, ctx.cfg.window_us, &mut self.servers);
        self.evaluate(now, ctx);
        if self.divergence.split_active {
            self.divergence.split_active = self.split_holds(now, ctx.cfg);
        }
        self.check_key_divergence(now, ctx);
    }
}
