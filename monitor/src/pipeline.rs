//! The pipeline: [`Packet`] → decode → flow table → handshake [`Tracker`] → [`Connection`].
//!
//! One `Pipeline` per capture session, single-threaded; files and live sources feed it the same
//! way. Connections are emitted as soon as their outcome is decided (so detection is not delayed
//! until a connection closes) or when their flow ends.

use std::collections::HashMap;
use std::sync::Arc;

use crate::base::Timestamp;
use crate::capture::{Frame, Packet};
use crate::cert::CertCache;
use crate::config::{Limits, Services};
use crate::decode::{self, Skip, TcpSegment};
use crate::flow::{ClosedFlow, Endpoints, FlowFactory, FlowTable, Side};
use crate::handshake::tracker::TrackerCtx;
use crate::handshake::{Connection, Tracker};
use crate::stats::Stats;
use crate::tls::record::looks_like_tls_start;

/// How often (packet time) idle flows are swept.
const EXPIRE_EVERY_US: i64 = 1_000_000;
/// Flows closed (expired, drained) before they are finalized: a burst never holds them all.
const CLOSE_BATCH: usize = 256;

/// Opens a [`Tracker`] for segments that belong to a watched service.
struct Factory {
    services: Services,
    limits: Limits,
    names: HashMap<u16, Arc<str>>,
    /// Segments (SYN or payload) of flows on ports that are not watched, by server port: the
    /// ports to suggest when nothing was found on the watched ones (at most 65536 entries).
    other_ports: HashMap<u16, u64>,
}

impl Factory {
    fn service_name(&mut self, port: u16) -> Arc<str> {
        let services = &self.services;
        self.names
            .entry(port)
            .or_insert_with(|| services.label(port).into())
            .clone()
    }
}

impl FlowFactory for Factory {
    type Handler = Tracker;

    fn open(&mut self, seg: &TcpSegment, _sender: Side, endpoints: Endpoints) -> Option<Tracker> {
        let port = endpoints.server.port();
        if !self.services.is_watched(port) && !self.services.any_port {
            *self.other_ports.entry(port).or_default() += 1;
            return None;
        }
        // A flow picked up mid-stream starts only where a TLS record starts; a SYN starts it
        // anyway (a flow that then carries no TLS yields no record).
        if !seg.flags.syn && !looks_like_tls_start(seg.payload) {
            return None;
        }
        let service = self.service_name(port);
        Some(Tracker::new(
            endpoints,
            service,
            seg.ts,
            seg.vlan,
            &self.limits,
        ))
    }

    fn is_server_port(&self, port: u16) -> bool {
        self.services.is_watched(port)
    }
}

/// Packets in, connection records out.
pub struct Pipeline {
    factory: Factory,
    table: FlowTable<Tracker>,
    ctx: TrackerCtx,
    closed: Vec<ClosedFlow<Tracker>>,
    next_expire: Option<Timestamp>,
    first_ts: Option<Timestamp>,
    last_ts: Timestamp,
}

impl Pipeline {
    pub fn new(services: Services, limits: Limits) -> Self {
        Pipeline {
            table: FlowTable::new(&limits),
            ctx: TrackerCtx {
                certs: CertCache::new(limits.cert_cache, limits.cert_memory),
                stats: Stats::default(),
            },
            factory: Factory {
                services,
                limits,
                names: HashMap::new(),
                other_ports: HashMap::new(),
            },
            closed: Vec::new(),
            next_expire: None,
            first_ts: None,
            last_ts: Timestamp::default(),
        }
    }

    /// Processes one packet; decided or finished connections go to `out`.
    pub fn packet(&mut self, pkt: &Packet, out: &mut impl FnMut(Connection)) {
        self.frame(pkt.frame(), out);
    }

