//! The two capture file formats, framed with rusticata's `pcap-parser`: the file header, then one
//! record (pcap) or block (pcapng) at a time from a byte slice that starts at a record boundary.
//! Enhanced Packet Blocks, which carry nearly every packet of a pcapng file, are read in place with
//! pcap-parser's own checks (a test holds the two to the same result on random blocks), because
//! pcap-parser collects every block's options into a `Vec`: read that way, the packets of a 1 GiB
//! bulk capture took 2.5× as long from pcapng as from pcap (1.6× read in place).
//!
//! Consumes bytes; produces [`Step`]s: a packet (its timestamp, link type and a slice of the input),
//! a block that carries no packet, "need more bytes", or a corrupt header. Timestamps and lengths
//! follow libpcap's rules, so a file reads exactly as it did through libpcap: signed 32-bit pcap
//! seconds, micro- and nanosecond magics, pre-2.3 swapped lengths, records longer than the snapshot
//! length cut to it; in pcapng, per-interface link types, `if_tsresol` (powers of 10 and of 2) and
//! `if_tsoffset`, Simple and obsolete Packet Blocks, several sections.

use pcap_parser::pcapng::{
    Block, EnhancedPacketBlock, InterfaceDescriptionBlock, SimplePacketBlock, UnknownBlock,
};
use pcap_parser::{
    EPB_MAGIC, LegacyPcapBlock, PcapHeader, parse_block_be, parse_block_le, parse_pcap_frame,
    parse_pcap_frame_be, parse_pcap_header, parse_sectionheaderblock,
};

use super::super::LinkType;
use crate::base::Timestamp;

/// libpcap's largest sane capture length for the link types we decode (`MAXIMUM_SNAPLEN`): a
/// pcap record claiming more is corrupt.
pub(crate) const MAX_SNAPLEN: u32 = 262_144;
/// The largest pcapng block accepted (libpcap: an EPB with a maximal packet and 128 KiB of
/// options, at least 16 MiB); a larger length is a corrupt header.
pub(crate) const MAX_BLOCK: usize = 16 * 1024 * 1024;
/// Bytes of a pcap file header.
pub(crate) const PCAP_HEADER_LEN: usize = 24;
const SHB: u32 = 0x0A0D_0D0A;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// The obsolete Packet Block (pcap-parser leaves it unknown; libpcap reads it).
const PB: u32 = 2;
/// Block types a resynchronising scan accepts as the start of a pcapng block.
const KNOWN_BLOCKS: [u32; 10] = [1, 2, 3, 4, 5, 6, 0x0A, 0x0BAD, 0x4000_0BAD, 0x8000_0001];
/// Records that must follow a candidate in a row before a resynchronising scan trusts it.
const RESYNC_CHAIN: usize = 3;

/// What the front of the input holds.
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// A packet; the record was `len` bytes long.
    Packet {
        len: usize,
        ts: Timestamp,
        linktype: LinkType,
        data: &'a [u8],
    },
    /// A block or record without a packet for us (pcapng metadata, a packet on an interface whose
    /// link type we cannot decode): `len` bytes to skip. `unsupported` names that link type.
    Skip {
        len: usize,
        unsupported: Option<u16>,
    },
    /// The record is not complete: at least this many bytes (from the start of the input) are
    /// needed.
    NeedMore(usize),
    /// The record header cannot be right (a length beyond any sane bound, a block that does not
    /// parse): why.
    Corrupt(String),
}

/// Why a file cannot be read at all (the caller adds the path).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Not pcap or pcapng, truncated header, unsupported version: the one-line reason.
    Bad(String),
    /// The header is not complete yet: this many bytes are needed.
    NeedMore(usize),
}

/// One pcapng interface.
#[derive(Clone, Debug)]
pub(crate) struct Iface {
    linktype: Result<LinkType, u16>,
    /// Timestamp units per second.
    tsresol: u64,
    tsoffset: i64,
}

/// How caplen and len are stored (pcap before version 2.3 had them the other way round).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lengths {
    Normal,
    Swapped,
    /// Version 2.3: swapped only when caplen > len.
    Maybe,
}

