//! Decode: link layer → IP → TCP.
//!
//! Consumes a [`Frame`] (a borrowed [`Packet`](crate::capture::Packet)); produces a [`TcpSegment`]
//! (addresses, ports, sequence numbers, flags and a zero-copy payload slice) or a [`Skip`] reason
//! that the caller counts.

//!
//! Ethernet (802.1Q/802.1ad tags, PPPoE sessions), Linux cooked v1/v2, BSD loopback and raw IP
//! links are unwrapped by [`link`]; IPv4 (options), IPv6 (extension headers) and TCP are sliced by
//! `etherparse`'s lax parser, which keeps whatever a short snap length captured. The common frame
//! (at most one VLAN tag, IPv6 without extension headers, unfragmented TCP) takes [`fast`], which
//! reads the same fields in place and gives the same result. No allocation and no copy: the payload
//! borrows the frame, bounded by the IP length (so Ethernet padding never becomes payload) and by
//! the captured bytes.

mod fast;
mod link;

use std::net::IpAddr;

use etherparse::{IpNumber, LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use crate::base::Timestamp;
use crate::capture::{Frame, LinkType};

/// TCP flags we act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// One TCP segment with its endpoints; `payload` borrows the frame.
#[derive(Clone, Copy, Debug)]
pub struct TcpSegment<'a> {
    pub ts: Timestamp,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub payload: &'a [u8],
    /// Outermost VLAN id, when the frame was tagged.
    pub vlan: Option<u16>,
    /// The packet's position in the capture (set by the pipeline; 0 from [`decode`]): orders flows
    /// that close at the same moment the same way however the flows are spread over threads.
    pub index: u64,
}

/// Why a packet produced no TCP segment (each reason is counted in [`crate::stats::Stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not IP, or IP carrying something other than TCP (UDP, ICMP, ...).
    NotTcp,
    /// An IPv4 fragment or IPv6 Fragment header: counted and skipped, never reassembled.
    Fragment,
    /// Headers cut short by the snap length or corrupt.
    Malformed,
}

/// Decodes one captured frame down to its TCP segment.
pub fn decode<'a>(pkt: &Frame<'a>) -> Result<TcpSegment<'a>, Skip> {
    match fast::decode(pkt.linktype, pkt.data, pkt.ts) {
        Some(seg) => Ok(seg),
        None => decode_general(pkt),
    }
}

/// Any frame we decode, through etherparse (and the link shims).
#[inline(never)]
fn decode_general<'a>(pkt: &Frame<'a>) -> Result<TcpSegment<'a>, Skip> {
    let data: &'a [u8] = pkt.data;
    let sliced = match pkt.linktype {
        LinkType::Ethernet => LaxSlicedPacket::from_ethernet(data).map_err(|_| Skip::Malformed)?,
        LinkType::LinuxSll => {
            let (ether_type, rest) = link::linux_sll(data)?;
            LaxSlicedPacket::from_ether_type(ether_type, rest)
        }
        LinkType::LinuxSll2 => {
            let (ether_type, rest) = link::linux_sll2(data)?;
            LaxSlicedPacket::from_ether_type(ether_type, rest)
        }
        LinkType::Null | LinkType::Loop => from_ip(link::bsd_loopback(data)?)?,
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => from_ip(data)?,
    };
    let vlan = outer_vlan(&sliced);
    let sliced = match pppoe_payload(&sliced) {
        Some(ip) => from_ip(link::pppoe_session(ip)?)?,
        None => sliced,
    };
    tcp_segment(pkt, &sliced, vlan)
}

fn from_ip(data: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    LaxSlicedPacket::from_ip(data).map_err(|_| Skip::Malformed)
}

/// The id of the first (outermost) VLAN tag.
fn outer_vlan(sliced: &LaxSlicedPacket<'_>) -> Option<u16> {
    sliced.link_exts.iter().find_map(|ext| match ext {
        LaxLinkExtSlice::Vlan(v) => Some(v.vlan_identifier().value()),
        LaxLinkExtSlice::Macsec(_) => None,
    })
}

/// The PPPoE session payload, when the link layer ended in one (etherparse stops there).
fn pppoe_payload<'a>(sliced: &LaxSlicedPacket<'a>) -> Option<&'a [u8]> {
    if sliced.net.is_some() || sliced.stop_err.is_some() {
        return None;
    }
    let ether = sliced.ether_payload()?;
    (ether.ether_type == link::PPPOE_SESSION).then_some(ether.payload)
}

fn tcp_segment<'a>(
    pkt: &Frame<'a>,
    sliced: &LaxSlicedPacket<'a>,
    vlan: Option<u16>,
) -> Result<TcpSegment<'a>, Skip> {
    let (src, dst, ip_payload) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                ip.payload(),
            )
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                ip.payload(),
            )
        }
        Some(LaxNetSlice::Arp(_)) => return Err(Skip::NotTcp),
        None if sliced.stop_err.is_some() => return Err(Skip::Malformed),
        None => return Err(Skip::NotTcp),
    };
    if ip_payload.fragmented {
        return Err(Skip::Fragment);
    }
    let tcp = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        Some(_) => return Err(Skip::NotTcp),
        None if sliced.stop_err.is_some() => return Err(Skip::Malformed),
        None if ip_payload.ip_number == IpNumber::TCP => return Err(Skip::Malformed),
        None => return Err(Skip::NotTcp),
    };
    Ok(TcpSegment {
        ts: pkt.ts,
        src,
        dst,
        sport: tcp.source_port(),
        dport: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        },
        payload: tcp.payload(),
        vlan,
        index: 0,
    })
}

#[cfg(test)]
mod tests;
