//! Where the monitor's output goes: the [`Sink`] interface and what sinks are shown.
//!
//! A sink consumes connection records and events as they happen and, live, a [`View`] of the
//! current state at every publish; at the end it finishes (the summary is printed then). Adding an
//! output — a file format, an exporter — is one type implementing [`Sink`] (see [`super::sinks`]).

use std::io;
use std::sync::Arc;

use crate::base::Timestamp;
use crate::capture::{FlowFeedback, SourceCounters};
use crate::detect::{Detector, Event, Snapshot};
use crate::handshake::Connection;
use crate::pipeline::Load;
use crate::stats::Stats;
use crate::trust::probe::ProbeStatus;

/// How the monitor saw a connection record.
pub struct Seen<'a> {
    /// The monitor's own probe made it: it is left out of the passive figures.
    pub probe: bool,
    /// The detector after judging the record (e.g. the CA key a probe saw on its server).
    pub detector: &'a Detector,
}

/// A capture source as the sinks show it.
#[derive(Clone)]
pub struct SourceView {
    /// `BACKEND:INTERFACE`.
    pub name: String,
    pub counters: Arc<SourceCounters>,
    pub feedback: Option<Arc<dyn FlowFeedback>>,
}

/// The monitor's state at a publish or at the end.
pub struct View<'a> {
    /// Packet time (live: the wall clock).
    pub now: Timestamp,
    pub snapshot: &'a Snapshot,
    pub stats: &'a Stats,
    /// Flows and the memory charged for them and for certificates.
    pub load: Load,
    /// First and last packet time seen (none before the first packet).
    pub span: Option<(Timestamp, Timestamp)>,
    pub probes: &'a [ProbeStatus],
    pub sources: &'a [SourceView],
    /// Connections handed to the sinks (probes excluded).
    pub handshakes: u64,
    pub events: u64,
}

/// A consumer of the monitor's output. Every method has a default that ignores its input.
pub trait Sink: Send {
    /// One connection record, after the detector judged it.
    fn connection(&mut self, _conn: &Connection, _seen: &Seen<'_>) -> io::Result<()> {
        Ok(())
    }
    /// One detector event.
    fn event(&mut self, _event: &Event) -> io::Result<()> {
        Ok(())
    }
    /// The current state (live: every tick and after every event).
    fn publish(&mut self, _view: &View<'_>) {}
    /// The capture ended.
    fn finish(&mut self, _view: &View<'_>) -> io::Result<()> {
        Ok(())
    }
}
