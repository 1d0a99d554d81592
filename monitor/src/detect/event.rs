//! Detector events: the alert records (`event.kind: "alert"`) written to the JSON Lines stream next
//! to connection records, their one-line timeline rendering, and which of them fail a run.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeMap as _;
use serde_json::{Map, Value, json};

use super::classify::RejectingSide;
use crate::base::Timestamp;
use crate::trust::{Disagreement, PresentedCa};

/// Where a CA key was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaSource {
    /// In a passively captured chain (TLS 1.2 and earlier).
    Passive,
    /// `GET /ca.crt` on the replica.
    ProbeCa,
    /// A `--probe-chain` handshake.
    ProbeChain,
    /// The mounted `casecret` (`cadata`).
    Secret,
}

impl CaSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CaSource::Passive => "passive",
            CaSource::ProbeCa => "probe_ca",
            CaSource::ProbeChain => "probe_chain",
            CaSource::Secret => "secret",
        }
    }
}

/// What made the detector call a divergence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DivergenceBasis {
    /// Different server addresses present different issuing CA keys (chains or probes).
    PresentedKeys,
    /// One address presents a key it had replaced within the window (replicas behind one address).
    Alternating,
    /// TLS 1.3: the same clients succeed on one replica and are rejected on certificate grounds by another.
    OutcomeSplit,
}

