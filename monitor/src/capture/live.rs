//! Live capture: libpcap on network interfaces, one thread per interface.
//!
//! Consumes interfaces (`lo`, `eth0`, `any`) and a kernel BPF filter built from the watched ports;
//! produces [`Packet`]s into a bounded channel that the single pipeline thread drains. A full
//! channel drops the packet and counts it (`queue_full`); kernel and interface drops come from
//! `pcap_stats`, polled periodically. Each thread reads with a short timeout so it notices
//! [`LiveCapture::stop`] promptly.

use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{LinkType, Packet, Timestamp};
use crate::config::Services;
use crate::error::Error;

/// Capabilities a raw-socket capture needs (named in the permission error).
pub const PCAP_CAPABILITIES: &str = "CAP_NET_RAW";
/// Capabilities the eBPF source will need.
pub const EBPF_CAPABILITIES: &str = "CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON";

/// How often `pcap_stats` is read.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Options of every live source.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Bytes captured per packet.
    pub snaplen: i32,
    /// Kernel capture buffer, bytes.
    pub buffer_size: i32,
    /// Read timeout: the longest a thread waits before it checks for shutdown.
    pub read_timeout: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            snaplen: 262_144,
            buffer_size: 8 << 20,
            read_timeout: Duration::from_millis(100),
        }
    }
}

/// The kernel filter for the watched ports: `tcp port 10000 or tcp port 10002 ...`, or `tcp` when
/// TLS is looked for on any port.
pub fn bpf_filter(services: &Services) -> String {
    if services.any_port {
        return "tcp".into();
    }
    let ports: Vec<String> = services
        .ports()
        .map(|(p, _)| format!("tcp port {p}"))
        .collect();
    if ports.is_empty() {
        "tcp".into()
    } else {
        ports.join(" or ")
    }
}

/// Counters of one source, shared with the exporter (updated by the capture thread only).
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Packets handed to the pipeline.
    pub packets: AtomicU64,
    /// Packets dropped because the pipeline queue was full.
    pub queue_full: AtomicU64,
    /// Packets the kernel dropped (buffer full), from `pcap_stats`.
    pub kernel: AtomicU64,
    /// Packets the interface or driver dropped, from `pcap_stats`.
    pub interface: AtomicU64,
    /// Capture errors other than timeouts (the thread ends after one).
    pub errors: AtomicU64,
    /// The thread is reading packets.
    pub running: AtomicBool,
}

/// One interface being captured.
pub struct Source {
    pub name: String,
    pub linktype: LinkType,
    pub counters: Arc<SourceCounters>,
    thread: Option<JoinHandle<Option<String>>>,
}

/// Every capture thread of a live session.
pub struct LiveCapture {
    sources: Vec<Source>,
    stop: Arc<AtomicBool>,
}

/// Names of the interfaces libpcap can open (for the "not found" error).
pub fn interface_names() -> Vec<String> {
    pcap::Device::list()
        .map(|l| l.into_iter().map(|d| d.name).collect())
        .unwrap_or_default()
}

/// Maps a libpcap open/activate failure to a one-line error naming the cause.
fn open_error(iface: &str, e: &pcap::Error) -> Error {
    let msg = e.to_string();
    let lower = msg.to_ascii_lowercase();
    if lower.contains("permission") || lower.contains("not permitted") {
        return Error::Capture(format!(
            "no permission to capture on {iface}: needs {PCAP_CAPABILITIES} (run as root or grant it, \
             e.g. setcap cap_net_raw+eip trustwatch)"
        ));
    }
    if lower.contains("no such device") || lower.contains("doesn't exist") {
        return not_found(iface);
    }
    Error::Capture(format!("cannot capture on {iface}: {msg}"))
}

