//! The runtime: one [`Monitor`] that both `trustwatch analyze` ([`offline`]) and
//! `trustwatch live` ([`live`]) drive.
//!
//! Consumes [`Packet`]s from any capture source; produces connection records and detector events
//! and hands them to [`Sink`]s (JSON Lines, the summary report, metrics, the status page). The
//! monitor owns the stateful stages — the [`Pipeline`] (decode → flow → tls → handshake), the
//! [`Detector`], the probes when live — and the order in which they see things:
//!
//! 1. a packet goes through the pipeline; every connection record it yields is judged by the
//!    detector (a probe's own connection is excluded first) and then handed to every sink;
//! 2. every event the detector emits is handed to every sink, in order;
//! 3. sources that can stop copying a decided connection (eBPF) are told.
//!
//! # Clock policy
//!
//! Packet time drives everything that has a window, in both modes: the flow table's idle timeout,
//! the detector's sliding window, event times. Time only moves forward through [`Monitor::on_packet`]
//! and [`Monitor::tick`].
//! - Offline ([`Clock::PacketTime`]): the detector is ticked at every second of packet time and at
//!   the end of the capture, at the last packet's time; the wall clock is never read.
//! - Live ([`Clock::External`]): capture timestamps are the kernel's wall-clock times, so the live
//!   runtime ticks every 200 ms of wall time with the wall clock as "now" — a quiet link still
//!   ages its windows. Wall time is also what liveness, probe scheduling and publishing (metrics
//!   gauges, the status page) use; it never reorders records.

pub mod live;
pub mod offline;
mod probes;
mod sink;
pub mod sinks;

use std::io;
use std::sync::Arc;

pub use probes::{ProbeStatus, Probes};
pub use sink::{Seen, Sink, SourceView, View};

use crate::base::Timestamp;
use crate::capture::{FlowFeedback, Packet};
use crate::detect::{Detector, Event};
use crate::handshake::Connection;
use crate::pipeline::Pipeline;

/// Packet time between detector ticks in offline mode.
pub const OFFLINE_TICK_US: i64 = 1_000_000;

/// Who advances time between packets (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The monitor ticks the detector itself every `every_us` of packet time (offline).
    PacketTime { every_us: i64 },
    /// The caller calls [`Monitor::tick`] (live: every 200 ms of wall time).
    External,
}

/// The [`View`] of a monitor, borrowing its fields one by one (so `outputs` stays free).
macro_rules! view {
    ($m:expr, $now:expr, $snapshot:expr, $stats:expr) => {
        View {
            now: $now,
            snapshot: $snapshot,
            stats: $stats,
            flows_active: $m.pipeline.flows_active(),
            probes: $m.probes.as_ref().map_or(&[], |p| p.results()),
            sources: &$m.sources,
            handshakes: $m.handshakes,
            events: $m.events_total,
        }
    };
}

/// The stateful stages and where their output goes.
pub struct Monitor {
    pipeline: Pipeline,
    detector: Detector,
    probes: Option<Probes>,
    outputs: Outputs,
    feedback: Vec<Arc<dyn FlowFeedback>>,
    /// The capture sources' counters, shown when publishing (live).
    sources: Vec<SourceView>,
    clock: Clock,
    next_tick: Option<Timestamp>,
    conns: Vec<Connection>,
    events: Vec<Event>,
    /// Connections handed to the sinks (the monitor's own probes excluded).
    handshakes: u64,
    events_total: u64,
}

impl Monitor {
    pub fn new(pipeline: Pipeline, detector: Detector, clock: Clock) -> Self {
        Monitor {
            pipeline,
            detector,
            probes: None,
            outputs: Outputs::default(),
            feedback: Vec::new(),
            sources: Vec::new(),
            clock,
            next_tick: None,
            conns: Vec::new(),
            events: Vec::new(),
            handshakes: 0,
            events_total: 0,
        }
    }

    /// Adds a sink; sinks see records and events in the order they were added.
    pub fn with_sink(mut self, sink: impl Sink + 'static) -> Self {
        self.outputs.sinks.push((Box::new(sink), false));
        self
    }

    /// Probes the replicas (live).
    pub fn with_probes(mut self, probes: Probes) -> Self {
        self.probes = Some(probes);
        self
    }

    /// The capture sources: their counters are published, and those that take feedback are told
    /// about every decided connection.
    pub fn with_sources(mut self, sources: Vec<SourceView>) -> Self {
        self.feedback = sources.iter().filter_map(|s| s.feedback.clone()).collect();
        self.sources = sources;
        self
    }

