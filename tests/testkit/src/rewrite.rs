//! Capture variants that must analyze exactly like the original.
//!
//! Consumes a pcap with Ethernet frames (what libpcap records on Linux `lo`); produces files whose
//! TCP payloads and sequence numbers are unchanged while everything around them differs: segment
//! order, duplicates, 802.1Q / QinQ tags, IPv6 instead of IPv4, Linux SLL / SLL2, BSD NULL and RAW
//! link types, and the pcapng container.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};

use crate::Result;

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub ts: Duration,
    pub data: Vec<u8>,
}

/// The frames of a pcap file and their link type.
#[derive(Clone, Debug)]
pub struct Trace {
    pub linktype: DataLink,
    pub frames: Vec<Frame>,
}

/// A derived capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Pairs of data segments of one direction swapped.
    Reordered,
    /// Every frame twice.
    Duplicated,
    /// 802.1Q tag, VLAN 100.
    Vlan,
    /// 802.1ad outer tag 200 + 802.1Q inner tag 100.
    QinQ,
    /// IPv4 replaced by IPv6 (`fd00::<ipv4>`, see [`ipv6_of`]).
    Ipv6,
    /// Linux cooked capture v1 (link type 113).
    Sll,
    /// Linux cooked capture v2 (link type 276).
    Sll2,
    /// BSD loopback (link type 0).
    Null,
    /// Raw IP (link type 101).
    Raw,
    /// Same Ethernet frames in a pcapng file.
    PcapNg,
}

impl Variant {
    pub const ALL: [Variant; 10] = [
        Variant::Reordered,
        Variant::Duplicated,
        Variant::Vlan,
        Variant::QinQ,
        Variant::Ipv6,
        Variant::Sll,
        Variant::Sll2,
        Variant::Null,
        Variant::Raw,
        Variant::PcapNg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Reordered => "reordered",
            Variant::Duplicated => "duplicated",
            Variant::Vlan => "vlan",
            Variant::QinQ => "qinq",
            Variant::Ipv6 => "ipv6",
            Variant::Sll => "sll",
            Variant::Sll2 => "sll2",
            Variant::Null => "null",
            Variant::Raw => "raw",
            Variant::PcapNg => "pcapng",
        }
    }
}

/// The IPv6 address an IPv4 address becomes in [`Variant::Ipv6`]: `fd00::a.b.c.d` (ULA, only ever
/// written into files).
pub fn ipv6_of(v4: Ipv4Addr) -> Ipv6Addr {
    let o = v4.octets();
    Ipv6Addr::from([
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, o[0], o[1], o[2], o[3],
    ])
}

/// Writes `variant` of the pcap at `src` next to it and returns its path.
pub fn write_variant(src: &Path, variant: Variant) -> Result<PathBuf> {
    let trace = Trace::read(src)?;
    let stem = src
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("capture");
    let dir = src.parent().unwrap_or(Path::new("."));
    let ext = if variant == Variant::PcapNg {
        "pcapng"
    } else {
        "pcap"
    };
    let out = dir.join(format!("{stem}-{}.{ext}", variant.name()));
    match variant {
        Variant::Reordered => trace.reordered()?.0.write_pcap(&out)?,
        Variant::Duplicated => trace.duplicated().write_pcap(&out)?,
        Variant::Vlan => trace.vlan(&[(0x8100, 100)])?.write_pcap(&out)?,
        Variant::QinQ => trace
            .vlan(&[(0x88a8, 200), (0x8100, 100)])?
            .write_pcap(&out)?,
        Variant::Ipv6 => trace.ipv6()?.write_pcap(&out)?,
        Variant::Sll => trace.relink(LinkKind::Sll)?.write_pcap(&out)?,
        Variant::Sll2 => trace.relink(LinkKind::Sll2)?.write_pcap(&out)?,
        Variant::Null => trace.relink(LinkKind::Null)?.write_pcap(&out)?,
        Variant::Raw => trace.relink(LinkKind::Raw)?.write_pcap(&out)?,
        Variant::PcapNg => trace.write_pcapng(&out)?,
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkKind {
    Sll,
    Sll2,
    Null,
    Raw,
}

/// An Ethernet frame split at its network layer (after any VLAN tags).
struct L3<'a> {
    ethertype: u16,
    packet: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Result<u16> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err("truncated frame".into()),
    }
}

