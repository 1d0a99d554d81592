//! The one interface every capture source implements: a capture file, libpcap on an interface,
//! the eBPF TC program.
//!
//! A [`Source`] is started with a [`PacketSink`] (bounded: a full sink makes the source drop the
//! packet and count it, never block a live capture) and a [`StopSignal`]; it reads until it is
//! exhausted (a file), stopped, or fails. Its [`SourceCounters`] are shared (atomics) so the
//! runtime can read them at any time from another thread: packets and bytes handed on, drops by
//! [`DropReason`], errors and restarts. Sources that can stop copying a connection early (eBPF)
//! take the pipeline's decisions through [`FlowFeedback`].
//!
//! Nothing downstream of `capture/` sees which source produced a [`Packet`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Packet;
use crate::error::Error;

/// The capture backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// A pcap or pcapng file (offline).
    File,
    /// libpcap on a live interface.
    Pcap,
    /// The eBPF TC program of `monitor-ebpf`.
    Ebpf,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Pcap => "pcap",
            Backend::Ebpf => "ebpf",
        }
    }

    /// Capabilities a live source of this backend needs (named in permission errors).
    pub fn capabilities(self) -> &'static str {
        match self {
            Backend::File => "none",
            Backend::Pcap => "CAP_NET_RAW",
            Backend::Ebpf => "CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON",
        }
    }
}

/// Which live backend `trustwatch live` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// eBPF when it can be loaded here, else libpcap (one log line says why).
    Auto,
    /// libpcap.
    Pcap,
    /// The eBPF TC program; fails with exit code 2 when it cannot be loaded.
    Ebpf,
}

/// Why a packet was lost before the pipeline saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The queue between the capture thread and the pipeline was full.
    QueueFull,
    /// The kernel capture buffer was full (libpcap `ps_drop`).
    Kernel,
    /// The interface or driver dropped it (libpcap `ps_ifdrop`).
    Interface,
    /// The eBPF ring/perf buffer was full: the kernel program skipped the record.
    RingFull,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::Kernel,
        DropReason::Interface,
        DropReason::RingFull,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Kernel => "kernel",
            DropReason::Interface => "interface",
            DropReason::RingFull => "ring_full",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one source, shared between its thread and the runtime (relaxed atomics: each is
/// written by one thread and read for reporting only).
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Packets handed to the pipeline.
    pub packets: AtomicU64,
    /// Bytes handed to the pipeline (captured bytes, not wire lengths).
    pub bytes: AtomicU64,
    /// The eBPF TC program's own counters (all zero for other backends).
    pub kernel: KernelCounters,
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Errors that ended a run of the source (it may be restarted).
    pub errors: AtomicU64,
    /// Times the source was restarted after an error.
    pub restarts: AtomicU64,
    running: AtomicBool,
    /// Milliseconds since the Unix epoch when the source went down; 0 while it runs.
    down_since_ms: AtomicU64,
}

