//! Trust-collapse detection: the stage after the analyzer.
//!
//! Consumes [`Connection`] records (time = `conn.end`, packet time, so files and live capture give
//! the same answers), probe results ([`crate::trust::probe`]) and the trusted-CA reference
//! ([`crate::trust`]); produces [`Event`]s (`trust_collapse`, `trust_recovered`, `ca_changed`,
//! `ca_divergence`, `ca_inconsistent`) and a [`Snapshot`] of every service's trust state. State is
//! kept per service (server port name) over a sliding window; every map is bounded by
//! [`DetectLimits`] and every drop is counted in [`DetectStats`].

pub mod classify;
pub mod event;
mod service;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use classify::{Class, RejectingSide, classify};
pub use event::{
    CaChange, CaSource, Collapse, CollapseScope, Divergence, DivergenceBasis, Event, EventDetail,
    Inconsistent, Recovered, Replica, Rotation, exit_worthy,
};
pub use service::{
    CaKeySnapshot, ClientSnapshot, Counts, ServerSnapshot, ServiceSnapshot, TrustState,
};

use crate::base::{KeyId, Timestamp};
use crate::cert::Presented;
use crate::config::Services;
use crate::error::Error;
use crate::handshake::Connection;
use crate::trust::probe::{ProbeKind, ProbeResult};
use crate::trust::{CaIdentity, PresentedCa, TrustedReference};
use service::{Ctx, Obs, ServiceState};

/// Service name of events about the stored CA itself (the mounted Secret).
pub const SECRET_SERVICE: &str = "kubeedge/casecret";

/// Bounds on detector memory; each drop is counted in [`DetectStats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectLimits {
    /// Services tracked (beyond it, connections of new services are dropped).
    pub max_services: usize,
    /// Distinct client addresses per service in the window.
    pub max_clients: usize,
    /// Server addresses per service.
    pub max_servers: usize,
    /// CA key ids per service in the window.
    pub max_ca_keys: usize,
    /// Connections kept per service in the window.
    pub max_window_entries: usize,
    /// Events kept for the snapshot.
    pub max_recent_events: usize,
    /// Clients listed by name in an event or snapshot.
    pub max_listed_clients: usize,
}

impl Default for DetectLimits {
    fn default() -> Self {
        DetectLimits {
            max_services: 64,
            max_clients: 65_536,
            max_servers: 64,
            max_ca_keys: 64,
            max_window_entries: 262_144,
            max_recent_events: 256,
            max_listed_clients: 16,
        }
    }
}

/// Detector rules.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectConfig {
    /// Sliding window, microseconds of packet time.
    pub window_us: i64,
    /// K: distinct clients whose latest handshake failed on certificate grounds.
    pub min_failing_clients: usize,
    /// R: failing clients / (failing + succeeding clients) in the window.
    pub min_failure_share: f64,
    /// P: the failing share from which K failing clients are a partial collapse.
    pub partial_share: f64,
    /// The collapse condition must hold this long before it is declared (0: at once).
    pub collapse_hold_us: i64,
    /// Recovery: fewer than K clients failing for this long.
    pub recovery_hold_us: i64,
    /// When failures start and the probes are asked to look, a collapse waits this long for
    /// their answer (the CA the replicas present now), so that it names the current key.
    pub probe_grace_us: i64,
    /// Replicas present different keys with no failure and no client yet seen under two of them:
    /// how long to wait for that evidence (a rotation) before reporting a divergence.
    pub rotation_grace_us: i64,
    /// Outcome-split divergence: clients that succeed on one replica and are rejected by another.
    pub split_min_clients: usize,
    /// How often `tick` stats the Secret's `cadata` (wall time; zero = every tick).
    pub secret_check_interval: Duration,
    /// Names probe targets by port, as the analyzer names connections.
    pub services: Services,
    pub limits: DetectLimits,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            window_us: 60 * 1_000_000,
            min_failing_clients: 3,
            min_failure_share: 0.5,
            partial_share: 0.2,
            collapse_hold_us: 0,
            recovery_hold_us: 15 * 1_000_000,
            probe_grace_us: 1_000_000,
            rotation_grace_us: 30 * 1_000_000,
            split_min_clients: 2,
            secret_check_interval: Duration::from_secs(2),
            services: Services::default(),
            limits: DetectLimits::default(),
        }
    }
}

