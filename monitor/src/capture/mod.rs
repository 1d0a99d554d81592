//! Capture: sources that yield [`Packet`]s.
//!
//! Consumes files, standard input or interfaces; produces `Packet { ts, linktype, data }`. Every source — a capture
//! file ([`file`]), libpcap on an interface ([`pcap`]), the eBPF TC program — implements one
//! interface, [`Source`], and meets at this type, so decode and everything after it never know
//! where a packet came from. Offline, [`input`] opens each argument (standard input, gzip, zstd)
//! and [`merge`] makes several inputs one capture, merged by timestamp. [`running`] runs live sources on threads and restarts them after
//! errors. Adding a source: a module here, implementing [`Source`], and one arm in [`open_live`].

pub mod file;
pub mod input;
pub mod merge;
pub mod pcap;
pub mod running;
pub mod source;

use bytes::Bytes;

pub use source::{
    Backend, DropReason, FlowFeedback, PacketSink, RunEnd, SinkFull, Source, SourceCounters,
    SourceKind, StopSignal,
};

use crate::base::Timestamp;
use crate::config::Services;
use crate::error::Error;

/// Link-layer header types we decode (values are libpcap's LINKTYPE_* numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// BSD loopback: 4-byte address family in host byte order.
    Null,
    Ethernet,
    /// Raw IPv4/IPv6 (LINKTYPE_RAW 101, and DLT_RAW 12/14 on some systems).
    Raw,
    Ipv4,
    Ipv6,
    /// Linux "cooked" capture v1 (`any` interface).
    LinuxSll,
    /// Linux "cooked" capture v2.
    LinuxSll2,
    /// OpenBSD loopback: like Null but the family is big-endian.
    Loop,
}

impl LinkType {
    /// Maps a libpcap link-type number; `None` when we cannot decode it.
    pub fn from_linktype(value: i32) -> Option<Self> {
        Some(match value {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}

/// One captured frame, as every source delivers it.
#[derive(Clone, Debug)]
pub struct Packet {
    pub ts: Timestamp,
    pub linktype: LinkType,
    /// The captured bytes (possibly shorter than the frame on the wire).
    pub data: Bytes,
}

/// What a live source needs besides its interface.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub services: Services,
    pub pcap: pcap::PcapOptions,
}

/// The live sources of a session, and for `auto` a note on the backend chosen and why.
pub struct Opened {
    pub sources: Vec<Box<dyn Source>>,
    pub note: Option<String>,
}

/// Opens the live sources for `ifaces` with backend `kind` (all or nothing: the first failure is
/// returned and nothing runs).
pub fn open_live(kind: SourceKind, ifaces: &[String], opts: &LiveOptions) -> Result<Opened, Error> {
    match kind {
        SourceKind::Ebpf => Err(Error::Capture(format!(
            "--source ebpf: eBPF source not available in this build (use --source pcap; eBPF will need {})",
            Backend::Ebpf.capabilities()
        ))),
        SourceKind::Pcap | SourceKind::Auto => {
            let filter = pcap::bpf_filter(&opts.services);
            let mut sources: Vec<Box<dyn Source>> = Vec::with_capacity(ifaces.len());
            for iface in ifaces {
                sources.push(Box::new(pcap::PcapSource::open(
                    iface, &filter, &opts.pcap,
                )?));
            }
            let note = (kind == SourceKind::Auto)
                .then(|| "libpcap (the eBPF source is not in this build)".to_string());
            Ok(Opened { sources, note })
        }
    }
}