fn not_found(iface: &str) -> Error {
    let names = interface_names();
    Error::Capture(format!(
        "interface {iface} not found; available: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}

impl LiveCapture {
    /// Opens every interface (all or nothing: the first failure is returned and nothing runs),
    /// then starts one thread per interface sending into `tx`.
    pub fn start(
        ifaces: &[String],
        filter: &str,
        opts: &LiveOptions,
        tx: &SyncSender<Packet>,
    ) -> Result<LiveCapture, Error> {
        let known = interface_names();
        let mut opened = Vec::with_capacity(ifaces.len());
        for iface in ifaces {
            if iface != "any" && !known.is_empty() && !known.iter().any(|k| k == iface) {
                return Err(not_found(iface));
            }
            opened.push(open(iface, filter, opts)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut sources = Vec::with_capacity(opened.len());
        for (name, cap, linktype) in opened {
            let counters = Arc::new(SourceCounters::default());
            counters.running.store(true, Ordering::SeqCst);
            let worker = Worker {
                poll_ms: i32::try_from(opts.read_timeout.as_millis())
                    .unwrap_or(i32::MAX)
                    .max(1),
                cap,
                linktype,
                tx: tx.clone(),
                stop: stop.clone(),
                counters: counters.clone(),
                last_stats: (0, 0),
            };
            let thread = std::thread::Builder::new()
                .name(format!("capture-{name}"))
                .spawn(move || worker.run())
                .map_err(|e| {
                    Error::Capture(format!("cannot start the capture thread for {name}: {e}"))
                })?;
            sources.push(Source {
                name,
                linktype,
                counters,
                thread: Some(thread),
            });
        }
        Ok(LiveCapture { sources, stop })
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Whether every capture thread is still reading.
    pub fn all_running(&self) -> bool {
        !self.sources.is_empty()
            && self
                .sources
                .iter()
                .all(|s| s.counters.running.load(Ordering::SeqCst))
    }

    /// Asks every thread to stop (they notice within the read timeout).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops and joins every thread; returns the errors that ended threads early.
    pub fn stop(mut self) -> Vec<String> {
        self.request_stop();
        let mut errors = Vec::new();
        for s in &mut self.sources {
            if let Some(t) = s.thread.take() {
                match t.join() {
                    Ok(Some(e)) => errors.push(format!("{}: {e}", s.name)),
                    Ok(None) => {}
                    Err(_) => errors.push(format!("{}: capture thread panicked", s.name)),
                }
            }
        }
        errors
    }
}

impl Drop for LiveCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn open(
    iface: &str,
    filter: &str,
    opts: &LiveOptions,
) -> Result<(String, pcap::Capture<pcap::Active>, LinkType), Error> {
    let mut cap = pcap::Capture::from_device(iface)
        .map_err(|e| open_error(iface, &e))?
        .promisc(false)
        .immediate_mode(true)
        .snaplen(opts.snaplen)
        .buffer_size(opts.buffer_size)
        .open()
        .map_err(|e| open_error(iface, &e))?
        // Non-blocking reads plus our own poll(2) with a timeout: libpcap's read timeout does not
        // fire in immediate mode, and the thread must notice shutdown.
        .setnonblock()
        .map_err(|e| open_error(iface, &e))?;
    let dlt = cap.get_datalink();
    let linktype = LinkType::from_linktype(dlt.0).ok_or_else(|| {
        Error::Capture(format!(
            "{iface}: unsupported link type {} ({})",
            dlt.0,
            dlt.get_name().unwrap_or_else(|_| "unknown".into())
        ))
    })?;
    // VLAN-tagged frames need the filter repeated after `vlan` (it shifts the offsets).
    let with_vlan = format!("({filter}) or (vlan and ({filter}))");
    let applied = linktype == LinkType::Ethernet && cap.filter(&with_vlan, true).is_ok();
    if !applied {
        cap.filter(filter, true)
            .map_err(|e| Error::Capture(format!("{iface}: BPF filter '{filter}': {e}")))?;
    }
    Ok((iface.to_string(), cap, linktype))
}

/// The state of one capture thread.
struct Worker {
    cap: pcap::Capture<pcap::Active>,
    linktype: LinkType,
    tx: SyncSender<Packet>,
    stop: Arc<AtomicBool>,
    counters: Arc<SourceCounters>,
    /// Longest wait in poll(2) before the stop flag is checked again.
    poll_ms: i32,
    /// Last `pcap_stats` values (32-bit, they wrap): (dropped, if_dropped).
    last_stats: (u32, u32),
}

impl Worker {
    /// Reads until stopped or the pipeline is gone; returns the error that ended it early.
    // `time_t`/`suseconds_t` are i64 here but not on every target.
    #[allow(clippy::useless_conversion)]
    fn run(mut self) -> Option<String> {
        let mut next_stats = Instant::now() + STATS_EVERY;
        let mut result = None;
        while !self.stop.load(Ordering::Relaxed) {
            match self.cap.next_packet() {
                Ok(p) => {
                    let ts = Timestamp::from_micros(
                        i64::from(p.header.ts.tv_sec)
                            .saturating_mul(1_000_000)
                            .saturating_add(i64::from(p.header.ts.tv_usec)),
                    );
                    let pkt = Packet {
                        ts,
                        linktype: self.linktype,
                        data: Bytes::copy_from_slice(p.data),
                    };
                    match self.tx.try_send(pkt) {
                        Ok(()) => {
                            self.counters.packets.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Full(_)) => {
                            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                }
                // Non-blocking: nothing buffered; wait for the descriptor (or the timeout).
                Err(pcap::Error::TimeoutExpired) => self.wait_readable(),
                Err(e) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    result = Some(e.to_string());
                    break;
                }
            }
            if Instant::now() >= next_stats {
                self.poll_stats();
                next_stats = Instant::now() + STATS_EVERY;
            }
        }
        self.poll_stats();
        self.counters.running.store(false, Ordering::SeqCst);
        result
    }

    fn wait_readable(&self) {
        let mut pfd = libc::pollfd {
            fd: self.cap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, owned by this frame, for the duration of the call.
        let _ = unsafe { libc::poll(&mut pfd, 1, self.poll_ms) };
    }

    /// Adds the growth of the kernel's cumulative 32-bit drop counters since the last poll.
    fn poll_stats(&mut self) {
        if let Ok(s) = self.cap.stats() {
            let (dropped, if_dropped) = self.last_stats;
            self.counters.kernel.fetch_add(
                u64::from(s.dropped.wrapping_sub(dropped)),
                Ordering::Relaxed,
            );
            self.counters.interface.fetch_add(
                u64::from(s.if_dropped.wrapping_sub(if_dropped)),
                Ordering::Relaxed,
            );
            self.last_stats = (s.dropped, s.if_dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_from_ports() {
        let s: Services = "10000,10002".parse().unwrap();
        assert_eq!(bpf_filter(&s), "tcp port 10000 or tcp port 10002");
        let mut any = s.clone();
        any.any_port = true;
        assert_eq!(bpf_filter(&any), "tcp");
    }

    #[test]
    fn missing_interface_lists_the_existing_ones() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        let err = LiveCapture::start(&["nosuchif0".into()], "tcp", &LiveOptions::default(), &tx)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("interface nosuchif0 not found"), "{err}");
        assert!(err.contains("lo"), "{err}");
    }
}