impl DetectConfig {
    /// Checks values taken from flags.
    pub fn validate(&self) -> Result<(), Error> {
        if self.window_us <= 0 {
            return Err(Error::Usage("--trust-window must be positive".into()));
        }
        if self.min_failing_clients == 0 {
            return Err(Error::Usage("--collapse-clients must be at least 1".into()));
        }
        if !(self.min_failure_share > 0.0 && self.min_failure_share <= 1.0) {
            return Err(Error::Usage("--collapse-share must be in (0, 1]".into()));
        }
        if !(self.partial_share > 0.0 && self.partial_share <= self.min_failure_share) {
            return Err(Error::Usage(
                "--partial-share must be in (0, --collapse-share]".into(),
            ));
        }
        if self.collapse_hold_us < 0
            || self.recovery_hold_us < 0
            || self.probe_grace_us < 0
            || self.rotation_grace_us < 0
        {
            return Err(Error::Usage(
                "--collapse-hold, --recovery-hold, --probe-grace and --rotation-grace cannot be negative"
                    .into(),
            ));
        }
        if self.split_min_clients == 0 {
            return Err(Error::Usage("split client count must be at least 1".into()));
        }
        Ok(())
    }
}

crate::counters! {
    /// Detector counters (drops included), for metrics and the report.
    pub struct DetectStats {
        connections: Volume, "trustwatch_detector_connections_total", "connections judged",
            "Connection records the detector received.";
        connections_ignored: Volume, "trustwatch_detector_connections_ignored_total", "connections without a verdict",
            "Connections with no outcome (incomplete) that say nothing about trust.";
        probe_connections_excluded: Volume, "trustwatch_probe_connections_excluded_total", "probe connections excluded",
            "The monitor's own probe connections, seen in the capture and left out.";
        probes: Volume, "trustwatch_detector_probes_total", "probe results",
            "Probe results the detector received.";
        probe_failures: Loss, "trustwatch_detector_probe_failures_total", "failed probes",
            "Probes that presented no usable CA (connection or TLS failure, no certificate).";
        services_dropped: Loss, "trustwatch_detector_services_dropped_total", "services over the limit",
            "Observations of a new service dropped because the service limit was reached.";
        clients_evicted: Loss, "trustwatch_detector_clients_evicted_total", "clients evicted for --max-tracked-clients",
            "Clients evicted from the window to stay within --max-tracked-clients (those that matter least first).";
        servers_dropped: Loss, "trustwatch_detector_servers_dropped_total", "servers over --max-replicas",
            "Observations of a new server address dropped because --max-replicas was reached.";
        ca_keys_dropped: Loss, "trustwatch_detector_ca_keys_dropped_total", "CA keys over --max-ca-keys",
            "CA key attributions dropped because --max-ca-keys was reached.";
        window_entries_evicted: Loss, "trustwatch_detector_window_entries_evicted_total", "handshakes evicted for --max-window-handshakes",
            "Oldest handshakes evicted from the window's counts to stay within --max-window-handshakes (the collapse rule keeps per-client state).";
        inconsistencies_unreported: Loss, "trustwatch_detector_inconsistencies_unreported_total", "inconsistencies unreported",
            "CA inconsistencies not reported because the per-service memory of reported ones was full.";
        secret_reloads: Volume, "trustwatch_secret_reloads_total", "casecret reloads",
            "Times the mounted casecret's cadata changed and was re-read.";
        secret_reload_errors: Loss, "trustwatch_secret_reload_errors_total", "casecret reload errors",
            "Failed re-reads of the mounted casecret (the previous CA is kept).";
        events: Volume, "trustwatch_detector_events_total", "events",
            "Detector events emitted.";
    }
}

