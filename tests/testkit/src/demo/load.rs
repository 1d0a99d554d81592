//! The monitor's CPU at a steady handshake rate: a Go cloudhub-like mutual-TLS server, `trustwatch
//! live --iface lo` watching it, and a paced rustls client (TLS 1.3, client certificate, ping/pong,
//! close — an edge's connection) from many loopback addresses. The monitor's CPU is the delta of
//! utime + stime in `/proc/<pid>/stat` over the measured window, after a warm-up.
//!
//! Consumes [`LoadOptions`]; produces a [`LoadReport`].

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::Ports;
use super::http;
use super::proc::Proc;
use crate::Result;
use crate::peers::{ClientOpts, rustls_peer};
use crate::pki::{Leaf, Pki};

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub trustwatch: PathBuf,
    pub ports: Ports,
    /// Handshakes per second.
    pub rate: u32,
    pub warmup: Duration,
    pub measure: Duration,
    /// Client threads (each handshake takes a few ms; they share the schedule).
    pub workers: usize,
    /// Distinct client addresses, 127.0.1.1 on.
    pub clients: u16,
}

impl LoadOptions {
    pub fn new(trustwatch: PathBuf) -> LoadOptions {
        LoadOptions {
            trustwatch,
            ports: Ports::default(),
            rate: 1000,
            warmup: Duration::from_secs(3),
            measure: Duration::from_secs(20),
            workers: 16,
            clients: 200,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub window: Duration,
    /// Client handshakes completed (ping/pong) and failed in the window.
    pub ok: u64,
    pub failed: u64,
    /// Handshakes the monitor counted in the window (`trustwatch_handshakes_total` delta).
    pub monitor_handshakes: f64,
    pub monitor_user_s: f64,
    pub monitor_system_s: f64,
    /// Packets the monitor dropped, by reason (queue_full, kernel, interface), whole run.
    pub dropped: Vec<(String, f64)>,
    /// Packets the monitor received, whole run.
    pub packets: f64,
    /// Peak RSS of the monitor (VmHWM), KiB.
    pub max_rss_kib: u64,
    /// Machine-wide CPU busy share over the window (all cores), for context.
    pub machine_busy: f64,
}

impl LoadReport {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }
    /// The monitor's utime + stime as a share of one core.
    pub fn cpu_share(&self) -> f64 {
        (self.monitor_user_s + self.monitor_system_s) / self.window.as_secs_f64()
    }
}

/// (utime, stime) in seconds from `/proc/<pid>/stat`.
pub(crate) fn cpu_times(pid: u32) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = text.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15 → indices 11, 12.
    let tick = clock_ticks();
    let utime: f64 = f.get(11).ok_or("no utime")?.parse()?;
    let stime: f64 = f.get(12).ok_or("no stime")?.parse()?;
    Ok((utime / tick, stime / tick))
}

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// (busy, total) jiffies of the whole machine.
pub(crate) fn machine_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

pub(crate) fn client_config(ca_der: &[u8], identity: &Leaf) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let chain = identity
        .chain_der()
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone()));
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// One edge connection: handshake, ping, pong, close_notify.
pub(crate) fn one(cfg: &Arc<ClientConfig>, server: SocketAddr, local: IpAddr) -> bool {
    let Ok(mut tcp) = rustls_peer::connect_tcp(&ClientOpts::new(server).local_ip(local)) else {
        return false;
    };
    let Ok(name) = ServerName::try_from("127.0.0.1") else {
        return false;
    };
    let Ok(mut conn) = rustls::ClientConnection::new(cfg.clone(), name) else {
        return false;
    };
    let mut s = rustls::Stream::new(&mut conn, &mut tcp);
    let mut buf = [0u8; 64];
    let ok = s
        .write_all(b"ping\n")
        .and_then(|_| s.flush())
        .and_then(|_| s.read(&mut buf))
        .is_ok_and(|n| n > 0);
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    ok
}

/// Counters shared by the workers.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Runs the load and measures. Every child is stopped when this returns.
pub fn run(o: &LoadOptions) -> Result<LoadReport> {
    o.ports.check()?;
    let pki = Pki::new()?;
    let ca = pki.kubeedge_ca()?;
    let leaf = pki.server_leaf(&ca)?;
    let edge = pki.client_leaf(&ca, "edge-load")?;
    let _server = super::proc::go_cloudhub(Ports::addr(o.ports.cloudhub), &leaf, &ca, &[])?;
    // The monitor's output is not read (no sources): nothing is sent on this channel.
    let (tx, _rx) = mpsc::channel();
    let mut monitor = Proc::spawn(
        "trustwatch",
        Command::new(&o.trustwatch)
            .args(["live", "--iface", "lo", "--quiet", "--ports"])
            .arg(format!("{}=cloudhub", o.ports.cloudhub))
            .arg("--listen")
            .arg(Ports::addr(o.ports.http).to_string()),
        None,
        None,
        &tx,
    )?;
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

    let cfg = client_config(&ca.cert.der, &edge)?;
    let server = Ports::addr(o.ports.cloudhub);
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ticket = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs(1) / o.rate.max(1);
    let start = Instant::now();
    let clients = u64::from(o.clients.max(1));
    let workers: Vec<_> = (0..o.workers.max(1))
        .map(|_| {
            let (cfg, counts, stop, ticket) =
                (cfg.clone(), counts.clone(), stop.clone(), ticket.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let k = ticket.fetch_add(1, Ordering::Relaxed);
                    let due = start + period * u32::try_from(k).unwrap_or(u32::MAX);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let c = k % clients;
                    let local = IpAddr::from([127, 0, 1 + (c / 250) as u8, 1 + (c % 250) as u8]);
                    if one(&cfg, server, local) {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let handshakes = || -> f64 {
        http::get(http_addr, "/metrics")
            .map(|(_, b)| http::metric(&b, "trustwatch_handshakes_total", &[]))
            .unwrap_or(0.0)
    };
    std::thread::sleep(o.warmup);
    let (ok0, failed0) = (
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    let hs0 = handshakes();
    let (u0, s0) = cpu_times(pid)?;
    let m0 = machine_jiffies();
    let t0 = Instant::now();
    std::thread::sleep(o.measure);
    let (u1, s1) = cpu_times(pid)?;
    let m1 = machine_jiffies();
    let window = t0.elapsed();
    let (ok1, failed1) = (
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    let hs1 = handshakes();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    let body = http::get(http_addr, "/metrics")
        .map(|r| r.1)
        .unwrap_or_default();
    let dropped = http::by_label(
        &body,
        "trustwatch_capture_dropped_packets_total",
        "reason",
        &[],
    );
    let packets = http::metric(&body, "trustwatch_packets_total", &[]);
    let max_rss_kib = vm_hwm_kib(pid);
    monitor.stop(libc::SIGINT, Duration::from_secs(3));
    let busy = (m1.0.saturating_sub(m0.0)) as f64;
    let total = (m1.1.saturating_sub(m0.1)).max(1) as f64;
    Ok(LoadReport {
        window,
        ok: ok1 - ok0,
        failed: failed1 - failed0,
        monitor_handshakes: hs1 - hs0,
        monitor_user_s: u1 - u0,
        monitor_system_s: s1 - s0,
        dropped,
        packets,
        max_rss_kib,
        machine_busy: busy / total,
    })
}