impl SourceCounters {
    /// One packet handed on.
    pub fn handed(&self, bytes: usize) {
        self.handed_many(1, bytes as u64);
    }
    /// `packets` packets of `bytes` bytes in all handed on. Only the source's own thread writes
    /// these two, so a plain load-and-store suffices (no locked read-modify-write per packet).
    pub fn handed_many(&self, packets: u64, bytes: u64) {
        let p = self.packets.load(Ordering::Relaxed);
        self.packets.store(p + packets, Ordering::Relaxed);
        let b = self.bytes.load(Ordering::Relaxed);
        self.bytes.store(b + bytes, Ordering::Relaxed);
    }
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.drops[reason.index()].fetch_add(n, Ordering::Relaxed);
        }
    }
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }
    /// Every drop, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.dropped(*r)).sum()
    }
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// The source is reading (a source calls this once its handle is open).
    pub fn set_up(&self) {
        self.running.store(true, Ordering::SeqCst);
        self.down_since_ms.store(0, Ordering::SeqCst);
    }
    /// The source stopped reading (an error, or the end); keeps the first time it went down.
    pub fn set_down(&self) {
        self.running.store(false, Ordering::SeqCst);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
            });
        let _ = self
            .down_since_ms
            .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    }
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
    /// One line for the end of a run: what was handed on, dropped, and (eBPF) what the kernel
    /// program saw, copied and left behind, and its mean run time per packet.
    pub fn summary(&self) -> String {
        let r = Ordering::Relaxed;
        let drops: Vec<String> = DropReason::ALL
            .iter()
            .map(|d| format!("{} {}", self.dropped(*d), d.as_str()))
            .collect();
        let mut line = format!(
            "{} packets ({} bytes) handed on; dropped: {}",
            self.packets(),
            self.bytes(),
            drops.join(", ")
        );
        let k = &self.kernel;
        if k.seen.load(r) > 0 {
            line.push_str(&format!(
                "; kernel program: {} packets seen, {} matched, {} copied ({} bytes, {} of them \
                 payload), {} payload bytes left in the kernel, {} truncated, {} fragments \
                 skipped, {} headers copied out (not in the linear data), {} connections marked \
                 decided, {} reader wakeups",
                k.seen.load(r),
                k.matched.load(r),
                k.copied.load(r),
                k.copied_bytes.load(r),
                k.payload_bytes.load(r),
                k.skipped_bytes.load(r),
                k.truncated.load(r),
                k.fragments.load(r),
                k.header_copies.load(r),
                k.decided.load(r),
                k.wakeups.load(r),
            ));
            let (ns, runs) = (k.run_time_ns.load(r), k.run_count.load(r));
            if runs > 0 {
                line.push_str(&format!(
                    "; run time {:.1} ns per packet over {runs} runs (kernel.bpf_stats_enabled)",
                    ns as f64 / runs as f64
                ));
            }
        }
        line
    }
    /// How long the source has been down (None while it runs or before it first started).
    pub fn down_for(&self) -> Option<std::time::Duration> {
        let since = self.down_since_ms.load(Ordering::SeqCst);
        if since == 0 {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Some(std::time::Duration::from_millis(now.saturating_sub(since)))
    }
}

/// Counters kept by the eBPF TC program in the kernel (per CPU, summed here about once a
/// second), plus the feedback the source passed down. Records the program could not write
/// because its buffer was full are [`DropReason::RingFull`] drops, not counted here.
#[derive(Debug, Default)]
pub struct KernelCounters {
    /// Packets the program ran on: all traffic of the interface, both directions (`lo`: once).
    pub seen: AtomicU64,
    /// TCP packets to or from a watched port.
    pub matched: AtomicU64,
    /// Records written to the buffer (one per packet copied, headers included).
    pub copied: AtomicU64,
    /// Frame bytes written to the buffer (headers and payload, without the record header).
    pub copied_bytes: AtomicU64,
    /// Payload bytes written to the buffer.
    pub payload_bytes: AtomicU64,
    /// Payload bytes of watched connections left in the kernel: past the per-direction budget
    /// (`--handshake-window`) or after the pipeline marked the connection decided.
    pub skipped_bytes: AtomicU64,
    /// Records whose payload was cut short (budget, decided, or the 64 KiB record bound).
    pub truncated: AtomicU64,
    /// IP fragments other than the first, skipped (they carry no TCP header).
    pub fragments: AtomicU64,
    /// Headers the program copied out because they were not in the skb's linear data (the
    /// slow path; see `EbpfOptions::copy_headers`).
    pub header_copies: AtomicU64,
    /// Connections the pipeline reported decided ([`FlowFeedback::decided`]) and the source
    /// passed to the kernel.
    pub decided: AtomicU64,
    /// Times the program woke the ring buffer's reader (the rest it finds on its timer).
    pub wakeups: AtomicU64,
    /// Total run time of the program in nanoseconds and its number of runs, as the kernel
    /// counts them while `kernel.bpf_stats_enabled` is 1 (both stay 0 otherwise).
    pub run_time_ns: AtomicU64,
    pub run_count: AtomicU64,
}