/// Everything the HTTP API, metrics and report need.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub services: Vec<ServiceSnapshot>,
    pub recent_events: Vec<Event>,
    pub stats: DetectStats,
    /// Configured reference sources (never a token).
    pub reference: Vec<String>,
    /// The CAs of the reference that have a certificate, with where each comes from.
    pub reference_cas: Vec<ReferenceCa>,
    /// Some CA presented now (by any service's replicas) disagrees with the trusted reference.
    pub inconsistent: bool,
}

/// A CA of the trusted reference: the mounted casecret (`secret`) or a `--trusted-ca` file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReferenceCa {
    pub source: &'static str,
    #[serde(flatten)]
    pub ca: CaIdentity,
}

impl Snapshot {
    /// Replicas agree with each other and with the reference (`trustwatch_ca_consistent`, readiness).
    pub fn ca_consistent(&self) -> bool {
        !self.inconsistent
            && self
                .services
                .iter()
                .all(|s| s.divergent_ca_key_ids.is_empty())
    }
}

/// Probe connections are excluded for this long after they were announced.
const PROBE_EXCLUSION_US: i64 = 120 * 1_000_000;
const MAX_PROBE_EXCLUSIONS: usize = 256;

/// The detector: feed it connections in capture order, tick it with packet time.
#[derive(Debug)]
pub struct Detector {
    cfg: DetectConfig,
    reference: TrustedReference,
    services: BTreeMap<Arc<str>, ServiceState>,
    stats: DetectStats,
    recent: VecDeque<Event>,
    probe_clients: VecDeque<(SocketAddr, Timestamp)>,
    last_secret_check: Option<Instant>,
    /// The latest packet time seen (observations and ticks).
    now: Timestamp,
    exit_worthy_seen: bool,
}

