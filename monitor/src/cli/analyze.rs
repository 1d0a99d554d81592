//! `trustwatch analyze`: flags → [`Analysis`], a progress bar on a terminal, the exit code.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::AnalyzeArgs;
use crate::error::Error;
use crate::export::forensic::Format;
use crate::runtime::offline::{self, Analysis, FileEnd};
use crate::select::{ConnectionSelect, PacketSelect};

/// Exit code when a collapse, divergence or inconsistency was found.
pub const EXIT_TRUST_PROBLEM: i32 = 3;
/// Exit code when not one TLS connection was found on the watched ports (a script can tell
/// "healthy" from "saw nothing").
pub const EXIT_NOTHING_FOUND: i32 = crate::error::EXIT_NOTHING_FOUND;

pub fn run(args: AnalyzeArgs) -> Result<i32, Error> {
    let services = args.traffic.services();
    let analysis = Analysis {
        detector: args.detect.detector(services.clone())?,
        limits: args.limits.limits(),
        services,
        files: args.files,
        json: args.json,
        quiet: args.quiet,
        report: args
            .report
            .map(|path| match Format::of(&path) {
                Some(f) => Ok((path, f)),
                None => Err(Error::Usage(format!(
                    "--report {}: the extension names the format: .html, .md or .csv",
                    path.display()
                ))),
            })
            .transpose()?,
        packets: PacketSelect::new(args.select.from, args.select.to, args.select.filter)?,
        connections: ConnectionSelect {
            clients: args.select.client,
            servers: args.select.server,
        },
        threads: args
            .threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, std::num::NonZeroUsize::get),
    };
    let findings = offline::run(analysis, &mut Progress::new())?;
    if let Some(nothing) = &findings.nothing_found {
        crate::note!("trustwatch: warning: {nothing}");
    }
    Ok(if findings.trust_problem {
        EXIT_TRUST_PROBLEM
    } else if findings.nothing_found.is_some() {
        EXIT_NOTHING_FOUND
    } else {
        0
    })
}

/// A progress bar that appears only when a file takes more than a second and stderr is a terminal;
/// the warning for a file cut short.
struct Progress {
    started: Instant,
    bar: Option<ProgressBar>,
    enabled: bool,
    name: String,
    len: u64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            started: Instant::now(),
            bar: None,
            enabled: io::stderr().is_terminal(),
            name: String::new(),
            len: 0,
        }
    }
}

impl offline::Progress for Progress {
    fn file(&mut self, path: &Path, len: u64) {
        self.started = Instant::now();
        self.name = path.display().to_string();
        self.len = len;
    }

    fn position(&mut self, pos: u64) {
        if !self.enabled {
            return;
        }
        let elapsed = self.started.elapsed();
        if self.bar.is_none() && elapsed > Duration::from_secs(1) {
            let bar = ProgressBar::new(self.len);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:40}] {bytes}/{total_bytes} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(self.name.clone());
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            // The rate over the whole file so far (the bar appears a second late, so indicatif's
            // own estimate would start from a jump).
            let rate = pos as f64 / elapsed.as_secs_f64().max(1e-3);
            let eta = self.len.saturating_sub(pos) as f64 / rate.max(1.0);
            bar.set_message(format!("{:.0} MB/s, eta {eta:.0}s", rate / 1e6));
            bar.set_position(pos);
        }
    }

    fn done(&mut self, end: &FileEnd<'_>) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let path = end.path.display();
        for d in end.damage {
            let what = if d.resumed {
                format!(
                    "skipped {} bytes, resumed at offset {}",
                    d.skipped,
                    d.offset + d.skipped
                )
            } else {
                format!(
                    "nothing readable after it: the last {} bytes were skipped",
                    d.skipped
                )
            };
            crate::note!(
                "trustwatch: {path}: corrupt record header at offset {} (after {} packets: {}); {what}",
                d.offset,
                d.after_packets,
                d.reason
            );
        }
        let untold = end.damaged_regions.saturating_sub(end.damage.len() as u64);
        if untold > 0 {
            crate::note!("trustwatch: {path}: {untold} more corrupt stretches skipped");
        }
        if end.unsupported.packets > 0 {
            crate::note!(
                "trustwatch: {path}: {} packets skipped on interfaces with unsupported link type {}",
                end.unsupported.packets,
                end.unsupported.linktype.unwrap_or_default()
            );
        }
        if end.truncated {
            crate::note!(
                "trustwatch: {path}: capture file is cut short; analyzed what was complete"
            );
        }
    }

    fn notice(&mut self, notice: &offline::Notice) {
        crate::note!("trustwatch: {notice}");
    }

    fn selected(&mut self, selected: offline::Selected) {
        crate::note!("trustwatch: {selected}");
    }
}
