//! Live monitoring (`trustwatch live`): capture sources → bounded queue → the pipeline thread
//! (the [`Monitor`] and its sinks) ⇄ the HTTP server on tokio; probes on tokio's blocking pool.
//!
//! Consumes opened [`Source`]s and the live configuration; produces metrics, the status page,
//! readiness, events (stderr, `--events`) and records (`--json`) until SIGINT/SIGTERM, then stops
//! the sources, drains the queue, finishes open connections as `incomplete`, emits the final
//! events and returns the totals. The pipeline thread ticks the monitor every [`TICK`] of wall time
//! (see the clock policy in [`super`]).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::sinks::{JsonSink, MetricsSink, StatusSink, StderrTimeline};
use super::{Clock, Monitor, Probes, SourceView};
use crate::base::Timestamp;
use crate::capture::running::{self, Backoff, Running};
use crate::capture::{Packet, Source, StopSignal};
use crate::config::{Limits, Services};
use crate::detect::Detector;
use crate::error::Error;
use crate::export::json::JsonLines;
use crate::export::metrics::{Metrics, MetricsLimits};
use crate::pipeline::Pipeline;
use crate::serve::timeline::{Timeline, TimelineLimits};
use crate::serve::{HttpLimits, Liveness, Shared, StatusPage};
use crate::trust::probe::ProbeTarget;

/// How often (wall time) the pipeline thread ticks the monitor when no packet arrives.
pub const TICK: Duration = Duration::from_millis(200);
/// Longest wait for the pipeline thread to finish after a signal (the whole exit stays under 2 s).
const FINISH_DEADLINE: Duration = Duration::from_millis(1500);
/// Soonest re-probe of a target after failures start.
const PROBE_MIN_GAP: Duration = Duration::from_secs(5);

/// Everything `trustwatch live` runs with.
pub struct Live {
    /// Opened capture sources (so interface and permission errors came first).
    pub sources: Vec<Box<dyn Source>>,
    /// Packets queued between the capture threads and the pipeline.
    pub queue: usize,
    /// The bound HTTP listener.
    pub listener: std::net::TcpListener,
    /// Where the status page and `/api/state` go, and their own bound listener if apart.
    pub status: StatusPage,
    pub status_listener: Option<std::net::TcpListener>,
    pub http: HttpLimits,
    pub liveness: Liveness,
    pub services: Services,
    pub limits: Limits,
    pub detector: Detector,
    pub probes: Vec<ProbeTarget>,
    pub probe_interval: Duration,
    pub metrics: MetricsLimits,
    pub ready_requires_consistent_ca: bool,
    /// Detector events as JSON Lines (`-` for stdout).
    pub events: Option<PathBuf>,
    /// Connection records and events as JSON Lines (`-` for stdout).
    pub json: Option<PathBuf>,
    /// No event lines on stderr.
    pub quiet: bool,
}

/// Totals when the monitor stops.
#[derive(Clone, Debug)]
pub struct Totals {
    pub seconds: f64,
    pub packets: u64,
    pub handshakes: u64,
    pub events: u64,
    pub dropped: u64,
    /// One line per capture source, `NAME: what it handed on and dropped` (eBPF: and what the
    /// kernel program saw, copied and left behind).
    pub sources: Vec<String>,
}

/// An output file or stdout, for JSON Lines.
fn open_output(flag: &str, path: &Path) -> Result<Box<dyn Write + Send>, Error> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdout()));
    }
    let f =
        File::create(path).map_err(|e| Error::Usage(format!("{flag} {}: {e}", path.display())))?;
    Ok(Box::new(BufWriter::new(f)))
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The pipeline thread: packets in, ticks every [`TICK`], until the queue closes.
fn pipeline_thread(mut monitor: Monitor, rx: &Receiver<Packet>) -> (Monitor, io::Result<()>) {
    let mut next_tick = Instant::now();
    // The first output error is reported at once and returned at the end; the monitor goes on.
    let mut first_error = None;
    loop {
        match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(pkt) => monitor.on_packet(&pkt),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_tick {
            monitor.tick(Timestamp::now());
            next_tick = Instant::now() + TICK;
        }
        if let Some(e) = monitor.take_error() {
            crate::note!("trustwatch: output: {e}");
            first_error.get_or_insert(e);
        }
    }
    // Capture stopped: every open flow ends as it is (incomplete when undecided).
    let result = monitor.finish(Timestamp::now());
    let result = match first_error {
        Some(e) => Err(e),
        None => result,
    };
    (monitor, result)
}

