//! The incident, live: starts the simulated KubeEdge and `trustwatch live --iface lo`, switches
//! the servers from CA_A to CA_B (SIGHUP: "CloudCore restarts with the other CA"), narrates what
//! the edges and the monitor say as it happens, stops everything, and reports.
//!
//! Consumes [`Options`] (the monitor binary, ports, timings); produces a [`Report`]: the edges'
//! ground truth (every attempt's outcome and arrival time), the monitor's events and
//! `/metrics` trust state with their arrival times, and the handshakes the monitor counted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::Ports;
use super::http;
use super::proc::{Line, Proc, Source, stop_requested};
use crate::Result;
use crate::peers::go;
use crate::pki::{Ca, Leaf, Pki};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `trustwatch` binary.
    pub trustwatch: PathBuf,
    pub ports: Ports,
    /// Edge clients, from 127.0.0.11 on (at most 200).
    pub edges: u8,
    /// When the servers switch to CA_B, after the edges start.
    pub switch_after: Duration,
    /// When the run ends, after the edges start; `None`: at SIGINT/SIGTERM only.
    pub run_for: Option<Duration>,
    /// End this long after both the collapse event and `trust_state == 2` were seen (benchmarks).
    pub end_after_detection: Option<Duration>,
    /// The monitor's `--collapse-clients`.
    pub collapse_clients: usize,
    /// `/metrics` poll period.
    pub poll: Duration,
    /// Print the timeline as it happens (off: only the report is returned).
    pub narrate: bool,
    /// Host the monitor's probes name (`127.0.0.1`; `localhost` exercises name resolution).
    pub probe_host: String,
    /// More `trustwatch live` arguments.
    pub monitor_args: Vec<String>,
    /// Give the monitor CA_A as KubeEdge stores it (`--kubeedge-secret-dir` with a `cadata` file),
    /// as the DaemonSet does.
    pub casecret: bool,
    /// Told when the monitor answers and when the servers switch (tests that watch from outside).
    pub phases: Option<Sender<Phase>>,
}

/// Moments of a run, for [`Options::phases`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The monitor answers `/healthz`; the edges start now.
    MonitorUp,
    /// The servers switched to CA_B.
    Switched,
    /// The run ended; everything is being stopped.
    Ending,
}

impl Options {
    /// The README's demo: switch after 15 s, end after 40 s, default ports.
    pub fn standard(trustwatch: PathBuf) -> Options {
        Options {
            trustwatch,
            ports: Ports::default(),
            edges: 12,
            switch_after: Duration::from_secs(15),
            run_for: Some(Duration::from_secs(40)),
            end_after_detection: None,
            collapse_clients: 3,
            poll: Duration::from_millis(50),
            narrate: true,
            probe_host: "127.0.0.1".into(),
            monitor_args: Vec::new(),
            casecret: false,
            phases: None,
        }
    }

    /// For CI: switch after 5 s, end after 15 s.
    pub fn quick(trustwatch: PathBuf) -> Options {
        Options {
            switch_after: Duration::from_secs(5),
            run_for: Some(Duration::from_secs(15)),
            ..Options::standard(trustwatch)
        }
    }
}

/// One monitor event as it arrived on stdout.
#[derive(Clone, Debug)]
pub struct SeenEvent {
    pub name: String,
    pub service: String,
    /// Since the edges started.
    pub at: Duration,
    pub json: Value,
}

/// What happened, when (durations count from the start of the edges).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub ca_a_key_id: String,
    pub ca_b_key_id: String,
    pub switched_at: Option<Duration>,
    /// Edge attempts by result (the edges' own logs).
    pub edge_ok: u64,
    pub edge_failed: u64,
    /// Successes of edges that had already failed against CA_B (must be none).
    pub edge_ok_after_switch: u64,
    /// One example of the edges' error after the switch.
    pub edge_error: Option<String>,
    /// Arrival of each edge's first failing attempt after the switch, in order.
    pub failures: Vec<(IpAddr, Duration)>,
    pub events: Vec<SeenEvent>,
    /// When `/metrics` first showed `trustwatch_trust_state{service="cloudhub"} == 2`.
    pub metrics_collapsed_at: Option<Duration>,
    /// The monitor's handshake counters for cloudhub at the end, by outcome.
    pub monitor_handshakes: Vec<(String, f64)>,
    /// The monitor's exit status after SIGINT.
    pub monitor_exit: Option<i32>,
    pub interrupted: bool,
    pub ran_for: Duration,
    pub collapse_clients: usize,
}