/// The layout of one file, learned from its header (and, for pcapng, its blocks so far).
#[derive(Clone, Debug)]
pub(crate) enum Layout {
    Pcap {
        big_endian: bool,
        nanos: bool,
        /// Kuznetzov's patched format: 24-byte record headers.
        patched: bool,
        lengths: Lengths,
        /// libpcap's adjusted snapshot length: longer records are cut to it.
        snapshot: u32,
        linktype: Result<LinkType, u32>,
    },
    PcapNg {
        big_endian: bool,
        ifaces: Vec<Iface>,
        /// The first interface's adjusted snapshot length (Simple Packet Blocks are cut to it).
        snapshot: u32,
    },
}

/// libpcap's `pcap_adjust_snapshot`: 0 or too large means the maximum.
fn adjust_snapshot(snaplen: u32) -> u32 {
    if snaplen == 0 || snaplen > MAX_SNAPLEN {
        MAX_SNAPLEN
    } else {
        snaplen
    }
}

fn u32_at(b: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

fn u16_at(b: &[u8], at: usize, big_endian: bool) -> Option<u16> {
    let bytes: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if big_endian {
        u16::from_be_bytes(bytes)
    } else {
        u16::from_le_bytes(bytes)
    })
}

impl Layout {
    /// A layout before the header is read (no packet frames with it).
    pub(crate) fn unknown() -> Self {
        Layout::PcapNg {
            big_endian: false,
            ifaces: Vec::new(),
            snapshot: MAX_SNAPLEN,
        }
    }

