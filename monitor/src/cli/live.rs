//! `trustwatch live`: interfaces → capture threads → bounded queue → pipeline thread (pipeline,
//! detector, metrics, state page) ⇄ HTTP server on tokio; probes run on tokio's blocking pool.
//!
//! SIGINT/SIGTERM stop the capture, flush open connections as `incomplete`, emit the final events
//! and exit 0. Interface, permission and `--listen` problems are one-line errors with exit code 2.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use super::{DetectArgs, LimitArgs, TrafficArgs};
use crate::base::Timestamp;
use crate::capture::Packet;
use crate::capture::pcap::PcapOptions;
use crate::capture::running::{self, Backoff};
use crate::capture::{DropReason, FlowFeedback, SourceCounters, SourceKind, StopSignal};
use crate::detect::event::{Event, render_timeline_line};
use crate::detect::{Detector, Snapshot};
use crate::error::Error;
use crate::export::metrics::{Metrics, MetricsLimits};
use crate::handshake::Connection;
use crate::pipeline::Pipeline;
use crate::serve::state::SourceState;
use crate::serve::timeline::{Timeline, TimelineLimits};
use crate::serve::{Shared, StatePage};
use crate::trust::PresentedCa;
use crate::trust::probe::{self, ProbeLimits, ProbeResult, ProbeScheduler, ProbeTarget};

/// How often (wall time) the pipeline thread ticks the flow table and the detector, and publishes
/// metrics gauges and the state page when no packet arrives.
const TICK: Duration = Duration::from_millis(200);
/// Longest wait for the pipeline thread to finish after a signal (the whole exit stays under 2 s).
const FINISH_DEADLINE: Duration = Duration::from_millis(1500);

/// Read-only probes of the CloudCore replicas (live only).
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Probe `GET /ca.crt` on a replica: https://HOST:PORT (repeatable).
    #[arg(long, value_name = "URL")]
    pub probe_ca: Vec<String>,
    /// Probe the chain a TLS server presents: HOST:PORT (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub probe_chain: Vec<String>,
    /// Seconds between periodic probes (failures trigger one sooner).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub probe_interval: u64,
}

#[derive(Args, Debug)]
pub struct LiveArgs {
    /// Interface to capture on (repeatable; `any` for all).
    #[arg(long, value_name = "IFACE", default_value = "any")]
    pub iface: Vec<String>,
    /// Capture backend: `auto` is eBPF when it can be loaded here, else libpcap (it says why).
    #[arg(long, value_enum, default_value_t = SourceKind::Auto)]
    pub source: SourceKind,
    /// HTTP address for /metrics, /healthz, /readyz, /api/state and the status page.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9877")]
    pub listen: SocketAddr,
    /// Write detector events as JSON Lines to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<PathBuf>,
    /// Bytes captured per packet.
    #[arg(long, value_name = "BYTES", default_value_t = 262_144)]
    pub snaplen: u32,
    /// Kernel capture buffer per interface, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub buffer_size: u32,
    /// Packets queued between the capture threads and the pipeline; beyond, packets are dropped
    /// and counted (reason="queue_full").
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub queue: usize,
    /// CA key ids kept as metric labels (the most recent ones; older series are removed).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_ca_key_series: usize,
    /// /readyz also fails while a CA inconsistency or divergence is reported.
    #[arg(long)]
    pub ready_requires_consistent_ca: bool,
    /// No timeline on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub ebpf: crate::capture::ebpf::EbpfArgs,
}

fn usage(msg: String) -> Error {
    Error::Usage(msg)
}

fn now_ts() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn probe_targets(d: &ProbeArgs) -> Result<Vec<ProbeTarget>, Error> {
    let mut t = Vec::new();
    for s in &d.probe_ca {
        t.push(ProbeTarget::parse_ca_url(s)?);
    }
    for s in &d.probe_chain {
        t.push(ProbeTarget::parse_chain(s)?);
    }
    Ok(t)
}