impl Report {
    pub fn first(&self, name: &str, service: &str) -> Option<&SeenEvent> {
        self.events
            .iter()
            .find(|e| e.name == name && e.service == service)
    }

    pub fn collapse(&self) -> Option<&SeenEvent> {
        self.first("trust_collapse", "cloudhub")
    }

    /// Arrival of the `n`-th (1-based) distinct failing edge.
    pub fn nth_failure(&self, n: usize) -> Option<Duration> {
        self.failures.get(n.checked_sub(1)?).map(|f| f.1)
    }

    /// Latency of `to` after the `n`-th failing edge.
    pub fn after_nth(&self, n: usize, to: Option<Duration>) -> Option<Duration> {
        Some(to?.checked_sub(self.nth_failure(n)?).unwrap_or_default())
    }
}

/// The edges' identities, the servers' two identities and the two CAs.
struct Fixture {
    pki: Pki,
    ca_a: Ca,
    ca_b: Ca,
    leaf_a: Leaf,
    leaf_b: Leaf,
    edges: Vec<Leaf>,
}

fn fixture(edges: u8) -> Result<Fixture> {
    let pki = Pki::new()?;
    let ca_a = pki.kubeedge_ca()?;
    let ca_b = pki.kubeedge_ca()?;
    let leaf_a = pki.server_leaf(&ca_a)?;
    let leaf_b = pki.server_leaf(&ca_b)?;
    let edges = (0..edges)
        .map(|i| pki.client_leaf(&ca_a, &format!("edge-{:02}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Fixture {
        pki,
        ca_a,
        ca_b,
        leaf_a,
        leaf_b,
        edges,
    })
}

fn edge_ip(i: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, 11u8.saturating_add(i)])
}

/// Start offset and pause between attempts of edge `i` of `n`: starts spread over the first
/// second, pauses spread over 1–2 s (so handshakes are staggered).
fn edge_timing(i: u8, n: u8) -> (Duration, Duration) {
    let n = u64::from(n.max(1));
    let i = u64::from(i);
    let start = Duration::from_millis(i * 1000 / n);
    let pause = Duration::from_millis(1000 + (i * 7 % n) * 1000 / n);
    (start, pause)
}

/// Shared between the run and its `/metrics` poller.
struct Poller {
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<String>>,
}

/// Polls `/metrics` every `every`; sends a `Source::Stderr("metrics")`-free line tagged
/// `Server("metrics")` with the cloudhub trust state each time it changes.
fn poll_metrics(ports: Ports, every: Duration, tx: Sender<Line>) -> Poller {
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(Mutex::new(String::new()));
    let (s, l) = (stop.clone(), last.clone());
    std::thread::spawn(move || {
        let mut state = None;
        while !s.load(Ordering::SeqCst) {
            let t = Instant::now();
            if let Ok((200, body)) = http::get(Ports::addr(ports.http), "/metrics") {
                let v = http::metric(&body, "trustwatch_trust_state", &[("service", "cloudhub")]);
                if state != Some(v) {
                    state = Some(v);
                    let line = Line {
                        at: Instant::now(),
                        wall: SystemTime::now(),
                        from: Source::Server("metrics"),
                        text: v.to_string(),
                    };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                if let Ok(mut g) = l.lock() {
                    *g = body;
                }
            }
            std::thread::sleep(every.saturating_sub(t.elapsed()));
        }
    });
    Poller { stop, last }
}

/// Waits for a `{"event":"listening"}` line from `name` (10 s).
fn wait_listening(rx: &Receiver<Line>, name: &'static str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.from == Source::Server(name) && l.text.contains("\"listening\"") => {
                return Ok(());
            }
            Ok(l) if matches!(l.from, Source::Stderr(_)) => {
                return Err(format!("{name}: {}", l.text).into());
            }
            Ok(_) => {}
            Err(_) => return Err(format!("{name} did not start listening within 10 s").into()),
        }
    }
}

