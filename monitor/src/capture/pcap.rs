//! Live capture with libpcap: one [`PcapSource`] per interface.
//!
//! Consumes an interface (`lo`, `eth0`, `any`) and a kernel BPF filter built from the watched
//! ports; produces [`Packet`]s into the runtime's [`PacketSink`]. Kernel and interface drops come
//! from `pcap_stats`, polled every second. Reads are non-blocking plus our own `poll(2)` with a
//! short timeout (libpcap's read timeout does not fire in immediate mode), so a run notices the
//! [`StopSignal`] promptly. After an error the handle is dropped; the next [`Source::run`] reopens
//! the interface.

use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::source::{
    Backend, DropReason, PacketSink, RunEnd, SinkFull, Source, SourceCounters, StopSignal,
    source_name,
};
use super::{LinkType, Packet};
use crate::base::Timestamp;
use crate::config::Services;
use crate::error::Error;

/// How often `pcap_stats` is read.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Options of a libpcap source.
#[derive(Clone, Debug)]
pub struct PcapOptions {
    /// Bytes captured per packet.
    pub snaplen: i32,
    /// Kernel capture buffer, bytes.
    pub buffer_size: i32,
    /// Read timeout: the longest a run waits before it checks the stop signal.
    pub read_timeout: Duration,
}