/// Where events go.
enum EventSink {
    None,
    Stdout(io::Stdout),
    File(BufWriter<File>),
}

impl EventSink {
    fn open(path: Option<&PathBuf>) -> Result<EventSink, Error> {
        Ok(match path {
            None => EventSink::None,
            Some(p) if p.as_os_str() == "-" => EventSink::Stdout(io::stdout()),
            Some(p) => EventSink::File(BufWriter::new(
                File::create(p).map_err(|e| usage(format!("--events {}: {e}", p.display())))?,
            )),
        })
    }

    fn write(&mut self, e: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(io::Error::other)?;
        line.push(b'\n');
        match self {
            EventSink::None => Ok(()),
            EventSink::Stdout(s) => {
                let mut l = s.lock();
                l.write_all(&line)?;
                l.flush()
            }
            EventSink::File(f) => {
                f.write_all(&line)?;
                f.flush()
            }
        }
    }
}

/// What the probe workers send back to the pipeline thread.
enum ProbeMsg {
    /// The probe's TCP connection is up: exclude it from the passive figures.
    Connected(SocketAddr),
    Done(Box<ProbeResult>),
}

/// The pipeline thread: owns every stateful stage.
struct Worker {
    pipeline: Pipeline,
    detector: Detector,
    metrics: Metrics,
    timeline: Timeline,
    shared: Arc<Shared>,
    sources: Vec<(String, Arc<SourceCounters>)>,
    // FLOW FEEDBACK (eBPF), to be ported into the runtime: the sources that want to hear
    // which connections are decided.
    feedback: Vec<Arc<dyn FlowFeedback>>,
    sink: EventSink,
    quiet: bool,
    probes: ProbeScheduler,
    probe_limits: ProbeLimits,
    probe_tx: Sender<ProbeMsg>,
    probe_rx: Receiver<ProbeMsg>,
    probe_results: Vec<ProbeResult>,
    runtime: tokio::runtime::Handle,
    handshakes: u64,
    events: u64,
    started: String,
    write_error: Option<io::Error>,
    conns: Vec<Connection>,
    evs: Vec<Event>,
    /// CA key presented per server address (from the detector snapshot).
    presented: HashMap<SocketAddr, String>,
}

/// Totals printed when the monitor stops.
struct Summary {
    packets: u64,
    handshakes: u64,
    events: u64,
    dropped: u64,
}

impl Worker {
    fn run(mut self, rx: &Receiver<Packet>) -> Result<Summary, io::Error> {
        let mut next_tick = Instant::now();
        loop {
            match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(pkt) => {
                    let conns = &mut self.conns;
                    self.pipeline.packet(&pkt, &mut |c| conns.push(c));
                    self.handle_connections();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                self.tick(now_ts());
                next_tick = Instant::now() + TICK;
            }
        }
        // Capture stopped: every open flow ends as it is (incomplete when undecided).
        let conns = &mut self.conns;
        self.pipeline.finish(&mut |c| conns.push(c));
        self.handle_connections();
        self.tick(now_ts());
        if let Some(e) = self.write_error.take() {
            return Err(e);
        }
        let dropped = self.sources.iter().map(|(_, c)| c.dropped_total()).sum();
        Ok(Summary {
            packets: self.pipeline.stats().packets,
            handshakes: self.handshakes,
            events: self.events,
            dropped,
        })
    }