fn l3(frame: &[u8]) -> Result<L3<'_>> {
    let mut at = 12;
    let mut ethertype = be16(frame, at)?;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        at += 4;
        ethertype = be16(frame, at)?;
    }
    Ok(L3 {
        ethertype,
        packet: frame.get(at + 2..).ok_or("truncated frame")?,
    })
}

/// (direction key, TCP payload length) of an IPv4/TCP packet.
fn tcp_info(ip: &[u8]) -> Option<((u32, u16), usize)> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let tcp = ip.get(ihl..total.min(ip.len()))?;
    let off = usize::from(tcp.get(12)? >> 4) * 4;
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    Some(((src, sport), tcp.len().saturating_sub(off)))
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        let mut it = c.chunks(2);
        for w in &mut it {
            let v = if w.len() == 2 {
                u16::from_be_bytes([w[0], w[1]])
            } else {
                u16::from(w[0]) << 8
            };
            sum = sum.wrapping_add(u32::from(v));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Trace {
    /// Reads a pcap file (any link type).
    pub fn read(path: &Path) -> Result<Trace> {
        let mut r = PcapReader::new(BufReader::new(File::open(path)?))?;
        let linktype = r.header().datalink;
        let mut frames = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p?;
            frames.push(Frame {
                ts: p.timestamp,
                data: p.data.into_owned(),
            });
        }
        Ok(Trace { linktype, frames })
    }

    pub fn write_pcap(&self, path: &Path) -> Result<()> {
        let header = PcapHeader {
            datalink: self.linktype,
            snaplen: 262_144,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(BufWriter::new(File::create(path)?), header)?;
        for f in &self.frames {
            w.write_packet(&PcapPacket::new(f.ts, f.data.len() as u32, &f.data))?;
        }
        Ok(())
    }

    pub fn write_pcapng(&self, path: &Path) -> Result<()> {
        let mut w = PcapNgWriter::new(BufWriter::new(File::create(path)?))?;
        // pcap-file writes EPB timestamps in nanoseconds: say so (if_tsresol = 9).
        let mut idb = InterfaceDescriptionBlock::new(self.linktype, 262_144);
        idb.options.push(InterfaceDescriptionOption::IfTsResol(9));
        w.write_pcapng_block(idb)?;
        for f in &self.frames {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: f.ts,
                original_len: f.data.len() as u32,
                data: std::borrow::Cow::Borrowed(&f.data),
                options: Vec::new(),
            })?;
        }
        Ok(())
    }

    fn require_ethernet(&self) -> Result<()> {
        if self.linktype == DataLink::ETHERNET {
            Ok(())
        } else {
            Err(format!("rewrite needs Ethernet frames, not {:?}", self.linktype).into())
        }
    }

    /// Swaps pairs of data segments of one direction that are consecutive (no data of the other
    /// direction between them); timestamps stay in order. Returns the number of swaps.
    pub fn reordered(&self) -> Result<(Trace, usize)> {
        self.require_ethernet()?;
        let info: Vec<Option<((u32, u16), usize)>> = self
            .frames
            .iter()
            .map(|f| l3(&f.data).ok().and_then(|l| tcp_info(l.packet)))
            .collect();
        let mut out = self.clone();
        let mut used = vec![false; info.len()];
        let mut swaps = 0;
        for i in 0..info.len() {
            let Some((dir, len)) = info[i] else { continue };
            if len == 0 || used[i] {
                continue;
            }
            for j in i + 1..info.len() {
                match info[j] {
                    Some((d, l)) if l > 0 && d == dir => {
                        if !used[j] {
                            let (a, b) = (out.frames[i].data.clone(), out.frames[j].data.clone());
                            out.frames[i].data = b;
                            out.frames[j].data = a;
                            used[i] = true;
                            used[j] = true;
                            swaps += 1;
                        }
                        break;
                    }
                    Some((_, l)) if l > 0 => break,
                    _ => {}
                }
            }
        }
        Ok((out, swaps))
    }

    /// Every frame twice.
    pub fn duplicated(&self) -> Trace {
        let frames = self
            .frames
            .iter()
            .flat_map(|f| [f.clone(), f.clone()])
            .collect();
        Trace {
            linktype: self.linktype,
            frames,
        }
    }

    /// Inserts VLAN tags `(TPID, VLAN id)`, outermost first.
    pub fn vlan(&self, tags: &[(u16, u16)]) -> Result<Trace> {
        self.require_ethernet()?;
        let mut out = self.clone();
        for f in &mut out.frames {
            let mut d = f.data.get(..12).ok_or("truncated frame")?.to_vec();
            for (tpid, id) in tags {
                d.extend_from_slice(&tpid.to_be_bytes());
                d.extend_from_slice(&(id & 0x0fff).to_be_bytes());
            }
            d.extend_from_slice(&f.data[12..]);
            f.data = d;
        }
        Ok(out)
    }

    /// Replaces every IPv4 header with an IPv6 header (addresses by [`ipv6_of`]) and fixes the
    /// TCP checksum; TCP headers and payloads are unchanged.
    pub fn ipv6(&self) -> Result<Trace> {
        self.require_ethernet()?;
        let mut out = self.clone();
        for f in &mut out.frames {
            let l = l3(&f.data)?;
            if l.ethertype != 0x0800 {
                continue;
            }
            let ip = l.packet;
            let ihl = usize::from(ip.first().ok_or("empty IPv4")? & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            let src = ipv6_of(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])).octets();
            let dst = ipv6_of(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])).octets();
            let proto = ip[9];
            let mut l4 = ip.get(ihl..total).ok_or("truncated IPv4")?.to_vec();
            let len = l4.len() as u32;
            if proto == 6 && l4.len() >= 20 {
                l4[16] = 0;
                l4[17] = 0;
                let c = checksum(&[&src, &dst, &len.to_be_bytes(), &[0, 0, 0, 6], &l4]);
                l4[16..18].copy_from_slice(&c.to_be_bytes());
            }
            let mut d = f.data[..12].to_vec();
            d.extend_from_slice(&0x86ddu16.to_be_bytes());
            d.extend_from_slice(&[0x60, 0, 0, 0]);
            d.extend_from_slice(&(len as u16).to_be_bytes());
            d.extend_from_slice(&[proto, 64]);
            d.extend_from_slice(&src);
            d.extend_from_slice(&dst);
            d.extend_from_slice(&l4);
            f.data = d;
        }
        Ok(out)
    }

    fn relink(&self, kind: LinkKind) -> Result<Trace> {
        self.require_ethernet()?;
        let mut frames = Vec::with_capacity(self.frames.len());
        for f in &self.frames {
            let l = l3(&f.data)?;
            let mut d = Vec::with_capacity(l.packet.len() + 20);
            let src_mac = f.data.get(6..12).ok_or("truncated frame")?;
            match kind {
                LinkKind::Sll => {
                    d.extend_from_slice(&0u16.to_be_bytes()); // packet type: to us
                    d.extend_from_slice(&772u16.to_be_bytes()); // ARPHRD_LOOPBACK
                    d.extend_from_slice(&6u16.to_be_bytes());
                    d.extend_from_slice(src_mac);
                    d.extend_from_slice(&[0, 0]);
                    d.extend_from_slice(&l.ethertype.to_be_bytes());
                }
                LinkKind::Sll2 => {
                    d.extend_from_slice(&l.ethertype.to_be_bytes());
                    d.extend_from_slice(&[0, 0]); // reserved
                    d.extend_from_slice(&1u32.to_be_bytes()); // ifindex of lo
                    d.extend_from_slice(&772u16.to_be_bytes());
                    d.push(0); // packet type
                    d.push(6);
                    d.extend_from_slice(src_mac);
                    d.extend_from_slice(&[0, 0]);
                }
                LinkKind::Null => {
                    let family: u32 = if l.ethertype == 0x86dd { 30 } else { 2 };
                    d.extend_from_slice(&family.to_le_bytes());
                }
                LinkKind::Raw => {}
            }
            d.extend_from_slice(l.packet);
            frames.push(Frame { ts: f.ts, data: d });
        }
        let linktype = match kind {
            LinkKind::Sll => DataLink::LINUX_SLL,
            LinkKind::Sll2 => DataLink::LINUX_SLL2,
            LinkKind::Null => DataLink::NULL,
            LinkKind::Raw => DataLink::RAW,
        };
        Ok(Trace { linktype, frames })
    }
}