/// The metric series a [`KernelCounters`] total goes to (`trustwatch_ebpf_*`), with its label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSeries {
    /// `trustwatch_ebpf_packets_total{stage}`.
    Packets(&'static str),
    /// `trustwatch_ebpf_bytes_total{kind}`.
    Bytes(&'static str),
    /// `trustwatch_ebpf_events_total{event}`.
    Events(&'static str),
    /// `trustwatch_ebpf_runs_total`.
    Runs,
    /// `trustwatch_ebpf_run_seconds_total`, from nanoseconds.
    RunNanoseconds,
}

impl KernelCounters {
    /// Every total, with the metric series it is exported as: the one place a new kernel
    /// counter is added to the metrics.
    pub fn series(&self) -> [(KernelSeries, u64); 13] {
        use KernelSeries::{Bytes, Events, Packets, RunNanoseconds, Runs};
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (Packets("seen"), r(&self.seen)),
            (Packets("matched"), r(&self.matched)),
            (Packets("copied"), r(&self.copied)),
            (Bytes("copied"), r(&self.copied_bytes)),
            (Bytes("payload_copied"), r(&self.payload_bytes)),
            (Bytes("payload_left_in_kernel"), r(&self.skipped_bytes)),
            (Events("truncated"), r(&self.truncated)),
            (Events("fragment_skipped"), r(&self.fragments)),
            (Events("header_copied_out"), r(&self.header_copies)),
            (Events("connection_decided"), r(&self.decided)),
            (Events("reader_wakeup"), r(&self.wakeups)),
            (Runs, r(&self.run_count)),
            (RunNanoseconds, r(&self.run_time_ns)),
        ]
    }
}

/// Why a sink refused a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkFull {
    /// Bounded and full: the source drops the packet and counts [`DropReason::QueueFull`].
    Full,
    /// The consumer is gone: the source stops.
    Closed,
}

/// Where a source delivers packets. Offline the pipeline itself is the sink (never full: a file
/// is read at the pipeline's pace); live it is a bounded queue to the pipeline thread.
pub trait PacketSink {
    fn push(&mut self, pkt: Packet) -> Result<(), SinkFull>;
}

/// A bounded queue to another thread.
impl PacketSink for std::sync::mpsc::SyncSender<Packet> {
    fn push(&mut self, pkt: Packet) -> Result<(), SinkFull> {
        use std::sync::mpsc::TrySendError;
        self.try_send(pkt).map_err(|e| match e {
            TrySendError::Full(_) => SinkFull::Full,
            TrySendError::Disconnected(_) => SinkFull::Closed,
        })
    }
}

/// Asks running sources to stop; they notice within their read timeout.
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The pipeline's word back to a source about one connection (eBPF stops copying it).
pub trait FlowFeedback: Send + Sync {
    /// The connection's handshake is decided: its payload is no longer needed.
    fn decided(&self, client: SocketAddr, server: SocketAddr);
}

/// How a source's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Everything was read (a file) or the sink closed.
    Exhausted,
    /// The stop signal was set.
    Stopped,
}

/// A capture source.
pub trait Source: Send {
    /// `BACKEND:INTERFACE` (`pcap:lo`, `ebpf:eth0`) or `file:PATH`.
    fn name(&self) -> &str;
    fn backend(&self) -> Backend;
    /// The shared counters (the same `Arc` for the source's whole life).
    fn counters(&self) -> Arc<SourceCounters>;
    /// Reads packets into `sink` until exhausted, stopped, or an error; a live source may be run
    /// again after an error (it reopens what it needs).
    fn run(&mut self, sink: &mut dyn PacketSink, stop: &StopSignal) -> Result<RunEnd, Error>;
    /// Where the pipeline reports decided connections, for sources that use it.
    fn feedback(&self) -> Option<Arc<dyn FlowFeedback>> {
        None
    }
}

impl fmt::Debug for dyn Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name())
            .finish()
    }
}

/// `BACKEND:INTERFACE`, the `source` label of every per-source metric.
pub fn source_name(backend: Backend, what: &str) -> String {
    format!("{}:{what}", backend.as_str())
}
