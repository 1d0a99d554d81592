//! The sinks: each output of trustwatch as a [`Sink`] over the type that renders it.
//!
//! | sink | mode | output |
//! |---|---|---|
//! | [`JsonSink`] | `analyze --json`, `live --json`/`--events` | JSON Lines ([`crate::export::json`]) |
//! | [`SummarySink`] | `analyze` | the summary and the trust timeline ([`crate::export::report`]) |
//! | [`ReportSink`] | `analyze --report` | the incident report file ([`crate::export::forensic`]) |
//! | [`StderrTimeline`] | `live` | one line per event on stderr |
//! | [`MetricsSink`] | `live` | Prometheus ([`crate::export::metrics`]) |
//! | [`StatusSink`] | `live` | `/api/state`, the status page and readiness ([`crate::serve`]) |
//!
//! The monitor's own probe connections ([`Seen::probe`]) never reach the passive figures.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Seen, Sink, SourceView, View};
use crate::base::Timestamp;
use crate::capture::DropReason;
use crate::detect::Event;
use crate::export::json::JsonLines;
use crate::export::metrics::Metrics;
use crate::export::report::Summary;
use crate::export::text::timeline_line;
use crate::handshake::Connection;
use crate::serve::Shared;
use crate::serve::state::{SourceState, StatePage};
use crate::serve::timeline::Timeline;

/// JSON Lines of connection records and/or events.
pub struct JsonSink<W: Write + Send>(pub JsonLines<W>);

impl<W: Write + Send> Sink for JsonSink<W> {
    fn connection(&mut self, conn: &Connection, seen: &Seen<'_>) -> io::Result<()> {
        if seen.probe {
            return Ok(());
        }
        self.0.connection(conn)
    }
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.0.event(event)
    }
    fn finish(&mut self, _view: &View<'_>) -> io::Result<()> {
        self.0.flush()
    }
}

/// Where the summary is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SummaryTo {
    Stdout,
    /// When stdout carries JSON Lines.
    Stderr,
}

/// The human summary of `analyze`, printed when the capture ends.
pub struct SummarySink {
    summary: Summary,
    to: SummaryTo,
}

impl SummarySink {
    pub fn new(to: SummaryTo) -> Self {
        SummarySink {
            summary: Summary::default(),
            to,
        }
    }
}

impl Sink for SummarySink {
    fn connection(&mut self, conn: &Connection, seen: &Seen<'_>) -> io::Result<()> {
        if !seen.probe {
            self.summary.add(conn);
        }
        Ok(())
    }
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.summary.event(event);
        Ok(())
    }
    fn finish(&mut self, view: &View<'_>) -> io::Result<()> {
        let report = self
            .summary
            .render(view.stats, &view.snapshot.stats, view.span);
        match self.to {
            SummaryTo::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(report.as_bytes())?;
                out.flush()
            }
            SummaryTo::Stderr => {
                let mut err = io::stderr().lock();
                err.write_all(report.as_bytes())?;
                err.flush()
            }
        }
    }
}

/// Every event as one line on stderr, as it happens (`live` without `-q`).
pub struct StderrTimeline;

impl Sink for StderrTimeline {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        // Best effort: a closed stderr must not stop the monitor.
        let _ = writeln!(io::stderr().lock(), "{}", timeline_line(event));
        Ok(())
    }
}

/// Prometheus metrics; `services` names the service of a probed port.
pub struct MetricsSink(pub Metrics, pub crate::config::Services);

impl Sink for MetricsSink {
    fn connection(&mut self, conn: &Connection, seen: &Seen<'_>) -> io::Result<()> {
        if !seen.probe {
            self.0.connection(conn);
        }
        Ok(())
    }
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.0.event(&event.service, event.name());
        Ok(())
    }
    fn publish(&mut self, view: &View<'_>) {
        self.0.pipeline(view.stats, view.load);
        for s in view.sources {
            self.0.source(&s.name, &s.counters);
        }
        let services = &self.1;
        self.0.probes(view.probes, &|port| services.label(port));
        self.0.detector(view.snapshot);
    }
}