    /// Reads the file header at the start of `b`; returns the layout and the header's length.
    pub(crate) fn open(b: &[u8]) -> Result<(Layout, usize), OpenError> {
        let Some(magic) = b.get(..4) else {
            return Err(OpenError::NeedMore(4));
        };
        if u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]) == SHB {
            return Self::open_pcapng(b);
        }
        let le = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
        let known = [0xa1b2_c3d4, 0xa1b2_3c4d, 0xa1b2_cd34];
        if !known.contains(&le) && !known.contains(&le.swap_bytes()) {
            return Err(OpenError::Bad(
                "not a pcap or pcapng capture (unknown file format)".into(),
            ));
        }
        if b.len() < PCAP_HEADER_LEN {
            return Err(OpenError::NeedMore(PCAP_HEADER_LEN));
        }
        let (_, h): (_, PcapHeader) = parse_pcap_header(b).map_err(|_| {
            OpenError::Bad("not a pcap or pcapng capture (unknown file format)".into())
        })?;
        if h.version_major < 2 {
            return Err(OpenError::Bad("archaic pcap savefile format".into()));
        }
        let lengths = match (h.version_major, h.version_minor) {
            (2, 0..=2) | (543, 0) => Lengths::Swapped,
            (2, 3) => Lengths::Maybe,
            (2, 4) => Lengths::Normal,
            (major, minor) => {
                return Err(OpenError::Bad(format!(
                    "unsupported pcap savefile version {major}.{minor}"
                )));
            }
        };
        let raw = (h.network.0 as u32) & 0x03FF_FFFF;
        let linktype = LinkType::from_linktype(raw as i32).ok_or(raw);
        let patched = h.is_modified_format();
        let mut snapshot = adjust_snapshot(h.snaplen);
        if patched && linktype == Ok(LinkType::Ethernet) {
            snapshot = snapshot.saturating_add(14);
        }
        Ok((
            Layout::Pcap {
                big_endian: h.is_bigendian(),
                nanos: h.is_nanosecond_precision(),
                patched,
                lengths,
                snapshot,
                linktype,
            },
            PCAP_HEADER_LEN,
        ))
    }

    fn open_pcapng(b: &[u8]) -> Result<(Layout, usize), OpenError> {
        let Some(bom) = b.get(8..12) else {
            return Err(OpenError::NeedMore(12));
        };
        let bom = u32::from_le_bytes([bom[0], bom[1], bom[2], bom[3]]);
        let big_endian = match bom {
            BYTE_ORDER_MAGIC => false,
            m if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
            _ => {
                return Err(OpenError::Bad(
                    "not a pcap or pcapng capture (unknown file format)".into(),
                ));
            }
        };
        let len = u32_at(b, 4, big_endian).unwrap_or(0) as usize;
        if !(28..=1024 * 1024).contains(&len) || !len.is_multiple_of(4) {
            return Err(OpenError::Bad(format!(
                "pcapng Section Header Block has an invalid length {len}"
            )));
        }
        if b.len() < len {
            return Err(OpenError::NeedMore(len));
        }
        let shb = match parse_sectionheaderblock(&b[..len]) {
            Ok((_, shb)) => shb,
            Err(_) => {
                return Err(OpenError::Bad(
                    "pcapng Section Header Block does not parse".into(),
                ));
            }
        };
        if !(shb.major_version == 1 && matches!(shb.minor_version, 0 | 2)) {
            return Err(OpenError::Bad(format!(
                "unsupported pcapng savefile version {}.{}",
                shb.major_version, shb.minor_version
            )));
        }
        Ok((
            Layout::PcapNg {
                big_endian,
                ifaces: Vec::new(),
                snapshot: MAX_SNAPLEN,
            },
            len,
        ))
    }

    /// The link type packets have (pcap), or the first interface's (pcapng, once described);
    /// `Err` carries the number of one we cannot decode.
    pub(crate) fn first_linktype(&self) -> Option<Result<LinkType, u32>> {
        match self {
            Layout::Pcap { linktype, .. } => Some(*linktype),
            Layout::PcapNg { ifaces, .. } => ifaces.first().map(|i| i.linktype.map_err(u32::from)),
        }
    }

    /// True when some described interface has a link type we decode (pcap: the file's).
    pub(crate) fn any_decodable(&self) -> bool {
        match self {
            Layout::Pcap { linktype, .. } => linktype.is_ok(),
            Layout::PcapNg { ifaces, .. } => ifaces.iter().any(|i| i.linktype.is_ok()),
        }
    }

    /// For a plain pcap file (16-byte record headers, caplen before len) of a link type we
    /// decode: what [`frame_pcap`] needs to frame its records without [`Layout::next`].
    pub(crate) fn plain_pcap(&self) -> Option<PlainPcap> {
        match *self {
            Layout::Pcap {
                big_endian,
                nanos,
                patched: false,
                lengths: Lengths::Normal,
                snapshot,
                linktype: Ok(linktype),
            } => Some(PlainPcap {
                big_endian,
                nanos,
                snapshot,
                linktype,
            }),
            _ => None,
        }
    }

    pub(crate) fn is_pcapng(&self) -> bool {
        matches!(self, Layout::PcapNg { .. })
    }

    /// The record or block at the front of `b`.
    pub(crate) fn next<'a>(&mut self, b: &'a [u8]) -> Step<'a> {
        match self {
            Layout::Pcap {
                big_endian,
                nanos,
                patched,
                lengths,
                snapshot,
                linktype,
            } => pcap_record(
                b,
                *big_endian,
                *nanos,
                *patched,
                *lengths,
                *snapshot,
                *linktype,
            ),
            Layout::PcapNg { .. } => self.pcapng_block(b),
        }
    }

    #[inline(never)]
    fn pcapng_block<'a>(&mut self, b: &'a [u8]) -> Step<'a> {
        let Layout::PcapNg {
            big_endian,
            ifaces,
            snapshot,
        } = self
        else {
            return Step::Corrupt("not pcapng".into());
        };
        let Some(block_type) = u32_at(b, 0, false) else {
            return Step::NeedMore(8);
        };
        // A Section Header Block says its own byte order (a new section may change it).
        let be = if block_type == SHB {
            match u32_at(b, 8, false) {
                None => return Step::NeedMore(12),
                Some(BYTE_ORDER_MAGIC) => false,
                Some(m) if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
                Some(_) => {
                    return Step::Corrupt(
                        "Section Header Block with a bad byte-order magic".into(),
                    );
                }
            }
        } else {
            *big_endian
        };
        let Some(len) = u32_at(b, 4, be) else {
            return Step::NeedMore(8);
        };
        let len = len as usize;
        if len < 12 || !len.is_multiple_of(4) || len > MAX_BLOCK {
            return Step::Corrupt(format!("invalid pcapng block length {len}"));
        }
        let Some(block) = b.get(..len) else {
            return Step::NeedMore(len);
        };
        if u32_at(block, len - 4, be) != Some(len as u32) {
            return Step::Corrupt(format!(
                "pcapng block length {len} does not match its trailer"
            ));
        }
        let block_type = if be {
            block_type.swap_bytes()
        } else {
            block_type
        };
        if block_type == EPB_MAGIC
            && let Some(step) = enhanced_packet(ifaces, block, be)
        {
            return step;
        }
        let parsed = if be {
            parse_block_be(block)
        } else {
            parse_block_le(block)
        };
        let parsed = match parsed {
            Ok((_, parsed)) => parsed,
            Err(_) => {
                return Step::Corrupt(format!(
                    "pcapng block of type {block_type:#x} does not parse"
                ));
            }
        };
        let skip = Step::Skip {
            len,
            unsupported: None,
        };
        match parsed {
            Block::SectionHeader(_) => {
                *big_endian = be;
                ifaces.clear();
                skip
            }
            Block::InterfaceDescription(idb) => {
                add_interface(ifaces, snapshot, &idb);
                skip
            }
            Block::EnhancedPacket(EnhancedPacketBlock {
                if_id,
                ts_high,
                ts_low,
                caplen,
                data,
                ..
            }) => packet(ifaces, len, if_id, ts_high, ts_low, caplen as usize, data),
            Block::SimplePacket(SimplePacketBlock { origlen, data, .. }) => {
                let caplen = origlen.min(*snapshot) as usize;
                packet(ifaces, len, 0, 0, 0, caplen, data)
            }
            Block::Unknown(UnknownBlock {
                block_type: PB,
                data,
                ..
            }) => {
                // interface (u16), drops (u16), timestamp high and low, caplen, len, data.
                let (Some(if_id), Some(hi), Some(lo), Some(caplen)) = (
                    u16_at(data, 0, be),
                    u32_at(data, 4, be),
                    u32_at(data, 8, be),
                    u32_at(data, 12, be),
                ) else {
                    return Step::Corrupt("Packet Block too short".into());
                };
                let body = data.get(20..).unwrap_or_default();
                packet(ifaces, len, u32::from(if_id), hi, lo, caplen as usize, body)
            }
            _ => skip,
        }
    }
}

