//! The soak benchmark (`cargo xtask soak --minutes N`, not a CI test): `trustwatch live --iface lo`
//! under a steady mix for N minutes, sampled every few seconds.
//!
//! The mix, all on loopback:
//! - edge handshakes at `rate` per second against a Go cloudhub (mutual TLS 1.3, ping/pong, close)
//!   from `clients` addresses, one in twenty with a certificate from a CA cloudhub does not trust
//!   (the server rejects it: 5% failing);
//! - bulk: a rustls server on the certsvc port streaming `bulk_mib` MiB per connection to a client
//!   that reads it all, one connection after another;
//! - a scanner on the monitor's HTTP port: junk requests, unknown paths, oversized headers,
//!   a slowloris client, and up to 64 idle connections it keeps opening and dropping.
//!
//! Each sample: the monitor's RSS (VmRSS), CPU share since the previous sample (utime + stime),
//! open descriptors (`/proc/<pid>/fd`), the number of series on `/metrics` and the handshakes it
//! counted, plus RSS split into anonymous and file-backed pages and the memory the packet path
//! charges against `--memory-limit`. The report compares the mean RSS of the first and the last
//! five minutes after the warm-up (ten minutes by default), and fits a least-squares trend.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};

use super::Ports;
use super::http;
use super::load::{client_config, clock_ticks, one};
use super::proc::{Proc, stop_requested};
use crate::Result;
use crate::pki::{Leaf, Pki};

/// Default warm-up: the allocator's caches and the monitor's bounded state (500 clients' window
/// entries, flows, certificates) take minutes to reach their steady size.
pub const WARMUP_SECS: u64 = 600;
/// RSS growth compares the mean of this much time at the start (after the warm-up) and at the
/// end: one sample is noisier (the allocator returns memory in steps of megabytes) than the
/// growth the target bounds.
pub const GROWTH_WINDOW: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub trustwatch: std::path::PathBuf,
    pub ports: Ports,
    pub duration: Duration,
    pub warmup: Duration,
    pub every: Duration,
    /// Edge handshakes per second (one in twenty failing).
    pub rate: u32,
    pub clients: u16,
    /// MiB per bulk connection.
    pub bulk_mib: usize,
}

impl SoakOptions {
    pub fn new(trustwatch: std::path::PathBuf, minutes: u64) -> SoakOptions {
        SoakOptions {
            trustwatch,
            ports: Ports::default(),
            duration: Duration::from_secs(minutes * 60),
            warmup: Duration::from_secs(WARMUP_SECS),
            every: Duration::from_secs(5),
            rate: 200,
            clients: 500,
            bulk_mib: 8,
        }
    }
}

/// One sample of the monitor.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub at: Duration,
    pub rss_kib: u64,
    /// VmRSS split: anonymous memory (the heap, stacks) and file-backed pages (the binary's code
    /// and data as it touches them; not a leak).
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    /// What the packet path charges against `--memory-limit` (both pools), from `/metrics`.
    pub charged_kib: u64,
    /// CPU share of one core since the previous sample.
    pub cpu: f64,
    pub fds: usize,
    pub series: usize,
    pub handshakes: f64,
}

#[derive(Clone, Debug, Default)]
pub struct SoakReport {
    pub samples: Vec<Sample>,
    /// Index of the first sample after the warm-up.
    pub warm: usize,
    pub ok: u64,
    pub failed: u64,
    pub bulk_bytes: u64,
    pub scans: u64,
    pub peak_rss_kib: u64,
}

impl SoakReport {
    /// (first after warm-up, last).
    pub fn ends(&self) -> Option<(&Sample, &Sample)> {
        Some((self.samples.get(self.warm)?, self.samples.last()?))
    }

    /// RSS growth after the warm-up: the mean of the last [`GROWTH_WINDOW`] against the mean of
    /// the first (each at most a third of the samples after the warm-up).
    pub fn rss_growth(&self) -> f64 {
        let (first, last) = self.growth_windows();
        if first == 0.0 {
            0.0
        } else {
            (last - first) / first
        }
    }

