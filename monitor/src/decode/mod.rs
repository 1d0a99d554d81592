//! Decode: link layer → IP → TCP.
//!
//! Consumes a [`Packet`](crate::capture::Packet); produces a [`TcpSegment`] (addresses, ports,
//! sequence numbers, flags and a zero-copy payload slice) or a [`Skip`] reason that the caller counts.

use std::net::IpAddr;

use bytes::Bytes;

use crate::capture::Timestamp;

/// TCP flags we act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// One TCP segment with its endpoints; `payload` shares the packet's buffer.
#[derive(Clone, Debug)]
pub struct TcpSegment {
    pub ts: Timestamp,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub payload: Bytes,
    /// Outermost VLAN id, when the frame was tagged.
    pub vlan: Option<u16>,
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