/// An Enhanced Packet Block (the block of nearly every packet) read in place, exactly as
/// pcap-parser reads it but without collecting its options (which pcap-parser does into a `Vec`,
/// per packet, and which no packet needs: a malformed option ends the list, it never fails the
/// block). `None` where pcap-parser would fail the block, so that its error is the one reported.
/// `block` is the whole block, its length and trailer already checked.
#[inline]
fn enhanced_packet<'a>(ifaces: &[Iface], block: &'a [u8], be: bool) -> Option<Step<'a>> {
    let len = block.len();
    // Type, length, interface, timestamp high and low, captured and original lengths: 28 bytes,
    // the trailing length 4.
    let room = len.checked_sub(32)?;
    let if_id = u32_at(block, 8, be)?;
    let ts_high = u32_at(block, 12, be)?;
    let ts_low = u32_at(block, 16, be)?;
    let caplen = u32_at(block, 20, be)?;
    // In `usize` the padding cannot overflow (pcap-parser rejects lengths near `u32::MAX`, which
    // are beyond any block anyway).
    let padded = (caplen as usize + 3) & !3;
    if padded > room {
        return None;
    }
    let data = block.get(28..28 + padded)?;
    Some(packet(
        ifaces,
        len,
        if_id,
        ts_high,
        ts_low,
        caplen as usize,
        data,
    ))
}

