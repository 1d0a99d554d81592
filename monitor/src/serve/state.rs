//! The `/api/state` document: the detector snapshot plus what only the live monitor knows
//! (capture sources, probe results, the timeline).

use std::collections::BTreeMap;

use serde::Serialize;

use super::timeline::Bucket;
use crate::detect::Snapshot;
use crate::trust::probe::ProbeResult;

/// One capture source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceState {
    /// `BACKEND:INTERFACE`.
    pub name: String,
    pub running: bool,
    pub packets: u64,
    pub bytes: u64,
    pub dropped_queue_full: u64,
    pub dropped_kernel: u64,
    pub dropped_interface: u64,
    pub dropped_ring_full: u64,
    pub errors: u64,
    pub restarts: u64,
}

/// Everything `/api/state` returns.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatePage {
    pub version: &'static str,
    /// Wall time of this page, RFC 3339.
    pub updated: String,
    pub started: String,
    pub ca_consistent: bool,
    pub sources: Vec<SourceState>,
    /// The detector's view: per service the trust state, CA keys with counts, servers, recent events.
    pub detector: Option<Snapshot>,
    /// Latest result per probe target.
    pub probes: Vec<ProbeResult>,
    pub timeline_bucket_secs: i64,
    /// Per service: successes and failures per bucket and CA key id.
    pub timeline: BTreeMap<String, Vec<Bucket>>,
    pub handshakes: u64,
    pub packets: u64,
    pub flows_active: usize,
}
