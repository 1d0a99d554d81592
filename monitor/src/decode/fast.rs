//! The common frame, decoded by hand: Ethernet with at most one VLAN tag (or a bare IP, loopback
//! or Linux cooked link), then IPv4 (options allowed) or IPv6 without extension headers, then an
//! unfragmented TCP segment with a complete header.
//!
//! Consumes a frame's bytes; produces the segment (fields and payload slice) exactly as the general
//! path (etherparse) would, or `None` for anything else: the general path then decodes the frame,
//! every [`Skip`](super::Skip) reason included. Each header is bounds-checked once
//! (`first_chunk`) and read at fixed offsets; no header structs are built.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::base::Timestamp;
use crate::capture::LinkType;

use super::{TcpFlags, TcpSegment, link};

const ETHER_LEN: usize = 14;
const VLAN_LEN: usize = 4;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV4_MIN_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_MIN_LEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
/// IPv4 "more fragments" flag and fragment offset.
const IPV4_FRAGMENTING: u16 = 0x3fff;

/// The segment in `data`, when the frame is of the common kind.
#[inline]
pub(super) fn decode(linktype: LinkType, data: &[u8], ts: Timestamp) -> Option<TcpSegment<'_>> {
    match linktype {
        LinkType::Ethernet => ethernet(data, ts),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => ip(data, None, ts),
        LinkType::Null | LinkType::Loop => ip(link::bsd_loopback(data).ok()?, None, ts),
        LinkType::LinuxSll => ether_type(link::linux_sll(data).ok()?, None, ts),
        LinkType::LinuxSll2 => ether_type(link::linux_sll2(data).ok()?, None, ts),
    }
}

#[inline]
fn ethernet(data: &[u8], ts: Timestamp) -> Option<TcpSegment<'_>> {
    let head = data.first_chunk::<18>()?;
    let outer = u16::from_be_bytes([head[12], head[13]]);
    match outer {
        // EtherTypes etherparse treats as one VLAN tag (802.1Q, 802.1ad, legacy double tagging).
        0x8100 | 0x88a8 | 0x9100 => {
            let tci = u16::from_be_bytes([head[14], head[15]]);
            let inner = u16::from_be_bytes([head[16], head[17]]);
            let rest = data.get(ETHER_LEN + VLAN_LEN..)?;
            ether_type((etherparse::EtherType(inner), rest), Some(tci & 0x0fff), ts)
        }
        _ => ether_type((etherparse::EtherType(outer), &data[ETHER_LEN..]), None, ts),
    }
}

/// IPv4 and IPv6 EtherTypes both lead to the IP header, whose version nibble decides (as in
/// etherparse).
#[inline]
fn ether_type(
    (ether_type, data): (etherparse::EtherType, &[u8]),
    vlan: Option<u16>,
    ts: Timestamp,
) -> Option<TcpSegment<'_>> {
    match ether_type.0 {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => ip(data, vlan, ts),
        _ => None,
    }
}

#[inline]
fn ip(data: &[u8], vlan: Option<u16>, ts: Timestamp) -> Option<TcpSegment<'_>> {
    let first = *data.first()?;
    let (src, dst, tcp) = match first >> 4 {
        4 => {
            let h = data.first_chunk::<IPV4_MIN_LEN>()?;
            let header_len = usize::from(first & 0x0f) * 4;
            if header_len < IPV4_MIN_LEN
                || u16::from_be_bytes([h[6], h[7]]) & IPV4_FRAGMENTING != 0
                || h[9] != IPPROTO_TCP
            {
                return None;
            }
            // A total length below the header (TSO captures write 0) or beyond the captured bytes
            // leaves the captured bytes as the bound, as etherparse's lax slicing does.
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let end = if total < header_len || total > data.len() {
                data.len()
            } else {
                total
            };
            (
                IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
                IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
                data.get(header_len..end)?,
            )
        }
        6 => {
            let h = data.first_chunk::<IPV6_LEN>()?;
            if h[6] != IPPROTO_TCP {
                return None;
            }
            // Payload length 0 (a jumbogram) or beyond the captured bytes: the captured bytes.
            let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let end = if payload_len == 0 {
                data.len()
            } else {
                (IPV6_LEN + payload_len).min(data.len())
            };
            let addr = |at: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&h[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            (addr(8), addr(24), &data[IPV6_LEN..end])
        }
        _ => return None,
    };
    tcp_segment(src, dst, tcp, vlan, ts)
}

#[inline]
fn tcp_segment(
    src: IpAddr,
    dst: IpAddr,
    tcp: &[u8],
    vlan: Option<u16>,
    ts: Timestamp,
) -> Option<TcpSegment<'_>> {
    let h = tcp.first_chunk::<TCP_MIN_LEN>()?;
    let header_len = usize::from(h[12] >> 4) * 4;
    if header_len < TCP_MIN_LEN {
        return None;
    }
    let payload = tcp.get(header_len..)?;
    let flags = h[13];
    Some(TcpSegment {
        ts,
        src,
        dst,
        sport: u16::from_be_bytes([h[0], h[1]]),
        dport: u16::from_be_bytes([h[2], h[3]]),
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        flags: TcpFlags {
            fin: flags & 0x01 != 0,
            syn: flags & 0x02 != 0,
            rst: flags & 0x04 != 0,
            ack: flags & 0x10 != 0,
        },
        payload,
        vlan,
        index: 0,
    })
}