fn add_interface(ifaces: &mut Vec<Iface>, snapshot: &mut u32, idb: &InterfaceDescriptionBlock<'_>) {
    let raw = idb.linktype.0 as u16;
    let tsresol = resolution(idb.if_tsresol).unwrap_or(1_000_000);
    if ifaces.is_empty() {
        *snapshot = adjust_snapshot(idb.snaplen);
    }
    ifaces.push(Iface {
        linktype: LinkType::from_linktype(i32::from(raw)).ok_or(raw),
        tsresol,
        tsoffset: idb.if_tsoffset,
    });
}

/// Units per second of an `if_tsresol` value: 10^-n, or 2^-n with the high bit set.
fn resolution(tsresol: u8) -> Option<u64> {
    if tsresol & 0x80 != 0 {
        let shift = tsresol & 0x7f;
        (shift <= 63).then(|| 1u64 << shift)
    } else {
        10u64.checked_pow(u32::from(tsresol))
    }
}

fn packet<'a>(
    ifaces: &[Iface],
    len: usize,
    if_id: u32,
    ts_high: u32,
    ts_low: u32,
    caplen: usize,
    data: &'a [u8],
) -> Step<'a> {
    let Some(iface) = ifaces.get(if_id as usize) else {
        return Step::Corrupt(format!(
            "a packet on interface {if_id}, which no Interface Description Block describes"
        ));
    };
    let linktype = match iface.linktype {
        Ok(linktype) => linktype,
        Err(raw) => {
            return Step::Skip {
                len,
                unsupported: Some(raw),
            };
        }
    };
    let Some(data) = data.get(..caplen) else {
        return Step::Corrupt(format!(
            "captured length {caplen} beyond its block of {len} bytes"
        ));
    };
    let t = u64::from(ts_high) << 32 | u64::from(ts_low);
    Step::Packet {
        len,
        ts: pcapng_timestamp(t, iface.tsresol, iface.tsoffset),
        linktype,
        data,
    }
}

/// A pcapng timestamp in units of `tsresol` per second since `tsoffset`, in microseconds: the
/// fraction scaled down exactly as libpcap scales it to nanoseconds and trustwatch then to
/// microseconds (both round down, so one exact division gives the same number).
fn pcapng_timestamp(t: u64, tsresol: u64, tsoffset: i64) -> Timestamp {
    // The two usual resolutions (micro- and nanoseconds) by constants, which the compiler divides
    // by multiplying, with the same results; any other by the general division.
    let (secs, micros) = match tsresol {
        1_000_000 => (t / 1_000_000, t % 1_000_000),
        1_000_000_000 => (t / 1_000_000_000, t % 1_000_000_000 / 1000),
        _ => (t / tsresol, scaled_fraction(t % tsresol, tsresol)),
    };
    let secs = secs.wrapping_add(tsoffset as u64) as i64;
    Timestamp::from_micros(secs.saturating_mul(1_000_000).saturating_add(micros as i64))
}

/// `frac` units of `1/tsresol` s in whole microseconds, rounded down.
fn scaled_fraction(frac: u64, tsresol: u64) -> u64 {
    (u128::from(frac) * 1_000_000 / u128::from(tsresol)) as u64
}

