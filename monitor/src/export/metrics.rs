//! Prometheus metrics of the live monitor.
//!
//! Consumes connection records, detector events and, at every publish, the runtime's
//! [`View`](crate::runtime::View) (detector snapshot, the pipeline's and detector's counters,
//! capture sources, probes), all on the pipeline thread; produces a [`prometheus::Registry`] that the HTTP server encodes on `/metrics`
//! (prometheus types are thread-safe, so scrapes never block the packet path). Every counter of
//! [`Stats`] and [`DetectStats`] is registered from their declared lists, so everything the
//! summary report counts is exported too.
//!
//! Every label is bounded: no client address is ever a label; services are capped
//! ([`MetricsLimits::max_services`], the rest is `other`); alert names come from the IANA registry;
//! CA key ids are kept for the N most recently seen keys and every series of an older key is removed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;

use prometheus::core::{Atomic, GenericCounter};
use prometheus::{
    CounterVec, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::base::{Counter, KeyId};
use crate::capture::source::KernelSeries;
use crate::capture::{Backend, DropReason, SourceCounters};
use crate::detect::ReferenceCa;
use crate::detect::{Class, DetectStats, RejectingSide, Snapshot, TrustState, classify};
use crate::handshake::{Alert, Connection};
use crate::pipeline::Load;
use crate::stats::Stats;
use crate::tls::alert;
use crate::trust::probe::{ProbeFinding, ProbeStatus};

/// Label value for a CA key that is not visible (TLS 1.3 encrypts the chains).
pub const UNKNOWN: &str = "unknown";
/// Service label once [`MetricsLimits::max_services`] services have been seen.
pub const OTHER_SERVICE: &str = "other";

/// Bounds on label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsLimits {
    /// CA key ids with series (the most recently seen ones).
    pub max_ca_keys: usize,
    /// Distinct service labels.
    pub max_services: usize,
}

impl Default for MetricsLimits {
    fn default() -> Self {
        MetricsLimits {
            max_ca_keys: 16,
            max_services: 64,
        }
    }
}

/// The value of `trustwatch_trust_state`.
pub fn trust_state_value(s: TrustState) -> i64 {
    match s {
        TrustState::Healthy | TrustState::Recovered => 0,
        TrustState::Degraded => 1,
        TrustState::Collapsed => 2,
    }
}

/// Metric families whose series carry a `ca_key_id` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyedFamily {
    CertFailures,
    PresentedCa,
    CertNotAfter,
}

/// The N most recently seen CA key ids and the series each one owns.
#[derive(Debug, Default)]
struct KeyedSeries {
    order: VecDeque<String>,
    series: HashMap<String, BTreeSet<(KeyedFamily, Vec<String>)>>,
}

