//! What is on the wire, as tshark (an independent dissector) reads it.
//!
//! Consumes a capture file; produces per-frame TLS facts (record types and lengths, handshake
//! message types, plaintext alerts, certificates) used to check that a fixture contains what its
//! scenario claims before the analyzer is asked about it.

use std::path::Path;
use std::process::Command;

use crate::Result;

/// `tshark -r FILE -Y FILTER -T fields -e F1 -e F2 ...`, one row per frame (`occurrence=a`,
/// values of repeated fields joined by `,`).
pub fn fields(path: &Path, filter: &str, fields: &[&str]) -> Result<Vec<Vec<String>>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n")
        .arg("-r")
        .arg(path)
        .args(["-o", "tcp.desegment_tcp_streams:TRUE"]);
    if !filter.is_empty() {
        cmd.args(["-Y", filter]);
    }
    cmd.args([
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("tshark failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(String::from).collect())
        .collect())
}

fn nums(s: &str) -> Vec<u32> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

/// The TLS facts of one frame.
#[derive(Clone, Debug, Default)]
pub struct TlsFrame {
    pub frame: u32,
    /// tshark's TCP stream index.
    pub stream: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// Record content types (for TLS 1.3 encrypted records, the outer type 23).
    pub content_types: Vec<u32>,
    pub record_lengths: Vec<u32>,
    pub handshake_types: Vec<u32>,
    /// Plaintext alerts: (level, description).
    pub alerts: Vec<(u32, u32)>,
    /// Certificates in Certificate messages completed in this frame, as lower-case hex DER.
    pub certificates: Vec<String>,
}

/// Every frame with TLS records.
pub fn tls_frames(path: &Path) -> Result<Vec<TlsFrame>> {
    let rows = fields(
        path,
        "tls",
        &[
            "frame.number",
            "tcp.srcport",
            "tcp.dstport",
            "tls.record.content_type",
            "tls.record.opaque_type",
            "tls.record.length",
            "tls.handshake.type",
            "tls.alert_message.level",
            "tls.alert_message.desc",
            "tls.handshake.certificate",
            "tcp.stream",
        ],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let col = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
            let mut content_types = nums(col(3));
            content_types.extend(nums(col(4)));
            let levels = nums(col(7));
            let descs = nums(col(8));
            TlsFrame {
                frame: col(0).parse().unwrap_or(0),
                stream: col(10).parse().unwrap_or(0),
                src_port: col(1).parse().unwrap_or(0),
                dst_port: col(2).parse().unwrap_or(0),
                content_types,
                record_lengths: nums(col(5)),
                handshake_types: nums(col(6)),
                alerts: levels.into_iter().zip(descs).collect(),
                certificates: col(9)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.replace(':', "").to_lowercase())
                    .collect(),
            }
        })
        .collect())
}

/// A summary of a capture's TLS traffic for one server port.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub frames: Vec<TlsFrame>,
    pub server_port: u16,
}

impl Summary {
    /// The TLS frames of the connections made *to* `server_port`. Tests run in parallel on
    /// loopback, so another test's client may borrow `server_port` as its ephemeral source port
    /// (e.g. while a server restarts); such streams match the capture filter but are not ours.
    pub fn read(path: &Path, server_port: u16) -> Result<Summary> {
        let foreign: std::collections::HashSet<u32> = fields(
            path,
            "tcp.flags.syn == 1 && tcp.flags.ack == 0",
            &["tcp.stream", "tcp.dstport"],
        )?
        .iter()
        .filter(|r| r.get(1).and_then(|p| p.parse::<u16>().ok()) != Some(server_port))
        .filter_map(|r| r.first()?.parse().ok())
        .collect();
        let mut frames = tls_frames(path)?;
        frames.retain(|f| !foreign.contains(&f.stream));
        Ok(Summary {
            frames,
            server_port,
        })
    }

    fn is_from_server(&self, f: &TlsFrame) -> bool {
        f.src_port == self.server_port
    }

    /// Plaintext alerts sent by the server / client: (level, description).
    pub fn alerts(&self, from_server: bool) -> Vec<(u32, u32)> {
        self.frames
            .iter()
            .filter(|f| self.is_from_server(f) == from_server)
            .flat_map(|f| f.alerts.iter().copied())
            .collect()
    }

    /// Handshake message types seen in plaintext from one side.
    pub fn handshake_types(&self, from_server: bool) -> Vec<u32> {
        self.frames
            .iter()
            .filter(|f| self.is_from_server(f) == from_server)
            .flat_map(|f| f.handshake_types.iter().copied())
            .collect()
    }

    /// Lengths of the records of content type 23 from one side (TLS 1.3 encrypted records).
    pub fn app_data_lengths(&self, from_server: bool) -> Vec<u32> {
        let mut v = Vec::new();
        for f in self
            .frames
            .iter()
            .filter(|f| self.is_from_server(f) == from_server)
        {
            for (t, l) in f.content_types.iter().zip(&f.record_lengths) {
                if *t == 23 {
                    v.push(*l);
                }
            }
        }
        v
    }

    /// Certificates of the plaintext Certificate messages from one side (hex DER, wire order).
    pub fn certificates(&self, from_server: bool) -> Vec<String> {
        self.frames
            .iter()
            .filter(|f| self.is_from_server(f) == from_server)
            .flat_map(|f| f.certificates.iter().cloned())
            .collect()
    }

    /// Number of ClientHellos (one per TLS connection).
    pub fn client_hellos(&self) -> usize {
        self.handshake_types(false)
            .iter()
            .filter(|t| **t == 1)
            .count()
    }
}

/// Number of TCP segments with payload sent from `src_port`.
pub fn data_segments(path: &Path, src_port: u16) -> Result<usize> {
    Ok(fields(
        path,
        &format!("tcp.srcport == {src_port} && tcp.len > 0"),
        &["frame.number"],
    )?
    .len())
}
