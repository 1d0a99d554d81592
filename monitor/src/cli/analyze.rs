//! `trustwatch analyze`: files → pipeline → JSON Lines and/or the summary.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::capture::file::FileSource;
use crate::error::Error;
use crate::export::json;
use crate::export::report::Summary;
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
        Progress { started: Instant::now(), bar: None, enabled: io::stderr().is_terminal() }
    }

    fn update(&mut self, name: &str, pos: u64, len: u64) {
        if !self.enabled {
            return;
        }
        if self.bar.is_none() && self.started.elapsed() > Duration::from_secs(1) {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name.to_string());
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
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

pub fn run(args: &AnalyzeArgs) -> Result<i32, Error> {
    let limits = args.limits.limits()?;
    // Open every file first, so bad input fails before any output.
    let mut sources = Vec::with_capacity(args.files.len());
    for path in &args.files {
        sources.push(FileSource::open(path)?);
    }
    let mut pipeline = Pipeline::new(args.traffic.services(), limits);
    let mut summary = Summary::default();
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut write_err: Option<io::Error> = None;
    let mut emit = |conn: crate::handshake::Connection| {
        summary.add(&conn);
        if args.json && write_err.is_none() {
            if let Err(e) = json::write_connection(&mut out, &conn) {
                write_err = Some(e);
            }
        }
    };
    for mut source in sources {
        let mut progress = Progress::new();
        let name = source.path().display().to_string();
        let len = source.file_size();
        let mut n: u64 = 0;
        while let Some(pkt) = source.next_packet()? {
            pipeline.packet(&pkt, &mut emit);
            n += 1;
            if n % 8192 == 0 {
                progress.update(&name, source.position(), len);
            }
        }
        progress.finish();
    }
    pipeline.finish(&mut emit);
    if let Some(e) = write_err {
        return Err(Error::Output(e));
    }
    out.flush()?;
    drop(out);
    if !args.quiet {
        let report = summary.render(&pipeline.stats());
        if args.json {
            eprint!("{report}");
        } else {
            print!("{report}");
        }
    }
    Ok(0)
}