fn short(k: &str) -> &str {
    k.get(..16).unwrap_or(k)
}

/// The terminal side: lines with the time since the start.
struct Narrator {
    on: bool,
    t0: Instant,
    ca_a: String,
    ca_b: String,
}

impl Narrator {
    fn say(&self, at: Instant, text: &str) {
        if self.on {
            let t = at.saturating_duration_since(self.t0).as_secs_f64();
            // println!, not a locked stdout: the test harness captures it.
            println!("[{t:6.2}s] {text}");
        }
    }

    /// `CA_A (1a2b3c4d5e6f7a8b)` for the demo's CAs, the short key otherwise.
    fn key(&self, k: Option<&str>) -> String {
        match k {
            None => "unknown".into(),
            Some(k) if k == self.ca_a => format!("CA_A ({})", short(k)),
            Some(k) if k == self.ca_b => format!("CA_B ({})", short(k)),
            Some(k) => short(k).to_string(),
        }
    }

    fn event(&self, at: Instant, v: &Value) {
        let tw = &v["trustwatch"];
        let s = |k: &str| tw[k].as_str();
        let service = s("service").unwrap_or("?");
        let text = match s("event").unwrap_or("?") {
            "trust_collapse" => format!(
                "▶ TRUST COLLAPSE on {service}: {} edges failing on certificate grounds ({:.0}% of active), \
                 rejecting side: {}; last trusted {}, presented now {}; trustwatch: {:.0} ms after the first failure (capture time)",
                tw["failing_clients"],
                tw["failure_share"].as_f64().unwrap_or(0.0) * 100.0,
                s("rejecting_side").unwrap_or("?"),
                self.key(s("previous_ca_key_id")),
                self.key(s("current_ca_key_id")),
                tw["detection_latency_us"].as_f64().unwrap_or(0.0) / 1000.0,
            ),
            "ca_changed" => format!(
                "▶ CA CHANGED on {service}: {} now presents {} (was {}), seen by {}",
                tw["server"].as_str().unwrap_or("the stored CA"),
                self.key(s("current_ca_key_id")),
                self.key(s("previous_ca_key_id")),
                s("source").unwrap_or("?"),
            ),
            "trust_recovered" => format!(
                "▶ TRUST RECOVERED on {service}: {} edges succeed again with {}",
                tw["succeeding_clients"],
                self.key(s("ca_key_id")),
            ),
            other => format!(
                "▶ {} on {service}: {}",
                other.to_uppercase(),
                s("evidence").unwrap_or("")
            ),
        };
        self.say(at, &text);
    }
}

/// Go server flags shared by cloudhub and certsvc: CA_A now, CA_B on SIGHUP.
fn server_cmd(bin: &PathBuf, f: &Fixture, port: u16, certsvc: bool) -> Command {
    let mut c = Command::new(bin);
    c.arg("server")
        .arg("-listen")
        .arg(Ports::addr(port).to_string())
        .arg("-cert")
        .arg(&f.leaf_a.chain_path)
        .arg("-key")
        .arg(&f.leaf_a.key_path)
        .arg("-client-ca")
        .arg(&f.ca_a.cert_path)
        .arg("-cert2")
        .arg(&f.leaf_b.chain_path)
        .arg("-key2")
        .arg(&f.leaf_b.key_path)
        .arg("-client-ca2")
        .arg(&f.ca_b.cert_path)
        .args(["-n", "0"]);
    if certsvc {
        c.arg("-certsvc");
    }
    c
}