/// Every trustwatch metric.
pub struct Metrics {
    registry: Registry,
    limits: MetricsLimits,
    handshakes: IntCounterVec,
    alerts: IntCounterVec,
    cert_failures: IntCounterVec,
    trust_events: IntCounterVec,
    /// `Stats` then `DetectStats`, in declaration order.
    stage_counters: Vec<IntCounter>,
    packets: IntCounterVec,
    capture_bytes: IntCounterVec,
    dropped: IntCounterVec,
    capture_errors: IntCounterVec,
    capture_restarts: IntCounterVec,
    source_up: IntGaugeVec,
    ebpf_packets: IntCounterVec,
    ebpf_bytes: IntCounterVec,
    ebpf_events: IntCounterVec,
    ebpf_runs: IntCounterVec,
    ebpf_run_seconds: CounterVec,
    probe_errors: IntCounterVec,
    probe_success: IntGaugeVec,
    probe_duration: GaugeVec,
    trust_state: IntGaugeVec,
    failing_clients: IntGaugeVec,
    presented_ca: IntGaugeVec,
    replica_ca: IntGaugeVec,
    active_clients: IntGaugeVec,
    rotation_in_progress: IntGaugeVec,
    detector_saturated: IntGaugeVec,
    trusted_ca: IntGaugeVec,
    trusted_ca_not_after: IntGaugeVec,
    ca_consistent: IntGauge,
    ca_divergence: IntGaugeVec,
    flows_active: IntGauge,
    memory_charged: IntGaugeVec,
    memory_limit: IntGaugeVec,
    cert_not_after: IntGaugeVec,
    keys: KeyedSeries,
    services: BTreeSet<String>,
    /// Issuer (subject DN of the CA) per key id, learned from chains and probes.
    issuers: HashMap<String, String>,
    /// Presented-CA series currently set, per service (to remove the ones no longer presented).
    presented: BTreeMap<String, BTreeSet<(String, String)>>,
    /// Replica series currently set: (service, server, key).
    replicas: BTreeSet<[String; 3]>,
    /// Trusted-CA series currently set: (source, key, sha256).
    trusted: BTreeSet<[String; 3]>,
    /// Probe targets with series (to remove those whose replica vanished).
    probe_targets: BTreeSet<(String, &'static str)>,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// One plain counter per declared counter.
fn declared(r: &Registry, list: &[Counter]) -> prometheus::Result<Vec<IntCounter>> {
    list.iter()
        .map(|c| {
            let counter = IntCounter::new(c.metric, c.help)?;
            r.register(Box::new(counter.clone()))?;
            Ok(counter)
        })
        .collect()
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Raises a counter to a cumulative total kept elsewhere (never lowers it).
fn advance<P: Atomic>(c: &GenericCounter<P>, total: P::T) {
    let cur = c.get();
    if total > cur {
        let mut growth = total;
        growth -= cur;
        c.inc_by(growth);
    }
}

impl Metrics {
    pub fn new(limits: MetricsLimits) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let mut stage_counters = declared(&r, Stats::COUNTERS)?;
        stage_counters.extend(declared(&r, DetectStats::COUNTERS)?);
        let probe_duration = GaugeVec::new(
            Opts::new(
                "trustwatch_probe_duration_seconds",
                "Duration of the latest probe of a target, successful or not.",
            ),
            &["target", "kind"],
        )?;
        r.register(Box::new(probe_duration.clone()))?;
        let ebpf_run_seconds = CounterVec::new(
            Opts::new(
                "trustwatch_ebpf_run_seconds_total",
                "Time the eBPF TC program ran, by source, while kernel.bpf_stats_enabled is 1 (divided by trustwatch_ebpf_runs_total: the mean per packet).",
            ),
            &["source"],
        )?;
        r.register(Box::new(ebpf_run_seconds.clone()))?;
        let ca_consistent = IntGauge::new(
            "trustwatch_ca_consistent",
            "1 while every presented CA agrees with the trusted reference and the replicas agree with each other, else 0.",
        )?;
        r.register(Box::new(ca_consistent.clone()))?;
        ca_consistent.set(1);
        let flows_active =
            IntGauge::new("trustwatch_flows_active", "TCP flows currently tracked.")?;
        r.register(Box::new(flows_active.clone()))?;
        let build_info = gauge_vec(
            &r,
            "trustwatch_build_info",
            "Always 1; the trustwatch version as a label.",
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Metrics {
            handshakes: counter_vec(
                &r,
                "trustwatch_handshakes_total",
                "TLS handshakes seen, by service, server port, negotiated version and outcome.",
                &["service", "port", "version", "outcome"],
            )?,
            alerts: counter_vec(
                &r,
                "trustwatch_alerts_total",
                "TLS alerts seen, by sending side; encrypted alerts (TLS 1.3) have alert=\"unknown\".",
                &["service", "from", "alert", "encrypted"],
            )?,
            cert_failures: counter_vec(
                &r,
                "trustwatch_cert_failures_total",
                "Handshakes rejected on certificate grounds, by the key id of the CA of the rejected certificate (\"unknown\" when encrypted).",
                &["service", "ca_key_id"],
            )?,
            trust_events: counter_vec(
                &r,
                "trustwatch_trust_events_total",
                "Detector events: trust_collapse, trust_recovered, ca_changed, ca_divergence, ca_inconsistent.",
                &["service", "event"],
            )?,
            stage_counters,
            packets: counter_vec(
                &r,
                "trustwatch_packets_total",
                "Packets handed to the pipeline, by capture source (BACKEND:INTERFACE).",
                &["source"],
            )?,
            capture_bytes: counter_vec(
                &r,
                "trustwatch_capture_bytes_total",
                "Captured bytes handed to user space and the pipeline, by capture source.",
                &["source"],
            )?,
            dropped: counter_vec(
                &r,
                "trustwatch_capture_dropped_packets_total",
                "Packets lost before analysis: queue_full (pipeline queue), kernel (libpcap buffer), interface (driver), ring_full (eBPF buffer).",
                &["source", "reason"],
            )?,
            ebpf_packets: counter_vec(
                &r,
                "trustwatch_ebpf_packets_total",
                "Packets the eBPF TC program ran on (seen), that were TCP on a watched port (matched), and that it copied to user space (copied), by source.",
                &["source", "stage"],
            )?,
            ebpf_bytes: counter_vec(
                &r,
                "trustwatch_ebpf_bytes_total",
                "Bytes the eBPF TC program copied to user space (copied: headers and payload; payload_copied) and payload it left in the kernel (payload_left_in_kernel: past the budget or decided), by source.",
                &["source", "kind"],
            )?,
            ebpf_events: counter_vec(
                &r,
                "trustwatch_ebpf_events_total",
                "eBPF TC program events by source: truncated records, fragment_skipped, header_copied_out (not in the linear data), connection_decided (passed down by user space), reader_wakeup (ring buffer).",
                &["source", "event"],
            )?,
            ebpf_runs: counter_vec(
                &r,
                "trustwatch_ebpf_runs_total",
                "Runs of the eBPF TC program, by source, while kernel.bpf_stats_enabled is 1.",
                &["source"],
            )?,
            ebpf_run_seconds,
            capture_errors: counter_vec(
                &r,
                "trustwatch_capture_errors_total",
                "Errors that stopped a capture source (it is restarted with backoff).",
                &["source"],
            )?,
            capture_restarts: counter_vec(
                &r,
                "trustwatch_capture_restarts_total",
                "Restarts of a capture source after an error.",
                &["source"],
            )?,
            source_up: gauge_vec(
                &r,
                "trustwatch_source_up",
                "1 while a capture source is reading, 0 while it is down.",
                &["source"],
            )?,
            probe_errors: counter_vec(
                &r,
                "trustwatch_probe_errors_total",
                "Failed trust probes, by target.",
                &["target"],
            )?,
            probe_success: gauge_vec(
                &r,
                "trustwatch_probe_success",
                "1 when the latest probe of a target read a CA, else 0.",
                &["target", "kind"],
            )?,
            probe_duration,
            trust_state: gauge_vec(
                &r,
                "trustwatch_trust_state",
                "Trust state of a service: 0 healthy, 1 degraded, 2 collapsed.",
                &["service"],
            )?,
            failing_clients: gauge_vec(
                &r,
                "trustwatch_failing_clients",
                "Distinct clients whose latest handshake in the window failed on certificate grounds.",
                &["service"],
            )?,
            presented_ca: gauge_vec(
                &r,
                "trustwatch_presented_ca_info",
                "Always 1: a CA key currently presented by the service (chains, probes), with its issuer name.",
                &["service", "ca_key_id", "issuer"],
            )?,
            replica_ca: gauge_vec(
                &r,
                "trustwatch_replica_ca_info",
                "Always 1: the CA key a replica (server address) presents, from its chain or a probe; bounded by --max-replicas.",
                &["service", "server", "ca_key_id"],
            )?,
            active_clients: gauge_vec(
                &r,
                "trustwatch_active_clients",
                "Distinct clients with a success or a certificate failure in the window.",
                &["service"],
            )?,
            rotation_in_progress: gauge_vec(
                &r,
                "trustwatch_rotation_in_progress",
                "1 while replicas present different CA keys, no client fails on certificate grounds and some client succeeds under several of them (a planned rotation).",
                &["service"],
            )?,
            detector_saturated: gauge_vec(
                &r,
                "trustwatch_detector_saturated",
                "1 for one window after the detector evicted a client or a handshake for its limits: its counts are a sample, not the whole.",
                &["service"],
            )?,
            trusted_ca: gauge_vec(
                &r,
                "trustwatch_trusted_ca_info",
                "Always 1: a CA of the trusted reference (--trusted-ca file, casecret), by source, with the sha256 of its DER.",
                &["source", "ca_key_id", "sha256"],
            )?,
            trusted_ca_not_after: gauge_vec(
                &r,
                "trustwatch_trusted_ca_not_after_timestamp_seconds",
                "Expiry (Unix time) of a CA of the trusted reference.",
                &["source", "ca_key_id"],
            )?,
            ca_consistent,
            ca_divergence: gauge_vec(
                &r,
                "trustwatch_ca_divergence",
                "Distinct CA keys presented by the replicas of a service (above 1: they diverge).",
                &["service"],
            )?,
            flows_active,
            memory_charged: gauge_vec(
                &r,
                "trustwatch_memory_charged_bytes",
                "Memory the packet path charges against --memory-limit, by pool (flows: flow state and reassembly buffers; certificates: the parsed-certificate cache).",
                &["pool"],
            )?,
            memory_limit: gauge_vec(
                &r,
                "trustwatch_memory_limit_bytes",
                "The share of --memory-limit each pool may charge; under pressure the least useful state is shed to stay within it.",
                &["pool"],
            )?,
            cert_not_after: gauge_vec(
                &r,
                "trustwatch_cert_not_after_timestamp_seconds",
                "Expiry (Unix time) of the latest presented leaf certificate, by role and issuing CA key.",
                &["service", "role", "ca_key_id"],
            )?,
            registry: r,
            limits,
            keys: KeyedSeries::default(),
            services: BTreeSet::new(),
            issuers: HashMap::new(),
            presented: BTreeMap::new(),
            replicas: BTreeSet::new(),
            trusted: BTreeSet::new(),
            probe_targets: BTreeSet::new(),
        })
    }

    /// The registry to encode (shared with the HTTP server).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A bounded service label.
    fn service<'a>(&mut self, name: &'a str) -> &'a str {
        if self.services.contains(name) {
            return name;
        }
        if self.services.len() < self.limits.max_services {
            self.services.insert(name.to_string());
            return name;
        }
        OTHER_SERVICE
    }