    fn handle_connections(&mut self) {
        if self.conns.is_empty() {
            return;
        }
        // A probe's connection may be decided before the next tick: learn its client address
        // first, so the detector excludes it.
        self.drain_probes(now_ts());
        let conns = std::mem::take(&mut self.conns);
        for conn in &conns {
            // FLOW FEEDBACK (eBPF): the handshake is decided; the kernel stops copying it.
            for f in &self.feedback {
                f.decided(conn.client, conn.server);
            }
            // The detector counts (and skips) the probes' own connections; the passive figures
            // never include them.
            if !self.detector.is_probe_connection(conn) {
                self.handshakes += 1;
                self.metrics.connection(conn);
                let fallback = self.presented_key(conn.server);
                self.timeline.observe(conn, fallback.as_deref());
            }
            self.detector.observe(conn, &mut self.evs);
        }
        self.conns = conns;
        self.conns.clear();
        if !self.evs.is_empty() {
            self.emit_events();
            // An event changes gauges: publish now, not at the next tick (detection latency).
            self.publish();
        }
    }

    /// The CA key the detector last saw presented by `server` (chains or probes), as of the last
    /// published snapshot.
    fn presented_key(&self, server: SocketAddr) -> Option<String> {
        self.presented.get(&server).cloned()
    }

    fn emit_events(&mut self) {
        let evs = std::mem::take(&mut self.evs);
        for e in &evs {
            self.events += 1;
            self.metrics.event(&e.service, e.name());
            if !self.quiet {
                eprintln!("{}", render_timeline_line(e));
            }
            if self.write_error.is_none()
                && let Err(e) = self.sink.write(e)
            {
                eprintln!("trustwatch: --events: {e}");
                self.write_error = Some(e);
            }
            if self.detector.take_probe_request() {
                self.probes.trigger();
            }
        }
        self.evs = evs;
        self.evs.clear();
    }

    fn tick(&mut self, now: Timestamp) {
        let conns = &mut self.conns;
        self.pipeline.tick(now, &mut |c| conns.push(c));
        self.handle_connections();
        self.drain_probes(now);
        self.detector.tick(now, &mut self.evs);
        if self.detector.take_probe_request() {
            self.probes.trigger();
        }
        self.emit_events();
        self.start_probes();
        self.timeline.expire(now);
        self.publish();
    }

    fn drain_probes(&mut self, now: Timestamp) {
        while let Ok(msg) = self.probe_rx.try_recv() {
            match msg {
                ProbeMsg::Connected(local) => self.detector.exclude_probe_client(local, now),
                ProbeMsg::Done(r) => {
                    self.probes.completed(&r.target);
                    if r.outcome.is_err() {
                        self.metrics.probe_error(&r.target.authority());
                    }
                    self.detector.observe_probe(&r, now, &mut self.evs);
                    match self.probe_results.iter_mut().find(|p| p.target == r.target) {
                        Some(p) => *p = *r,
                        None => self.probe_results.push(*r),
                    }
                }
            }
        }
    }

    fn start_probes(&mut self) {
        for target in self.probes.due(Instant::now()) {
            let tx = self.probe_tx.clone();
            let limits = self.probe_limits;
            self.runtime.spawn_blocking(move || {
                let r = probe::run(&target, &limits, &mut |local| {
                    let _ = tx.send(ProbeMsg::Connected(local));
                });
                let _ = tx.send(ProbeMsg::Done(Box::new(r)));
            });
        }
    }

    /// Whether some presented CA disagrees with the trusted reference right now.
    fn inconsistent(&self, snap: &Snapshot) -> bool {
        let reference = self.detector.reference();
        if reference.is_empty() {
            return false;
        }
        snap.services
            .iter()
            .flat_map(|s| &s.servers)
            .filter_map(|s| s.presented_ca_key_id.as_deref())
            .any(|k| !reference.check(&PresentedCa::from_key_id(k)).is_empty())
    }