fn monitor_cmd(o: &Options, casecret: Option<&std::path::Path>) -> Command {
    let p = o.ports;
    let mut c = Command::new(&o.trustwatch);
    c.args(["live", "--iface", "lo", "--ports"])
        .arg(format!("{}=cloudhub,{}=certsvc", p.cloudhub, p.certsvc))
        .arg("--listen")
        .arg(Ports::addr(p.http).to_string())
        .args(["--events", "-"])
        .arg("--probe-ca")
        .arg(format!("https://{}:{}", o.probe_host, p.certsvc))
        .arg("--probe-chain")
        .arg(format!("{}:{}", o.probe_host, p.cloudhub))
        .args(["--probe-interval", "30"])
        .arg("--collapse-clients")
        .arg(o.collapse_clients.to_string())
        .args(&o.monitor_args);
    if let Some(dir) = casecret {
        c.arg("--kubeedge-secret-dir").arg(dir);
    }
    c
}

/// The monitor's stderr lines that repeat an event already rendered from its JSON.
fn is_timeline_line(text: &str) -> bool {
    [
        "TRUST_COLLAPSE",
        "TRUST_RECOVERED",
        "CA_CHANGED",
        "CA_DIVERGENCE",
        "CA_INCONSISTENT",
    ]
    .iter()
    .any(|n| text.contains(n))
}

