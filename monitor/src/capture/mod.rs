//! Capture: sources that yield [`Packet`]s.
//!
//! Consumes files or interfaces; produces `Packet { ts, linktype, data }`. Every source meets at this
//! type, so decode and everything after it never know where a packet came from.

pub mod file;
pub mod live;

use bytes::Bytes;

/// Capture timestamp, microseconds since the Unix epoch (packet time drives every window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }
    pub const fn micros(self) -> i64 {
        self.0
    }
    pub fn secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
    /// Microseconds from `earlier` to `self` (negative when `earlier` is later).
    pub const fn since(self, earlier: Timestamp) -> i64 {
        self.0 - earlier.0
    }

    /// RFC 3339 UTC with microseconds, e.g. `2026-11-26T17:49:30.123456Z` (also its `Display`).
    pub fn rfc3339(self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for Timestamp {
    /// RFC 3339 UTC with microseconds; the raw microseconds when out of range.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nanos = i128::from(self.0) * 1000;
        let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return write!(f, "{}", self.0);
        };
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

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