    /// Processes one frame (borrowed from wherever it was read); as [`Pipeline::packet`].
    pub fn frame(&mut self, pkt: Frame<'_>, out: &mut impl FnMut(Connection)) {
        let stats = &mut self.ctx.stats;
        stats.packets += 1;
        stats.bytes += pkt.data.len() as u64;
        let index = stats.packets;
        self.last_ts = self.last_ts.max(pkt.ts);
        if self.first_ts.is_none_or(|f| pkt.ts < f) {
            self.first_ts = Some(pkt.ts);
        }
        match decode::decode(&pkt) {
            Ok(mut seg) => {
                seg.index = index;
                if let Some(Some(conn)) = self.table.segment(
                    seg,
                    &mut self.factory,
                    &mut self.ctx,
                    &mut self.closed,
                    Tracker::take_decided,
                ) {
                    self.ctx.stats.connections += 1;
                    out(conn);
                }
            }
            Err(Skip::NotTcp) => stats.not_tcp += 1,
            Err(Skip::Fragment) => stats.ip_fragments += 1,
            Err(Skip::Malformed) => stats.malformed_packets += 1,
        }
        match self.next_expire {
            Some(at) if pkt.ts < at => {}
            _ => {
                self.flush_closed(out);
                self.expire(pkt.ts, out);
                self.next_expire = Some(Timestamp(pkt.ts.0.saturating_add(EXPIRE_EVERY_US)));
            }
        }
        self.flush_closed(out);
    }

    /// Advances packet time without a packet (live capture on a quiet link).
    pub fn tick(&mut self, now: Timestamp, out: &mut impl FnMut(Connection)) {
        self.expire(now, out);
    }

    fn expire(&mut self, now: Timestamp, out: &mut impl FnMut(Connection)) {
        while self
            .table
            .expire(now, CLOSE_BATCH, &mut self.ctx, &mut self.closed)
            == CLOSE_BATCH
        {
            self.flush_closed(out);
        }
        self.flush_closed(out);
    }

    /// Ends the capture: every open flow is finalized.
    pub fn finish(&mut self, out: &mut impl FnMut(Connection)) {
        while !self.table.is_empty() {
            self.table
                .drain(CLOSE_BATCH, &mut self.ctx, &mut self.closed);
            self.flush_closed(out);
        }
        self.flush_closed(out);
    }

    #[inline]
    fn flush_closed(&mut self, out: &mut impl FnMut(Connection)) {
        if self.closed.is_empty() {
            return;
        }
        for flow in self.closed.drain(..) {
            if let Some(conn) = flow.handler.finish(flow.reason, flow.last_ts) {
                self.ctx.stats.connections += 1;
                out(conn);
            }
        }
    }

    /// Counters so far (certificate counters included).
    pub fn stats(&self) -> Stats {
        let mut stats = self.ctx.stats.clone();
        let certs = self.ctx.certs.counters();
        stats.certificates += certs.certificates;
        stats.malformed_certificates += certs.malformed;
        stats.cert_cache_hits += certs.hits;
        stats
    }

    /// The `n` busiest TCP server ports that are not watched, by segments seen (SYN or payload),
    /// busiest first (ties: lower port first).
    pub fn busiest_other_ports(&self, n: usize) -> Vec<(u16, u64)> {
        let mut ports: Vec<(u16, u64)> = self
            .factory
            .other_ports
            .iter()
            .map(|(p, c)| (*p, *c))
            .collect();
        ports.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ports.truncate(n);
        ports
    }

    /// The watched server ports (empty with no `--ports` list and `--any-port`).
    pub fn services(&self) -> &Services {
        &self.factory.services
    }

    /// Flows currently tracked.
    pub fn flows_active(&self) -> usize {
        self.table.len()
    }

    /// Earliest and latest packet time seen.
    pub fn span(&self) -> Option<(Timestamp, Timestamp)> {
        self.first_ts.map(|f| (f, self.last_ts))
    }

    /// Latest packet time seen.
    pub fn last_ts(&self) -> Timestamp {
        self.last_ts
    }
}