/// Runs the scenario. Every child is stopped when this returns, whatever happened.
pub fn run(o: &Options) -> Result<Report> {
    if o.edges == 0 || o.edges > 200 {
        return Err("--edges must be in 1..=200".into());
    }
    o.ports.check()?;
    let f = fixture(o.edges)?;
    let bin = go::binary()?;
    let (tx, rx) = mpsc::channel::<Line>();

    let mut cloudhub = Proc::spawn(
        "cloudhub",
        &mut server_cmd(&bin, &f, o.ports.cloudhub, false),
        Some(Source::Server("cloudhub")),
        Some(Source::Stderr("cloudhub")),
        &tx,
    )?;
    wait_listening(&rx, "cloudhub")?;
    let mut certsvc = Proc::spawn(
        "certsvc",
        &mut server_cmd(&bin, &f, o.ports.certsvc, true),
        Some(Source::Server("certsvc")),
        Some(Source::Stderr("certsvc")),
        &tx,
    )?;
    wait_listening(&rx, "certsvc")?;

    let casecret = if o.casecret {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("cadata"), &f.ca_a.cert.der)?;
        Some(dir)
    } else {
        None
    };
    let mut monitor = Proc::spawn(
        "trustwatch",
        &mut monitor_cmd(o, casecret.as_ref().map(|d| d.path())),
        Some(Source::MonitorEvents),
        Some(Source::MonitorLog),
        &tx,
    )?;
    let http_addr = Ports::addr(o.ports.http);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut early = Vec::new();
    loop {
        if let Ok((200, _)) = http::get(http_addr, "/healthz") {
            break;
        }
        while let Ok(l) = rx.try_recv() {
            early.push(l);
        }
        if let Some(s) = monitor.exited() {
            let log: Vec<&str> = early
                .iter()
                .filter(|l| l.from == Source::MonitorLog)
                .map(|l| l.text.as_str())
                .collect();
            return Err(format!("trustwatch live exited ({s}): {}", log.join(" | ")).into());
        }
        if Instant::now() > deadline {
            return Err("trustwatch live did not answer /healthz within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let t0 = Instant::now();
    let tell = |p: Phase| {
        if let Some(tx) = &o.phases {
            let _ = tx.send(p);
        }
    };
    tell(Phase::MonitorUp);
    let n = Narrator {
        on: o.narrate,
        t0,
        ca_a: f.ca_a.key_id().to_string(),
        ca_b: f.ca_b.key_id().to_string(),
    };
    for l in &early {
        if l.from == Source::MonitorLog {
            n.say(t0, &l.text);
        }
    }
    let mut report = Report {
        ca_a_key_id: n.ca_a.clone(),
        ca_b_key_id: n.ca_b.clone(),
        collapse_clients: o.collapse_clients,
        ..Report::default()
    };
    if o.narrate {
        let h = o.ports.http;
        println!(
            "\n  status page  http://127.0.0.1:{h}/\n  metrics      http://127.0.0.1:{h}/metrics\n  state (JSON) http://127.0.0.1:{h}/api/state\n"
        );
        println!(
            "  simulated KubeEdge on loopback: cloudhub 127.0.0.1:{} (mutual TLS), certsvc https://127.0.0.1:{}/ca.crt",
            o.ports.cloudhub, o.ports.certsvc
        );
        println!(
            "  CA_A: CN=KubeEdge, serial 1024, ECDSA P-256, key id {}",
            f.ca_a.key_id()
        );
        println!(
            "  CA_B: CN=KubeEdge, serial 1024, ECDSA P-256, key id {}  (the other replica's CA)",
            f.ca_b.key_id()
        );
        println!(
            "  {} edges ({}..{}) joined through CA_A and trust only it; each handshakes every 1–2 s",
            o.edges,
            edge_ip(0),
            edge_ip(o.edges - 1)
        );
        match o.run_for {
            Some(d) => println!(
                "  CloudCore restarts with CA_B after {} s; the demo ends after {} s (Ctrl-C stops it)\n",
                o.switch_after.as_secs(),
                d.as_secs()
            ),
            None => println!(
                "  CloudCore restarts with CA_B after {} s; Ctrl-C ends the demo\n",
                o.switch_after.as_secs()
            ),
        }
    }
    n.say(
        t0,
        "cloudhub and certsvc serve with CA_A; trustwatch live is capturing on lo",
    );

    let poller = poll_metrics(o.ports, o.poll, tx.clone());
    let mut edges: Vec<Proc> = Vec::new();
    let mut pending: Vec<(u8, Duration, Duration)> = (0..o.edges)
        .map(|i| {
            let (start, pause) = edge_timing(i, o.edges);
            (i, start, pause)
        })
        .collect();
    let mut failed_edges: BTreeSet<IpAddr> = BTreeSet::new();
    let mut switched: Option<Instant> = None;
    let mut detected: Option<Instant> = None;
    let mut next_status = t0 + Duration::from_secs(5);
    let outcome: Result<()> = loop {
        let now = Instant::now();
        // Edges whose start time has come.
        let mut spawn_error = None;
        let mut i = 0;
        while i < pending.len() {
            let (e, start, pause) = pending[i];
            if now >= t0 + start {
                pending.swap_remove(i);
                let leaf = &f.edges[usize::from(e)];
                let spawned = Proc::spawn(
                    format!("edge {}", edge_ip(e)),
                    Command::new(&bin)
                        .arg("client")
                        .arg("-connect")
                        .arg(Ports::addr(o.ports.cloudhub).to_string())
                        .arg("-ca")
                        .arg(&f.ca_a.cert_path)
                        .arg("-cert")
                        .arg(&leaf.chain_path)
                        .arg("-key")
                        .arg(&leaf.key_path)
                        .arg("-local")
                        .arg(edge_ip(e).to_string())
                        .args(["-n", "100000000"])
                        .arg("-interval")
                        .arg(format!("{}ms", pause.as_millis())),
                    Some(Source::Edge(11u8.saturating_add(e))),
                    Some(Source::Stderr("edge")),
                    &tx,
                );
                match spawned {
                    Ok(p) => edges.push(p),
                    Err(e) => {
                        spawn_error = Some(e);
                        break;
                    }
                }
            } else {
                i += 1;
            }
        }
        if let Some(e) = spawn_error {
            break Err(e);
        }
        if switched.is_none() && now >= t0 + o.switch_after {
            n.say(
                now,
                "CloudCore restarts and now serves CA_B — same name and serial, other key (the race)",
            );
            if let Err(e) = cloudhub
                .signal(libc::SIGHUP)
                .and(certsvc.signal(libc::SIGHUP))
            {
                break Err(e);
            }
            switched = Some(now);
            report.switched_at = Some(now - t0);
            tell(Phase::Switched);
        }
        if now >= next_status {
            next_status += Duration::from_secs(5);
            let body = poller.last.lock().map(|g| g.clone()).unwrap_or_default();
            let hs = http::by_label(
                &body,
                "trustwatch_handshakes_total",
                "outcome",
                &[("service", "cloudhub")],
            );
            let hs: Vec<String> = hs.iter().map(|(k, v)| format!("{v} {k}")).collect();
            let state = http::metric(&body, "trustwatch_trust_state", &[("service", "cloudhub")]);
            n.say(
                now,
                &format!(
                    "/metrics: cloudhub handshakes: {}; trust_state {state} ({})",
                    if hs.is_empty() {
                        "none yet".into()
                    } else {
                        hs.join(", ")
                    },
                    match state as u8 {
                        0 => "healthy",
                        1 => "degraded",
                        _ => "collapsed",
                    }
                ),
            );
        }
        if stop_requested() {
            report.interrupted = true;
            n.say(now, "interrupted: stopping");
            break Ok(());
        }
        if o.run_for.is_some_and(|d| now >= t0 + d) {
            break Ok(());
        }
        if let (Some(d), Some(at)) = (o.end_after_detection, detected)
            && now >= at + d
        {
            break Ok(());
        }
        if let Some(s) = monitor.exited() {
            break Err(format!("trustwatch live exited unexpectedly ({s})").into());
        }
        let line = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break Err("all outputs closed".into()),
        };
        handle(
            &line,
            &n,
            &mut report,
            switched,
            &mut failed_edges,
            o.narrate,
        );
        if detected.is_none()
            && report.collapse().is_some()
            && report.metrics_collapsed_at.is_some()
        {
            detected = Some(line.at);
        }
    };

    // Stop in order: the edges, then the monitor (its final events and counts), then the servers.
    tell(Phase::Ending);
    for e in &mut edges {
        e.stop(libc::SIGTERM, Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(300));
    if let Ok((200, body)) = http::get(http_addr, "/metrics") {
        report.monitor_handshakes = http::by_label(
            &body,
            "trustwatch_handshakes_total",
            "outcome",
            &[("service", "cloudhub")],
        );
    }
    poller.stop.store(true, Ordering::SeqCst);
    let status = monitor.stop(libc::SIGINT, Duration::from_secs(3));
    report.monitor_exit = status.and_then(|s| s.code());
    cloudhub.stop(libc::SIGTERM, Duration::from_millis(500));
    certsvc.stop(libc::SIGTERM, Duration::from_millis(500));
    let drain_until = Instant::now() + Duration::from_millis(200);
    while let Ok(l) = rx.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
        handle(&l, &n, &mut report, switched, &mut failed_edges, o.narrate);
    }
    report.ran_for = t0.elapsed();
    drop(f.pki);
    outcome.map(|()| report)
}

/// One output line: updates the report and narrates.
fn handle(
    l: &Line,
    n: &Narrator,
    r: &mut Report,
    switched: Option<Instant>,
    failed: &mut BTreeSet<IpAddr>,
    narrate: bool,
) {
    let since = l.at.saturating_duration_since(n.t0);
    match l.from {
        Source::Edge(x) => {
            let Ok(v) = serde_json::from_str::<Value>(&l.text) else {
                return;
            };
            let ip = IpAddr::from([127, 0, 0, x]);
            let after = switched.is_some_and(|s| l.at >= s);
            if v["ok"].as_bool() == Some(true) {
                r.edge_ok += 1;
                // A handshake in flight at the switch may still complete with CA_A; an edge
                // that has met CA_B must never succeed again.
                if after && failed.contains(&ip) {
                    r.edge_ok_after_switch += 1;
                }
                return;
            }
            r.edge_failed += 1;
            if !after || !failed.insert(ip) {
                return;
            }
            let err = v["error"].as_str().unwrap_or("?").to_string();
            r.failures.push((ip, since));
            let k = failed.len();
            if k == 1 {
                n.say(l.at, &format!("edge {ip}: handshake failed: {err}"));
            } else if k <= r.collapse_clients {
                n.say(l.at, &format!("edge {ip}: handshake failed (same error)"));
            } else if narrate && k.is_multiple_of(4) {
                n.say(l.at, &format!("{k} edges failing"));
            }
            r.edge_error.get_or_insert(err);
        }
        Source::MonitorEvents => {
            let Ok(v) = serde_json::from_str::<Value>(&l.text) else {
                n.say(l.at, &format!("trustwatch (stdout): {}", l.text));
                return;
            };
            n.event(l.at, &v);
            let tw = &v["trustwatch"];
            r.events.push(SeenEvent {
                name: tw["event"].as_str().unwrap_or("").into(),
                service: tw["service"].as_str().unwrap_or("").into(),
                at: since,
                json: v,
            });
        }
        Source::MonitorLog => {
            if !is_timeline_line(&l.text) {
                n.say(l.at, &l.text);
            }
        }
        Source::Server("metrics") => {
            let v: f64 = l.text.parse().unwrap_or(-1.0);
            if v == 2.0 && r.metrics_collapsed_at.is_none() {
                r.metrics_collapsed_at = Some(since);
                n.say(
                    l.at,
                    "/metrics: trustwatch_trust_state{service=\"cloudhub\"} = 2 (collapsed)",
                );
            } else if v >= 0.0 && v != 2.0 && r.metrics_collapsed_at.is_some() {
                n.say(
                    l.at,
                    &format!("/metrics: trustwatch_trust_state{{service=\"cloudhub\"}} = {v}"),
                );
            }
        }
        Source::Server(name) => {
            if l.text.contains("\"switch\"") {
                n.say(l.at, &format!("{name} switched to CA_B"));
            }
        }
        Source::Stderr(name) => n.say(l.at, &format!("{name}: {}", l.text)),
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "—".into(),
        |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0),
    )
}