impl Default for PcapOptions {
    fn default() -> Self {
        PcapOptions {
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

/// Names of the interfaces libpcap can open (for the "not found" error).
pub fn interface_names() -> Vec<String> {
    pcap::Device::list()
        .map(|l| l.into_iter().map(|d| d.name).collect())
        .unwrap_or_default()
}

/// An interface that does not exist, with the ones that do.
pub fn not_found(iface: &str) -> Error {
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

/// Maps a libpcap open/activate failure to a one-line error naming the cause.
fn open_error(iface: &str, e: &pcap::Error) -> Error {
    let msg = e.to_string();
    let lower = msg.to_ascii_lowercase();
    if lower.contains("permission") || lower.contains("not permitted") {
        return Error::Capture(format!(
            "no permission to capture on {iface}: needs {} (run as root or grant it, \
             e.g. setcap cap_net_raw+eip trustwatch)",
            Backend::Pcap.capabilities()
        ));
    }
    if lower.contains("no such device") || lower.contains("doesn't exist") {
        return not_found(iface);
    }
    Error::Capture(format!("cannot capture on {iface}: {msg}"))
}

/// libpcap on one interface.
pub struct PcapSource {
    iface: String,
    name: String,
    filter: String,
    opts: PcapOptions,
    counters: Arc<SourceCounters>,
    /// The open handle; `None` after an error until the next run reopens it.
    cap: Option<Open>,
}

struct Open {
    cap: pcap::Capture<pcap::Active>,
    linktype: LinkType,
    /// Last `pcap_stats` values (32-bit, they wrap): (dropped, if_dropped).
    last_stats: (u32, u32),
}

impl PcapSource {
    /// Opens `iface` now, so a missing interface or permission fails before anything runs.
    pub fn open(iface: &str, filter: &str, opts: &PcapOptions) -> Result<PcapSource, Error> {
        let known = interface_names();
        if iface != "any" && !known.is_empty() && !known.iter().any(|k| k == iface) {
            return Err(not_found(iface));
        }
        let cap = open(iface, filter, opts)?;
        Ok(PcapSource {
            iface: iface.to_string(),
            name: source_name(Backend::Pcap, iface),
            filter: filter.to_string(),
            opts: opts.clone(),
            counters: Arc::new(SourceCounters::default()),
            cap: Some(cap),
        })
    }

    /// The link type of the open handle.
    pub fn linktype(&self) -> Option<LinkType> {
        self.cap.as_ref().map(|c| c.linktype)
    }
}

fn open(iface: &str, filter: &str, opts: &PcapOptions) -> Result<Open, Error> {
    let mut cap = pcap::Capture::from_device(iface)
        .map_err(|e| open_error(iface, &e))?
        .promisc(false)
        .immediate_mode(true)
        .snaplen(opts.snaplen)
        .buffer_size(opts.buffer_size)
        .open()
        .map_err(|e| open_error(iface, &e))?
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
    // Linux moves the outer VLAN tag of every received frame (and of frames sent with VLAN
    // offload) into the skb metadata, where the kernel filter does not see it: the plain filter
    // matches them. QinQ frames keep their inner tag in the data: `vlan and vlan` skips the
    // metadata tag and the inner one. (A `vlan` shifts the offsets of everything after it, so
    // the three cases cannot be ORed; a frame whose only tag is in the data — sent without
    // offload — is not matched.)
    let with_vlan = format!("({filter}) or (vlan and vlan and ({filter}))");
    let applied = linktype == LinkType::Ethernet && cap.filter(&with_vlan, true).is_ok();
    if !applied {
        cap.filter(filter, true)
            .map_err(|e| Error::Capture(format!("{iface}: BPF filter '{filter}': {e}")))?;
    }
    Ok(Open {
        cap,
        linktype,
        last_stats: (0, 0),
    })
}

impl Open {
    fn wait_readable(&self, poll_ms: i32) {
        let mut pfd = libc::pollfd {
            fd: self.cap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, owned by this frame, for the duration of the call.
        let _ = unsafe { libc::poll(&mut pfd, 1, poll_ms) };
    }

    /// Adds the growth of the kernel's cumulative 32-bit drop counters since the last poll.
    fn poll_stats(&mut self, counters: &SourceCounters) {
        if let Ok(s) = self.cap.stats() {
            let (dropped, if_dropped) = self.last_stats;
            counters.count_drop(
                DropReason::Kernel,
                u64::from(s.dropped.wrapping_sub(dropped)),
            );
            counters.count_drop(
                DropReason::Interface,
                u64::from(s.if_dropped.wrapping_sub(if_dropped)),
            );
            self.last_stats = (s.dropped, s.if_dropped);
        }
    }
}

impl Source for PcapSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> Backend {
        Backend::Pcap
    }

    fn counters(&self) -> Arc<SourceCounters> {
        self.counters.clone()
    }

    // `time_t`/`suseconds_t` are i64 here but not on every target.
    #[allow(clippy::useless_conversion)]
    fn run(&mut self, sink: &mut dyn PacketSink, stop: &StopSignal) -> Result<RunEnd, Error> {
        let mut open = match self.cap.take() {
            Some(o) => o,
            None => open(&self.iface, &self.filter, &self.opts)?,
        };
        let poll_ms = i32::try_from(self.opts.read_timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        let counters = &*self.counters;
        counters.set_up();
        let mut next_stats = Instant::now() + STATS_EVERY;
        let end = loop {
            if stop.is_stopped() {
                break Ok(RunEnd::Stopped);
            }
            match open.cap.next_packet() {
                Ok(p) => {
                    let ts = Timestamp::from_micros(
                        i64::from(p.header.ts.tv_sec)
                            .saturating_mul(1_000_000)
                            .saturating_add(i64::from(p.header.ts.tv_usec)),
                    );
                    let len = p.data.len();
                    let pkt = Packet {
                        ts,
                        linktype: open.linktype,
                        data: Bytes::copy_from_slice(p.data),
                    };
                    match sink.push(pkt) {
                        Ok(()) => counters.handed(len),
                        Err(SinkFull::Full) => counters.count_drop(DropReason::QueueFull, 1),
                        Err(SinkFull::Closed) => break Ok(RunEnd::Exhausted),
                    }
                }
                // Non-blocking: nothing buffered; wait for the descriptor (or the timeout).
                Err(pcap::Error::TimeoutExpired) => open.wait_readable(poll_ms),
                Err(e) => {
                    open.poll_stats(counters);
                    // Dropped: the next run reopens the interface.
                    return Err(Error::Capture(e.to_string()));
                }
            }
            if Instant::now() >= next_stats {
                open.poll_stats(counters);
                next_stats = Instant::now() + STATS_EVERY;
            }
        };
        open.poll_stats(counters);
        self.cap = Some(open);
        end
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
        let err = PcapSource::open("nosuchif0", "tcp", &PcapOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("interface nosuchif0 not found"), "{err}");
        assert!(err.contains("lo"), "{err}");
    }
}