    /// Metrics gauges, readiness flags and the state page.
    fn publish(&mut self) {
        let snap = self.detector.snapshot();
        self.presented.clear();
        for s in snap.services.iter().flat_map(|s| &s.servers) {
            if let Some(k) = &s.presented_ca_key_id {
                self.presented.insert(s.address, k.clone());
            }
        }
        let inconsistent = self.inconsistent(&snap);
        self.metrics.snapshot(&snap, inconsistent);
        let diverging = snap
            .services
            .iter()
            .any(|s| !s.divergent_ca_key_ids.is_empty());
        let consistent = !inconsistent && !diverging;
        self.shared
            .ca_consistent
            .store(consistent, Ordering::SeqCst);
        let stats = self.pipeline.stats();
        self.metrics.stats(&stats, self.pipeline.flows_active());
        let mut sources = Vec::with_capacity(self.sources.len());
        let mut running = !self.sources.is_empty();
        for (name, c) in &self.sources {
            let s = SourceState {
                name: name.clone(),
                running: c.running(),
                packets: c.packets(),
                dropped_queue_full: c.dropped(DropReason::QueueFull),
                dropped_kernel: c.dropped(DropReason::Kernel),
                dropped_interface: c.dropped(DropReason::Interface),
            };
            running &= s.running;
            self.metrics.capture(
                name,
                s.packets,
                s.dropped_queue_full,
                s.dropped_kernel,
                s.dropped_interface,
            );
            sources.push(s);
        }
        self.shared.capture_running.store(running, Ordering::SeqCst);
        self.shared.publish(StatePage {
            version: env!("CARGO_PKG_VERSION"),
            updated: now_ts().rfc3339(),
            started: self.started.clone(),
            ca_consistent: consistent,
            sources,
            detector: Some(snap),
            probes: self.probe_results.clone(),
            timeline_bucket_secs: self.timeline.bucket_secs(),
            timeline: self.timeline.snapshot(),
            handshakes: self.handshakes,
            packets: stats.packets,
            flows_active: self.pipeline.flows_active(),
        });
    }
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

pub fn run(args: &LiveArgs) -> Result<i32, Error> {
    let limits = args.limits.limits()?;
    if args.queue == 0 {
        return Err(usage("--queue must be at least 1".into()));
    }
    if args.max_ca_key_series == 0 {
        return Err(usage("--max-ca-key-series must be at least 1".into()));
    }
    let snaplen = i32::try_from(args.snaplen)
        .ok()
        .filter(|s| *s >= 64)
        .ok_or_else(|| usage("--snaplen must be in 64..=2147483647".into()))?;
    let buffer_size = i32::try_from(args.buffer_size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| usage("--buffer-size must be positive".into()))?;
    let services = args.traffic.services();
    let detector = args.detect.detector(args.traffic.services())?;
    let targets = probe_targets(&args.probes)?;
    let sink = EventSink::open(args.events.as_ref())?;

    // Bind before capturing: a busy port is reported before anything starts.
    let listener = std::net::TcpListener::bind(args.listen).map_err(|e| {
        let why = if e.kind() == io::ErrorKind::AddrInUse {
            "address already in use".to_string()
        } else {
            e.to_string()
        };
        usage(format!("--listen {}: {why}", args.listen))
    })?;

    let mut metrics = Metrics::new(MetricsLimits {
        max_ca_keys: args.max_ca_key_series,
        ..MetricsLimits::default()
    })
    .map_err(|e| Error::Capture(format!("metrics: {e}")))?;
    let trusted: Vec<(String, String, String)> = detector
        .reference()
        .cas()
        .into_iter()
        .map(|c| {
            let source = if detector.reference().secret_ca().is_some_and(|s| s == c) {
                "secret"
            } else {
                "trusted_ca"
            };
            (source.to_string(), c.key_id.clone(), c.subject.clone())
        })
        .collect();
    metrics.trusted_cas(&trusted);
    let shared = Arc::new(Shared::new(
        metrics.registry().clone(),
        args.ready_requires_consistent_ca,
    ));

    let opts = crate::capture::LiveOptions {
        services: services.clone(),
        pcap: PcapOptions {
            snaplen,
            buffer_size,
            ..PcapOptions::default()
        },
        ebpf: args.ebpf.options(limits.handshake_window)?,
    };
    let crate::capture::Opened {
        sources: opened,
        note,
    } = crate::capture::open_live(args.source, &args.iface, &opts)?;
    let filter = crate::capture::pcap::bpf_filter(&services);
    let (tx, rx) = mpsc::sync_channel::<Packet>(args.queue);
    let stop = StopSignal::new();
    let mut capture = Vec::with_capacity(opened.len());
    for source in opened {
        capture.push(running::spawn(
            source,
            tx.clone(),
            stop.clone(),
            Backoff::default(),
        )?);
    }
    drop(tx);
    if let (Some(note), false) = (note, args.quiet) {
        eprintln!("trustwatch live: capture backend: {note}");
    }
    shared.capture_running.store(true, Ordering::SeqCst);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|e| Error::Capture(format!("tokio runtime: {e}")))?;