/// One pcap record.
#[inline]
fn pcap_record(
    b: &[u8],
    big_endian: bool,
    nanos: bool,
    patched: bool,
    lengths: Lengths,
    snapshot: u32,
    linktype: Result<LinkType, u32>,
) -> Step<'_> {
    let Some(head) = b.first_chunk::<16>() else {
        return Step::NeedMore(if patched { 24 } else { 16 });
    };
    let word = |at: usize| {
        let w = [head[at], head[at + 1], head[at + 2], head[at + 3]];
        if big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    let (mut caplen, mut origlen) = (word(8), word(12));
    if lengths == Lengths::Swapped || (lengths == Lengths::Maybe && caplen > origlen) {
        std::mem::swap(&mut caplen, &mut origlen);
    }
    if caplen > MAX_SNAPLEN {
        return Step::Corrupt(format!(
            "invalid packet capture length {caplen}, bigger than the maximum of {MAX_SNAPLEN}"
        ));
    }
    let header = if patched { 24 } else { 16 };
    let len = header + caplen as usize;
    if b.len() < len {
        return Step::NeedMore(len);
    }
    let (ts_sec, ts_frac, data) = if patched || lengths != Lengths::Normal {
        // Layouts pcap-parser does not frame (patched records, swapped lengths).
        (word(0), word(4), &b[header..len])
    } else {
        let parsed = if big_endian {
            parse_pcap_frame_be(&b[..len])
        } else {
            parse_pcap_frame(&b[..len])
        };
        match parsed {
            Ok((
                _,
                LegacyPcapBlock {
                    ts_sec,
                    ts_usec,
                    data,
                    ..
                },
            )) => (ts_sec, ts_usec, data),
            Err(_) => return Step::Corrupt("record does not parse".into()),
        }
    };
    let Ok(linktype) = linktype else {
        return Step::Skip {
            len,
            unsupported: None,
        };
    };
    // libpcap reads both as signed 32-bit numbers; a record longer than the snapshot length is
    // cut to it.
    let secs = i64::from(ts_sec as i32);
    let frac = i64::from(ts_frac as i32);
    let micros = if nanos { frac.div_euclid(1000) } else { frac };
    let keep = data.len().min(snapshot as usize);
    Step::Packet {
        len,
        ts: Timestamp::from_micros(secs * 1_000_000 + micros),
        linktype,
        data: &data[..keep],
    }
}

/// The per-file constants of a plain pcap file (see [`Layout::plain_pcap`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlainPcap {
    big_endian: bool,
    nanos: bool,
    snapshot: u32,
    linktype: LinkType,
}

/// A complete, sane record of a plain pcap file at the front of `b`: (record length, timestamp,
/// link type, captured bytes). `None` for anything else (a record cut by the buffer's end, a
/// corrupt length), which [`Layout::next`] then handles. This is the per-packet path of the
/// common file; it gives what [`Layout::next`] gives.
#[inline(always)]
pub(crate) fn frame_pcap(p: PlainPcap, b: &[u8]) -> Option<(usize, Timestamp, LinkType, &[u8])> {
    let head = b.first_chunk::<16>()?;
    let caplen = [head[8], head[9], head[10], head[11]];
    let caplen = if p.big_endian {
        u32::from_be_bytes(caplen)
    } else {
        u32::from_le_bytes(caplen)
    };
    if caplen > MAX_SNAPLEN || b.len() < 16 + caplen as usize {
        return None;
    }
    let (_, frame) = if p.big_endian {
        parse_pcap_frame_be(b).ok()?
    } else {
        parse_pcap_frame(b).ok()?
    };
    let frac = i64::from(frame.ts_usec as i32);
    let micros = if p.nanos { frac.div_euclid(1000) } else { frac };
    let ts = Timestamp::from_micros(i64::from(frame.ts_sec as i32) * 1_000_000 + micros);
    let data = &frame.data[..frame.data.len().min(p.snapshot as usize)];
    Some((16 + caplen as usize, ts, p.linktype, data))
}

/// What a resynchronising scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resync {
    /// Records frame again from this offset.
    Found(usize),
    /// The candidate at this offset needs more bytes to be judged (read on, keeping it).
    NeedMore(usize),
    /// No offset of the input qualifies.
    NotFound,
}

/// Where, from `from` on in `b` (in 4-byte steps in pcapng), records plausibly start again after
/// a corrupt header: the first offset from which [`RESYNC_CHAIN`] records in a row parse (fewer
/// when the input ends exactly after them).
pub(crate) fn resync(layout: &Layout, b: &[u8], from: usize, at_eof: bool) -> Resync {
    let step = if layout.is_pcapng() { 4 } else { 1 };
    let header = match layout {
        Layout::Pcap { patched: true, .. } => 24,
        Layout::Pcap { .. } => 16,
        Layout::PcapNg { .. } => 12,
    };
    let mut at = from;
    while at < b.len() {
        let rest = &b[at..];
        if rest.len() < header {
            return if at_eof {
                Resync::NotFound
            } else {
                Resync::NeedMore(at)
            };
        }
        if plausible_start(layout, rest) {
            match chain_holds(layout, rest, at_eof) {
                Some(true) => return Resync::Found(at),
                Some(false) => {}
                None => return Resync::NeedMore(at),
            }
        }
        at += step;
    }
    Resync::NotFound
}

