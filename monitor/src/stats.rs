//! Counters of the packet path: everything each stage handled, skipped, dropped or could not parse.
//!
//! Each stage increments its own fields; the report and the exporter both walk
//! [`Stats::COUNTERS`], so a counter added here is printed by `analyze` and exported on `/metrics`
//! without another edit. Plain integers: the pipeline runs on one thread.

crate::counters! {
    /// The pipeline's counters, cumulative since start.
    pub struct Stats {
        // decode
        packets: Volume, "trustwatch_pipeline_packets_total", "packets",
            "Packets the pipeline decoded (from every source).";
        bytes: Volume, "trustwatch_pipeline_bytes_total", "bytes",
            "Captured bytes the pipeline decoded.";
        not_tcp: Volume, "trustwatch_not_tcp_packets_total", "not TCP",
            "Packets that were not TCP (not IP, UDP, ICMP, ...).";
        ip_fragments: Loss, "trustwatch_ip_fragments_total", "IP fragments skipped",
            "IP fragments, counted and skipped (never reassembled).";
        malformed_packets: Loss, "trustwatch_malformed_packets_total", "malformed packets",
            "Packets whose headers were cut short or corrupt.";
        // flow
        flows_opened: Volume, "trustwatch_flows_opened_total", "flows",
            "TCP flows opened on watched ports (or by content with --any-port).";
        segments_ignored: Volume, "trustwatch_segments_ignored_total", "segments ignored",
            "Segments of flows that were not opened (unwatched port, mid-stream without a TLS record start).";
        flows_evicted: Loss, "trustwatch_flows_evicted_total", "flows evicted",
            "Flows evicted because the flow table was full (--max-flows).";
        flows_timed_out: Volume, "trustwatch_flows_timed_out_total", "flows timed out",
            "Flows closed by the idle timeout (--idle-timeout).";
        reassembly_gaps: Loss, "trustwatch_reassembly_gaps_total", "reassembly gaps",
            "Holes in TCP streams that were skipped (lost segments, window exceeded).";
        gap_bytes: Loss, "trustwatch_gap_bytes_total", "gap bytes",
            "Stream bytes skipped over reassembly holes.";
        overlap_conflicts: Loss, "trustwatch_overlap_conflicts_total", "overlap conflicts",
            "Retransmitted or overlapping bytes whose content differed from the first copy (first copy wins).";
        window_dropped_bytes: Loss, "trustwatch_window_dropped_bytes_total", "window-dropped bytes",
            "Out-of-order bytes dropped because the per-direction handshake window was full.";
        // tls
        tls_records: Volume, "trustwatch_tls_records_total", "TLS records",
            "TLS records parsed.";
        malformed_records: Loss, "trustwatch_malformed_records_total", "malformed records",
            "Byte streams that stopped parsing as TLS records.";
        malformed_handshakes: Loss, "trustwatch_malformed_handshakes_total", "malformed handshakes",
            "Handshake messages that could not be parsed.";
        alerts_dropped: Loss, "trustwatch_alerts_dropped_total", "alerts over the per-connection limit",
            "Alerts beyond the per-connection limit (the first ones decide).";
        // certificates
        certificates: Volume, "trustwatch_certificates_total", "certificates",
            "Certificates seen in presented chains.";
        chain_certs_dropped: Loss, "trustwatch_chain_certs_dropped_total", "chain certificates over --max-chain",
            "Certificates of a chain beyond --max-chain.";
        malformed_certificates: Loss, "trustwatch_malformed_certificates_total", "malformed certificates",
            "Certificates that could not be parsed as X.509.";
        cert_cache_hits: Volume, "trustwatch_cert_cache_hits_total", "certificate cache hits",
            "Certificates found already parsed in the cache.";
        // handshake
        connections: Volume, "trustwatch_connections_total", "connection records",
            "Connection records produced (TLS connections with a hello).";
    }
}

impl AsMut<Stats> for Stats {
    fn as_mut(&mut self) -> &mut Stats {
        self
    }
}