    let started = now_ts().rfc3339();
    if !args.quiet {
        eprintln!(
            "trustwatch live: capturing on {} ({filter}); http://{}/ (/metrics, /api/state)",
            args.iface.join(", "),
            listener
                .local_addr()
                .map_or_else(|_| args.listen.to_string(), |a| a.to_string())
        );
    }
    let (probe_tx, probe_rx) = mpsc::channel();
    let probe_interval = Duration::from_secs(args.probes.probe_interval.max(1));
    let worker = Worker {
        pipeline: Pipeline::new(services, limits),
        detector,
        metrics,
        timeline: Timeline::new(TimelineLimits::default()),
        shared: shared.clone(),
        sources: Vec::new(),
        feedback: capture.iter().filter_map(|r| r.feedback.clone()).collect(),
        sink,
        quiet: args.quiet,
        probes: ProbeScheduler::new(targets, probe_interval, Duration::from_secs(5)),
        probe_limits: ProbeLimits::default(),
        probe_tx,
        probe_rx,
        probe_results: Vec::new(),
        runtime: runtime.handle().clone(),
        handshakes: 0,
        events: 0,
        started,
        write_error: None,
        conns: Vec::new(),
        evs: Vec::new(),
        presented: HashMap::new(),
    };
    let counters: Vec<_> = capture
        .iter()
        .map(|r| (r.name.clone(), r.counters.clone()))
        .collect();
    let mut worker = worker;
    // SOURCE SUMMARY (eBPF): kept for the per-source line printed at the end.
    let source_counters = counters.clone();
    worker.sources = counters;
    let pipeline_thread = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || worker.run(&rx))
        .map_err(|e| Error::Capture(format!("cannot start the pipeline thread: {e}")))?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(crate::serve::serve(listener, shared.clone(), async move {
        let _ = stop_rx.await;
    }));
    let started_at = Instant::now();
    runtime.block_on(shutdown_signal());
    let stopping = Instant::now();

    // Stop capturing; the pipeline thread drains the queue, finishes and returns.
    shared.capture_running.store(false, Ordering::SeqCst);
    stop.stop();
    for r in capture {
        r.join();
    }
    let summary = join_within(
        pipeline_thread,
        FINISH_DEADLINE.saturating_sub(stopping.elapsed()),
    );
    let _ = stop_tx.send(());
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_millis(200), server).await;
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    match summary {
        Some(Ok(s)) => {
            if !args.quiet {
                eprintln!(
                    "trustwatch live: stopped after {:.1}s: {} packets, {} handshakes, {} events, {} packets dropped",
                    started_at.elapsed().as_secs_f64(),
                    s.packets,
                    s.handshakes,
                    s.events,
                    s.dropped
                );
                // SOURCE SUMMARY (eBPF): per-source capture counters, kernel side included.
                for (name, c) in &source_counters {
                    eprintln!("trustwatch live: capture {name}: {}", c.summary());
                }
            }
            Ok(0)
        }
        Some(Err(e)) => Err(Error::Output(e)),
        None => {
            eprintln!("trustwatch live: the pipeline did not finish in time; exiting");
            Ok(0)
        }
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
