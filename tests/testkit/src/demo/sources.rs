//! eBPF against libpcap on the same traffic: three `trustwatch live --iface lo` at once — libpcap,
//! eBPF with the ring buffer, eBPF with perf buffers — watching the same cloudhub port through
//! two phases (fresh monitors for each):
//!
//! - **bulk**: one mutual-TLS 1.3 connection that moves `bulk_bytes` down and 1/16 of it up after
//!   its handshake (an edge's websocket);
//! - **storm**: `storm_edges` edges, each from its own 127.1.x.y address, handshake with a Go
//!   cloudhub (mutual TLS 1.3, ping/pong, close) as fast as `storm_workers` threads can, as after
//!   a CloudCore restart.
//!
//! Per monitor and phase: user and system CPU (`/proc/<pid>/stat`), packets and bytes handed to
//! user space and packets lost (any reason) from the line each monitor prints when it stops,
//! handshakes counted by outcome (`/metrics`), and for eBPF the TC program's mean run time per
//! packet, from the kernel's BPF statistics: they are switched on for the benchmark with
//! `BPF_ENABLE_STATS`, which switches them off again when its descriptor closes (also if the
//! benchmark dies). The TC program runs in the softirq of whoever sends or receives, so its
//! cost is not in the monitor's CPU: it is the run time per packet. A two-instruction program on
//! the same hook ([`super::bpf_floor`]) gives the floor of that figure on this machine.
//!
//! Consumes [`SourcesOptions`]; produces a [`SourcesReport`].

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::bpf_floor::Floor;
use super::http;
use super::load::{client_config, cpu_times, one};
use super::proc::{Line, Proc, Source};
use crate::Result;
use crate::peers::{TlsVersion, bulk};
use crate::pki::Pki;
use rustls::ClientConfig;

#[derive(Clone, Debug)]
pub struct SourcesOptions {
    pub trustwatch: PathBuf,
    /// The watched (cloudhub) port on 127.0.0.1.
    pub port: u16,
    /// Bytes moved server → client in the bulk phase (client → server: a sixteenth).
    pub bulk_bytes: u64,
    pub storm_edges: u32,
    pub storm_workers: usize,
}

impl SourcesOptions {
    pub fn new(trustwatch: PathBuf, port: u16) -> SourcesOptions {
        SourcesOptions {
            trustwatch,
            port,
            bulk_bytes: 1 << 30,
            storm_edges: 5000,
            storm_workers: 48,
        }
    }
}

/// The monitors of the comparison: label and `--source` flags.
pub const MONITORS: [(&str, &[&str]); 3] = [
    ("libpcap", &["--source", "pcap"]),
    ("eBPF ring", &["--source", "ebpf", "--ebpf-buffer", "ring"]),
    ("eBPF perf", &["--source", "ebpf", "--ebpf-buffer", "perf"]),
];

/// One monitor in one phase.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub label: String,
    pub user_s: f64,
    pub system_s: f64,
    pub packets: f64,
    pub bytes: f64,
    pub dropped: f64,
    /// Handshakes counted, by outcome.
    pub outcomes: Vec<(String, f64)>,
    /// Kernel program: packets it ran on, mean run time per packet (ns).
    pub kernel_seen: f64,
    pub run_ns: Option<f64>,
    /// The monitor's own summary line.
    pub line: String,
}

impl Figures {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.system_s
    }
    pub fn outcome(&self, name: &str) -> f64 {
        self.outcomes
            .iter()
            .filter(|(o, _)| o == name)
            .map(|(_, v)| v)
            .sum()
    }
    pub fn handshakes(&self) -> f64 {
        self.outcomes.iter().map(|(_, v)| v).sum()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub secs: f64,
    /// Mean run time per packet of a two-instruction TC program on the same hook, same time.
    pub floor_ns: Option<f64>,
    /// Client side: connections that completed (ping/pong or the whole transfer), failed.
    pub ok: u64,
    pub failed: u64,
    pub monitors: Vec<Figures>,
}

#[derive(Clone, Debug, Default)]
pub struct SourcesReport {
    pub bulk: Phase,
    pub storm: Phase,
    /// The same storm with no monitor and no TC program: what the load generator and the Go
    /// server reach on this machine by themselves.
    pub storm_alone: Phase,
}

