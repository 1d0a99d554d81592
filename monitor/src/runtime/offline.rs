//! Offline analysis (`trustwatch analyze`): capture files through the [`Monitor`], in packet time.
//!
//! Consumes capture files and the analysis configuration; produces JSON Lines on stdout (`--json`),
//! the summary (stdout, or stderr with `--json`), and whether a trust problem was found. Every
//! file is opened before anything is read, so bad input fails before any output. Frames go from
//! the file reader's buffer straight to the monitor (no copy): nothing is dropped, the file is
//! read at the pipeline's pace. What happens along the way (a file starts, progress, a file cut
//! short or damaged) is reported to a [`Progress`] the caller prints.

use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use super::sinks::{JsonSink, SummarySink, SummaryTo};
use super::{Clock, Monitor, OFFLINE_TICK_US};
use crate::capture::file::{Damage, FileSource, Unsupported};
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
    /// The current file ended (cut short, damaged or not).
    fn done(&mut self, end: &FileEnd<'_>);
}

/// How a file's read ended: what the caller warns about.
#[derive(Clone, Copy, Debug)]
pub struct FileEnd<'a> {
    pub path: &'a Path,
    /// Cut short inside its last record.
    pub truncated: bool,
    /// Stretches skipped over corrupt record headers (the first few).
    pub damage: &'a [Damage],
    /// How many such stretches in all.
    pub damaged_regions: u64,
    /// Packets on interfaces with a link type that cannot be decoded.
    pub unsupported: Unsupported,
}

impl<'a> FileEnd<'a> {
    pub fn of(source: &'a FileSource) -> Self {
        FileEnd {
            path: source.path(),
            truncated: source.truncated(),
            damage: source.damage(),
            damaged_regions: source.damaged_regions(),
            unsupported: source.unsupported(),
        }
    }
}

/// Packets between progress updates (and looks at whether the output failed).
const PROGRESS_EVERY: u64 = 8192;

/// Feeds one file's frames, borrowed from the reader's buffer, to the monitor.
fn feed(
    source: &mut FileSource,
    monitor: &mut Monitor,
    progress: &mut dyn Progress,
) -> Result<(), Error> {
    let mut n = 0u64;
    while let Some(frame) = source.next_frame()? {
        monitor.on_frame(frame);
        n += 1;
        if n.is_multiple_of(PROGRESS_EVERY) {
            progress.position(FileSource::position(source));
            // Output failed (e.g. a closed pipe): reading on would produce nothing.
            if monitor.has_failed() {
                break;
            }
        }
    }
    Ok(())
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
    for mut source in sources {
        progress.file(source.path(), source.file_size());
        feed(&mut source, &mut monitor, progress)?;
        progress.done(&FileEnd::of(&source));
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
