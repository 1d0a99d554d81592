//! Capture: sources that yield [`Packet`]s.
//!
//! Consumes files, standard input or interfaces; produces `Packet { ts, linktype, data }`. Every
//! source — a capture file ([`file`](mod@file)), libpcap on an interface ([`pcap`]), the eBPF TC program
//! ([`ebpf`]) — implements one interface, [`Source`], and meets at this type, so decode and
//! everything after it never know where a packet came from. Offline, [`input`] opens each argument
//! (standard input, gzip, zstd) and [`merge`] makes several inputs one capture, merged by
//! timestamp. [`running`] runs live sources on threads and restarts them after errors. Adding a
//! source: a module here, implementing [`Source`], and one arm in [`open_live`].

pub mod ebpf;
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

    /// The LINKTYPE_* number (raw IP as LINKTYPE_RAW, 101).
    pub fn number(self) -> i32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
        }
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

impl Packet {
    /// The packet as a borrowed [`Frame`].
    pub fn frame(&self) -> Frame<'_> {
        Frame {
            ts: self.ts,
            linktype: self.linktype,
            data: &self.data,
        }
    }
}

/// A captured frame borrowed from wherever its bytes are (a file reader's buffer, a [`Packet`]):
/// what the pipeline consumes, so a file is analyzed without a copy or a reference count per
/// packet.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub ts: Timestamp,
    pub linktype: LinkType,
    pub data: &'a [u8],
}

/// What a live source needs besides its interface.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub services: Services,
    pub pcap: pcap::PcapOptions,
    pub ebpf: ebpf::EbpfOptions,
}

/// The live sources of a session, and a note on the backend chosen (and for `auto` why).
pub struct Opened {
    pub sources: Vec<Box<dyn Source>>,
    pub note: Option<String>,
}

/// Opens the live sources for `ifaces` with backend `kind` (all or nothing: the first failure is
/// returned and nothing runs). `auto` tries eBPF first and falls back to libpcap, saying why.
pub fn open_live(kind: SourceKind, ifaces: &[String], opts: &LiveOptions) -> Result<Opened, Error> {
    let ebpf = match kind {
        SourceKind::Pcap => None,
        SourceKind::Ebpf | SourceKind::Auto => {
            Some(ebpf::open_all(ifaces, &opts.services, &opts.ebpf))
        }
    };
    let why_not = match ebpf {
        Some(Ok(sources)) => {
            let hook = sources
                .iter()
                .find_map(|s| s.hook())
                .map_or("TC", ebpf::attach::Hook::as_str);
            let note = format!(
                "eBPF TC program ({hook}, {} buffer; at most {} payload bytes per connection and \
                 direction leave the kernel)",
                opts.ebpf.buffer.as_str(),
                opts.ebpf.budget
            );
            let sources = sources
                .into_iter()
                .map(|s| Box::new(s) as Box<dyn Source>)
                .collect();
            return Ok(Opened {
                sources,
                note: Some(note),
            });
        }
        Some(Err(why)) if kind == SourceKind::Ebpf => {
            return Err(Error::Capture(format!("--source ebpf: {why}")));
        }
        Some(Err(why)) => Some(why),
        None => None,
    };
    let filter = pcap::bpf_filter(&opts.services);
    let mut sources: Vec<Box<dyn Source>> = Vec::with_capacity(ifaces.len());
    for iface in ifaces {
        sources.push(Box::new(pcap::PcapSource::open(
            iface, &filter, &opts.pcap,
        )?));
    }
    let note = why_not.map(|why| format!("libpcap (eBPF unavailable: {why})"));
    Ok(Opened { sources, note })
}