/// `BPF_ENABLE_STATS` (run time): statistics stay on while the descriptor is open.
fn enable_bpf_stats() -> Result<OwnedFd> {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // union bpf_attr { struct { __u32 type; } enable_stats; }, zero-padded.
    let mut attr = [0u8; 128];
    // SAFETY: the bpf(2) syscall reads `size` bytes of `attr`; type 0 = BPF_STATS_RUN_TIME.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: a new descriptor the kernel just returned, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The number just before `label` in `line` ("12 packets (" → 12).
fn number_before(line: &str, label: &str) -> Option<f64> {
    let at = line.find(label)?;
    line[..at]
        .split(|c: char| c.is_whitespace() || c == '(')
        .rev()
        .find(|t| !t.is_empty())?
        .parse()
        .ok()
}

/// Three monitors on `lo` watching `port`.
struct Monitors {
    procs: Vec<(String, Proc, SocketAddr)>,
    lines: mpsc::Receiver<Line>,
    start: Vec<(f64, f64)>,
}

impl Monitors {
    fn start(o: &SourcesOptions) -> Result<Monitors> {
        let (tx, lines) = mpsc::channel();
        let mut procs = Vec::new();
        for (label, flags) in MONITORS {
            let http = SocketAddr::from(([127, 0, 0, 1], crate::free_port()?));
            let p = Proc::spawn(
                label,
                Command::new(&o.trustwatch)
                    .args(["live", "--iface", "lo", "--ports"])
                    .arg(format!("{}=cloudhub", o.port))
                    .arg("--listen")
                    .arg(http.to_string())
                    .args(flags),
                None,
                Some(Source::Stderr(label)),
                &tx,
            )?;
            procs.push((label.to_string(), p, http));
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (label, p, http) in &mut procs {
            while !matches!(http::get(*http, "/healthz"), Ok((200, _))) {
                if let Some(s) = p.exited() {
                    let log: Vec<String> = lines.try_iter().map(|l| l.text).collect();
                    return Err(format!("{label} exited ({s}): {}", log.join(" | ")).into());
                }
                if Instant::now() > deadline {
                    return Err(format!("{label} did not answer /healthz").into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut start = Vec::new();
        for (_, p, _) in &procs {
            start.push(cpu_times(p.pid().ok_or("no pid")?)?);
        }
        Ok(Monitors {
            procs,
            lines,
            start,
        })
    }

    /// CPU since the start, outcomes, then SIGTERM and the summary lines.
    fn finish(mut self) -> Result<Vec<Figures>> {
        // The eBPF sources read their kernel counters once a second.
        std::thread::sleep(Duration::from_millis(1500));
        let mut figures = Vec::new();
        for ((label, p, http), (u0, s0)) in self.procs.iter().zip(&self.start) {
            let (u1, s1) = cpu_times(p.pid().ok_or("no pid")?)?;
            let body = http::get(*http, "/metrics")
                .map(|r| r.1)
                .unwrap_or_default();
            figures.push(Figures {
                label: label.clone(),
                user_s: u1 - u0,
                system_s: s1 - s0,
                outcomes: http::by_label(&body, "trustwatch_handshakes_total", "outcome", &[]),
                ..Figures::default()
            });
        }
        for (_, p, _) in &mut self.procs {
            p.stop(libc::SIGTERM, Duration::from_secs(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        for l in self.lines.try_iter() {
            let Source::Stderr(label) = l.from else {
                continue;
            };
            let Some(f) = figures.iter_mut().find(|f| f.label == label) else {
                continue;
            };
            if !l.text.contains("trustwatch live: capture ") {
                continue;
            }
            f.packets = number_before(&l.text, " packets (").unwrap_or(0.0);
            f.bytes = number_before(&l.text, " bytes) handed on").unwrap_or(0.0);
            f.dropped = ["queue_full", "kernel,", "interface,", "ring_full"]
                .iter()
                .filter_map(|r| number_before(&l.text, &format!(" {r}")))
                .sum();
            f.kernel_seen = number_before(&l.text, " packets seen").unwrap_or(0.0);
            f.run_ns = number_before(&l.text, " ns per packet");
            f.line = l.text;
        }
        if let Some(f) = figures.iter().find(|f| f.line.is_empty()) {
            return Err(format!("{} printed no capture summary", f.label).into());
        }
        Ok(figures)
    }
}

/// Runs both phases. Every child is stopped when this returns.
pub fn run(o: &SourcesOptions) -> Result<SourcesReport> {
    let _stats = enable_bpf_stats()?;
    let pki = Pki::new()?;
    let ca = pki.kubeedge_ca()?;
    let leaf = pki.server_leaf(&ca)?;
    let edge = pki.client_leaf(&ca, "edge-bench")?;
    let server_addr = SocketAddr::from(([127, 0, 0, 1], o.port));

    // (a) bulk
    let monitors = Monitors::start(o)?;
    let floor = Floor::attach("lo")?;
    let server = bulk::server(server_addr, &leaf, &ca, TlsVersion::V13)?;
    let t0 = Instant::now();
    let client = bulk::client(
        server_addr,
        None,
        &ca,
        &edge,
        TlsVersion::V13,
        (o.bulk_bytes / 16, o.bulk_bytes),
    );
    let served = server.join();
    let secs = t0.elapsed().as_secs_f64();
    let ok = matches!((&client, &served), (Ok(c), Ok(s)) if c.received == o.bulk_bytes
        && s.received == o.bulk_bytes / 16 && c.received_sha256 == s.sent_sha256);
    let bulk = Phase {
        secs,
        floor_ns: floor.mean_ns(),
        ok: u64::from(ok),
        failed: u64::from(!ok),
        monitors: monitors.finish()?,
    };

    // (b) storm: first with nothing attached (what the load generator reaches on this machine),
    // then with the three monitors and the floor program.
    let _server = super::proc::go_cloudhub(server_addr, &leaf, &ca, &["-min", "1.3"])?;
    let cfg = client_config(&ca.cert.der, &edge)?;
    let storm_alone = storm(&cfg, server_addr, o.storm_edges, o.storm_workers);
    let monitors = Monitors::start(o)?;
    let floor = Floor::attach("lo")?;
    let watched = storm(&cfg, server_addr, o.storm_edges, o.storm_workers);
    let storm = Phase {
        floor_ns: floor.mean_ns(),
        monitors: monitors.finish()?,
        ..watched
    };
    Ok(SourcesReport {
        bulk,
        storm,
        storm_alone,
    })
}

/// `edges` edges, each from its own address 127.1.x.y, handshake with the cloudhub at `server`
/// as fast as `workers` threads can: the phase, without monitors.
fn storm(cfg: &Arc<ClientConfig>, server: SocketAddr, edges: u32, workers: usize) -> Phase {
    let next = Arc::new(AtomicU64::new(0));
    let (okc, failc) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let n = u64::from(edges);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let (cfg, next, okc, failc) = (cfg.clone(), next.clone(), okc.clone(), failc.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    // 127.1.0.1 … : one address per edge.
                    let local = IpAddr::from([127, 1, (i / 250) as u8, 1 + (i % 250) as u8]);
                    if one(&cfg, server, local) {
                        okc.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failc.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Phase {
        secs: t0.elapsed().as_secs_f64(),
        floor_ns: None,
        ok: okc.load(Ordering::Relaxed),
        failed: failc.load(Ordering::Relaxed),
        monitors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::number_before;

    #[test]
    fn reads_the_summary_line() {
        let l = "trustwatch live: capture ebpf:lo: 11 packets (2370 bytes) handed on; dropped: \
                 0 queue_full, 3 kernel, 0 interface, 2 ring_full; kernel program: 11215 packets \
                 seen, 17 matched; run time 40.4 ns per packet over 2546 runs";
        assert_eq!(number_before(l, " packets ("), Some(11.0));
        assert_eq!(number_before(l, " bytes) handed on"), Some(2370.0));
        assert_eq!(number_before(l, " kernel,"), Some(3.0));
        assert_eq!(number_before(l, " ring_full"), Some(2.0));
        assert_eq!(number_before(l, " packets seen"), Some(11215.0));
        assert_eq!(number_before(l, " ns per packet"), Some(40.4));
        assert_eq!(number_before(l, " nothing"), None);
    }
}
