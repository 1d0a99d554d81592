//! Live capture with the eBPF TC program of `monitor-ebpf`: one [`EbpfSource`] per interface
//! (or one for `any`).
//!
//! Consumes an interface, the watched ports and the handshake window; produces
//! [`Packet`](super::Packet)s into
//! the runtime's [`PacketSink`] — only the frames the program copied: the headers and first
//! bytes (up to the window) of each direction of every watched TCP connection, and its
//! SYN/FIN/RST packets. Nothing downstream knows they did not come from libpcap.
//!
//! - [`preflight`]: capabilities and kernel version, checked before loading;
//! - [`load`]: the embedded program, configured and verified;
//! - [`attach`]: TCX first in the chain (kernel ≥ 6.6) or clsact, and the interfaces' link kinds;
//! - [`buffers`]: the ring buffer or per-CPU perf buffers, drained after `poll(2)`;
//! - [`perf`]: the per-CPU perf buffers, opened with a wakeup watermark;
//! - [`record`]: one record → one `Packet` (VLAN tags from the skb metadata put back);
//! - [`clock`]: kernel monotonic time → wall time.
//!
//! The source drains its buffer on its own thread in a `poll(2)` loop, like the libpcap source:
//! the [`Source`] interface is synchronous (one thread per source, see `running.rs`), so an
//! async reactor (tokio's `AsyncFd`) would add a runtime per thread and change nothing else. The
//! program's per-CPU counters are summed into [`SourceCounters::kernel`] once a second; a full
//! buffer is [`DropReason::RingFull`]. The pipeline's decisions come back through
//! [`FlowFeedback`] as a flag in the connection's kernel state, and the kernel stops copying it.
//! Everything attached is detached when the source is dropped (a stop, the end of the process,
//! a panic unwinding the capture thread); TCX links also go when the process dies.

pub mod attach;
pub mod buffers;
pub mod clock;
pub mod load;
pub mod perf;
pub mod preflight;
pub mod record;

use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::SchedClassifier;
use trustwatch_ebpf::{
    CONN_DECIDED, ConnKey, ConnState, Counters, CpuState, LINK_PER_IFACE, names,
};

use self::attach::Hook;
use self::buffers::Buffers;
use self::clock::Clock;
use super::pcap;
use super::source::{
    Backend, DropReason, FlowFeedback, PacketSink, RunEnd, SinkFull, Source, SourceCounters,
    StopSignal, source_name,
};
use crate::config::Services;
use crate::error::Error;

/// How often the kernel counters are read, the clock offset measured again and (for `any`)
/// new interfaces attached.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// Records handed on per drain before the stop signal is looked at again.
const DRAIN_BATCH: u64 = 4096;

/// How records leave the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BufferKind {
    /// `bpf_perf_event_output` with the skb: per-CPU buffers, the kernel appends the bytes.
    Perf,
    /// One ring buffer shared by the CPUs; constant-size reservations filled by the program.
    Ring,
}

impl BufferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BufferKind::Perf => "perf",
            BufferKind::Ring => "ring",
        }
    }
}

/// How the program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// TCX on kernels ≥ 6.6 (clsact if that fails), clsact before.
    Auto,
    /// TCX only.
    Tcx,
    /// A clsact qdisc filter (added when missing, never deleted).
    Clsact,
}

/// Options of the eBPF source.
#[derive(Clone, Debug)]
pub struct EbpfOptions {
    pub buffer: BufferKind,
    /// Buffer bytes per source (the ring, or split over the CPUs' perf buffers).
    pub buffer_size: usize,
    /// Connections tracked in the kernel (least recently used evicted beyond).
    pub max_connections: u32,
    /// Payload bytes copied per connection and direction: the pipeline's handshake window.
    pub budget: usize,
    pub attach: AttachMode,
    /// Longest wait in `poll(2)` before the stop signal is checked.
    pub read_timeout: Duration,
    /// Copy every header out of the packet as the program does for headers outside the skb's
    /// linear data (rare in real traffic), so tests can run that path on real traffic. Not a
    /// command-line option.
    pub copy_headers: bool,
}