    /// Marks `key` as most recently seen; removes every series of the key that falls out.
    fn touch_key(&mut self, key: &str) {
        if key == UNKNOWN {
            return;
        }
        if let Some(pos) = self.keys.order.iter().position(|k| k == key) {
            if let Some(k) = self.keys.order.remove(pos) {
                self.keys.order.push_back(k);
            }
            return;
        }
        self.keys.order.push_back(key.to_string());
        while self.keys.order.len() > self.limits.max_ca_keys.max(1) {
            let Some(old) = self.keys.order.pop_front() else {
                break;
            };
            for (family, labels) in self.keys.series.remove(&old).unwrap_or_default() {
                let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
                let _ = match family {
                    KeyedFamily::CertFailures => self.cert_failures.remove_label_values(&refs),
                    KeyedFamily::PresentedCa => self.presented_ca.remove_label_values(&refs),
                    KeyedFamily::CertNotAfter => self.cert_not_after.remove_label_values(&refs),
                };
            }
            self.issuers.remove(&old);
            for set in self.presented.values_mut() {
                set.retain(|(k, _)| *k != old);
            }
        }
    }

    /// Records that the series `labels` of `family` belongs to `key` (removed with it).
    fn own(&mut self, key: &str, family: KeyedFamily, labels: &[&str]) {
        if key == UNKNOWN {
            return;
        }
        self.keys
            .series
            .entry(key.to_string())
            .or_default()
            .insert((family, labels.iter().map(|l| (*l).to_string()).collect()));
    }

