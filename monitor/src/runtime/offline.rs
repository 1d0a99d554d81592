//! Offline analysis (`trustwatch analyze`): capture files through the [`Monitor`], in packet time.
//!
//! Consumes capture files (or standard input, gzip or zstd compressed) and the analysis
//! configuration; produces JSON Lines on stdout (`--json`), the summary (stdout, or stderr with
//! `--json`), and whether a trust problem was found. Every input is opened before anything is
//! read, so bad input fails before any output. The inputs are one capture, merged by timestamp
//! ([`Merged`]) and read at the pipeline's pace: nothing is dropped. A single input without a
//! packet selection (the common case) goes frame by frame from the reader's buffer straight on
//! (no copy); otherwise owned packets (slices of the reader's buffers) are merged and selected.
//! Frames go to the monitor, or with `--threads` to [`Parallel`] in front of it. What happens
//! along the way (a file starts, progress, a file cut short or damaged, notices about the inputs,
//! what a selection kept) is reported to a [`Progress`] the caller prints.

use std::io;
use std::path::{Path, PathBuf};

use super::parallel::{self, Parallel};
use super::sinks::{JsonSink, ReportSink, SummarySink, SummaryTo};
use super::{Clock, Monitor, OFFLINE_TICK_US};
use crate::base::human;
use crate::capture::Frame;
use crate::capture::file::{Damage, FileSource, Unsupported};
use crate::capture::input;
use crate::capture::merge::Merged;
pub use crate::capture::merge::Notice;
use crate::config::{Limits, Services};
use crate::detect::Detector;
use crate::error::Error;
use crate::export::forensic::Format;
use crate::export::json::JsonLines;
use crate::pipeline::Pipeline;
use crate::select::{ConnectionSelect, PacketSelect};

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
    /// `--from`/`--to`/`--filter`.
    pub packets: PacketSelect,
    /// `--client`/`--server`.
    pub connections: ConnectionSelect,
    /// `--report FILE` and its format.
    pub report: Option<(PathBuf, Format)>,
    /// `--threads`: pipelines analysing the capture's connections in parallel (1: on the
    /// reading thread; see [`parallel`]).
    pub threads: usize,
}

/// What the analysis found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Findings {
    /// A collapse, divergence or inconsistency was reported.
    pub trust_problem: bool,
    /// Not one TLS connection was found: what was seen instead.
    pub nothing_found: Option<NothingFound>,
}

/// How many of the busiest unwatched ports the nothing-found warning names.
const PORTS_NAMED: usize = 5;

/// No TLS connection on the watched ports: what the capture held instead, for a one-line warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NothingFound {
    /// The watched ports (empty with `--any-port`: every port was looked at).
    pub watched: Vec<u16>,
    pub any_port: bool,
    pub packets: u64,
    /// The busiest TCP server ports that are not watched, by segments (SYN or payload).
    pub busiest: Vec<(u16, u64)>,
}

impl std::fmt::Display for NothingFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let packets = human::count(self.packets, "packet", "packets");
        if self.any_port {
            return write!(f, "no TLS connection found on any TCP port in {packets}");
        }
        let watched: Vec<String> = self.watched.iter().map(u16::to_string).collect();
        write!(
            f,
            "no TLS connection found on the watched ports ({}) in {packets}",
            watched.join(", ")
        )?;
        if self.busiest.is_empty() {
            return write!(f, "; no other TCP traffic either");
        }
        let busiest: Vec<String> = self
            .busiest
            .iter()
            .map(|(port, n)| format!("{port} ({})", human::count(*n, "segment", "segments")))
            .collect();
        write!(
            f,
            "; busiest other TCP ports: {}; try --ports {} or --any-port",
            busiest.join(", "),
            self.busiest[0].0
        )
    }
}

/// Hooks for a progress display and per-file warnings (the CLI prints them).
pub trait Progress {
    /// A file starts; `len` is its size in bytes.
    fn file(&mut self, path: &Path, len: u64);
    /// Estimated bytes of the current file consumed so far (called every few thousand packets).
    fn position(&mut self, pos: u64);
    /// An input ended (cut short, damaged or not); called for each input at the end.
    fn done(&mut self, end: &FileEnd<'_>);
    /// Something about the inputs as a whole (an overlap, a gap, arguments out of time order).
    fn notice(&mut self, notice: &Notice);
    /// What a selection (`--from`/`--to`/`--filter`/`--client`/`--server`) kept.
    fn selected(&mut self, selected: Selected);
}

/// How an input's read ended: what the caller warns about.
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

/// What a selection kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selected {
    /// Packets analyzed, of those read.
    pub packets: (u64, u64),
    /// Connections left out by `--client`/`--server`.
    pub connections_left_out: u64,
}

impl std::fmt::Display for Selected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "selection: {} of {} analyzed, {} left out",
            self.packets.0,
            human::count(self.packets.1, "packet", "packets"),
            human::count(self.connections_left_out, "connection", "connections")
        )
    }
}

/// Packets between progress updates.
const PROGRESS_EVERY: u64 = 8192;