/// The status page, `/api/state` and readiness, swapped into [`Shared`] at every publish.
pub struct StatusSink {
    shared: Arc<Shared>,
    timeline: Timeline,
    started: Timestamp,
}

impl StatusSink {
    pub fn new(shared: Arc<Shared>, timeline: Timeline) -> Self {
        StatusSink {
            shared,
            timeline,
            started: Timestamp::now(),
        }
    }
}

impl Sink for StatusSink {
    fn connection(&mut self, conn: &Connection, seen: &Seen<'_>) -> io::Result<()> {
        if !seen.probe {
            // Over TLS 1.3 the record has no CA key: the one a probe saw on its server.
            let fallback = match conn.ca_key_id {
                Some(_) => None,
                None => seen.detector.presented_key(&conn.service, conn.server),
            };
            self.timeline.observe(conn, fallback.as_deref());
        }
        Ok(())
    }

    fn publish(&mut self, view: &View<'_>) {
        self.timeline.expire(view.now);
        let snap = view.snapshot;
        let consistent = snap.ca_consistent();
        self.shared.set_ca_consistent(consistent);
        let sources: Vec<SourceState> = view.sources.iter().map(source_state).collect();
        let down = view
            .sources
            .iter()
            .filter_map(|s| s.counters.down_for().map(|d| (s.name.as_str(), d)))
            .max_by_key(|(_, d)| *d);
        self.shared.heartbeat(down);
        self.shared
            .set_capture_running(!sources.is_empty() && sources.iter().all(|s| s.running));
        self.shared.publish(StatePage {
            version: env!("CARGO_PKG_VERSION"),
            updated: Timestamp::now().rfc3339(),
            started: self.started.rfc3339(),
            ca_consistent: consistent,
            sources,
            detector: Some(snap.clone()),
            probes: view.probes.iter().map(|p| p.last.clone()).collect(),
            timeline_bucket_secs: self.timeline.bucket_secs(),
            timeline: self.timeline.snapshot(),
            handshakes: view.handshakes,
            packets: view.stats.packets,
            flows_active: view.load.flows,
        });
    }
}

fn source_state(s: &SourceView) -> SourceState {
    let c = &s.counters;
    SourceState {
        name: s.name.clone(),
        running: c.running(),
        packets: c.packets(),
        bytes: c.bytes(),
        dropped_queue_full: c.dropped(DropReason::QueueFull),
        dropped_kernel: c.dropped(DropReason::Kernel),
        dropped_interface: c.dropped(DropReason::Interface),
        dropped_ring_full: c.dropped(DropReason::RingFull),
        errors: c.errors.load(Ordering::Relaxed),
        restarts: c.restarts.load(Ordering::Relaxed),
    }
}

/// The incident report (`analyze --report FILE`), written when the capture ends.
pub struct ReportSink {
    path: std::path::PathBuf,
    format: crate::export::forensic::Format,
    collected: crate::export::forensic::Collected,
}

impl ReportSink {
    pub fn new(path: std::path::PathBuf, format: crate::export::forensic::Format) -> Self {
        ReportSink {
            path,
            format,
            collected: Default::default(),
        }
    }
}

impl Sink for ReportSink {
    fn connection(&mut self, conn: &Connection, seen: &Seen<'_>) -> io::Result<()> {
        if !seen.probe {
            self.collected.connection(conn);
        }
        Ok(())
    }
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.collected.event(event);
        Ok(())
    }
    fn finish(&mut self, view: &View<'_>) -> io::Result<()> {
        self.collected.span = view.span;
        self.collected.counters = view
            .stats
            .values()
            .chain(view.snapshot.stats.values())
            .filter(|(_, v)| *v > 0)
            .map(|(c, v)| (c.label, v))
            .collect();
        let text = self.collected.render(self.format);
        // Written whole to a temporary file beside it, then renamed: never a half report.
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".partial");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, text.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
    }
}
