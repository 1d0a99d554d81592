//! Counters for everything the packet path skips, drops or cannot parse.
//!
//! Each stage increments its own fields; the report prints them and the exporter turns them into
//! Prometheus counters. Plain integers: the pipeline runs on one thread.

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    // capture
    pub packets: u64,
    pub bytes: u64,
    // decode
    pub not_tcp: u64,
    pub ip_fragments: u64,
    pub malformed_packets: u64,
    // flow
    pub flows_opened: u64,
    /// Segments of flows that were not opened (unwatched port, mid-stream without a TLS record start).
    pub segments_ignored: u64,
    /// Flows evicted because the flow table was full.
    pub flows_evicted: u64,
    /// Flows closed by the idle timeout.
    pub flows_timed_out: u64,
    /// Holes in a TCP stream that were skipped (lost segments, window exceeded).
    pub reassembly_gaps: u64,
    /// Bytes skipped over those holes.
    pub gap_bytes: u64,
    /// Retransmitted or overlapping bytes whose content differed from the first copy (first copy wins).
    pub overlap_conflicts: u64,
    /// Out-of-order bytes dropped because the per-direction handshake window was full.
    pub window_dropped_bytes: u64,
    // tls
    pub tls_records: u64,
    pub malformed_records: u64,
    pub malformed_handshakes: u64,
    /// Alerts beyond the per-connection limit (the first ones decide).
    pub alerts_dropped: u64,
    // certificates
    pub certificates: u64,
    /// Certificates of a chain beyond `Limits::max_chain_len`.
    pub chain_certs_dropped: u64,
    pub malformed_certificates: u64,
    pub cert_cache_hits: u64,
    // connections
    pub connections: u64,
}

impl AsMut<Stats> for Stats {
    fn as_mut(&mut self) -> &mut Stats {
        self
    }
}