    /// One connection record from the pipeline.
    pub fn connection(&mut self, conn: &Connection) {
        let service = self.service(&conn.service).to_string();
        let port = conn.server.port().to_string();
        let version = conn
            .version
            .and_then(|v| v.ecs_version())
            .unwrap_or(UNKNOWN);
        self.handshakes
            .with_label_values(&[&service, &port, version, conn.outcome.as_str()])
            .inc();
        for a in &conn.alerts {
            let (name, encrypted) = match a {
                Alert::Plain { code, .. } => (alert::name(*code), "false"),
                Alert::Encrypted { .. } => (UNKNOWN, "true"),
            };
            self.alerts
                .with_label_values(&[&service, a.from().as_str(), name, encrypted])
                .inc();
        }
        if let Some(Class::CertFailure(side)) = classify(conn) {
            // The key of the CA behind the certificate that was refused.
            let key = match side {
                RejectingSide::Server => conn.client_ca_key_id.as_ref(),
                RejectingSide::Client => conn.ca_key_id.as_ref(),
                RejectingSide::Both | RejectingSide::Unknown => {
                    conn.ca_key_id.as_ref().or(conn.client_ca_key_id.as_ref())
                }
            };
            let key = key.map_or(UNKNOWN, KeyId::as_str).to_string();
            self.touch_key(&key);
            let labels = [service.as_str(), key.as_str()];
            self.cert_failures.with_label_values(&labels).inc();
            self.own(&key, KeyedFamily::CertFailures, &labels);
        }
        for (role, chain, key) in [
            ("server", &conn.server_chain, &conn.ca_key_id),
            ("client", &conn.client_chain, &conn.client_ca_key_id),
        ] {
            let Some(leaf) = chain.first().and_then(|c| c.info()) else {
                continue;
            };
            let Some(key) = key else { continue };
            self.touch_key(key);
            if role == "server" {
                self.issuers.insert(key.to_string(), leaf.issuer.clone());
            }
            let labels = [service.as_str(), role, key.as_str()];
            self.cert_not_after
                .with_label_values(&labels)
                .set(leaf.not_after_unix);
            self.own(key, KeyedFamily::CertNotAfter, &labels);
        }
    }

