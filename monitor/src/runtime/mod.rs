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
//!   the end of the capture, at the last packet's time; the wall clock is never read. A gap
//!   between packets is ticked through second by second before the packet after it (up to the
//!   trust window plus the holds, beyond which nothing changes without input).
//! - Live ([`Clock::External`]): capture timestamps are the kernel's wall-clock times, so the live
//!   runtime ticks every 200 ms of wall time with the wall clock as "now" — a quiet link still
//!   ages its windows. Wall time is also what liveness, probe scheduling and publishing (metrics
//!   gauges, the status page) use; it never reorders records.

pub mod live;
pub mod offline;
pub mod parallel;
mod probes;
mod sink;
pub mod sinks;

use std::io;
use std::sync::Arc;

pub use probes::Probes;
pub use sink::{Seen, Sink, SourceView, View};

use crate::base::{Side, Timestamp};
use crate::capture::{FlowFeedback, Frame, Packet};
use crate::cert::verdict::{self as cert_verdict, TrustedCa};
use crate::detect::{Detector, Event};
use crate::handshake::Connection;
use crate::pipeline::Pipeline;
use crate::select::ConnectionSelect;

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

/// The [`View`] of a monitor, borrowing the judge's fields one by one (so its `outputs` stay free
/// for the sinks).
macro_rules! view {
    ($judge:expr, $pipeline:expr, $now:expr, $snapshot:expr, $stats:expr) => {
        View {
            now: $now,
            snapshot: $snapshot,
            stats: $stats,
            load: $pipeline.load(),
            span: $pipeline.span(),
            probes: $judge.probes.as_ref().map_or(&[], |p| p.results()),
            sources: &$judge.sources,
            handshakes: $judge.handshakes,
            events: $judge.events_total,
        }
    };
}

/// When the detector ticks in packet time (offline): at every `every_us` of packet time, after
/// the packet that reaches it, and through a gap before the packet after it (see the module
/// docs). Packet times alone decide it, so a parallel run's reader schedules the ticks as one
/// monitor would.
#[derive(Clone, Copy, Debug)]
pub struct TickSchedule {
    every_us: i64,
    /// Beyond this much quiet, nothing changes without input: a gap's ticks stop there.
    horizon_us: i64,
    next: Option<Timestamp>,
}

impl TickSchedule {
    pub fn new(every_us: i64, detector: &Detector) -> Self {
        let every_us = every_us.max(1);
        let cfg = detector.config();
        let horizon_us = cfg
            .window_us
            .saturating_add(cfg.recovery_hold_us)
            .saturating_add(cfg.collapse_hold_us)
            .saturating_add(cfg.probe_grace_us)
            .saturating_add(every_us.saturating_mul(2));
        TickSchedule {
            every_us,
            horizon_us,
            next: None,
        }
    }

    /// The ticks a gap before a packet at `ts` owes, to `tick`: strictly before the packet, a
    /// whole tick apart from it (the usual tick at the packet's own time follows it). Dense
    /// traffic (no whole tick missed) owes none.
    #[inline]
    pub fn catch_up(&mut self, ts: Timestamp, mut tick: impl FnMut(Timestamp)) {
        let Some(mut t) = self.next else {
            return;
        };
        if ts.0.saturating_sub(t.0) < self.every_us {
            return;
        }
        let end = Timestamp(t.0.saturating_add(self.horizon_us));
        while t < end && ts.0.saturating_sub(t.0) >= self.every_us {
            tick(t);
            t = Timestamp(t.0.saturating_add(self.every_us));
        }
        self.next = Some(t);
    }

    /// Whether the packet at `ts` is followed by a tick at `ts`.
    #[inline]
    pub fn after(&mut self, ts: Timestamp) -> bool {
        if self.next.is_none_or(|t| ts >= t) {
            self.next = Some(Timestamp(ts.0.saturating_add(self.every_us)));
            return true;
        }
        false
    }
}

/// The stateful stages and where their output goes.
pub struct Monitor {
    pipeline: Pipeline,
    /// Everything after the pipeline (a separate field, so the pipeline's callback can reach it).
    judge: Judge,
    clock: Clock,
    /// Offline ([`Clock::PacketTime`]): when the detector ticks.
    ticks: Option<TickSchedule>,
}