/// Bytes a resynchronising scan may need past a candidate to judge it.
pub(crate) const RESYNC_LOOKAHEAD: usize = RESYNC_CHAIN * (MAX_SNAPLEN as usize + 64);

/// A cheap first test of a candidate record start.
fn plausible_start(layout: &Layout, b: &[u8]) -> bool {
    match layout {
        Layout::Pcap {
            big_endian,
            patched,
            nanos,
            ..
        } => {
            let header = if *patched { 24 } else { 16 };
            let (Some(frac), Some(caplen), Some(origlen)) = (
                u32_at(b, 4, *big_endian),
                u32_at(b, 8, *big_endian),
                u32_at(b, 12, *big_endian),
            ) else {
                return false;
            };
            b.len() >= header
                && caplen <= MAX_SNAPLEN
                && caplen <= origlen
                && origlen <= MAX_SNAPLEN.max(65_535) * 4
                && frac < if *nanos { 1_000_000_000 } else { 1_000_000 }
        }
        Layout::PcapNg { big_endian, .. } => {
            let (Some(ty), Some(len)) = (u32_at(b, 0, *big_endian), u32_at(b, 4, *big_endian))
            else {
                return false;
            };
            (KNOWN_BLOCKS.contains(&ty) || u32_at(b, 0, false) == Some(SHB))
                && len >= 12
                && len % 4 == 0
                && len as usize <= MAX_BLOCK
        }
    }
}