    /// One detector event (by its `trustwatch.event` name).
    pub fn event(&mut self, service: &str, name: &str) {
        let service = self.service(service).to_string();
        self.trust_events.with_label_values(&[&service, name]).inc();
    }

    /// The packet path's counters (cumulative) and the flows tracked.
    pub fn pipeline(&self, stats: &Stats, load: Load) {
        for (counter, (_, total)) in self.stage_counters.iter().zip(stats.values()) {
            advance(counter, total);
        }
        let int = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.flows_active.set(int(load.flows));
        for (pool, charged, limit) in [
            ("flows", load.flow_bytes, load.flow_budget),
            ("certificates", load.cert_bytes, load.cert_budget),
        ] {
            self.memory_charged
                .with_label_values(&[pool])
                .set(int(charged));
            self.memory_limit.with_label_values(&[pool]).set(int(limit));
        }
    }

    /// The detector's counters and state.
    pub fn detector(&mut self, snap: &Snapshot) {
        let detector_counters = self.stage_counters.iter().skip(Stats::COUNTERS.len());
        for (counter, (_, total)) in detector_counters.zip(snap.stats.values()) {
            advance(counter, total);
        }
        self.snapshot(snap);
    }

    /// Counters of one capture source (cumulative); `name` is `BACKEND:INTERFACE`.
    pub fn source(&self, name: &str, c: &SourceCounters) {
        advance(&self.packets.with_label_values(&[name]), c.packets());
        advance(&self.capture_bytes.with_label_values(&[name]), c.bytes());
        for reason in DropReason::ALL {
            advance(
                &self.dropped.with_label_values(&[name, reason.as_str()]),
                c.dropped(reason),
            );
        }
        advance(
            &self.capture_errors.with_label_values(&[name]),
            c.errors.load(Ordering::Relaxed),
        );
        advance(
            &self.capture_restarts.with_label_values(&[name]),
            c.restarts.load(Ordering::Relaxed),
        );
        self.source_up
            .with_label_values(&[name])
            .set(i64::from(c.running()));
        if name.starts_with(Backend::Ebpf.as_str()) {
            self.kernel(name, c);
        }
    }

    /// The eBPF program's own counters of one source.
    fn kernel(&self, name: &str, c: &SourceCounters) {
        for (series, total) in c.kernel.series() {
            match series {
                KernelSeries::Packets(stage) => {
                    advance(&self.ebpf_packets.with_label_values(&[name, stage]), total);
                }
                KernelSeries::Bytes(kind) => {
                    advance(&self.ebpf_bytes.with_label_values(&[name, kind]), total);
                }
                KernelSeries::Events(event) => {
                    advance(&self.ebpf_events.with_label_values(&[name, event]), total);
                }
                KernelSeries::Runs => advance(&self.ebpf_runs.with_label_values(&[name]), total),
                KernelSeries::RunNanoseconds => advance(
                    &self.ebpf_run_seconds.with_label_values(&[name]),
                    total as f64 / 1e9,
                ),
            }
        }
    }