impl Default for EbpfOptions {
    fn default() -> Self {
        EbpfOptions {
            buffer: BufferKind::Ring,
            buffer_size: 8 << 20,
            max_connections: 65_536,
            budget: crate::config::Limits::default().handshake_window,
            attach: AttachMode::Auto,
            read_timeout: Duration::from_millis(100),
            copy_headers: false,
        }
    }
}

/// Smallest `--ebpf-ring-size`: a few of the largest records must fit.
pub const MIN_RING_SIZE: usize = 256 << 10;

/// The eBPF flags of `trustwatch live`.
#[derive(clap::Args, Debug, Clone)]
pub struct EbpfArgs {
    /// eBPF source: how records leave the kernel (see the README for the measurements).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = BufferKind::Ring)]
    pub ebpf_buffer: BufferKind,
    /// eBPF source: buffer bytes per interface (the ring buffer, or split over the CPUs' perf
    /// buffers; rounded down to a power of two pages); when it is full, records are dropped and
    /// counted (reason="ring_full"), never packets.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub ebpf_ring_size: usize,
    /// eBPF source: connections tracked in the kernel (least recently used evicted beyond).
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub ebpf_max_connections: u32,
    /// eBPF source: TCX (kernel ≥ 6.6) or a clsact qdisc; `auto` picks TCX when it can.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = AttachMode::Auto)]
    pub ebpf_attach: AttachMode,
}

impl EbpfArgs {
    /// The options, with the pipeline's handshake window as the per-direction budget.
    pub fn options(&self, handshake_window: usize) -> Result<EbpfOptions, Error> {
        if self.ebpf_ring_size < MIN_RING_SIZE {
            return Err(Error::Usage(format!(
                "--ebpf-ring-size must be at least {MIN_RING_SIZE} (a record can take 64 KiB)"
            )));
        }
        if self.ebpf_ring_size > 1 << 30 {
            return Err(Error::Usage(
                "--ebpf-ring-size must be at most 1 GiB".into(),
            ));
        }
        if self.ebpf_max_connections == 0 {
            return Err(Error::Usage(
                "--ebpf-max-connections must be at least 1".into(),
            ));
        }
        Ok(EbpfOptions {
            buffer: self.ebpf_buffer,
            buffer_size: self.ebpf_ring_size,
            max_connections: self.ebpf_max_connections,
            budget: handshake_window,
            attach: self.ebpf_attach,
            ..EbpfOptions::default()
        })
    }
}

/// The kernel key of the connection between two endpoints (either order).
pub fn conn_key(a: SocketAddr, b: SocketAddr) -> Option<ConnKey> {
    fn words(ip: IpAddr) -> (u16, [u32; 4]) {
        match ip {
            IpAddr::V4(v4) => (4, [u32::from_ne_bytes(v4.octets()), 0, 0, 0]),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                (6, [w(0), w(4), w(8), w(12)])
            }
        }
    }
    let (fa, wa) = words(a.ip());
    let (fb, wb) = words(b.ip());
    (fa == fb).then(|| ConnKey::new(fa, wa, a.port(), wb, b.port()).0)
}

/// The pipeline's decisions, passed to the kernel: the decided flag of the connection's entry
/// in `CONNS` (updated only if the entry exists; the kernel clears it on a new SYN).
pub struct Feedback {
    map: Mutex<Option<BpfHashMap<MapData, ConnKey, ConnState>>>,
    counters: Arc<SourceCounters>,
}

/// `BPF_EXIST`: update an existing entry only.
const BPF_EXIST: u64 = 2;