    /// Mean RSS (KiB) of the first and the last [`GROWTH_WINDOW`] after the warm-up.
    pub fn growth_windows(&self) -> (f64, f64) {
        let after = &self.samples[self.warm.min(self.samples.len())..];
        let (Some(a), Some(b)) = (after.first(), after.last()) else {
            return (0.0, 0.0);
        };
        let span = (b.at.saturating_sub(a.at) / 3).min(GROWTH_WINDOW);
        let mean = |s: Vec<&Sample>| {
            s.iter().map(|s| s.rss_kib as f64).sum::<f64>() / s.len().max(1) as f64
        };
        (
            mean(after.iter().filter(|s| s.at <= a.at + span).collect()),
            mean(after.iter().filter(|s| s.at + span >= b.at).collect()),
        )
    }

    /// Least-squares slope of `field` after the warm-up, in KiB per minute: the trend, less
    /// sensitive to one noisy end sample than [`SoakReport::rss_growth`].
    pub fn trend_kib_per_min(&self, field: fn(&Sample) -> u64) -> f64 {
        let after = &self.samples[self.warm.min(self.samples.len())..];
        let n = after.len() as f64;
        if after.len() < 2 {
            return 0.0;
        }
        let xs = || after.iter().map(|s| s.at.as_secs_f64() / 60.0);
        let ys = || after.iter().map(|s| field(s) as f64);
        let (mx, my) = (xs().sum::<f64>() / n, ys().sum::<f64>() / n);
        let sxy: f64 = xs().zip(ys()).map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = xs().map(|x| (x - mx) * (x - mx)).sum();
        if sxx == 0.0 { 0.0 } else { sxy / sxx }
    }