    /// The latest result of every probe target (targets come from the configuration and the
    /// replicas a name resolves to: bounded); series of targets no longer probed are removed.
    /// `service` names the service of a port. What a probe read also fills the issuer names and,
    /// over TLS 1.3 where chains are hidden, the server leaf's expiry.
    pub fn probes(&mut self, probes: &[ProbeStatus], service: &dyn Fn(u16) -> String) {
        let mut now = BTreeSet::new();
        for p in probes {
            let target = p.last.target.authority();
            let kind = p.last.target.kind.as_str();
            advance(&self.probe_errors.with_label_values(&[&target]), p.failures);
            self.probe_success
                .with_label_values(&[&target, kind])
                .set(i64::from(p.last.outcome.is_ok()));
            self.probe_duration
                .with_label_values(&[&target, kind])
                .set(p.last.elapsed_ms as f64 / 1000.0);
            if let Ok(f) = &p.last.outcome {
                self.probe_finding(f, &service(p.last.target.port));
            }
            now.insert((target, kind));
        }
        for (target, kind) in self.probe_targets.difference(&now) {
            let _ = self.probe_errors.remove_label_values(&[target]);
            let _ = self
                .probe_success
                .remove_label_values(&[target.as_str(), kind]);
            let _ = self
                .probe_duration
                .remove_label_values(&[target.as_str(), kind]);
        }
        self.probe_targets = now;
    }

    fn probe_finding(&mut self, f: &ProbeFinding, service: &str) {
        if let Some(ca) = &f.ca {
            self.issuers
                .insert(ca.key_id.to_string(), ca.subject.clone());
        }
        let (Some(leaf), Some(key)) = (&f.leaf, f.ca_key_id()) else {
            return;
        };
        self.issuers
            .entry(key.to_string())
            .or_insert_with(|| leaf.issuer.clone());
        let service = self.service(service).to_string();
        self.touch_key(key);
        let labels = [service.as_str(), "server", key];
        self.cert_not_after
            .with_label_values(&labels)
            .set(leaf.not_after_unix);
        self.own(key, KeyedFamily::CertNotAfter, &labels);
    }

    /// The CAs of the trusted reference, by source (`secret` for the mounted casecret,
    /// `trusted_ca` for files), as the detector has them now (the Secret may have changed).
    fn trusted_reference(&mut self, cas: &[ReferenceCa]) {
        let mut now = BTreeSet::new();
        for r in cas {
            let key = r.ca.key_id.to_string();
            let labels = [r.source.to_string(), key.clone(), r.ca.sha256.clone()];
            self.trusted_ca
                .with_label_values(&[&labels[0], &labels[1], &labels[2]])
                .set(1);
            self.trusted_ca_not_after
                .with_label_values(&[r.source, &key])
                .set(r.ca.not_after_unix);
            self.issuers
                .entry(key)
                .or_insert_with(|| r.ca.subject.clone());
            now.insert(labels);
        }
        for [source, key, sha] in self.trusted.difference(&now) {
            let _ = self.trusted_ca.remove_label_values(&[source, key, sha]);
            if !now.iter().any(|[s, k, _]| s == source && k == key) {
                let _ = self
                    .trusted_ca_not_after
                    .remove_label_values(&[source, key]);
            }
        }
        self.trusted = now;
    }

