//! A service as `/api/state`, the metrics and the report show it.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::window::Counts;
use super::{ServiceState, TrustState};
use crate::base::{KeyId, Timestamp};
use crate::detect::DetectConfig;
use crate::detect::classify::RejectingSide;
use crate::detect::event::{CaSource, CollapseScope};

/// A failing client in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClientSnapshot {
    pub address: IpAddr,
    pub failing_since: Option<String>,
    pub last_seen: String,
    /// Its latest success, and the CA key it succeeded under (the CA it trusts), if seen.
    pub last_ok: Option<String>,
    pub trusted_ca_key_id: Option<KeyId>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaKeySnapshot {
    pub ca_key_id: KeyId,
    pub successes: u32,
    pub failures: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerSnapshot {
    pub address: SocketAddr,
    pub presented_ca_key_id: Option<KeyId>,
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
    /// While collapsed: `total` or `partial`.
    pub scope: Option<CollapseScope>,
    /// Replicas present different CA keys while clients keep succeeding: a planned rotation.
    pub rotation_in_progress: bool,
    /// The detector evicted state within the last window to stay within its bounds: the verdict
    /// may be degraded (see `trustwatch_detector_saturated`).
    pub saturated: bool,
    /// Handshake counts in the window.
    pub window: Counts,
    pub failing_clients: u32,
    pub succeeding_clients: u32,
    /// Up to `max_listed_clients` failing clients.
    pub failing_client_list: Vec<ClientSnapshot>,
    pub rejecting_side: RejectingSide,
    pub last_good_ca_key_id: Option<KeyId>,
    /// CA keys seen in the window with their success / certificate-failure counts.
    pub ca_keys: Vec<CaKeySnapshot>,
    /// CA presented per server address, with that address's window counts.
    pub servers: Vec<ServerSnapshot>,
    /// Non-empty while replicas present different CA keys.
    pub divergent_ca_key_ids: Vec<KeyId>,
}

impl ServiceState {
    pub fn snapshot(&self, now: Timestamp, cfg: &DetectConfig) -> ServiceSnapshot {
        let w = &self.window;
        let mut failing: Vec<ClientSnapshot> = w
            .clients
            .iter()
            .filter(|(_, c)| c.last == super::window::Last::CertFailure)
            .map(|(ip, c)| ClientSnapshot {
                address: *ip,
                failing_since: c.fail_since.map(Timestamp::rfc3339),
                last_seen: c.last_t.rfc3339(),
                last_ok: c.last_ok.map(Timestamp::rfc3339),
                trusted_ca_key_id: c.ok_ca.clone(),
            })
            .collect();
        failing.sort_by_key(|c| c.address);
        failing.truncate(cfg.limits.max_listed_clients);
        ServiceSnapshot {
            service: self.name.to_string(),
            state: self.trust.state,
            state_since: self.trust.since.map(Timestamp::rfc3339),
            scope: self.trust.scope,
            rotation_in_progress: self.divergence.rotation.is_some(),
            saturated: self.window.saturated(now),
            window: w.counts,
            failing_clients: w.n_failing,
            succeeding_clients: w.n_succeeding,
            failing_client_list: failing,
            rejecting_side: w.rejecters.side(),
            last_good_ca_key_id: self.trust.last_good_ca.clone(),
            ca_keys: w
                .ca_keys
                .iter()
                .map(|(k, c)| CaKeySnapshot {
                    ca_key_id: k.clone(),
                    successes: c.successes,
                    failures: c.cert_failures,
                })
                .collect(),
            servers: self
                .servers
                .iter()
                .map(|(a, s)| ServerSnapshot {
                    address: *a,
                    presented_ca_key_id: s.presented.as_ref().map(|p| p.key.clone()),
                    presented_source: s.presented.as_ref().map(|p| p.source),
                    presented_seen: s.presented.as_ref().map(|p| p.last_seen.rfc3339()),
                    window: s.counts,
                })
                .collect(),
            divergent_ca_key_ids: self
                .divergence
                .keys
                .as_ref()
                .map(|k| {
                    k.iter()
                        .cloned()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