/// Runs until SIGINT/SIGTERM. `started` is called once everything runs, with the HTTP address.
/// `None` when the pipeline did not finish within the exit deadline.
pub fn run(live: Live, started: impl FnOnce(SocketAddr)) -> Result<Option<Totals>, Error> {
    let metrics =
        Metrics::new(live.metrics).map_err(|e| Error::Capture(format!("metrics: {e}")))?;
    let shared = Arc::new(Shared::new(
        metrics.registry().clone(),
        live.ready_requires_consistent_ca,
        live.liveness,
    ));
    let timeline = Timeline::new(TimelineLimits::default());
    let services = live.services.clone();
    let mut monitor = Monitor::new(
        Pipeline::new(live.services, live.limits),
        live.detector,
        Clock::External,
    )
    .with_sink(MetricsSink(metrics, services))
    .with_sink(StatusSink::new(shared.clone(), timeline));
    if !live.quiet {
        monitor = monitor.with_sink(StderrTimeline);
    }
    if let Some(path) = &live.events {
        monitor = monitor.with_sink(JsonSink(
            JsonLines::events_only(open_output("--events", path)?)
                .with_observer_hostname(&observer_hostname()),
        ));
    }
    if let Some(path) = &live.json {
        monitor = monitor.with_sink(JsonSink(
            JsonLines::new(open_output("--json", path)?, true)
                .with_observer_hostname(&observer_hostname()),
        ));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|e| Error::Capture(format!("tokio runtime: {e}")))?;
    if !live.probes.is_empty() {
        monitor = monitor.with_probes(Probes::new(
            live.probes,
            live.probe_interval,
            PROBE_MIN_GAP,
            runtime.handle().clone(),
        ));
    }

    let (tx, rx) = mpsc::sync_channel::<Packet>(live.queue);
    let stop = StopSignal::new();
    let mut capture: Vec<Running> = Vec::with_capacity(live.sources.len());
    for source in live.sources {
        capture.push(running::spawn(
            source,
            tx.clone(),
            stop.clone(),
            Backoff::default(),
        )?);
    }
    drop(tx);
    let views: Vec<SourceView> = capture
        .iter()
        .map(|r| SourceView {
            name: r.name.clone(),
            counters: r.counters.clone(),
            feedback: r.feedback.clone(),
        })
        .collect();
    let monitor = monitor.with_sources(views.clone());
    shared.set_capture_running(true);

    let pipeline = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || pipeline_thread(monitor, &rx))
        .map_err(|e| Error::Capture(format!("cannot start the pipeline thread: {e}")))?;

    let listen = live.listener.local_addr().ok();
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(crate::serve::serve(
        live.listener,
        live.status_listener,
        shared.clone(),
        live.status,
        live.http,
        async move {
            let _ = stopped.await;
        },
    ));
    if let Some(addr) = listen {
        started(addr);
    }
    let started_at = Instant::now();
    runtime.block_on(shutdown_signal());
    let stopping = Instant::now();

    // Stop capturing; the pipeline thread drains the queue, finishes and returns.
    shared.set_capture_running(false);
    stop.stop();
    for r in capture {
        r.join();
    }
    let finished = join_within(pipeline, FINISH_DEADLINE.saturating_sub(stopping.elapsed()));
    let _ = stop_http.send(());
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_millis(200), server).await;
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    let dropped = views.iter().map(|s| s.counters.dropped_total()).sum();
    match finished {
        Some((monitor, result)) => {
            result.map_err(Error::Output)?;
            Ok(Some(Totals {
                seconds: started_at.elapsed().as_secs_f64(),
                packets: monitor.pipeline().stats().packets,
                handshakes: monitor.handshakes(),
                events: monitor.events(),
                dropped,
                sources: views
                    .iter()
                    .map(|s| format!("{}: {}", s.name, s.counters.summary()))
                    .collect(),
            }))
        }
        None => Ok(None),
    }
}

/// Joins `handle` unless it takes longer than `limit`.
fn join_within<T: Send + 'static>(
    handle: std::thread::JoinHandle<T>,
    limit: Duration,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join().ok()
}

/// The node this monitor runs on, for `observer.hostname`: `$NODE_NAME` (the DaemonSet sets it
/// from the pod's node), else the kernel's host name.
fn observer_hostname() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default()
}
