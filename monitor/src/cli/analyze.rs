//! `trustwatch analyze`: files → pipeline → JSON Lines and/or the summary.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use std::sync::Arc;

use crate::base::Timestamp;
use crate::capture::file::FileSource;
use crate::detect::event::{Event, render_timeline_line};
use crate::error::Error;
use crate::export::json;
use crate::export::report::Summary;
use crate::handshake::Connection;
use crate::pipeline::Pipeline;

use super::AnalyzeArgs;

/// A progress bar that appears only when a file takes more than a second and stderr is a terminal.
struct Progress {
    started: Instant,
    bar: Option<ProgressBar>,
    enabled: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            started: Instant::now(),
            bar: None,
            enabled: io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, name: &str, pos: u64, len: u64) {
        if !self.enabled {
            return;
        }
        let elapsed = self.started.elapsed();
        if self.bar.is_none() && elapsed > Duration::from_secs(1) {
            let bar = ProgressBar::new(len);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:40}] {bytes}/{total_bytes} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(name.to_string());
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            // The rate over the whole file so far (the bar appears a second late, so indicatif's
            // own estimate would start from a jump).
            let rate = pos as f64 / elapsed.as_secs_f64().max(1e-3);
            let eta = len.saturating_sub(pos) as f64 / rate.max(1.0);
            bar.set_message(format!("{:.0} MB/s, eta {eta:.0}s", rate / 1e6));
            bar.set_position(pos);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.started = Instant::now();
    }
}

/// Timeline lines kept for the report (events beyond are still written as JSON and counted).
const MAX_TIMELINE: usize = 10_000;
/// Packet time between detector ticks (window expiry, recovery).
const TICK_US: i64 = 1_000_000;

/// Exit code when a collapse, divergence or inconsistency was found.
pub const EXIT_TRUST_PROBLEM: i32 = 3;

pub fn run(args: &AnalyzeArgs) -> Result<i32, Error> {
    let limits = args.limits.limits()?;
    let services = args.traffic.services();
    let mut detector = args.detect.detector(services.clone())?;
    // Open every file first, so bad input fails before any output.
    let mut sources = Vec::with_capacity(args.files.len());
    for path in &args.files {
        sources.push(FileSource::open(path)?);
    }
    let mut pipeline = Pipeline::new(services, limits);
    let mut summary = Summary::default();
    let mut timeline: Vec<(Arc<str>, String)> = Vec::new();
    let mut events_total: u64 = 0;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut write_err: Option<io::Error> = None;
    let mut connections = json::ConnectionWriter::default();
    let mut events = Vec::new();
    let mut next_tick: Option<Timestamp> = None;

    let mut sink = |conn: Option<&Connection>, events: &mut Vec<Event>| {
        if let Some(conn) = conn {
            summary.add(conn);
            if args.json
                && write_err.is_none()
                && let Err(e) = connections.write(&mut out, conn)
            {
                write_err = Some(e);
            }
        }
        for event in events.drain(..) {
            events_total += 1;
            if args.json
                && write_err.is_none()
                && let Err(e) = json::write_line(&mut out, &event)
            {
                write_err = Some(e);
            }
            if timeline.len() < MAX_TIMELINE {
                timeline.push((event.service.clone(), render_timeline_line(&event)));
            }
        }
    };

    for mut source in sources {
        let mut progress = Progress::new();
        let name = source.path().display().to_string();
        let len = source.file_size();
        let mut n: u64 = 0;
        while let Some(pkt) = source.next_packet()? {
            pipeline.packet(&pkt, &mut |conn| {
                detector.observe(&conn, &mut events);
                sink(Some(&conn), &mut events);
            });
            if next_tick.is_none_or(|t| pkt.ts >= t) {
                detector.tick(pkt.ts, &mut events);
                sink(None, &mut events);
                next_tick = Some(Timestamp(pkt.ts.0.saturating_add(TICK_US)));
            }
            n += 1;
            if n.is_multiple_of(8192) {
                progress.update(&name, source.position(), len);
            }
        }
        if source.truncated() {
            eprintln!("trustwatch: {name}: capture file is cut short; analyzed what was complete");
        }
        progress.finish();
    }
    pipeline.finish(&mut |conn| {
        detector.observe(&conn, &mut events);
        sink(Some(&conn), &mut events);
    });
    detector.tick(pipeline.last_ts(), &mut events);
    sink(None, &mut events);
    if let Some(e) = write_err {
        return Err(Error::Output(e));
    }
    out.flush()?;
    drop(out);
    if !args.quiet {
        let mut report = summary.render(&pipeline.stats());
        report.push_str(&render_timeline(&timeline, events_total));
        if args.json {
            eprint!("{report}");
        } else {
            print!("{report}");
        }
    }
    Ok(if detector.exit_worthy_seen() {
        EXIT_TRUST_PROBLEM
    } else {
        0
    })
}

/// The trust timeline, grouped by service in time order.
fn render_timeline(lines: &[(Arc<str>, String)], total: u64) -> String {
    let mut out = String::from("\ntrust timeline:\n");
    if lines.is_empty() {
        out.push_str("  no trust events (healthy throughout)\n");
        return out;
    }
    let mut services: Vec<&Arc<str>> = lines.iter().map(|(s, _)| s).collect();
    services.sort();
    services.dedup();
    for service in services {
        out.push_str(&format!("  {service}:\n"));
        for (_, line) in lines.iter().filter(|(s, _)| s == service) {
            out.push_str(&format!("    {line}\n"));
        }
    }
    if total > lines.len() as u64 {
        out.push_str(&format!(
            "  (+{} more events in the JSON output)\n",
            total - lines.len() as u64
        ));
    }
    out
}
