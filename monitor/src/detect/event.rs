//! Detector events: the alert records (`event.kind: "alert"`) written to the JSON Lines stream next
//! to connection records, their one-line timeline rendering, and which of them fail a run.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use super::classify::RejectingSide;
use crate::base::{KeyId, Timestamp};
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
    pub ca_key_id: Option<KeyId>,
    pub ca_source: Option<CaSource>,
    pub successes: u32,
    pub cert_failures: u32,
    /// Distinct clients with a success / a certificate failure on this address in the window.
    pub clients_succeeded: u32,
    pub clients_rejected: u32,
}

/// How much of a service collapsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CollapseScope {
    /// At least `--collapse-share` of the window's clients fail.
    Total,
    /// Fewer (at least `--partial-share`): one replica, or a share of the edges.
    Partial,
}

impl CollapseScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CollapseScope::Total => "total",
            CollapseScope::Partial => "partial",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Collapse {
    pub scope: CollapseScope,
    /// The last CA key that had successful handshakes on the service.
    pub previous_ca_key_id: Option<KeyId>,
    /// The CA key presented now, when visible (TLS 1.2 chain or probe).
    pub current_ca_key_id: Option<KeyId>,
    pub rejecting_side: RejectingSide,
    /// Distinct clients whose latest handshake in the window failed on certificate grounds.
    pub failing_clients: u32,
    pub succeeding_clients: u32,
    pub failure_share: f64,
    /// Up to `max_listed_clients` of the failing clients.
    pub clients: Vec<IpAddr>,
    pub handshakes: u32,
    pub cert_failures: u32,
    /// The start of the earliest failure run within one window of the detection.
    pub first_failure: Timestamp,
    /// Detection time minus `first_failure`.
    pub detection_latency_us: i64,
    pub servers: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recovered {
    pub collapsed_at: Timestamp,
    /// The CA key of the successful handshakes, when visible.
    pub ca_key_id: Option<KeyId>,
    pub previous_ca_key_id: Option<KeyId>,
    pub succeeding_clients: u32,
    pub failing_clients: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaChange {
    pub server: Option<SocketAddr>,
    pub previous_ca_key_id: KeyId,
    pub current_ca_key_id: KeyId,
    pub source: CaSource,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    pub basis: DivergenceBasis,
    pub replicas: Vec<Replica>,
    /// Clients that succeeded on one of the replicas and were rejected by another (outcome split).
    pub split_clients: u32,
    /// Distinct CA keys presented.
    pub ca_key_ids: Vec<KeyId>,
}

/// Replicas present different CA keys while clients keep succeeding under them: a planned
/// rotation (blue/green, rolling), not an incident.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rotation {
    pub replicas: Vec<Replica>,
    /// The CA keys presented.
    pub ca_key_ids: Vec<KeyId>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inconsistent {
    pub server: Option<SocketAddr>,
    pub presented: PresentedCa,
    pub source: CaSource,
    pub disagreements: Vec<Disagreement>,
}

/// The event's kind and its fields (serialized as the fields alone: the kind is
/// [`Event::name`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventDetail {
    TrustCollapse(Collapse),
    TrustRecovered(Recovered),
    CaChanged(CaChange),
    CaDivergence(Divergence),
    CaRotation(Rotation),
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
            EventDetail::CaRotation(_) => "ca_rotation",
            EventDetail::CaInconsistent(_) => "ca_inconsistent",
        }
    }

    /// The one server the event is about, when there is one.
    pub fn server(&self) -> Option<SocketAddr> {
        match &self.detail {
            EventDetail::CaChanged(c) => c.server,
            EventDetail::CaInconsistent(i) => i.server,
            EventDetail::TrustCollapse(c) if c.servers.len() == 1 => c.servers.first().copied(),
            _ => None,
        }
    }
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
