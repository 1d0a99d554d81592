//! Configuration shared by every stage: which ports are watched (and their service names) and the
//! limits that bound memory on the packet path.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The server name every trustwatch probe sends in its ClientHello: its mark on the wire, so that
/// every trustwatch — this one, the one on the next node, `analyze` of a capture — leaves probe
/// handshakes out of the passive figures. `.invalid` is reserved (RFC 2606): no real name is ever
/// confused with it, and a server that ignores SNI (CloudCore does) answers as usual.
pub const PROBE_SNI: &str = "trustwatch-probe.invalid";

/// The service name of CloudCore's certificate service. Its clients do not verify the server:
/// an edge fetches `/ca.crt` before it trusts any CA (it checks the CA's hash from the join token
/// instead), so a success there says nothing about which CA a client trusts.
pub const CERT_SERVICE: &str = "certsvc";

/// CloudCore's TLS ports and their service names.
pub const DEFAULT_SERVICES: [(u16, &str); 4] = [
    (10000, "cloudhub"),
    (10002, CERT_SERVICE),
    (10003, "stream"),
    (10004, "tunnel"),
];

/// Which server ports are analyzed, and how they are named in reports and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Services {
    ports: BTreeMap<u16, String>,
    /// Also pick up TLS on any other port, recognised by content.
    pub any_port: bool,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            ports: DEFAULT_SERVICES
                .iter()
                .map(|&(p, n)| (p, n.to_string()))
                .collect(),
            any_port: false,
        }
    }
}

impl Services {
    /// Service name of a watched server port.
    pub fn name(&self, port: u16) -> Option<&str> {
        self.ports.get(&port).map(String::as_str)
    }
    pub fn is_watched(&self, port: u16) -> bool {
        self.ports.contains_key(&port)
    }
    pub fn ports(&self) -> impl Iterator<Item = (u16, &str)> {
        self.ports.iter().map(|(p, n)| (*p, n.as_str()))
    }
    /// Name used for a port: its service name, else `tcp/<port>`.
    pub fn label(&self, port: u16) -> String {
        self.name(port)
            .map_or_else(|| format!("tcp/{port}"), str::to_string)
    }
}

/// Error in a `--ports` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsError(pub String);

impl fmt::Display for PortsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PortsError {}

impl FromStr for Services {
    type Err = PortsError;

    /// Parses `443,10000=cloudhub`: a port alone keeps CloudCore's name for it (or `tcp/<port>`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut ports = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (port, name) = match item.split_once('=') {
                Some((p, n)) => (p.trim(), Some(n.trim())),
                None => (item, None),
            };
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| PortsError(format!("invalid port '{port}' in --ports")))?;
            let name = match name {
                Some("") => return Err(PortsError(format!("empty service name for port {port}"))),
                Some(n) => n.to_string(),
                None => DEFAULT_SERVICES
                    .iter()
                    .find(|(p, _)| *p == port)
                    .map_or_else(|| format!("tcp/{port}"), |(_, n)| n.to_string()),
            };
            ports.insert(port, name);
        }
        if ports.is_empty() {
            return Err(PortsError("--ports needs at least one port".into()));
        }
        Ok(Services {
            ports,
            any_port: false,
        })
    }
}

/// Bounds on the packet path; every one is a flag and every drop it causes is counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes buffered per direction until the handshake is decided: out-of-order data, a record
    /// cut by a segment boundary, a handshake message spanning records (a 300 KB certificate
    /// chain must fit).
    pub handshake_window: usize,
    /// Concurrent flows; beyond it the least recently active flow is evicted.
    pub max_flows: usize,
    /// A flow with no packet for this long (packet time) is closed.
    pub idle_timeout_us: i64,
    /// Distinct certificates kept parsed (cache by DER).
    pub cert_cache: usize,
    /// Certificates kept per chain in a connection record.
    pub max_chain_len: usize,
    /// Memory for flows and their buffers (part of `--memory-limit`); beyond it the least useful
    /// flows are shed.
    pub flow_memory: usize,
    /// Memory for parsed certificates (part of `--memory-limit`).
    pub cert_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_window: 512 * 1024,
            max_flows: 100_000,
            idle_timeout_us: 120 * 1_000_000,
            cert_cache: 10_000,
            max_chain_len: 16,
            flow_memory: MemoryLimit::DEFAULT.flows(),
            cert_memory: MemoryLimit::DEFAULT.certificates(),
        }
    }
}

/// `--memory-limit`: one budget for the state the packet path keeps, split between flows (with
/// their reassembly and record buffers), parsed certificates and the detector. Sized so that a
/// monitor under hostile traffic stays well inside a 512 MiB pod (see the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimit(pub usize);

impl MemoryLimit {
    pub const DEFAULT: MemoryLimit = MemoryLimit(160 << 20);

    /// Flows and their buffers: five eighths.
    pub const fn flows(self) -> usize {
        self.0 / 8 * 5
    }
    /// Parsed certificates: one eighth.
    pub const fn certificates(self) -> usize {
        self.0 / 8
    }
    /// Detector state: a quarter.
    pub const fn detector(self) -> usize {
        self.0 / 4
    }
}

impl FromStr for MemoryLimit {
    type Err = String;

    /// `160MiB`, `512M`, `1G`, `1048576`: binary units (k, m, g with or without `iB`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: usize = num
            .parse()
            .map_err(|_| format!("'{s}' is not a size (e.g. 160MiB)"))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            other => return Err(format!("unknown size unit '{other}' (use KiB, MiB or GiB)")),
        };
        let bytes = n
            .checked_mul(1usize << shift)
            .ok_or_else(|| format!("'{s}' is too large"))?;
        if bytes < 16 << 20 {
            return Err("must be at least 16MiB".into());
        }
        Ok(MemoryLimit(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_with_and_without_names() {
        let s: Services = "443, 10000=hub,10002".parse().unwrap();
        assert_eq!(s.name(443), Some("tcp/443"));
        assert_eq!(s.name(10000), Some("hub"));
        assert_eq!(s.name(10002), Some("certsvc"));
        assert!(!s.is_watched(10003));
        assert!("0".parse::<Services>().is_err());
        assert!("x".parse::<Services>().is_err());
        assert!("".parse::<Services>().is_err());
        assert!("80=".parse::<Services>().is_err());
    }
}