/// Where frames go: the monitor itself, or a parallel run in front of it.
trait Feed {
    fn frame(&mut self, frame: Frame<'_>);
    /// Output failed (e.g. a closed pipe): reading on would produce nothing.
    fn failed(&self) -> bool;
}

impl Feed for Monitor {
    fn frame(&mut self, frame: Frame<'_>) {
        self.on_frame(frame);
    }
    fn failed(&self) -> bool {
        self.has_failed()
    }
}

impl Feed for Parallel<'_> {
    fn frame(&mut self, frame: Frame<'_>) {
        self.on_frame(frame);
    }
    fn failed(&self) -> bool {
        self.has_failed()
    }
}

/// The fast path (one input, every packet): frames borrowed from the reader's buffer go straight
/// on. Returns the packets analyzed and read (the same here).
fn feed_frames(
    merged: &mut Merged,
    feed: &mut impl Feed,
    progress: &mut dyn Progress,
) -> Result<(u64, u64), Error> {
    let mut n = 0u64;
    while let Some(frame) = merged.next_frame()? {
        feed.frame(frame);
        n += 1;
        if n.is_multiple_of(PROGRESS_EVERY) {
            progress.position(merged.position());
            if feed.failed() {
                break;
            }
        }
    }
    Ok((n, n))
}

/// Several inputs, a packet selection or several threads: owned packets (sharing the reader's
/// buffers), merged by timestamp, then selected. Returns the packets analyzed and read.
fn feed_packets(
    merged: &mut Merged,
    select: &mut PacketSelect,
    feed: &mut impl Feed,
    progress: &mut dyn Progress,
) -> Result<(u64, u64), Error> {
    let mut n = 0u64;
    let mut read = 0u64;
    while let Some(pkt) = merged.next_packet()? {
        read += 1;
        if !select.keeps(&pkt)? {
            continue;
        }
        feed.frame(pkt.frame());
        n += 1;
        if n.is_multiple_of(PROGRESS_EVERY) {
            progress.position(merged.position());
            if feed.failed() {
                break;
            }
        }
    }
    Ok((n, read))
}

/// Runs the analysis.
pub fn run(mut a: Analysis, progress: &mut dyn Progress) -> Result<Findings, Error> {
    let mut merged = Merged::new(input::open_all(&a.files)?)?;
    if let Some((start, _)) = merged.span() {
        a.packets.start(start)?;
    }
    let selecting = !a.packets.is_all() || !a.connections.is_all();
    let (services, limits) = (a.services.clone(), a.limits.clone());
    let mut monitor = Monitor::new(
        Pipeline::new(a.services, a.limits),
        a.detector,
        Clock::PacketTime {
            every_us: OFFLINE_TICK_US,
        },
    )
    .with_connection_select(std::mem::take(&mut a.connections));
    if a.json {
        monitor = monitor.with_sink(JsonSink(JsonLines::new(io::stdout(), false)));
    }
    if let Some((path, format)) = a.report.take() {
        monitor = monitor.with_sink(ReportSink::new(path, format));
    }
    if !a.quiet {
        let to = if a.json {
            SummaryTo::Stderr
        } else {
            SummaryTo::Stdout
        };
        monitor = monitor.with_sink(SummarySink::new(to));
    }
    let label = match merged.inputs().collect::<Vec<_>>().as_slice() {
        [one] => one.label.clone(),
        many => PathBuf::from(human::count(many.len() as u64, "input", "inputs")),
    };
    progress.file(&label, merged.size());
    let fast_path = merged.len() == 1 && a.packets.is_all();
    let (n, read) = if a.threads > 1 {
        let mut parallel = Parallel::start(&mut monitor, a.threads, &services, &limits)
            .map_err(|e| Error::Usage(format!("--threads {}: {e}", a.threads)))?;
        if fast_path && let Some((file, pages)) = merged.hand_over_map(parallel::READER_KEEPS) {
            parallel = parallel.with_mapped(file, pages);
        }
        let fed = if fast_path {
            feed_frames(&mut merged, &mut parallel, progress)?
        } else {
            feed_packets(&mut merged, &mut a.packets, &mut parallel, progress)?
        };
        parallel.finish();
        fed
    } else if fast_path {
        feed_frames(&mut merged, &mut monitor, progress)?
    } else {
        feed_packets(&mut merged, &mut a.packets, &mut monitor, progress)?
    };
    for input in merged.inputs() {
        progress.done(&FileEnd::of(&input.source));
    }
    for notice in merged.notices() {
        progress.notice(&notice);
    }
    let end = monitor.pipeline().last_ts();
    monitor.finish(end).map_err(Error::Output)?;
    if selecting {
        progress.selected(Selected {
            packets: (n, read),
            connections_left_out: monitor.selected_out(),
        });
    }
    let pipeline = monitor.pipeline();
    let stats = pipeline.stats();
    let nothing_found = (stats.connections == 0).then(|| NothingFound {
        watched: pipeline.services().ports().map(|(p, _)| p).collect(),
        any_port: pipeline.services().any_port,
        packets: stats.packets,
        busiest: pipeline.busiest_other_ports(PORTS_NAMED),
    });
    Ok(Findings {
        trust_problem: monitor.detector().exit_worthy_seen(),
        nothing_found,
    })
}