    /// The detector's state: trust state, failing clients, presented CAs, divergence, consistency.
    fn snapshot(&mut self, snap: &Snapshot) {
        self.trusted_reference(&snap.reference_cas);
        let mut replicas = BTreeSet::new();
        for svc in &snap.services {
            let service = self.service(&svc.service).to_string();
            self.trust_state
                .with_label_values(&[&service])
                .set(trust_state_value(svc.state));
            self.failing_clients
                .with_label_values(&[&service])
                .set(i64::from(svc.failing_clients));
            self.active_clients
                .with_label_values(&[&service])
                .set(i64::from(svc.failing_clients + svc.succeeding_clients));
            self.rotation_in_progress
                .with_label_values(&[&service])
                .set(i64::from(svc.rotation_in_progress));
            self.detector_saturated
                .with_label_values(&[&service])
                .set(i64::from(svc.saturated));
            for s in &svc.servers {
                if let Some(key) = &s.presented_ca_key_id {
                    replicas.insert([service.clone(), s.address.to_string(), key.to_string()]);
                }
            }
            let keys: BTreeSet<String> = svc
                .servers
                .iter()
                .filter_map(|s| s.presented_ca_key_id.as_ref().map(KeyId::to_string))
                .collect();
            self.ca_divergence
                .with_label_values(&[&service])
                .set(i64::try_from(keys.len()).unwrap_or(i64::MAX));
            let mut now = BTreeSet::new();
            for key in keys {
                self.touch_key(&key);
                let issuer = self
                    .issuers
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| UNKNOWN.to_string());
                now.insert((key, issuer));
            }
            let before = self
                .presented
                .insert(service.clone(), now.clone())
                .unwrap_or_default();
            for (key, issuer) in before.difference(&now) {
                let _ = self
                    .presented_ca
                    .remove_label_values(&[&service, key, issuer]);
            }
            for (key, issuer) in &now {
                let labels = [service.as_str(), key.as_str(), issuer.as_str()];
                self.presented_ca.with_label_values(&labels).set(1);
                self.own(key, KeyedFamily::PresentedCa, &labels);
            }
        }
        for [service, server, key] in self.replicas.difference(&replicas) {
            let _ = self.replica_ca.remove_label_values(&[service, server, key]);
        }
        for [service, server, key] in &replicas {
            self.replica_ca
                .with_label_values(&[service, server, key])
                .set(1);
        }
        self.replicas = replicas;
        self.ca_consistent.set(i64::from(snap.ca_consistent()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder as _;

    fn text(m: &Metrics) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&m.registry().gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn ca_key_series_are_bounded_to_the_most_recent() {
        let mut m = Metrics::new(MetricsLimits {
            max_ca_keys: 2,
            max_services: 4,
        })
        .unwrap();
        for k in ["k1", "k2", "k3"] {
            m.touch_key(k);
            let labels = ["cloudhub", k];
            m.cert_failures.with_label_values(&labels).inc();
            m.own(k, KeyedFamily::CertFailures, &labels);
        }
        let t = text(&m);
        assert!(!t.contains("ca_key_id=\"k1\""), "{t}");
        assert!(
            t.contains("ca_key_id=\"k2\"") && t.contains("ca_key_id=\"k3\""),
            "{t}"
        );
        // Seeing k2 again makes k3 the oldest.
        m.touch_key("k2");
        m.touch_key("k4");
        let t = text(&m);
        assert!(
            !t.contains("ca_key_id=\"k3\"") && t.contains("ca_key_id=\"k2\""),
            "{t}"
        );
    }

    /// Everything the summary counts is on `/metrics`, and documented.
    #[test]
    fn every_declared_counter_is_registered_and_documented() {
        let m = Metrics::new(MetricsLimits::default()).unwrap();
        let t = text(&m);
        let readme = include_str!("../../../README.md");
        for c in Stats::COUNTERS.iter().chain(DetectStats::COUNTERS) {
            assert!(
                t.contains(&format!("# TYPE {} counter", c.metric)),
                "{}",
                c.metric
            );
            assert!(
                t.contains(&format!("# HELP {} {}", c.metric, c.help)),
                "{}",
                c.metric
            );
            assert!(
                readme.contains(&format!("`{}`", c.metric)),
                "README lacks {}",
                c.metric
            );
        }
    }

    #[test]
    fn services_are_capped() {
        let mut m = Metrics::new(MetricsLimits {
            max_ca_keys: 2,
            max_services: 2,
        })
        .unwrap();
        assert_eq!(m.service("a"), "a");
        assert_eq!(m.service("b"), "b");
        assert_eq!(m.service("c"), OTHER_SERVICE);
        assert_eq!(m.service("a"), "a");
    }

    /// An eBPF source's program counters are exported under its source label, each under its
    /// own family and label; a libpcap source gets none of them.
    #[test]
    fn ebpf_program_counters_are_exported_per_source() {
        let m = Metrics::new(MetricsLimits::default()).unwrap();
        let ebpf = crate::capture::SourceCounters::default();
        let pcap = crate::capture::SourceCounters::default();
        let k = &ebpf.kernel;
        let totals = [
            (&k.seen, 1000),
            (&k.matched, 900),
            (&k.copied, 70),
            (&k.copied_bytes, 50_000),
            (&k.payload_bytes, 40_000),
            (&k.skipped_bytes, 7_000_000),
            (&k.truncated, 3),
            (&k.fragments, 4),
            (&k.header_copies, 5),
            (&k.decided, 6),
            (&k.wakeups, 7),
            (&k.run_count, 1000),
            (&k.run_time_ns, 2_500_000),
        ];
        for (c, v) in totals {
            c.store(v, Ordering::Relaxed);
        }
        m.source("ebpf:lo", &ebpf);
        m.source("pcap:lo", &pcap);
        // A second poll adds the growth; a total below the counter (not possible from one
        // source, but a counter never goes down) leaves it.
        k.run_time_ns.store(3_000_000, Ordering::Relaxed);
        k.wakeups.store(9, Ordering::Relaxed);
        k.copied.store(50, Ordering::Relaxed);
        m.source("ebpf:lo", &ebpf);
        let t = text(&m);
        for line in [
            "trustwatch_ebpf_packets_total{source=\"ebpf:lo\",stage=\"seen\"} 1000",
            "trustwatch_ebpf_packets_total{source=\"ebpf:lo\",stage=\"matched\"} 900",
            "trustwatch_ebpf_packets_total{source=\"ebpf:lo\",stage=\"copied\"} 70",
            "trustwatch_ebpf_bytes_total{kind=\"copied\",source=\"ebpf:lo\"} 50000",
            "trustwatch_ebpf_bytes_total{kind=\"payload_copied\",source=\"ebpf:lo\"} 40000",
            "trustwatch_ebpf_bytes_total{kind=\"payload_left_in_kernel\",source=\"ebpf:lo\"} 7000000",
            "trustwatch_ebpf_events_total{event=\"truncated\",source=\"ebpf:lo\"} 3",
            "trustwatch_ebpf_events_total{event=\"fragment_skipped\",source=\"ebpf:lo\"} 4",
            "trustwatch_ebpf_events_total{event=\"header_copied_out\",source=\"ebpf:lo\"} 5",
            "trustwatch_ebpf_events_total{event=\"connection_decided\",source=\"ebpf:lo\"} 6",
            "trustwatch_ebpf_events_total{event=\"reader_wakeup\",source=\"ebpf:lo\"} 9",
            "trustwatch_ebpf_runs_total{source=\"ebpf:lo\"} 1000",
            "trustwatch_ebpf_run_seconds_total{source=\"ebpf:lo\"} 0.003",
        ] {
            assert!(t.contains(line), "{line}\n{t}");
        }
        assert!(
            !t.contains("trustwatch_ebpf_packets_total{source=\"pcap:lo\""),
            "{t}"
        );
        assert!(
            !t.contains("trustwatch_ebpf_runs_total{source=\"pcap:lo\""),
            "{t}"
        );
    }

    #[test]
    fn counters_follow_cumulative_totals() {
        let m = Metrics::new(MetricsLimits::default()).unwrap();
        let counters = std::sync::Arc::new(crate::capture::SourceCounters::default());
        (0..10).for_each(|_| counters.handed(100));
        counters.count_drop(DropReason::QueueFull, 1);
        m.source("pcap:lo", &counters);
        counters.count_drop(DropReason::QueueFull, 2);
        counters.count_drop(DropReason::Kernel, 2);
        m.source("pcap:lo", &counters);
        let t = text(&m);
        assert!(
            t.contains("trustwatch_packets_total{source=\"pcap:lo\"} 10"),
            "{t}"
        );
        assert!(
            t.contains("trustwatch_capture_bytes_total{source=\"pcap:lo\"} 1000"),
            "{t}"
        );
        assert!(
            t.contains(
                "trustwatch_capture_dropped_packets_total{reason=\"queue_full\",source=\"pcap:lo\"} 3"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "trustwatch_capture_dropped_packets_total{reason=\"kernel\",source=\"pcap:lo\"} 2"
            ),
            "{t}"
        );
        assert!(t.contains("trustwatch_build_info{version=\""), "{t}");
    }
}