/// Do the records from `b` on frame one after another? `None` when more bytes are needed to
/// tell.
fn chain_holds(layout: &Layout, b: &[u8], at_eof: bool) -> Option<bool> {
    let mut probe = layout.clone();
    let mut at = 0;
    for _ in 0..RESYNC_CHAIN {
        if at == b.len() {
            return if at_eof { Some(at > 0) } else { None };
        }
        let rest = &b[at..];
        match probe.next(rest) {
            Step::Packet { len, .. } | Step::Skip { len, .. } if plausible_start(&probe, rest) => {
                at += len
            }
            Step::NeedMore(_) if !at_eof => return None,
            // Only a chain that ends exactly with the file counts there (a record cut short
            // right after a candidate is too weak a sign).
            _ => return Some(false),
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_resolutions() {
        assert_eq!(resolution(6), Some(1_000_000));
        assert_eq!(resolution(9), Some(1_000_000_000));
        assert_eq!(resolution(0x80 | 20), Some(1 << 20));
        assert_eq!(resolution(20), None);
        // 1.5 s at 2^-20 units per second.
        let t = 3 * (1u64 << 19);
        assert_eq!(
            pcapng_timestamp(t, 1 << 20, 0),
            Timestamp::from_micros(1_500_000)
        );
        // 10^-3 units and an offset of 100 s.
        assert_eq!(
            pcapng_timestamp(1234, 1000, 100),
            Timestamp::from_micros(101_234_000)
        );
        // 10^-9: nanoseconds round down to microseconds.
        assert_eq!(
            pcapng_timestamp(1_000_001_999, 1_000_000_000, 0),
            Timestamp::from_micros(1_000_001)
        );
    }

    /// The in-place Enhanced Packet Block reader gives what pcap-parser's block gives, through the
    /// same `packet`, for every block pcap-parser accepts, and declines every block it rejects:
    /// random blocks of both byte orders, with and without options (well-formed or not), captured
    /// lengths within, at and beyond the block, lengths that would overflow, unknown interfaces.
    #[test]
    fn enhanced_packet_blocks_read_as_pcap_parser_reads_them() {
        let ifaces = [
            Iface {
                linktype: Ok(LinkType::Ethernet),
                tsresol: 1_000_000,
                tsoffset: 0,
            },
            Iface {
                linktype: Err(147),
                tsresol: 1_000_000_000,
                tsoffset: 7,
            },
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % n
        };
        let (mut accepted, mut declined) = (0, 0);
        for _ in 0..20_000 {
            let be = next(2) == 1;
            let put = |b: &mut Vec<u8>, v: u32| {
                b.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() })
            };
            let data_area = 4 * next(24) as usize;
            let options = 4 * next(8) as usize;
            let len = 32 + data_area + options;
            let caplen = match next(8) {
                0 => u32::MAX - next(6) as u32,
                1 => (data_area + options + next(12) as usize) as u32,
                _ => next(data_area as u64 + 1) as u32,
            };
            let mut block = Vec::with_capacity(len);
            put(&mut block, EPB_MAGIC);
            put(&mut block, len as u32);
            put(&mut block, next(3) as u32);
            put(&mut block, next(1 << 20) as u32);
            put(&mut block, next(1 << 32) as u32);
            put(&mut block, caplen);
            put(&mut block, caplen.wrapping_add(next(3) as u32));
            block.extend((0..data_area).map(|_| next(256) as u8));
            // Options: some well-formed (code, length, padded value), some arbitrary bytes.
            let mut left = options;
            while left >= 4 {
                if next(2) == 0 {
                    let value = 4 * next(left as u64 / 4) as usize;
                    for half in [next(5) as u16, value as u16] {
                        block.extend_from_slice(&if be {
                            half.to_be_bytes()
                        } else {
                            half.to_le_bytes()
                        });
                    }
                    block.extend((0..value).map(|_| next(256) as u8));
                    left -= 4 + value;
                } else {
                    block.extend((0..4).map(|_| next(256) as u8));
                    left -= 4;
                }
            }
            put(&mut block, len as u32);
            assert_eq!(block.len(), len);

            let fast = enhanced_packet(&ifaces, &block, be);
            let parsed = if be {
                parse_block_be(&block)
            } else {
                parse_block_le(&block)
            };
            match parsed {
                Ok((_, Block::EnhancedPacket(epb))) => {
                    let want = packet(
                        &ifaces,
                        len,
                        epb.if_id,
                        epb.ts_high,
                        epb.ts_low,
                        epb.caplen as usize,
                        epb.data,
                    );
                    let fast = fast.expect("a block pcap-parser accepts");
                    assert_eq!(format!("{fast:?}"), format!("{want:?}"));
                    accepted += 1;
                }
                _ => {
                    assert!(fast.is_none(), "a block pcap-parser rejects: {block:02x?}");
                    declined += 1;
                }
            }
        }
        // Both kinds were exercised.
        assert!(
            accepted > 10_000 && declined > 1_000,
            "{accepted} / {declined}"
        );
    }

    /// The micro- and nanosecond shortcuts give what the general division gives.
    #[test]
    fn usual_resolutions_match_the_general_division() {
        let general = |t: u64, tsresol: u64, tsoffset: i64| {
            let secs = (t / tsresol).wrapping_add(tsoffset as u64) as i64;
            let micros = scaled_fraction(t % tsresol, tsresol) as i64;
            Timestamp::from_micros(secs.saturating_mul(1_000_000).saturating_add(micros))
        };
        // A spread of values (an LCG), the edges of each second and of the u64 range.
        let mut t = 0x2545_f491_4f6c_dd1du64;
        let mut values = vec![0, 1, 999, 1000, 999_999, 1_000_000, 999_999_999, u64::MAX];
        for _ in 0..10_000 {
            t = t.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            values.push(t);
            values.push(t % 4_000_000_000_000_000_000);
        }
        for &t in &values {
            for tsresol in [1_000_000, 1_000_000_000] {
                for tsoffset in [0, -86_400, 1 << 40] {
                    assert_eq!(
                        pcapng_timestamp(t, tsresol, tsoffset),
                        general(t, tsresol, tsoffset),
                        "t {t}, resolution {tsresol}, offset {tsoffset}"
                    );
                }
            }
        }
    }
}