/// What happens to a connection record once the pipeline produced it.
struct Judge {
    detector: Detector,
    probes: Option<Probes>,
    outputs: Outputs,
    feedback: Vec<Arc<dyn FlowFeedback>>,
    /// The capture sources' counters, shown when publishing (live).
    sources: Vec<SourceView>,
    events: Vec<Event>,
    /// Connections handed to the sinks (the monitor's own probes excluded).
    handshakes: u64,
    events_total: u64,
    /// An event changed the state since the last publish.
    publish_due: bool,
    /// Certificate verdicts (remembers signature checks per chain).
    certs: cert_verdict::Judge,
    /// The trusted CAs as the verdicts need them (rebuilt when the reference changes).
    trusted: Vec<TrustedCa>,
    /// Which connections are judged and output (`--client`/`--server`); the rest are counted.
    select: ConnectionSelect,
    pub(crate) selected_out: u64,
}

impl Monitor {
    pub fn new(pipeline: Pipeline, detector: Detector, clock: Clock) -> Self {
        let ticks = match clock {
            Clock::PacketTime { every_us } => Some(TickSchedule::new(every_us, &detector)),
            Clock::External => None,
        };
        Monitor {
            pipeline,
            judge: Judge {
                detector,
                probes: None,
                outputs: Outputs::default(),
                feedback: Vec::new(),
                sources: Vec::new(),
                events: Vec::new(),
                certs: cert_verdict::Judge::default(),
                trusted: Vec::new(),
                select: ConnectionSelect::default(),
                selected_out: 0,
                handshakes: 0,
                events_total: 0,
                publish_due: false,
            },
            clock,
            ticks,
        }
    }

    /// Adds a sink; sinks see records and events in the order they were added.
    pub fn with_sink(mut self, sink: impl Sink + 'static) -> Self {
        self.judge.outputs.sinks.push((Box::new(sink), false));
        self
    }

    /// Probes the replicas (live).
    pub fn with_probes(mut self, probes: Probes) -> Self {
        self.judge.probes = Some(probes);
        self
    }

    /// The capture sources: their counters are published, and those that take feedback are told
    /// about every decided connection.
    pub fn with_sources(mut self, sources: Vec<SourceView>) -> Self {
        self.judge.feedback = sources.iter().filter_map(|s| s.feedback.clone()).collect();
        self.judge.sources = sources;
        self
    }

    /// Only connections `select` keeps are judged and output.
    pub fn with_connection_select(mut self, select: ConnectionSelect) -> Self {
        self.judge.select = select;
        self
    }

    /// Connections left out by the connection selection.
    pub fn selected_out(&self) -> u64 {
        self.judge.selected_out
    }

    /// One captured packet.
    pub fn on_packet(&mut self, pkt: &Packet) {
        self.on_frame(pkt.frame());
    }

    /// One captured frame, borrowed (a file reader's buffer).
    pub fn on_frame(&mut self, pkt: Frame<'_>) {
        let judge = &mut self.judge;
        if let Some(ticks) = &mut self.ticks {
            ticks.catch_up(pkt.ts, |t| judge.advance(t));
        }
        self.pipeline
            .frame(pkt, &mut |mut c| judge.connection(&mut c));
        if let Some(ticks) = &mut self.ticks
            && ticks.after(pkt.ts)
        {
            self.judge.advance(pkt.ts);
        }
        if self.judge.publish_due {
            // An event changes gauges: publish now, not at the next tick (detection latency).
            self.publish(pkt.ts);
        }
    }

    /// One connection record from elsewhere than the monitor's pipeline (a parallel run's
    /// workers), lent: its certificate verdicts are filled in.
    pub fn on_connection(&mut self, conn: &mut Connection) {
        let end = conn.end;
        self.judge.connection(conn);
        if self.judge.publish_due {
            self.publish(end);
        }
    }

    /// A detector tick at `now` (packet time), without touching the pipeline: a parallel run
    /// replays the ticks one monitor would take.
    fn advance(&mut self, now: Timestamp) {
        self.judge.advance(now);
        if self.judge.publish_due {
            self.publish(now);
        }
    }

