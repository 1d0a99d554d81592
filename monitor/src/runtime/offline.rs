//! Offline analysis (`trustwatch analyze`): capture files through the [`Monitor`], in packet time.
//!
//! Consumes capture files and the analysis configuration; produces JSON Lines on stdout (`--json`),
//! the summary (stdout, or stderr with `--json`), and whether a trust problem was found. Every
//! file is opened before anything is read, so bad input fails before any output. Each file is a
//! [`Source`] run with the monitor as its sink: nothing is dropped, the file is read at the
//! pipeline's pace. What happens along the way (a file starts, progress, a file cut short) is
//! reported to a [`Progress`] the caller prints.

use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::sinks::{JsonSink, SummarySink, SummaryTo};
use super::{Clock, Monitor, OFFLINE_TICK_US};
use crate::capture::file::FileSource;
use crate::capture::{Packet, PacketSink, SinkFull, Source, StopSignal};
use crate::config::{Limits, Services};
use crate::detect::Detector;
use crate::error::Error;
use crate::export::json::JsonLines;
use crate::pipeline::Pipeline;

/// What `analyze` does.
pub struct Analysis {
    pub files: Vec<PathBuf>,
    pub services: Services,
    pub limits: Limits,
    pub detector: Detector,
    /// JSON Lines on stdout (the summary then goes to stderr).
    pub json: bool,
    /// No summary.
    pub quiet: bool,
}

/// What the analysis found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Findings {
    /// A collapse, divergence or inconsistency was reported.
    pub trust_problem: bool,
}

/// Hooks for a progress display and per-file warnings (the CLI prints them).
pub trait Progress {
    /// A file starts; `len` is its size in bytes.
    fn file(&mut self, path: &Path, len: u64);
    /// Estimated bytes of the current file consumed so far (called every few thousand packets).
    fn position(&mut self, pos: u64);
    /// The current file ended; `truncated` when it was cut short inside a record.
    fn done(&mut self, path: &Path, truncated: bool);
}

/// Packets between progress updates.
const PROGRESS_EVERY: u64 = 8192;

/// The monitor as a file source's sink.
struct Feed<'a> {
    monitor: &'a mut Monitor,
    progress: &'a mut dyn Progress,
    position: Arc<AtomicU64>,
    n: u64,
}

impl PacketSink for Feed<'_> {
    #[inline]
    fn push(&mut self, pkt: Packet) -> Result<(), SinkFull> {
        self.monitor.on_packet(&pkt);
        self.n += 1;
        if self.n.is_multiple_of(PROGRESS_EVERY) {
            self.progress
                .position(self.position.load(Ordering::Relaxed));
            // Output failed (e.g. a closed pipe): reading on would produce nothing.
            if self.monitor.has_failed() {
                return Err(SinkFull::Closed);
            }
        }
        Ok(())
    }
}

/// Runs the analysis.
pub fn run(a: Analysis, progress: &mut dyn Progress) -> Result<Findings, Error> {
    let mut sources = Vec::with_capacity(a.files.len());
    for path in &a.files {
        sources.push(FileSource::open(path)?);
    }
    let mut monitor = Monitor::new(
        Pipeline::new(a.services, a.limits),
        a.detector,
        Clock::PacketTime {
            every_us: OFFLINE_TICK_US,
        },
    );
    if a.json {
        let out = BufWriter::with_capacity(1 << 16, io::stdout());
        monitor = monitor.with_sink(JsonSink(JsonLines::new(out, false)));
    }
    if !a.quiet {
        let to = if a.json {
            SummaryTo::Stderr
        } else {
            SummaryTo::Stdout
        };
        monitor = monitor.with_sink(SummarySink::new(to));
    }
    let stop = StopSignal::new();
    for mut source in sources {
        progress.file(source.path(), source.file_size());
        let mut feed = Feed {
            monitor: &mut monitor,
            progress,
            position: source.position_handle(),
            n: 0,
        };
        source.run(&mut feed, &stop)?;
        progress.done(source.path(), source.truncated());
        if monitor.has_failed() {
            break;
        }
    }
    let end = monitor.pipeline().last_ts();
    monitor.finish(end).map_err(Error::Output)?;
    Ok(Findings {
        trust_problem: monitor.detector().exit_worthy_seen(),
    })
}
