//! Narrowing an offline analysis to the question asked: a time range (`--from`/`--to`), a BPF
//! expression (`--filter`, compiled by libpcap), client and server addresses
//! (`--client`/`--server ADDR[/PREFIX]`).
//!
//! Consumes the parsed flags; produces a [`PacketSelect`] (time range and BPF, applied to every
//! frame before decoding, as `tcpdump -r FILE EXPR` would) and a [`ConnectionSelect`] (addresses,
//! applied to connection records before the detector and every output, so a connection is kept
//! or left out whole, by the side each address is on).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::base::Timestamp;
use crate::capture::{LinkType, Packet};
use crate::error::Error;
use crate::handshake::Connection;

/// A point in time: absolute (RFC 3339), or relative to the capture's first packet (`+5m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    At(Timestamp),
    AfterStart { us: i64 },
}

impl TimeSpec {
    /// The time this names, for a capture whose first packet is at `start`.
    pub fn resolve(self, start: Timestamp) -> Timestamp {
        match self {
            TimeSpec::At(t) => t,
            TimeSpec::AfterStart { us } => Timestamp(start.0.saturating_add(us)),
        }
    }
}

impl FromStr for TimeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rel) = s.strip_prefix('+') {
            return duration_us(rel).map(|us| TimeSpec::AfterStart { us });
        }
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                format!("{s:?} is neither RFC 3339 (2026-11-26T17:49:30Z) nor relative to the capture start (+90s, +5m, +1h30m)")
            })?;
        let us = t.unix_timestamp_nanos() / 1_000;
        Ok(TimeSpec::At(Timestamp(
            i64::try_from(us).map_err(|_| "out of range".to_string())?,
        )))
    }
}

/// `90s`, `5m`, `1h30m`, `2h`, `500ms`: a sum of whole numbers with units.
fn duration_us(s: &str) -> Result<i64, String> {
    let bad = || format!("+{s}: a duration like +90s, +5m, +1h30m or +500ms");
    let mut total: i64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// An address or a network: `10.0.0.7`, `10.0.0.0/8`, `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrPrefix {
    addr: IpAddr,
    len: u8,
}

impl AddrPrefix {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            // An IPv4 client seen over IPv6 as ::ffff:a.b.c.d matches its IPv4 prefix.
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

impl FromStr for AddrPrefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?}: an IP address, optionally /PREFIX (10.0.0.7, 10.0.0.0/8, fd00::/8)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: prefix length must be 0..={max}")),
            },
        };
        Ok(AddrPrefix { addr, len })
    }
}

impl fmt::Display for AddrPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Which connections are kept: a client in one of `clients` (when any), a server in one of
/// `servers` (when any).
#[derive(Clone, Debug, Default)]
pub struct ConnectionSelect {
    pub clients: Vec<AddrPrefix>,
    pub servers: Vec<AddrPrefix>,
}

impl ConnectionSelect {
    pub fn is_all(&self) -> bool {
        self.clients.is_empty() && self.servers.is_empty()
    }

    pub fn keeps(&self, c: &Connection) -> bool {
        let any = |list: &[AddrPrefix], ip: IpAddr| {
            list.is_empty() || list.iter().any(|p| p.contains(ip))
        };
        any(&self.clients, c.client.ip()) && any(&self.servers, c.server.ip())
    }
}

/// Which frames are read: a time range and a BPF expression.
pub struct PacketSelect {
    from: Option<TimeSpec>,
    to: Option<TimeSpec>,
    /// Resolved once the capture's start is known.
    range: Option<(Timestamp, Timestamp)>,
    expr: Option<String>,
    /// The expression compiled per link type (libpcap compiles for one link type).
    programs: HashMap<LinkType, pcap::BpfProgram>,
    /// Frames left out.
    pub skipped: u64,
}

impl fmt::Debug for PacketSelect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketSelect")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("expr", &self.expr)
            .finish_non_exhaustive()
    }
}

/// libpcap's DLT number to compile a filter for frames of this link type.
fn dlt(l: LinkType) -> i32 {
    match l {
        LinkType::Null => 0,
        LinkType::Ethernet => 1,
        LinkType::Raw => 12,
        LinkType::Loop => 108,
        LinkType::LinuxSll => 113,
        LinkType::Ipv4 => 228,
        LinkType::Ipv6 => 229,
        LinkType::LinuxSll2 => 276,
    }
}