    /// Advances time to `now` without a packet: idle flows close, windows age, probes run, and
    /// (live) the sinks publish.
    pub fn tick(&mut self, now: Timestamp) {
        let judge = &mut self.judge;
        self.pipeline
            .tick(now, &mut |mut c| judge.connection(&mut c));
        self.judge.advance(now);
        if let Some(p) = &mut self.judge.probes {
            p.start_due();
        }
        self.publish(now);
    }

    /// Ends the capture at time `now`: open flows are finalized (incomplete when undecided), the
    /// detector ticks once more, and every sink finishes (the summary is printed here).
    pub fn finish(&mut self, now: Timestamp) -> io::Result<()> {
        let judge = &mut self.judge;
        self.pipeline.finish(&mut |mut c| judge.connection(&mut c));
        self.judge.advance(now);
        self.publish(now);
        let snapshot = self.judge.detector.snapshot();
        let stats = self.pipeline.stats();
        let view = view!(self.judge, self.pipeline, now, &snapshot, &stats);
        // Once output failed (a closed pipe, a full disk) nothing more is written: the run ends
        // with that one error.
        for (sink, failed) in &mut self.judge.outputs.sinks {
            if self.judge.outputs.error.is_some() {
                break;
            }
            if let Err(e) = sink.finish(&view) {
                *failed = true;
                self.judge.outputs.error = Some(e);
            }
        }
        match self.judge.outputs.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Live only: hands the current state to the sinks (gauges, the status page).
    fn publish(&mut self, now: Timestamp) {
        self.judge.publish_due = false;
        if self.clock != Clock::External {
            return;
        }
        let snapshot = self.judge.detector.snapshot();
        let stats = self.pipeline.stats();
        let view = view!(self.judge, self.pipeline, now, &snapshot, &stats);
        self.judge.outputs.each(|sink| {
            sink.publish(&view);
            Ok(())
        });
    }

    pub fn detector(&self) -> &Detector {
        &self.judge.detector
    }
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
    /// Connections handed to the sinks (probes excluded).
    pub fn handshakes(&self) -> u64 {
        self.judge.handshakes
    }
    pub fn events(&self) -> u64 {
        self.judge.events_total
    }
    /// A sink failed (e.g. a closed pipe): the caller may stop feeding packets.
    pub fn has_failed(&self) -> bool {
        self.judge.outputs.sinks.iter().any(|(_, failed)| *failed)
    }
    /// The first sink error, taken (live reports it once).
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.judge.outputs.error.take()
    }
}

impl Judge {
    /// One connection record: the detector judges it, then every sink gets it and the events.
    /// Certificate verdicts at the connection's start, against the trusted CAs of the reference.
    fn judge_certificates(&mut self, conn: &mut Connection) {
        let cas = self.detector.reference().cas();
        if cas.len() != self.trusted.len()
            || cas
                .iter()
                .zip(&self.trusted)
                .any(|(c, t)| c.sha256 != t.sha256)
        {
            self.trusted = cas
                .iter()
                .map(|c| TrustedCa {
                    subject: c.subject.clone(),
                    sha256: c.sha256.clone(),
                    der: c.der.clone(),
                })
                .collect();
        }
        for side in [Side::Server, Side::Client] {
            let chain = match side {
                Side::Server => &conn.server_chain,
                Side::Client => &conn.client_chain,
            };
            let verdict = self.certs.judge(chain, conn.start, &self.trusted);
            conn.certificates[side] = verdict;
        }
    }

    fn connection(&mut self, conn: &mut Connection) {
        if !self.select.keeps(conn) {
            self.selected_out += 1;
            return;
        }
        self.judge_certificates(conn);
        let conn = &*conn;
        // A probe's connection may be decided before the next tick: learn its client address
        // first, so the detector excludes it.
        if let Some(p) = &mut self.probes {
            p.drain(&mut self.detector, &mut self.events);
        }
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
        if let Some(p) = &mut self.probes
            && self.detector.take_probe_request()
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
        self.publish_due = true;
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
