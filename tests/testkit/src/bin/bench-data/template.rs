//! Flow templates: the TCP connections of a seed capture, cut to Ethernet-sized segments.
//!
//! Consumes a seed pcap (Ethernet/IPv4/TCP as libpcap records Linux `lo`); produces one
//! [`Template`] per connection that starts with a SYN: its frames in capture order with
//! sequence/acknowledgement numbers relative to each side's ISN and addresses left blank, so
//! that [`crate::synth`] can stamp out copies with other 4-tuples and ISNs. Loopback GSO records
//! segments of up to 64 KiB; they are split at a 1448-byte MSS (1500-byte IP packets with TCP
//! timestamps) and, like a real receiver, the other side acknowledges every second segment.
//! Connections whose byte stream has a hole (a packet the capture dropped) are refused.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

use trustwatch_testkit::Result;
use trustwatch_testkit::rewrite::Trace;

/// Largest TCP payload per frame.
pub const MSS: usize = 1448;
/// Offsets in a rendered frame (Ethernet, IPv4 without options).
pub const IP: usize = 14;
pub const TCP: usize = IP + 20;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// One frame of a template; `bytes` is a complete Ethernet frame whose MACs, IPs, ports, IP ID
/// and checksums are blank and whose seq/ack are relative.
#[derive(Clone, Debug)]
pub struct TFrame {
    /// Microseconds since the connection's first packet.
    pub dt_us: u64,
    /// 0: client → server, 1: server → client.
    pub dir: u8,
    pub bytes: Vec<u8>,
    /// Offset and count of SACK block edges in `bytes` (relative to the other side's ISN).
    pub sack: Option<(usize, usize)>,
}

impl TFrame {
    pub fn flags(&self) -> u8 {
        self.bytes.get(TCP + 13).copied().unwrap_or(0)
    }
}

/// One connection, ready to be replicated.
#[derive(Clone, Debug)]
pub struct Template {
    pub frames: Vec<TFrame>,
    /// Size of the frames in a pcap file (record headers included).
    pub pcap_bytes: u64,
    /// Application bytes (TCP payload) both ways.
    pub payload_bytes: u64,
    /// Seed capture time of the first packet, microseconds since the epoch.
    pub start_us: u64,
}

/// IPv4 address and port.
type Endpoint = ([u8; 4], u16);

struct Parsed<'a> {
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    opts: &'a [u8],
    payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    if be16(frame, 12)? != 0x0800 {
        return None;
    }
    let ip = frame.get(14..)?;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2)?);
    let tcp = ip.get(ihl..total)?;
    let off = usize::from(tcp.get(12)? >> 4) * 4;
    Some(Parsed {
        src: (ip.get(12..16)?.try_into().ok()?, be16(tcp, 0)?),
        dst: (ip.get(16..20)?.try_into().ok()?, be16(tcp, 2)?),
        seq: be32(tcp, 4)?,
        ack: be32(tcp, 8)?,
        flags: *tcp.get(13)?,
        win: be16(tcp, 14)?,
        opts: tcp.get(20..off)?,
        payload: tcp.get(off..)?,
    })
}

/// Finds the SACK option in a rendered frame: (offset of the first edge, number of edges).
fn find_sack(f: &[u8]) -> Option<(usize, usize)> {
    let off = usize::from(f.get(TCP + 12)? >> 4) * 4;
    let mut i = TCP + 20;
    let end = TCP + off;
    while i < end {
        match *f.get(i)? {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*f.get(i + 1)?);
                if len < 2 {
                    return None;
                }
                if kind == 5 && len >= 10 {
                    return Some((i + 2, (len - 2) / 4));
                }
                i += len;
            }
        }
    }
    None
}