    /// Mean CPU share after the warm-up.
    pub fn mean_cpu(&self) -> f64 {
        let after = &self.samples[self.warm.min(self.samples.len())..];
        after.iter().map(|s| s.cpu).sum::<f64>() / after.len().max(1) as f64
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            let rest = t.rsplit_once(')')?.1.to_string();
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(f.iter().sum())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A rustls server config for the bulk server (no client authentication).
fn bulk_server_config(leaf: &Leaf) -> Result<Arc<ServerConfig>> {
    let chain = leaf
        .chain_der()
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

/// Streams `mib` MiB to every connection on `listener` until `stop`.
fn bulk_server(listener: TcpListener, cfg: Arc<ServerConfig>, mib: usize, stop: Arc<AtomicBool>) {
    let _ = listener.set_nonblocking(true);
    let chunk = vec![0x5au8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut tcp, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = tcp.set_nonblocking(false);
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let Ok(mut conn) = ServerConnection::new(cfg.clone()) else {
            continue;
        };
        let mut s = rustls::Stream::new(&mut conn, &mut tcp);
        for _ in 0..mib * 16 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = s.flush();
        conn.send_close_notify();
        let _ = conn.complete_io(&mut tcp);
    }
}

/// Reads whole bulk connections one after another; counts the bytes.
fn bulk_client(
    server: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = TcpStream::connect(server) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let Ok(name) = rustls::pki_types::ServerName::try_from("127.0.0.1") else {
            return;
        };
        let Ok(mut conn) = rustls::ClientConnection::new(cfg.clone(), name) else {
            return;
        };
        let mut s = rustls::Stream::new(&mut conn, &mut tcp);
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a scanner sends to an HTTP port, in turn.
const PROBES: [&[u8]; 7] = [
    b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage",
    b"POST /api/state HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nxxxx",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n",
];

/// Probes the HTTP port every 100 ms, keeps up to 64 idle connections (dropping the oldest), and
/// sends one slowloris byte per second on another.
fn scanner(http: SocketAddr, scans: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut idle: std::collections::VecDeque<TcpStream> = Default::default();
    let mut slow: Option<TcpStream> = None;
    let mut big_header = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
    big_header.resize(64 * 1024, b'a');
    let mut n = 0usize;
    let mut last_slow = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if let Ok(mut s) = TcpStream::connect(http) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let probe: &[u8] = if n % 8 == 7 {
                &big_header
            } else {
                PROBES[n % PROBES.len()]
            };
            let _ = s.write_all(probe);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            scans.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(s) = TcpStream::connect(http) {
            idle.push_back(s);
            if idle.len() > 64 {
                idle.pop_front();
            }
        }
        if last_slow.elapsed() >= Duration::from_secs(1) {
            last_slow = Instant::now();
            let alive = slow.as_mut().is_some_and(|s| s.write_all(b"G").is_ok());
            if !alive {
                slow = TcpStream::connect(http).ok();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the soak; `on_sample` sees each sample as it is taken. Every child stops when this
/// returns.
pub fn run(o: &SoakOptions, on_sample: &mut dyn FnMut(&Sample)) -> Result<SoakReport> {
    o.ports.check()?;
    let pki = Pki::new()?;
    let ca = pki.kubeedge_ca()?;
    let rogue = pki.kubeedge_ca()?;
    let leaf = pki.server_leaf(&ca)?;
    let edge = pki.client_leaf(&ca, "edge-soak")?;
    let bad_edge = pki.client_leaf(&rogue, "edge-rogue")?;
    let _server = super::proc::go_cloudhub(Ports::addr(o.ports.cloudhub), &leaf, &ca, &[])?;
    let (tx, rx) = mpsc::channel();
    let mut monitor = Proc::spawn(
        "trustwatch",
        Command::new(&o.trustwatch)
            .args(["live", "--iface", "lo", "--quiet", "--ports"])
            .arg(format!(
                "{}=cloudhub,{}=certsvc",
                o.ports.cloudhub, o.ports.certsvc
            ))
            .arg("--listen")
            .arg(Ports::addr(o.ports.http).to_string()),
        None,
        None,
        &tx,
    )?;
    std::thread::spawn(move || for _ in rx {});
    let http_addr = Ports::addr(o.ports.http);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(http::get(http_addr, "/healthz"), Ok((200, _))) {
        if let Some(s) = monitor.exited() {
            return Err(format!("trustwatch live exited ({s})").into());
        }
        if Instant::now() > deadline {
            return Err("trustwatch live did not answer /healthz".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = monitor.pid().ok_or("no monitor pid")?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, bulk_bytes, scans) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut threads = Vec::new();
    // Edges: one in twenty presents a certificate of the rogue CA.
    let good = client_config(&ca.cert.der, &edge)?;
    let bad = client_config(&ca.cert.der, &bad_edge)?;
    let server = Ports::addr(o.ports.cloudhub);
    let ticket = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs(1) / o.rate.max(1);
    let start = Instant::now();
    let clients = u64::from(o.clients.max(1));
    for _ in 0..8 {
        let (good, bad, ok, failed, stop, ticket) = (
            good.clone(),
            bad.clone(),
            ok.clone(),
            failed.clone(),
            stop.clone(),
            ticket.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let k = ticket.fetch_add(1, Ordering::Relaxed);
                let due = start + period * u32::try_from(k).unwrap_or(u32::MAX);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let c = k % clients;
                let local = IpAddr::from([127, 0, 2 + (c / 250) as u8, 1 + (c % 250) as u8]);
                let cfg = if k % 20 == 19 { &bad } else { &good };
                if one(cfg, server, local) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Bulk on certsvc.
    let listener = TcpListener::bind(Ports::addr(o.ports.certsvc))?;
    let scfg = bulk_server_config(&leaf)?;
    let ccfg = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert.der.clone()))?;
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    };
    {
        let (s, mib) = (stop.clone(), o.bulk_mib);
        threads.push(std::thread::spawn(move || {
            bulk_server(listener, scfg, mib, s)
        }));
        let (s, bytes) = (stop.clone(), bulk_bytes.clone());
        let bulk_addr = Ports::addr(o.ports.certsvc);
        threads.push(std::thread::spawn(move || {
            bulk_client(bulk_addr, ccfg, bytes, s)
        }));
        let (s, scans) = (stop.clone(), scans.clone());
        threads.push(std::thread::spawn(move || scanner(http_addr, scans, s)));
    }

    let tick = clock_ticks();
    let mut report = SoakReport::default();
    let t0 = Instant::now();
    let mut prev = (t0, cpu_ticks(pid));
    let mut warm = None;
    while t0.elapsed() < o.duration && !stop_requested() {
        std::thread::sleep(o.every);
        if let Some(s) = monitor.exited() {
            stop.store(true, Ordering::SeqCst);
            return Err(format!("trustwatch live exited during the soak ({s})").into());
        }
        let now = Instant::now();
        let ticks = cpu_ticks(pid);
        let cpu = (ticks.saturating_sub(prev.1)) as f64 / tick / (now - prev.0).as_secs_f64();
        prev = (now, ticks);
        let body = http::get(http_addr, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        let series = body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        let s = Sample {
            at: t0.elapsed(),
            rss_kib: status_kib(pid, "VmRSS:"),
            rss_anon_kib: status_kib(pid, "RssAnon:"),
            rss_file_kib: status_kib(pid, "RssFile:"),
            charged_kib: (http::metric(&body, "trustwatch_memory_charged_bytes", &[]) / 1024.0)
                as u64,
            cpu,
            fds: fds(pid),
            series,
            handshakes: http::metric(&body, "trustwatch_handshakes_total", &[]),
        };
        on_sample(&s);
        if warm.is_none() && s.at >= o.warmup {
            warm = Some(report.samples.len());
        }
        report.samples.push(s);
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    report.warm = warm.unwrap_or(0);
    report.ok = ok.load(Ordering::Relaxed);
    report.failed = failed.load(Ordering::Relaxed);
    report.bulk_bytes = bulk_bytes.load(Ordering::Relaxed);
    report.scans = scans.load(Ordering::Relaxed);
    report.peak_rss_kib = status_kib(pid, "VmHWM:");
    monitor.stop(libc::SIGINT, Duration::from_secs(3));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rss: impl Fn(u64) -> u64) -> SoakReport {
        // 40 minutes sampled every 5 s, the first 10 minutes warm-up.
        let samples: Vec<Sample> = (1..=480u64)
            .map(|i| Sample {
                at: Duration::from_secs(i * 5),
                rss_kib: rss(i),
                ..Sample::default()
            })
            .collect();
        let warm = samples
            .iter()
            .position(|s| s.at >= Duration::from_secs(WARMUP_SECS))
            .unwrap();
        SoakReport {
            samples,
            warm,
            ..SoakReport::default()
        }
    }

    #[test]
    fn growth_compares_window_means_and_ignores_one_noisy_sample() {
        // Flat at 46 MiB with ±2 MiB steps, and the last sample 3 MiB up: no growth.
        let flat = report(|i| {
            let step = if (i / 7) % 2 == 0 { 2048 } else { 0 };
            let spike = if i == 480 { 3072 } else { 0 };
            46 * 1024 + step + spike
        });
        assert!(flat.rss_growth().abs() < 0.01, "{}", flat.rss_growth());
        assert!(flat.trend_kib_per_min(|s| s.rss_kib).abs() < 20.0);
        // 100 KiB a minute: the windows 25 minutes apart differ by about 2.5 MiB.
        let leak = report(|i| 46 * 1024 + i * 100 / 12);
        let (first, last) = leak.growth_windows();
        assert!((last - first - 2500.0).abs() < 100.0, "{first} {last}");
        assert!(leak.rss_growth() > 0.04);
        let trend = leak.trend_kib_per_min(|s| s.rss_kib);
        assert!((trend - 100.0).abs() < 1.0, "{trend}");
    }
}