impl Detector {
    pub fn new(cfg: DetectConfig, reference: TrustedReference) -> Self {
        Detector {
            cfg,
            reference,
            services: BTreeMap::new(),
            stats: DetectStats::default(),
            recent: VecDeque::new(),
            probe_clients: VecDeque::new(),
            last_secret_check: None,
            now: Timestamp::default(),
            exit_worthy_seen: false,
        }
    }

    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }
    pub fn reference(&self) -> &TrustedReference {
        &self.reference
    }
    pub fn stats(&self) -> &DetectStats {
        &self.stats
    }
    /// Whether any event so far makes `analyze` exit 3.
    pub fn exit_worthy_seen(&self) -> bool {
        self.exit_worthy_seen
    }

    /// One finished connection; its time is `conn.end` (packet time).
    pub fn observe(&mut self, conn: &Connection, out: &mut Vec<Event>) {
        self.stats.connections += 1;
        let now = conn.end;
        self.now = self.now.max(now);
        if self.is_probe_connection(conn) {
            self.stats.probe_connections_excluded += 1;
            return;
        }
        let Some(class) = classify(conn) else {
            self.stats.connections_ignored += 1;
            return;
        };
        let start = out.len();
        let Some(svc) = service_entry(
            &mut self.services,
            &self.cfg,
            &conn.service,
            conn.server.port(),
            false,
        ) else {
            self.stats.services_dropped += 1;
            return;
        };
        let ca_key = conn.ca_key_id.clone();
        let mut ctx = Ctx {
            cfg: &self.cfg,
            reference: &self.reference,
            stats: &mut self.stats,
            out,
        };
        // The outcome first, then the key it was decided under: a client that succeeds under a
        // newly presented key is already counted when the key set is judged (rotation).
        let presented = ca_key.as_ref().map(|key| PresentedCa {
            key_ids: vec![key.clone()],
            der_sha256: chain_ca_sha256(conn, key),
        });
        let obs = Obs {
            t: now,
            client: conn.client.ip(),
            server: conn.server,
            class,
            ca: ca_key,
        };
        svc.observe(obs, &mut ctx);
        if let Some(ca) = presented {
            svc.present(conn.server, ca, CaSource::Passive, now, &mut ctx);
        }
        self.record(out, start);
    }

    /// Window expiry at packet time `now` (call at least once per second of packet time, and at
    /// the end of a file); also re-reads the Secret when it changed.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        self.now = self.now.max(now);
        let start = out.len();
        self.refresh_reference(now, out);
        while self
            .probe_clients
            .front()
            .is_some_and(|(_, t)| now.since(*t) > PROBE_EXCLUSION_US)
        {
            self.probe_clients.pop_front();
        }
        let mut ctx = Ctx {
            cfg: &self.cfg,
            reference: &self.reference,
            stats: &mut self.stats,
            out,
        };
        for svc in self.services.values_mut() {
            svc.tick(now, &mut ctx);
        }
        self.record(out, start);
    }

    /// A probe finished (excluded from the passive figures: it only reports what a replica presents).
    pub fn observe_probe(&mut self, r: &ProbeResult, now: Timestamp, out: &mut Vec<Event>) {
        self.stats.probes += 1;
        if let Some(local) = r.local {
            self.exclude_probe_client(local, now);
        }
        let (Ok(finding), Some(addr)) = (&r.outcome, r.addr) else {
            self.stats.probe_failures += 1;
            return;
        };
        let Some(ca) = finding.presented() else {
            self.stats.probe_failures += 1;
            return;
        };
        let source = match r.target.kind {
            ProbeKind::CaEndpoint => CaSource::ProbeCa,
            ProbeKind::Chain => CaSource::ProbeChain,
        };
        let start = out.len();
        let name: Arc<str> = Arc::from(self.cfg.services.label(addr.port()));
        let Some(svc) = service_entry(&mut self.services, &self.cfg, &name, addr.port(), true)
        else {
            self.stats.services_dropped += 1;
            return;
        };
        let mut ctx = Ctx {
            cfg: &self.cfg,
            reference: &self.reference,
            stats: &mut self.stats,
            out,
        };
        // A probe that started after the failures asked for it answers the collapse's question.
        let started = Timestamp::from_micros(
            now.micros().saturating_sub(
                i64::try_from(r.elapsed_ms)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000),
            ),
        );
        svc.probe_answered(started);
        svc.present(addr, ca, source, now, &mut ctx);
        self.record(out, start);
    }

    /// The local address of one of our own probes: its connection is skipped when it shows up in a
    /// live capture (call it from the probe's `on_connect`, before the handshake).
    pub fn exclude_probe_client(&mut self, local: SocketAddr, now: Timestamp) {
        if self.probe_clients.len() >= MAX_PROBE_EXCLUSIONS {
            self.probe_clients.pop_front();
        }
        self.probe_clients.push_back((local, now));
    }

    /// True once after certificate failures start on any service: trigger the probes. Taking the
    /// request tells the detector that probes will answer: a collapse waits up to
    /// [`DetectConfig::probe_grace_us`] for them.
    pub fn take_probe_request(&mut self) -> bool {
        let mut any = false;
        for s in self.services.values_mut() {
            any |= s.take_probe_request(self.now);
        }
        any
    }

    pub fn snapshot(&self) -> Snapshot {
        let services: Vec<ServiceSnapshot> = self
            .services
            .values()
            .map(|s| s.snapshot(self.now, &self.cfg))
            .collect();
        let inconsistent = !self.reference.is_empty()
            && services
                .iter()
                .flat_map(|s| &s.servers)
                .filter_map(|s| s.presented_ca_key_id.clone())
                .any(|k| {
                    !self
                        .reference
                        .check(&PresentedCa::from_key_id(k))
                        .is_empty()
                });
        Snapshot {
            services,
            recent_events: self.recent.iter().cloned().collect(),
            stats: self.stats.clone(),
            reference: self.reference.describe(),
            reference_cas: self
                .reference
                .cas()
                .into_iter()
                .map(|ca| ReferenceCa {
                    source: if self.reference.secret_ca() == Some(ca) {
                        "secret"
                    } else {
                        "trusted_ca"
                    },
                    ca: ca.clone(),
                })
                .collect(),
            inconsistent,
        }
    }

    /// The CA key `server` of `service` presents (chains, probes), if known.
    pub fn presented_key(&self, service: &str, server: SocketAddr) -> Option<KeyId> {
        self.services.get(service)?.presented_key(server)
    }

    /// Trust state of one service, if seen.
    pub fn state(&self, service: &str) -> Option<TrustState> {
        self.services.get(service).map(ServiceState::state)
    }

    /// A connection the monitor's own probe made (excluded from the passive figures).
    /// A probe's connection: marked on the wire (any trustwatch's probe), or made from an
    /// address one of this monitor's probes announced.
    pub fn is_probe_connection(&self, conn: &Connection) -> bool {
        conn.probe || self.is_probe_client(conn.client, conn.end)
    }

    fn is_probe_client(&self, client: SocketAddr, now: Timestamp) -> bool {
        self.probe_clients
            .iter()
            .any(|(a, t)| *a == client && now.since(*t).abs() <= PROBE_EXCLUSION_US)
    }

    fn refresh_reference(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        let due = self
            .last_secret_check
            .is_none_or(|t| t.elapsed() >= self.cfg.secret_check_interval);
        if !due || self.reference.secret_ca().is_none() {
            return;
        }
        self.last_secret_check = Some(Instant::now());
        let errors = self.reference.reload_errors;
        let change = self.reference.refresh();
        self.stats.secret_reload_errors += self.reference.reload_errors.saturating_sub(errors);
        let Some(change) = change else { return };
        self.stats.secret_reloads += 1;
        out.push(Event {
            at: now,
            service: Arc::from(SECRET_SERVICE),
            detail: EventDetail::CaChanged(CaChange {
                server: None,
                previous_ca_key_id: change.previous.key_id,
                current_ca_key_id: change.current.key_id,
                source: CaSource::Secret,
            }),
        });
        for svc in self.services.values_mut() {
            let mut ctx = Ctx {
                cfg: &self.cfg,
                reference: &self.reference,
                stats: &mut self.stats,
                out,
            };
            svc.recheck_reference(now, &mut ctx);
        }
    }

    fn record(&mut self, out: &[Event], start: usize) {
        for e in out.get(start..).unwrap_or_default() {
            self.stats.events += 1;
            self.exit_worthy_seen |= exit_worthy(e);
            if self.recent.len() >= self.cfg.limits.max_recent_events {
                self.recent.pop_front();
            }
            if self.cfg.limits.max_recent_events > 0 {
                self.recent.push_back(e.clone());
            }
        }
    }
}

/// The state of service `name`, created if there is room.
///
/// Configured ports and probed targets are replica sets; a service found by content
/// (`--any-port`) groups unrelated servers, so different CA keys there are not a divergence.
fn service_entry<'a>(
    services: &'a mut BTreeMap<Arc<str>, ServiceState>,
    cfg: &DetectConfig,
    name: &Arc<str>,
    port: u16,
    probed: bool,
) -> Option<&'a mut ServiceState> {
    if !services.contains_key(name) {
        if services.len() >= cfg.limits.max_services {
            return None;
        }
        let replicas = probed || cfg.services.is_watched(port);
        services.insert(name.clone(), ServiceState::new(name.clone(), replicas));
    }
    services.get_mut(name)
}

/// sha256 of the issuing CA's DER when the server chain carries the CA itself.
fn chain_ca_sha256(conn: &Connection, key: &KeyId) -> Option<String> {
    conn.server_chain.iter().skip(1).find_map(|p| match p {
        Presented::Parsed(c) if c.ski.as_ref() == Some(key) || c.key_sha1 == *key => {
            Some(c.sha256.clone())
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests;