/// Rewrites the SACK edges of `f` by `delta`.
pub fn shift_sack(f: &mut [u8], sack: (usize, usize), delta: u32) {
    for k in 0..sack.1 {
        let at = sack.0 + 4 * k;
        if let Some(b) = f.get_mut(at..at + 4) {
            let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).wrapping_add(delta);
            b.copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// Builds a blank-address frame.
fn frame(seq: u32, ack: u32, flags: u8, win: u16, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let opts_len = opts.len().div_ceil(4) * 4;
    let tcp_len = 20 + opts_len;
    let mut f = Vec::with_capacity(TCP + tcp_len + payload.len());
    f.extend_from_slice(&[0u8; 12]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + tcp_len + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&[0u8; 8]);
    f.extend_from_slice(&[0u8; 4]); // ports
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.push(((tcp_len / 4) as u8) << 4);
    f.push(flags);
    f.extend_from_slice(&win.to_be_bytes());
    f.extend_from_slice(&[0u8; 4]); // checksum, urgent pointer
    f.extend_from_slice(opts);
    f.resize(f.len() + (opts_len - opts.len()), 1); // NOP padding
    f.extend_from_slice(payload);
    f
}

/// Per-connection state while its frames are read.
struct Conn {
    client: ([u8; 4], u16),
    isn: [u32; 2],
    /// Next expected sequence number, relative.
    nxt: [u32; 2],
    have_isn: [bool; 2],
    win: [u16; 2],
    /// Options of the side's last non-SYN segment (timestamps), for synthesized ACKs.
    opts: [Vec<u8>; 2],
    /// Highest acknowledgement a synthesized ACK carried, per acknowledging side.
    acked: [u32; 2],
    t0: u64,
    start_us: u64,
    frames: Vec<TFrame>,
    broken: bool,
}

fn us(ts: std::time::Duration) -> u64 {
    ts.as_micros() as u64
}

impl Conn {
    fn add(&mut self, dt_us: u64, dir: usize, mut bytes: Vec<u8>) {
        let sack = find_sack(&bytes);
        if let Some(sk) = sack {
            // SACK edges are the other side's sequence numbers: make them relative.
            shift_sack(&mut bytes, sk, self.isn[1 - dir].wrapping_neg());
        }
        self.frames.push(TFrame {
            dt_us,
            dir: dir as u8,
            bytes,
            sack,
        });
    }

    fn push(&mut self, p: &Parsed<'_>, ts_us: u64) {
        let dir = usize::from(p.src != self.client);
        let other = 1 - dir;
        if p.flags & SYN != 0 && !self.have_isn[dir] {
            self.isn[dir] = p.seq;
            self.have_isn[dir] = true;
        }
        if !self.have_isn[dir] {
            self.broken = true;
            return;
        }
        let rel_seq = p.seq.wrapping_sub(self.isn[dir]);
        let rel_ack = if p.flags & ACK != 0 && self.have_isn[other] {
            p.ack.wrapping_sub(self.isn[other])
        } else {
            0
        };
        let syn = u32::from(p.flags & SYN != 0);
        let fin = u32::from(p.flags & FIN != 0);
        let len = p.payload.len() as u32;
        // A hole: data starts beyond what this side has sent so far.
        if len > 0 && rel_seq > self.nxt[dir] {
            self.broken = true;
        }
        let retransmission = len > 0 && rel_seq < self.nxt[dir];
        let end = rel_seq.wrapping_add(syn + len + fin);
        if end > self.nxt[dir] {
            self.nxt[dir] = end;
        }
        self.win[dir] = p.win;
        if p.flags & SYN == 0 {
            self.opts[dir] = p.opts.to_vec();
        }
        let dt = ts_us.saturating_sub(self.t0);
        if p.payload.len() <= MSS {
            let f = frame(rel_seq, rel_ack, p.flags, p.win, p.opts, p.payload);
            self.add(dt, dir, f);
            return;
        }
        let chunks: Vec<&[u8]> = p.payload.chunks(MSS).collect();
        let last = chunks.len() - 1;
        let mut seq = rel_seq;
        for (i, c) in chunks.iter().enumerate() {
            let flags = if i == last {
                p.flags
            } else {
                p.flags & !(PSH | FIN | RST)
            };
            // Back-to-back at ~10 Gbit/s: a frame every 1.2 µs.
            let t = dt + (i as u64 * 12) / 10;
            self.add(t, dir, frame(seq, rel_ack, flags, p.win, p.opts, c));
            seq = seq.wrapping_add(c.len() as u32);
            if i % 2 == 1 && i != last && !retransmission && seq > self.acked[other] {
                self.acked[other] = seq;
                let opts = self.opts[other].clone();
                let f = frame(self.nxt[other], seq, ACK, self.win[other], &opts, &[]);
                self.add(t + 1, other, f);
            }
        }
    }
}

/// The connections of `seed` that start with a client SYN and have no hole.
pub fn load(seed: &Path) -> Result<Vec<Template>> {
    let trace = Trace::read(seed)?;
    let mut conns: HashMap<(Endpoint, Endpoint), Conn> = HashMap::new();
    let mut order = Vec::new();
    for f in &trace.frames {
        let Some(p) = parse(&f.data) else { continue };
        let key = if p.src < p.dst {
            (p.src, p.dst)
        } else {
            (p.dst, p.src)
        };
        let ts = us(f.ts);
        let c = match conns.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                if p.flags & (SYN | ACK) != SYN {
                    continue;
                }
                order.push(key);
                v.insert(Conn {
                    client: p.src,
                    isn: [0; 2],
                    nxt: [0; 2],
                    have_isn: [false; 2],
                    win: [0; 2],
                    opts: [Vec::new(), Vec::new()],
                    acked: [0; 2],
                    t0: ts,
                    start_us: ts,
                    frames: Vec::new(),
                    broken: false,
                })
            }
        };
        c.push(&p, ts);
    }
    let mut out = Vec::new();
    let mut broken = 0;
    for key in order {
        let Some(c) = conns.remove(&key) else {
            continue;
        };
        if c.broken {
            broken += 1;
            continue;
        }
        let pcap_bytes = c.frames.iter().map(|f| 16 + f.bytes.len() as u64).sum();
        let payload_bytes = c
            .frames
            .iter()
            .map(|f| {
                let off = usize::from(f.bytes.get(TCP + 12).copied().unwrap_or(0) >> 4) * 4;
                f.bytes.len().saturating_sub(TCP + off) as u64
            })
            .sum();
        out.push(Template {
            frames: c.frames,
            pcap_bytes,
            payload_bytes,
            start_us: c.start_us,
        });
    }
    if broken > 0 {
        eprintln!(
            "bench-data: {}: {broken} connection(s) with capture holes left out",
            seed.display()
        );
    }
    if out.is_empty() {
        return Err(format!("{}: no complete connection", seed.display()).into());
    }
    Ok(out)
}