/// One replica in a divergence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Replica {
    pub address: SocketAddr,
    pub ca_key_id: Option<String>,
    pub ca_source: Option<CaSource>,
    pub successes: u32,
    pub cert_failures: u32,
    /// Distinct clients with a success / a certificate failure on this address in the window.
    pub clients_succeeded: u32,
    pub clients_rejected: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Collapse {
    /// The last CA key that had successful handshakes on the service.
    pub previous_ca_key_id: Option<String>,
    /// The CA key presented now, when visible (TLS 1.2 chain or probe).
    pub current_ca_key_id: Option<String>,
    pub rejecting_side: RejectingSide,
    /// Distinct clients whose latest handshake in the window failed on certificate grounds.
    pub failing_clients: u32,
    pub succeeding_clients: u32,
    pub failure_share: f64,
    /// Up to `max_listed_clients` of the failing clients.
    pub clients: Vec<IpAddr>,
    pub handshakes: u32,
    pub cert_failures: u32,
    #[serde(skip)]
    pub first_failure: Timestamp,
    pub servers: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recovered {
    #[serde(skip)]
    pub collapsed_at: Timestamp,
    /// The CA key of the successful handshakes, when visible.
    pub ca_key_id: Option<String>,
    pub previous_ca_key_id: Option<String>,
    pub succeeding_clients: u32,
    pub failing_clients: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaChange {
    pub server: Option<SocketAddr>,
    pub previous_ca_key_id: String,
    pub current_ca_key_id: String,
    pub source: CaSource,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    pub basis: DivergenceBasis,
    pub replicas: Vec<Replica>,
    /// Clients that succeeded on one of the replicas and were rejected by another (outcome split).
    pub split_clients: u32,
    /// Distinct CA keys presented.
    pub ca_key_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inconsistent {
    pub server: Option<SocketAddr>,
    pub presented: PresentedCa,
    pub source: CaSource,
    pub disagreements: Vec<Disagreement>,
}

/// The event's kind and its fields.
#[derive(Clone, Debug, PartialEq)]
pub enum EventDetail {
    TrustCollapse(Collapse),
    TrustRecovered(Recovered),
    CaChanged(CaChange),
    CaDivergence(Divergence),
    CaInconsistent(Inconsistent),
}

/// One detector finding.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Detection time (packet time of the connection or tick that decided it).
    pub at: Timestamp,
    pub service: Arc<str>,
    pub detail: EventDetail,
}

impl Event {
    /// `trustwatch.event` value.
    pub fn name(&self) -> &'static str {
        match self.detail {
            EventDetail::TrustCollapse(_) => "trust_collapse",
            EventDetail::TrustRecovered(_) => "trust_recovered",
            EventDetail::CaChanged(_) => "ca_changed",
            EventDetail::CaDivergence(_) => "ca_divergence",
            EventDetail::CaInconsistent(_) => "ca_inconsistent",
        }
    }

    /// Human-readable evidence, one sentence.
    pub fn evidence(&self) -> String {
        let key = |k: &Option<String>| {
            k.as_deref()
                .map_or_else(|| "unknown".to_string(), short_key)
        };
        match &self.detail {
            EventDetail::TrustCollapse(c) => format!(
                "{} distinct clients failed on certificate grounds ({} rejecting) in the window, {:.0}% of active clients; \
                 first failure {}; last trusted CA key {}, presented CA key {}",
                c.failing_clients,
                c.rejecting_side.as_str(),
                c.failure_share * 100.0,
                c.first_failure.rfc3339(),
                key(&c.previous_ca_key_id),
                key(&c.current_ca_key_id),
            ),
            EventDetail::TrustRecovered(r) => format!(
                "{} clients succeed again (CA key {}), {} still failing; collapsed at {}",
                r.succeeding_clients,
                key(&r.ca_key_id),
                r.failing_clients,
                r.collapsed_at.rfc3339()
            ),
            EventDetail::CaChanged(c) => format!(
                "{} now presents CA key {} (was {}), seen by {}",
                c.server
                    .map_or_else(|| "the stored CA".to_string(), |s| s.to_string()),
                short_key(&c.current_ca_key_id),
                short_key(&c.previous_ca_key_id),
                c.source.as_str()
            ),
            EventDetail::CaDivergence(d) => {
                let mut s = match d.basis {
                    DivergenceBasis::PresentedKeys => {
                        "replicas present different CA keys:".to_string()
                    }
                    DivergenceBasis::Alternating => {
                        "one address alternates between CA keys:".to_string()
                    }
                    DivergenceBasis::OutcomeSplit => format!(
                        "{} clients succeed on one replica and are rejected on certificate grounds by another:",
                        d.split_clients
                    ),
                };
                for r in &d.replicas {
                    let _ = write!(
                        s,
                        " {} [CA {}; {} ok / {} cert-rejected clients]",
                        r.address,
                        key(&r.ca_key_id),
                        r.clients_succeeded,
                        r.clients_rejected
                    );
                }
                s
            }
            EventDetail::CaInconsistent(i) => {
                let presented = i
                    .presented
                    .der_sha256
                    .as_ref()
                    .map(|h| format!("sha256:{}", &h[..h.len().min(16)]))
                    .or_else(|| i.presented.key_ids.first().map(|k| short_key(k)))
                    .unwrap_or_else(|| "unknown".into());
                let srcs: Vec<&str> = i.disagreements.iter().map(|d| d.source.as_str()).collect();
                format!(
                    "{} presents CA {presented} ({}), which differs from {}",
                    i.server
                        .map_or_else(|| "the service".to_string(), |s| s.to_string()),
                    i.source.as_str(),
                    srcs.join(", ")
                )
            }
        }
    }
}

fn short_key(k: &str) -> String {
    k.chars().take(16).collect()
}

/// One line for the trust timeline: `<time> <service> <EVENT> <evidence>`.
pub fn render_timeline_line(e: &Event) -> String {
    format!(
        "{}  {:<10} {:<16} {}",
        e.at.rfc3339(),
        e.service,
        e.name().to_uppercase(),
        e.evidence()
    )
}

/// Whether `analyze` exits 3 for this event: a collapse, a divergence or an inconsistency.
pub fn exit_worthy(e: &Event) -> bool {
    matches!(
        e.detail,
        EventDetail::TrustCollapse(_)
            | EventDetail::CaDivergence(_)
            | EventDetail::CaInconsistent(_)
    )
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut tw = Map::new();
        tw.insert("event".into(), json!(self.name()));
        tw.insert("service".into(), json!(&*self.service));
        tw.insert("detection_time".into(), json!(self.at.rfc3339()));
        let fields = match &self.detail {
            EventDetail::TrustCollapse(c) => {
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("first_failure".into(), json!(c.first_failure.rfc3339()));
                    o.insert(
                        "detection_latency_us".into(),
                        json!(self.at.since(c.first_failure)),
                    );
                }
                v
            }
            EventDetail::TrustRecovered(r) => {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("collapsed_at".into(), json!(r.collapsed_at.rfc3339()));
                }
                v
            }
            EventDetail::CaChanged(c) => serde_json::to_value(c).unwrap_or(Value::Null),
            EventDetail::CaDivergence(d) => serde_json::to_value(d).unwrap_or(Value::Null),
            EventDetail::CaInconsistent(i) => serde_json::to_value(i).unwrap_or(Value::Null),
        };
        if let Value::Object(o) = fields {
            tw.extend(o);
        }
        let evidence = self.evidence();
        tw.insert("evidence".into(), json!(evidence));
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@timestamp", &self.at.rfc3339())?;
        m.serialize_entry(
            "event",
            &json!({
                "kind": "alert",
                "category": ["network"],
                "type": ["info"],
                "action": self.name(),
                "severity": if exit_worthy(self) { 3 } else { 1 },
                "reason": evidence,
            }),
        )?;
        m.serialize_entry("message", &render_timeline_line(self))?;
        if let Some(server) = single_server(&self.detail) {
            m.serialize_entry("server", &json!({"address": server.ip().to_string(), "ip": server.ip().to_string(), "port": server.port()}))?;
        }
        m.serialize_entry("trustwatch", &tw)?;
        m.end()
    }
}

fn single_server(d: &EventDetail) -> Option<SocketAddr> {
    match d {
        EventDetail::CaChanged(c) => c.server,
        EventDetail::CaInconsistent(i) => i.server,
        EventDetail::TrustCollapse(c) if c.servers.len() == 1 => c.servers.first().copied(),
        _ => None,
    }
}