impl FlowFeedback for Feedback {
    fn decided(&self, client: SocketAddr, server: SocketAddr) {
        let Some(key) = conn_key(client, server) else {
            return;
        };
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(m) = map.as_mut() else { return };
        let Ok(mut state) = m.get(&key, 0) else {
            // Evicted, or never tracked (no payload seen yet): nothing is being copied.
            return;
        };
        if state.flags & CONN_DECIDED != 0 {
            return;
        }
        state.flags |= CONN_DECIDED;
        if m.insert(key, state, BPF_EXIST).is_ok() {
            self.counters.kernel.decided.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a source attaches to.
#[derive(Clone, Debug)]
enum Target {
    Iface(String),
    /// Every interface of the namespace, including ones that appear later.
    Any,
}

/// The eBPF source of one interface (or of all, for `any`).
pub struct EbpfSource {
    name: String,
    target: Target,
    services: Services,
    opts: EbpfOptions,
    counters: Arc<SourceCounters>,
    feedback: Arc<Feedback>,
    /// Loaded and attached; `None` after an error until the next run loads again.
    open: Option<Open>,
}

/// A loaded, attached program and its buffers. Dropping it detaches and unloads everything.
struct Open {
    /// Owns the program and its links (aya detaches them on drop).
    ebpf: Ebpf,
    buffers: Buffers,
    counters: PerCpuArray<MapData, CpuState>,
    /// Interfaces attached: (index, name).
    attached: Vec<(u32, String)>,
    /// `any`: interfaces that refused the program (not tried again, reported once).
    refused: Vec<(u32, String)>,
    hook: Hook,
    clock: Clock,
    /// Kernel counter totals at the last poll (this load).
    last: Counters,
    /// The program's run time (ns) and run count at the last poll (this load).
    last_run: (u64, u64),
}

impl EbpfSource {
    /// Loads and attaches now, so anything missing fails before the monitor runs. The error is
    /// the reason, one sentence (for `--source auto`'s note and `--source ebpf`'s exit).
    pub fn open(
        iface: &str,
        services: &Services,
        opts: &EbpfOptions,
    ) -> Result<EbpfSource, String> {
        preflight::check()?;
        let target = if iface == "any" {
            Target::Any
        } else {
            if attach::ifindex(iface).is_none() {
                return Err(pcap::not_found(iface).to_string());
            }
            Target::Iface(iface.to_string())
        };
        let counters = Arc::new(SourceCounters::default());
        let feedback = Arc::new(Feedback {
            map: Mutex::new(None),
            counters: counters.clone(),
        });
        let open = Open::new(&target, services, opts, &feedback)?;
        Ok(EbpfSource {
            name: source_name(Backend::Ebpf, iface),
            target,
            services: services.clone(),
            opts: opts.clone(),
            counters,
            feedback,
            open: Some(open),
        })
    }

    /// How the program is attached (while it is).
    pub fn hook(&self) -> Option<Hook> {
        self.open.as_ref().map(|o| o.hook)
    }

    /// The kernel's id of the loaded program (while it is loaded).
    pub fn program_id(&self) -> Option<u32> {
        let open = self.open.as_ref()?;
        let p: &SchedClassifier = open.ebpf.program(names::PROGRAM)?.try_into().ok()?;
        p.info().ok().map(|i| i.id())
    }

    /// Reads the kernel counters now (they are otherwise read once a second while running).
    pub fn poll_counters(&mut self) {
        if let Some(open) = self.open.as_mut() {
            open.poll_stats(&self.counters);
        }
    }
}

impl Open {
    fn new(
        target: &Target,
        services: &Services,
        opts: &EbpfOptions,
        feedback: &Feedback,
    ) -> Result<Open, String> {
        let link = match target {
            Target::Iface(iface) => attach::link_kind(iface)?,
            Target::Any => LINK_PER_IFACE,
        };
        let mut ebpf = load::load(opts, services, link)?;
        // The buffers are mapped before the program is attached: nothing it writes is lost.
        let buffers = Buffers::open(&mut ebpf, opts.buffer, opts.buffer_size)?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map(names::COUNTERS)
                .ok_or("the eBPF object has no COUNTERS map")?,
        )
        .map_err(|e| format!("counters map: {e}"))?;
        let decided = BpfHashMap::try_from(
            ebpf.take_map(names::CONNS)
                .ok_or("the eBPF object has no CONNS map")?,
        )
        .map_err(|e| format!("connections map: {e}"))?;
        let mut open = Open {
            ebpf,
            buffers,
            counters,
            attached: Vec::new(),
            refused: Vec::new(),
            hook: Hook::Tcx,
            clock: Clock::new(),
            last: Counters::default(),
            last_run: (0, 0),
        };
        match target {
            Target::Iface(iface) => {
                open.hook = attach::attach(&mut open.ebpf, iface, opts.attach)?;
                let index = attach::ifindex(iface).ok_or_else(|| format!("{iface} vanished"))?;
                open.attached.push((index, iface.clone()));
            }
            Target::Any => {
                open.attach_new(opts.attach)?;
                if open.attached.is_empty() {
                    return Err("no interface could be attached".into());
                }
            }
        }
        *feedback.map.lock().unwrap_or_else(PoisonError::into_inner) = Some(decided);
        Ok(open)
    }

    /// `any`: attaches to the interfaces not attached yet (their link kind goes to `IFACES`).
    /// Interfaces of unsupported link types are skipped.
    fn attach_new(&mut self, mode: AttachMode) -> Result<(), String> {
        for (index, name) in attach::interfaces() {
            let known =
                |list: &[(u32, String)]| list.iter().any(|(i, n)| *i == index && *n == name);
            if known(&self.attached) || known(&self.refused) {
                continue;
            }
            let Ok(kind) = attach::link_kind(&name) else {
                continue;
            };
            {
                let mut ifaces: BpfHashMap<&mut MapData, u32, u32> = BpfHashMap::try_from(
                    self.ebpf
                        .map_mut(names::IFACES)
                        .ok_or("the eBPF object has no IFACES map")?,
                )
                .map_err(|e| e.to_string())?;
                ifaces
                    .insert(index, kind, 0)
                    .map_err(|e| format!("IFACES: {e}"))?;
            }
            match attach::attach(&mut self.ebpf, &name, mode) {
                Ok(hook) => {
                    self.hook = hook;
                    self.attached.push((index, name));
                }
                // An interface that went away meanwhile, or one that refuses TC programs.
                Err(e) => {
                    eprintln!("trustwatch: eBPF source: skipping {name}: {e}");
                    self.refused.push((index, name));
                }
            }
        }
        // Forget interfaces that are gone (the kernel released their links).
        let present = attach::interfaces();
        self.attached.retain(|a| present.contains(a));
        self.refused.retain(|a| present.contains(a));
        Ok(())
    }

    /// Adds the kernel counters' growth since the last poll to `counters`.
    fn poll_stats(&mut self, counters: &SourceCounters) {
        let Ok(values) = self.counters.get(&0, 0) else {
            return;
        };
        let mut now = Counters::default();
        for v in values.iter().map(|v| &v.counters) {
            now.seen += v.seen;
            now.matched += v.matched;
            now.records += v.records;
            now.record_bytes += v.record_bytes;
            now.payload_bytes += v.payload_bytes;
            now.skipped_bytes += v.skipped_bytes;
            now.ring_full += v.ring_full;
            now.truncated += v.truncated;
            now.fragments += v.fragments;
            now.header_copies += v.header_copies;
            now.wakeups += v.wakeups;
        }
        let last = self.last;
        let k = &counters.kernel;
        let add = |c: &std::sync::atomic::AtomicU64, now: u64, before: u64| {
            c.fetch_add(now.saturating_sub(before), Ordering::Relaxed);
        };
        add(&k.seen, now.seen, last.seen);
        add(&k.matched, now.matched, last.matched);
        add(&k.copied, now.records, last.records);
        add(&k.copied_bytes, now.record_bytes, last.record_bytes);
        add(&k.payload_bytes, now.payload_bytes, last.payload_bytes);
        add(&k.skipped_bytes, now.skipped_bytes, last.skipped_bytes);
        add(&k.truncated, now.truncated, last.truncated);
        add(&k.fragments, now.fragments, last.fragments);
        add(&k.header_copies, now.header_copies, last.header_copies);
        add(&k.wakeups, now.wakeups, last.wakeups);
        counters.count_drop(
            DropReason::RingFull,
            now.ring_full.saturating_sub(last.ring_full),
        );
        self.last = now;
        let program: Option<&SchedClassifier> = self
            .ebpf
            .program(names::PROGRAM)
            .and_then(|p| p.try_into().ok());
        if let Some(info) = program.and_then(|p| p.info().ok()) {
            // Totals of this load: added as growth, so they sum over restarts.
            let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
            let runs = info.run_count();
            add(&k.run_time_ns, ns, self.last_run.0);
            add(&k.run_count, runs, self.last_run.1);
            self.last_run = (ns, runs);
        }
    }

    /// A named interface that disappeared (or was recreated) ends the run; the restart
    /// attaches again.
    fn check_target(&mut self, target: &Target, mode: AttachMode) -> Result<(), Error> {
        match target {
            Target::Iface(iface) => {
                let now = attach::ifindex(iface);
                if self.attached.first().map(|(i, _)| *i) != now {
                    return Err(Error::Capture(format!(
                        "{iface}: the interface went away or was recreated"
                    )));
                }
                Ok(())
            }
            Target::Any => self.attach_new(mode).map_err(Error::Capture),
        }
    }
}

impl Source for EbpfSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> Backend {
        Backend::Ebpf
    }

    fn counters(&self) -> Arc<SourceCounters> {
        self.counters.clone()
    }

    fn feedback(&self) -> Option<Arc<dyn FlowFeedback>> {
        Some(self.feedback.clone())
    }

    fn run(&mut self, sink: &mut dyn PacketSink, stop: &StopSignal) -> Result<RunEnd, Error> {
        let mut open = match self.open.take() {
            Some(o) => o,
            None => Open::new(&self.target, &self.services, &self.opts, &self.feedback)
                .map_err(|e| Error::Capture(format!("eBPF: {e}")))?,
        };
        let poll_ms = i32::try_from(self.opts.read_timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        let counters = &*self.counters;
        counters.set_up();
        let mut next_stats = Instant::now() + STATS_EVERY;
        let end = loop {
            if stop.is_stopped() {
                break RunEnd::Stopped;
            }
            open.buffers.wait(poll_ms);
            let clock = open.clock;
            let (drained, flow) = open.buffers.drain(DRAIN_BATCH, &mut |hdr, frame| {
                let pkt = record::packet(hdr, frame, &clock);
                let len = pkt.data.len();
                match sink.push(pkt) {
                    Ok(()) => counters.handed(len),
                    Err(SinkFull::Full) => counters.count_drop(DropReason::QueueFull, 1),
                    Err(SinkFull::Closed) => return ControlFlow::Break(()),
                }
                ControlFlow::Continue(())
            });
            if drained.bad > 0 {
                counters.errors.fetch_add(drained.bad, Ordering::Relaxed);
            }
            if flow.is_break() {
                break RunEnd::Exhausted;
            }
            if Instant::now() >= next_stats {
                open.poll_stats(counters);
                open.clock.resync();
                // On an error `open` is dropped (detached); the next run attaches again.
                open.check_target(&self.target, self.opts.attach)?;
                next_stats = Instant::now() + STATS_EVERY;
            }
        };
        open.poll_stats(counters);
        self.open = Some(open);
        Ok(end)
    }
}

/// Opens one eBPF source per interface (all or nothing); the error is the reason.
pub fn open_all(
    ifaces: &[String],
    services: &Services,
    opts: &EbpfOptions,
) -> Result<Vec<EbpfSource>, String> {
    ifaces
        .iter()
        .map(|i| EbpfSource::open(i, services, opts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_give_one_key() {
        let a: SocketAddr = "10.0.0.2:41000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:10000".parse().unwrap();
        let k = conn_key(a, b).unwrap();
        assert_eq!(Some(k), conn_key(b, a));
        // The lower port first; addresses as the packet carries them (network order).
        assert_eq!(k.port, [10000, 41000]);
        assert_eq!(k.addr[0][0].to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(k.family, 4);
        let c: SocketAddr = "[fd00::2]:41000".parse().unwrap();
        let d: SocketAddr = "[fd00::1]:10000".parse().unwrap();
        let k6 = conn_key(c, d).unwrap();
        assert_eq!(k6.family, 6);
        assert_eq!(k6.addr[0][3].to_ne_bytes(), [0, 0, 0, 1]);
        assert_eq!(conn_key(a, d), None);
        // Equal ports: ordered by address.
        let e: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let f: SocketAddr = "10.0.0.3:5000".parse().unwrap();
        assert_eq!(conn_key(e, f), conn_key(f, e));
    }
}