impl PacketSelect {
    /// Checks the expression (compiled for Ethernet) so a typo fails before anything is read.
    pub fn new(
        from: Option<TimeSpec>,
        to: Option<TimeSpec>,
        expr: Option<String>,
    ) -> Result<Self, Error> {
        let mut s = PacketSelect {
            from,
            to,
            range: None,
            expr: expr.filter(|e| !e.trim().is_empty()),
            programs: HashMap::new(),
            skipped: 0,
        };
        if s.expr.is_some() {
            s.program(LinkType::Ethernet)?;
        }
        Ok(s)
    }

    /// Nothing is selected out.
    pub fn is_all(&self) -> bool {
        self.from.is_none() && self.to.is_none() && self.expr.is_none()
    }

    /// The capture starts at `start` (its first packet): relative times are resolved.
    pub fn start(&mut self, start: Timestamp) -> Result<(), Error> {
        let from = self.from.map_or(Timestamp(i64::MIN), |t| t.resolve(start));
        let to = self.to.map_or(Timestamp(i64::MAX), |t| t.resolve(start));
        if from > to {
            return Err(Error::Usage(format!("--from {from} is after --to {to}")));
        }
        self.range = Some((from, to));
        Ok(())
    }

    fn program(&mut self, l: LinkType) -> Result<&pcap::BpfProgram, Error> {
        let Some(expr) = &self.expr else {
            return Err(Error::Usage("no --filter".into()));
        };
        match self.programs.entry(l) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let compiled = pcap::Capture::dead(pcap::Linktype(dlt(l)))
                    .and_then(|c| c.compile(expr, true))
                    .map_err(|e| {
                        let msg = e.to_string();
                        Error::Usage(format!(
                            "--filter {expr:?}: {}",
                            msg.split_whitespace().collect::<Vec<_>>().join(" ")
                        ))
                    })?;
                Ok(v.insert(compiled))
            }
        }
    }

    /// Whether `pkt` is read (`Err`: the expression does not compile for its link type).
    pub fn keeps(&mut self, pkt: &Packet) -> Result<bool, Error> {
        if let Some((from, to)) = self.range
            && (pkt.ts < from || pkt.ts > to)
        {
            self.skipped += 1;
            return Ok(false);
        }
        if self.expr.is_some() && !self.program(pkt.linktype)?.filter(&pkt.data) {
            self.skipped += 1;
            return Ok(false);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_prefixes_parse() {
        assert_eq!("+5m".parse(), Ok(TimeSpec::AfterStart { us: 300_000_000 }));
        assert_eq!(
            "+1h30m".parse(),
            Ok(TimeSpec::AfterStart { us: 5_400_000_000 })
        );
        assert_eq!("+500ms".parse(), Ok(TimeSpec::AfterStart { us: 500_000 }));
        assert_eq!(
            "2026-11-26T17:49:30.5Z".parse(),
            Ok(TimeSpec::At(Timestamp(1_795_715_370_500_000)))
        );
        assert_eq!(
            "2026-11-26T18:49:30+01:00".parse(),
            Ok(TimeSpec::At(Timestamp(1_795_715_370_000_000)))
        );
        for bad in ["+", "+5", "+m", "+5x", "yesterday", "2026-11-26"] {
            assert!(bad.parse::<TimeSpec>().is_err(), "{bad}");
        }
        let p: AddrPrefix = "10.77.0.0/16".parse().unwrap();
        assert!(p.contains("10.77.3.4".parse().unwrap()));
        assert!(!p.contains("10.78.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.77.0.9".parse().unwrap()));
        let one: AddrPrefix = "10.77.0.1".parse().unwrap();
        assert!(
            one.contains("10.77.0.1".parse().unwrap())
                && !one.contains("10.77.0.2".parse().unwrap())
        );
        let v6: AddrPrefix = "fd00::/8".parse().unwrap();
        assert!(
            v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap())
        );
        assert!(
            "0.0.0.0/0"
                .parse::<AddrPrefix>()
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "fd00::/129", "host", "10.0.0/8"] {
            assert!(bad.parse::<AddrPrefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_filters_are_usage_errors() {
        let e = PacketSelect::new(None, None, Some("tcp port".into())).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().starts_with("--filter \"tcp port\": "), "{e}");
        assert!(!e.to_string().contains('\n'));
    }
}