    /// One captured packet.
    pub fn on_packet(&mut self, pkt: &Packet) {
        let conns = &mut self.conns;
        self.pipeline.packet(pkt, &mut |c| conns.push(c));
        self.handle_connections();
        if let Clock::PacketTime { every_us } = self.clock
            && self.next_tick.is_none_or(|t| pkt.ts >= t)
        {
            self.advance(pkt.ts);
            self.next_tick = Some(Timestamp(pkt.ts.0.saturating_add(every_us)));
        }
    }

    /// One connection record (from the pipeline, or injected by a test).
    pub fn on_connection(&mut self, conn: Connection) {
        self.conns.push(conn);
        self.handle_connections();
    }

    /// Advances time to `now` without a packet: idle flows close, windows age, probes run, and
    /// (live) the sinks publish.
    pub fn tick(&mut self, now: Timestamp) {
        let conns = &mut self.conns;
        self.pipeline.tick(now, &mut |c| conns.push(c));
        self.handle_connections();
        self.advance(now);
        if let Some(p) = &mut self.probes {
            p.start_due();
        }
        self.publish(now);
    }

    /// Ends the capture at time `now`: open flows are finalized (incomplete when undecided), the
    /// detector ticks once more, and every sink finishes (the summary is printed here).
    pub fn finish(&mut self, now: Timestamp) -> io::Result<()> {
        let conns = &mut self.conns;
        self.pipeline.finish(&mut |c| conns.push(c));
        self.handle_connections();
        self.advance(now);
        if self.clock == Clock::External {
            self.publish(now);
        }
        let snapshot = self.detector.snapshot();
        let stats = self.pipeline.stats();
        let view = view!(self, now, &snapshot, &stats);
        self.outputs.each(|sink| sink.finish(&view));
        match self.outputs.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Live only: hands the current state to the sinks (gauges, the status page).
    fn publish(&mut self, now: Timestamp) {
        if self.clock != Clock::External {
            return;
        }
        let snapshot = self.detector.snapshot();
        let stats = self.pipeline.stats();
        let view = view!(self, now, &snapshot, &stats);
        self.outputs.each(|sink| {
            sink.publish(&view);
            Ok(())
        });
    }

    /// Judges and hands on the connections the pipeline produced.
    fn handle_connections(&mut self) {
        if self.conns.is_empty() {
            return;
        }
        // A probe's connection may be decided before the next tick: learn its client address
        // first, so the detector excludes it.
        if let Some(p) = &mut self.probes {
            p.drain(&mut self.detector, &mut self.events);
        }
        let conns = std::mem::take(&mut self.conns);
        let events_before = self.events_total;
        for conn in &conns {
            for f in &self.feedback {
                f.decided(conn.client, conn.server);
            }
            let probe = self.detector.is_probe_connection(conn);
            self.detector.observe(conn, &mut self.events);
            if !probe {
                self.handshakes += 1;
            }
            let seen = Seen {
                probe,
                detector: &self.detector,
            };
            self.outputs.each(|sink| sink.connection(conn, &seen));
            self.dispatch_events();
        }
        self.conns = conns;
        self.conns.clear();
        // An event changes gauges: publish now, not at the next tick (detection latency).
        if self.events_total != events_before {
            self.publish(self.pipeline.last_ts());
        }
    }

    /// Detector tick at `now` (and the probes' results so far).
    fn advance(&mut self, now: Timestamp) {
        if let Some(p) = &mut self.probes {
            p.drain(&mut self.detector, &mut self.events);
        }
        self.detector.tick(now, &mut self.events);
        self.dispatch_events();
    }

    fn dispatch_events(&mut self) {
        // Certificate failures started: probe the replicas now rather than at the next interval.
        if self.detector.take_probe_request()
            && let Some(p) = &mut self.probes
        {
            p.trigger();
        }
        if self.events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.events);
        for e in &events {
            self.events_total += 1;
            self.outputs.each(|sink| sink.event(e));
        }
        self.events = events;
        self.events.clear();
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
    /// Connections handed to the sinks (probes excluded).
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }
    pub fn events(&self) -> u64 {
        self.events_total
    }
    /// A sink failed (e.g. a closed pipe): the caller may stop feeding packets.
    pub fn has_failed(&self) -> bool {
        self.outputs.sinks.iter().any(|(_, failed)| *failed)
    }
    /// The first sink error, taken (live reports it once).
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.outputs.error.take()
    }
}

/// The sinks, each with whether it failed; a failed sink gets nothing more and its first error
/// is kept for the caller.
#[derive(Default)]
struct Outputs {
    sinks: Vec<(Box<dyn Sink>, bool)>,
    error: Option<io::Error>,
}

impl Outputs {
    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) {
        for (sink, failed) in self.sinks.iter_mut().filter(|(_, failed)| !*failed) {
            if let Err(e) = f(sink.as_mut()) {
                *failed = true;
                self.error.get_or_insert(e);
            }
        }
    }
}
