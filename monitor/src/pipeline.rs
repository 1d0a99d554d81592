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

/// When the flow table is swept for idle flows: at the first packet at or past the due time,
/// then [`EXPIRE_EVERY_US`] of packet time later. Packet times alone decide it, so a parallel
/// run's reader schedules the sweeps of all its workers as one pipeline would.
#[derive(Clone, Copy, Debug, Default)]
pub struct SweepSchedule {
    next: Option<Timestamp>,
}

impl SweepSchedule {
    /// Whether the packet at `ts` is followed by a sweep at `ts`.
    #[inline]
    pub fn due(&mut self, ts: Timestamp) -> bool {
        match self.next {
            Some(at) if ts < at => false,
            _ => {
                self.next = Some(Timestamp(ts.0.saturating_add(EXPIRE_EVERY_US)));
                true
            }
        }
    }
}

/// Packets in, connection records out.
pub struct Pipeline {
    factory: Factory,
    table: FlowTable<Tracker>,
    ctx: TrackerCtx,
    closed: Vec<ClosedFlow<Tracker>>,
    sweeps: SweepSchedule,
    first_ts: Option<Timestamp>,
    last_ts: Timestamp,
    /// How far packet times have gone back so far ([`Disorder`]).
    disorder: Disorder,
}

/// How far packet times have gone back so far in a capture (microseconds): the largest step
/// back from the latest time seen. Idle sweeps need it to find every idle flow
/// ([`FlowTable::expire`]); a parallel run's reader keeps it for all its workers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Disorder {
    latest: Option<Timestamp>,
    back_us: i64,
}

impl Disorder {
    #[inline]
    pub fn see(&mut self, ts: Timestamp) {
        match self.latest {
            Some(l) if ts < l => self.back_us = self.back_us.max(l.since(ts)),
            _ => self.latest = Some(ts),
        }
    }

    pub fn back_us(&self) -> i64 {
        self.back_us
    }
}

/// What a pipeline holds at one moment (the gauges of `/metrics` and `/api/state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Flows tracked.
    pub flows: usize,
    /// Memory charged for the flows and their buffers, and its share of the budget.
    pub flow_bytes: usize,
    pub flow_budget: usize,
    /// Memory charged for the cached certificates, and its share of the budget.
    pub cert_bytes: usize,
    pub cert_budget: usize,
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
            sweeps: SweepSchedule::default(),
            first_ts: None,
            last_ts: Timestamp::default(),
            disorder: Disorder::default(),
        }
    }

    /// Processes one packet; decided or finished connections go to `out`.
    pub fn packet(&mut self, pkt: &Packet, out: &mut impl FnMut(Connection)) {
        self.frame(pkt.frame(), out);
    }

    /// Processes one frame (borrowed from wherever it was read); as [`Pipeline::packet`].
    pub fn frame(&mut self, pkt: Frame<'_>, out: &mut impl FnMut(Connection)) {
        let ts = pkt.ts;
        self.disorder.see(ts);
        self.frame_at(pkt, self.ctx.stats.packets + 1, out);
        if self.sweeps.due(ts) {
            self.expire(ts, self.disorder.back_us(), &mut |_, c| out(c));
        }
    }

    /// Processes frame number `index` (from 1) of the whole capture, without sweeping idle
    /// flows: the connections it decided or closed go to `out`. A parallel run's worker sees only
    /// some frames and is told the sweeps ([`Pipeline::tick_indexed`]).
    #[inline]
    pub fn frame_at(&mut self, pkt: Frame<'_>, index: u64, out: &mut impl FnMut(Connection)) {
        self.decoded_at(&pkt, decode::decode(&pkt), index, out);
    }

    /// As [`Pipeline::frame_at`], with the frame already decoded (`decoded` is
    /// `decode::decode(pkt)`): a parallel run's reader decodes every frame to route it.
    #[inline]
    pub fn decoded_at(
        &mut self,
        pkt: &Frame<'_>,
        decoded: Result<TcpSegment<'_>, Skip>,
        index: u64,
        out: &mut impl FnMut(Connection),
    ) {
        let stats = &mut self.ctx.stats;
        stats.packets += 1;
        stats.bytes += pkt.data.len() as u64;
        self.last_ts = self.last_ts.max(pkt.ts);
        if self.first_ts.is_none_or(|f| pkt.ts < f) {
            self.first_ts = Some(pkt.ts);
        }
        match decoded {
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
        self.flush_closed(&mut |_, c| out(c));
    }

    /// Advances packet time without a packet (live capture on a quiet link).
    pub fn tick(&mut self, now: Timestamp, out: &mut impl FnMut(Connection)) {
        self.expire(now, self.disorder.back_us(), &mut |_, c| out(c));
    }

    /// The idle sweep of a parallel run's worker, at `now` with the whole capture's
    /// [`Disorder`] so far: as [`Pipeline::tick`], each record with the index of its flow's last
    /// packet (one pipeline closes idle flows in that order).
    pub fn tick_indexed(
        &mut self,
        now: Timestamp,
        disorder_us: i64,
        out: &mut impl FnMut(u64, Connection),
    ) {
        self.expire(now, disorder_us, out);
    }

    fn expire(&mut self, now: Timestamp, disorder_us: i64, out: &mut impl FnMut(u64, Connection)) {
        while self.table.expire(
            now,
            disorder_us,
            CLOSE_BATCH,
            &mut self.ctx,
            &mut self.closed,
        ) == CLOSE_BATCH
        {
            self.flush_closed(out);
        }
        self.flush_closed(out);
    }

    /// Ends the capture: every open flow is finalized.
    pub fn finish(&mut self, out: &mut impl FnMut(Connection)) {
        self.finish_indexed(&mut |_, c| out(c));
    }

    /// As [`Pipeline::finish`], each record with the index of its flow's last packet (the
    /// order of the records).
    pub fn finish_indexed(&mut self, out: &mut impl FnMut(u64, Connection)) {
        while !self.table.is_empty() {
            self.table
                .drain(CLOSE_BATCH, &mut self.ctx, &mut self.closed);
            self.flush_closed(out);
        }
        self.flush_closed(out);
    }

    #[inline]
    fn flush_closed(&mut self, out: &mut impl FnMut(u64, Connection)) {
        if self.closed.is_empty() {
            return;
        }
        for flow in self.closed.drain(..) {
            if let Some(conn) = flow.handler.finish(flow.reason, flow.last_ts) {
                self.ctx.stats.connections += 1;
                out(flow.last_index, conn);
            }
        }
    }

    /// Takes in what another pipeline over other flows of the same capture counted and saw (a
    /// parallel run's workers, once they finished): counters, unwatched ports, the time span.
    pub fn absorb(&mut self, other: &Pipeline) {
        self.ctx.stats.add(&other.stats());
        for (port, n) in &other.factory.other_ports {
            *self.factory.other_ports.entry(*port).or_default() += n;
        }
        if let Some(f) = other.first_ts {
            self.first_ts = Some(self.first_ts.map_or(f, |s| s.min(f)));
            self.last_ts = self.last_ts.max(other.last_ts);
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

    /// What the pipeline holds now: flows, and the memory charged against `--memory-limit`.
    pub fn load(&self) -> Load {
        Load {
            flows: self.table.len(),
            flow_bytes: self.table.heap_bytes(),
            flow_budget: self.factory.limits.flow_memory,
            cert_bytes: self.ctx.certs.heap_bytes(),
            cert_budget: self.factory.limits.cert_memory,
        }
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