/// The summary printed at the end of the demo.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let mut line = |t: String| {
        s.push_str(&t);
        s.push('\n');
    };
    line(format!(
        "\n── summary ({:.1} s{}) ──",
        r.ran_for.as_secs_f64(),
        if r.interrupted { ", interrupted" } else { "" }
    ));
    line(format!(
        "edges' own logs:      {} handshakes ok, {} failed ({} distinct edges failing after the switch)",
        r.edge_ok,
        r.edge_failed,
        r.failures.len()
    ));
    let hs: Vec<String> = r
        .monitor_handshakes
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    line(format!(
        "trustwatch (/metrics): cloudhub handshakes: {}",
        if hs.is_empty() {
            "none".into()
        } else {
            hs.join(", ")
        }
    ));
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &r.events {
        *by_name.entry(e.name.as_str()).or_default() += 1;
    }
    let ev: Vec<String> = by_name.iter().map(|(k, v)| format!("{v} {k}")).collect();
    line(format!(
        "events:               {}",
        if ev.is_empty() {
            "none".into()
        } else {
            ev.join(", ")
        }
    ));
    match r.collapse() {
        Some(c) => {
            let first = r.nth_failure(1);
            let tw = &c.json["trustwatch"];
            line(format!(
                "detection latency:    first failing handshake → collapse event {}, → trust_state 2 on /metrics {} (polled every 50 ms)",
                ms(r.after_nth(1, Some(c.at))),
                ms(r.after_nth(1, r.metrics_collapsed_at)),
            ));
            line(format!(
                "                      after failing edge #{} (--collapse-clients): event {}, /metrics {}; \
                 the rule fired at {} failing edges (share ≥ 50%): event {} after that one",
                r.collapse_clients,
                ms(r.after_nth(r.collapse_clients, Some(c.at))),
                ms(r.after_nth(r.collapse_clients, r.metrics_collapsed_at)),
                tw["failing_clients"],
                ms(r.after_nth(
                    usize::try_from(tw["failing_clients"].as_u64().unwrap_or(0)).unwrap_or(0),
                    Some(c.at)
                )),
            ));
            line(format!(
                "                      trustwatch's own figure (capture time): {:.0} ms; first failure at +{:.2} s",
                tw["detection_latency_us"].as_f64().unwrap_or(0.0) / 1000.0,
                first.unwrap_or_default().as_secs_f64()
            ));
        }
        None if r.switched_at.is_some() => {
            line("detection:            NO trust_collapse event".into())
        }
        None => line("detection:            the CA switch did not happen yet".into()),
    }
    s
}
