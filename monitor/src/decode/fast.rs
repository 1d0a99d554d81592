//! The common frame, decoded by hand: Ethernet with at most one VLAN tag (or a bare IP, loopback
//! or Linux cooked link), then IPv4 (options allowed) or IPv6 without extension headers, then an
//! unfragmented TCP segment with a complete header.
//!
//! Consumes a frame's bytes; produces the segment's fields and payload slice exactly as the general
//! path (etherparse) would, or `None` for anything else: the general path then decodes the frame,
//! every [`Skip`](super::Skip) reason included. Reads fixed offsets with bounds-checked `get`; no
//! header structs are built.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::capture::LinkType;

use super::{TcpFlags, link};

const ETHER_LEN: usize = 14;
const VLAN_LEN: usize = 4;
/// EtherTypes etherparse treats as one VLAN tag (802.1Q, 802.1ad, legacy double tagging).
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV4_MIN_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_MIN_LEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
/// IPv4 "more fragments" flag and fragment offset.
const IPV4_FRAGMENTING: u16 = 0x3fff;

/// A decoded segment's fields; `payload` borrows the frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Fast<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub payload: &'a [u8],
    pub vlan: Option<u16>,
}

/// The segment in `data`, when the frame is of the common kind.
pub(super) fn decode(linktype: LinkType, data: &[u8]) -> Option<Fast<'_>> {
    match linktype {
        LinkType::Ethernet => ethernet(data),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => ip(data, None),
        LinkType::Null | LinkType::Loop => ip(link::bsd_loopback(data).ok()?, None),
        LinkType::LinuxSll => ether_type(link::linux_sll(data).ok()?, None),
        LinkType::LinuxSll2 => ether_type(link::linux_sll2(data).ok()?, None),
    }
}

fn ethernet(data: &[u8]) -> Option<Fast<'_>> {
    let outer = be16(data, 12)?;
    let rest = data.get(ETHER_LEN..)?;
    if VLAN_TPIDS.contains(&outer) {
        let tci = be16(rest, 0)?;
        let inner = be16(rest, 2)?;
        let rest = rest.get(VLAN_LEN..)?;
        ether_type((etherparse::EtherType(inner), rest), Some(tci & 0x0fff))
    } else {
        ether_type((etherparse::EtherType(outer), rest), None)
    }
}

/// IPv4 and IPv6 EtherTypes both lead to the IP header, whose version nibble decides (as in
/// etherparse).
fn ether_type(
    (ether_type, data): (etherparse::EtherType, &[u8]),
    vlan: Option<u16>,
) -> Option<Fast<'_>> {
    match ether_type.0 {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => ip(data, vlan),
        _ => None,
    }
}

fn ip(data: &[u8], vlan: Option<u16>) -> Option<Fast<'_>> {
    let first = *data.first()?;
    let (src, dst, tcp) = match first >> 4 {
        4 => {
            let header_len = usize::from(first & 0x0f) * 4;
            if header_len < IPV4_MIN_LEN
                || be16(data, 6)? & IPV4_FRAGMENTING != 0
                || *data.get(9)? != IPPROTO_TCP
            {
                return None;
            }
            // A total length below the header (TSO captures write 0) or beyond the captured bytes
            // leaves the captured bytes as the bound, as etherparse's lax slicing does.
            let total = usize::from(be16(data, 2)?);
            let end = if total < header_len || total > data.len() {
                data.len()
            } else {
                total
            };
            (
                IpAddr::V4(Ipv4Addr::from(array::<4>(data, 12)?)),
                IpAddr::V4(Ipv4Addr::from(array::<4>(data, 16)?)),
                data.get(header_len..end)?,
            )
        }
        6 => {
            if *data.get(6)? != IPPROTO_TCP {
                return None;
            }
            // Payload length 0 (a jumbogram) or beyond the captured bytes: the captured bytes.
            let payload_len = usize::from(be16(data, 4)?);
            let end = if payload_len == 0 {
                data.len()
            } else {
                (IPV6_LEN + payload_len).min(data.len())
            };
            (
                IpAddr::V6(Ipv6Addr::from(array::<16>(data, 8)?)),
                IpAddr::V6(Ipv6Addr::from(array::<16>(data, 24)?)),
                data.get(IPV6_LEN..end)?,
            )
        }
        _ => return None,
    };
    tcp_segment(src, dst, tcp, vlan)
}

fn tcp_segment(src: IpAddr, dst: IpAddr, tcp: &[u8], vlan: Option<u16>) -> Option<Fast<'_>> {
    let header_len = usize::from(*tcp.get(12)? >> 4) * 4;
    if header_len < TCP_MIN_LEN {
        return None;
    }
    let payload = tcp.get(header_len..)?;
    let flags = *tcp.get(13)?;
    Some(Fast {
        src,
        dst,
        sport: be16(tcp, 0)?,
        dport: be16(tcp, 2)?,
        seq: be32(tcp, 4)?,
        ack: be32(tcp, 8)?,
        flags: TcpFlags {
            fin: flags & 0x01 != 0,
            syn: flags & 0x02 != 0,
            rst: flags & 0x04 != 0,
            ack: flags & 0x10 != 0,
        },
        payload,
        vlan,
    })
}

fn array<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    array(data, at).map(u16::from_be_bytes)
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    array(data, at).map(u32::from_be_bytes)
}
