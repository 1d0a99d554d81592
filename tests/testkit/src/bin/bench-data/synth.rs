//! Replication: many copies of the seed connections, interleaved, written as one pcap.
//!
//! Consumes [`Template`]s and a plan (which template, on which server port, how many);
//! produces an Ethernet pcap where every copy is its own valid TCP connection — a distinct client
//! address/port, its own ISNs (sequence and acknowledgement numbers shifted consistently), IP IDs
//! and checksums recomputed — with `slots` connections in flight at any time and timestamps in
//! order. Optionally, unrelated UDP datagrams (VXLAN, DNS) are mixed in.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use trustwatch_testkit::Result;

use crate::template::{ACK, IP, TCP, Template, shift_sack};

/// One connection to write.
#[derive(Clone, Copy)]
pub struct Spec<'a> {
    pub template: &'a Template,
    pub server_port: u16,
    pub server_ip: [u8; 4],
}

/// What was written.
#[derive(Debug, Default)]
pub struct Written {
    pub bytes: u64,
    pub frames: u64,
    pub connections: u64,
    pub udp: u64,
    pub span_us: u64,
}

/// A pcap file written with buffered I/O (microsecond timestamps, Ethernet).
struct PcapOut {
    w: BufWriter<File>,
    n: Written,
}

impl PcapOut {
    fn create(path: &Path) -> Result<Self> {
        let mut w = BufWriter::with_capacity(4 << 20, File::create(path)?);
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&[0u8; 8])?;
        w.write_all(&262_144u32.to_le_bytes())?;
        w.write_all(&1u32.to_le_bytes())?;
        Ok(PcapOut {
            w,
            n: Written {
                bytes: 24,
                ..Default::default()
            },
        })
    }

    fn write(&mut self, ts_us: u64, frame: &[u8]) -> Result<()> {
        let len = frame.len() as u32;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(frame)?;
        self.n.bytes += 16 + u64::from(len);
        self.n.frames += 1;
        Ok(())
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One's-complement sum of `data` added to `acc` (not folded).
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pad = [0u8; 4];
    pad[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(pad))
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Sets the IPv4 header checksum and the TCP/UDP checksum of an Ethernet/IPv4 frame.
fn checksums(f: &mut [u8], proto: u8, l4_sum_at: usize) {
    f[IP + 10] = 0;
    f[IP + 11] = 0;
    let c = fold(sum(&f[IP..IP + 20], 0));
    f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
    f[l4_sum_at] = 0;
    f[l4_sum_at + 1] = 0;
    let l4_len = (f.len() - TCP) as u64;
    let mut acc = sum(&f[IP + 12..IP + 20], u64::from(proto) + l4_len);
    acc = sum(&f[TCP..], acc);
    let c = fold(acc);
    let c = if proto == 17 && c == 0 { 0xffff } else { c };
    f[l4_sum_at..l4_sum_at + 2].copy_from_slice(&c.to_be_bytes());
}

const MAC_CLIENT_SIDE: [u8; 6] = [0x02, 0x42, 0x0a, 0x00, 0x00, 0x01];
const MAC_SERVER_SIDE: [u8; 6] = [0x02, 0x42, 0x0a, 0x00, 0x00, 0x02];

/// A copy of a template in flight.
struct Instance<'a> {
    spec: Spec<'a>,
    base_us: u64,
    next: usize,
    client_ip: [u8; 4],
    client_port: u16,
    isn: [u32; 2],
    ip_id: [u16; 2],
}

impl<'a> Instance<'a> {
    fn new(spec: Spec<'a>, n: u64, base_us: u64) -> Self {
        // Up to 4096 edge nodes, each reconnecting from a new ephemeral port.
        let node = n % 4096;
        let h = mix(n);
        Instance {
            spec,
            base_us,
            next: 0,
            client_ip: [10, 64 + (node >> 8) as u8, (node & 0xff) as u8, 10],
            client_port: 32768 + ((n / 4096) % 28000) as u16,
            isn: [h as u32, (h >> 32) as u32],
            ip_id: [(h >> 7) as u16, (h >> 23) as u16],
        }
    }

    fn next_ts(&self) -> Option<u64> {
        let f = self.spec.template.frames.get(self.next)?;
        Some(self.base_us + f.dt_us)
    }

    /// Renders the next frame into `buf`; its timestamp.
    fn render(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        let f = self.spec.template.frames.get(self.next)?;
        self.next += 1;
        buf.clear();
        buf.extend_from_slice(&f.bytes);
        let dir = usize::from(f.dir);
        let (src, dst, sport, dport, smac, dmac) = if dir == 0 {
            (
                self.client_ip,
                self.spec.server_ip,
                self.client_port,
                self.spec.server_port,
                MAC_CLIENT_SIDE,
                MAC_SERVER_SIDE,
            )
        } else {
            (
                self.spec.server_ip,
                self.client_ip,
                self.spec.server_port,
                self.client_port,
                MAC_SERVER_SIDE,
                MAC_CLIENT_SIDE,
            )
        };
        buf[0..6].copy_from_slice(&dmac);
        buf[6..12].copy_from_slice(&smac);
        buf[IP + 4..IP + 6].copy_from_slice(&self.ip_id[dir].to_be_bytes());
        self.ip_id[dir] = self.ip_id[dir].wrapping_add(1);
        buf[IP + 12..IP + 16].copy_from_slice(&src);
        buf[IP + 16..IP + 20].copy_from_slice(&dst);
        buf[TCP..TCP + 2].copy_from_slice(&sport.to_be_bytes());
        buf[TCP + 2..TCP + 4].copy_from_slice(&dport.to_be_bytes());
        let seq = u32::from_be_bytes([buf[TCP + 4], buf[TCP + 5], buf[TCP + 6], buf[TCP + 7]]);
        buf[TCP + 4..TCP + 8].copy_from_slice(&seq.wrapping_add(self.isn[dir]).to_be_bytes());
        if f.flags() & ACK != 0 {
            let ack =
                u32::from_be_bytes([buf[TCP + 8], buf[TCP + 9], buf[TCP + 10], buf[TCP + 11]]);
            let ack = ack.wrapping_add(self.isn[1 - dir]);
            buf[TCP + 8..TCP + 12].copy_from_slice(&ack.to_be_bytes());
        }
        if let Some(sack) = f.sack {
            shift_sack(buf, sack, self.isn[1 - dir]);
        }
        checksums(buf, 6, TCP + 16);
        Some(self.base_us + f.dt_us)
    }
}

/// Unrelated UDP traffic: one datagram after every `every` TCP frames.
pub struct Udp {
    pub every: u64,
}

fn push_ipv4_udp(
    buf: &mut Vec<u8>,
    id: u16,
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    len: usize,
) {
    buf.extend_from_slice(&[0x45, 0]);
    buf.extend_from_slice(&((20 + 8 + len) as u16).to_be_bytes());
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]);
    buf.extend_from_slice(&src);
    buf.extend_from_slice(&dst);
    buf.extend_from_slice(&ports.0.to_be_bytes());
    buf.extend_from_slice(&ports.1.to_be_bytes());
    buf.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
}

/// An unrelated datagram: a DNS query to the cluster resolver (1 in 5), else a Flannel VXLAN
/// (UDP 8472) packet between nodes carrying a pod's UDP datagram.
fn udp_frame(buf: &mut Vec<u8>, n: u64) {
    let h = mix(n ^ 0x5544_5000);
    let node = [10, 96, (h >> 40) as u8, (h >> 48) as u8 | 1];
    buf.clear();
    buf.extend_from_slice(&MAC_SERVER_SIDE);
    buf.extend_from_slice(&MAC_CLIENT_SIDE);
    buf.extend_from_slice(&0x0800u16.to_be_bytes());
    let sport = 40000 + (h >> 16) as u16 % 20000;
    if h.is_multiple_of(5) {
        let names: [&[u8]; 3] = [
            b"\x09cloudcore\x08kubeedge\x03svc\x07cluster\x05local\x00",
            b"\x07coredns\x0bkube-system\x03svc\x07cluster\x05local\x00",
            b"\x08registry\x07example\x03com\x00",
        ];
        let name = names[(h >> 8) as usize % names.len()];
        let len = 12 + name.len() + 4;
        push_ipv4_udp(buf, n as u16, node, [10, 96, 0, 10], (sport, 53), len);
        buf.extend_from_slice(&(h as u16).to_be_bytes());
        buf.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(name);
        buf.extend_from_slice(&[0, 1, 0, 1]);
        checksums(buf, 17, TCP + 6);
        return;
    }
    let inner = 20 + 28 + (h >> 8) as usize % 1300;
    let len = 8 + 14 + inner;
    push_ipv4_udp(buf, n as u16, node, [10, 96, 0, 2], (sport, 8472), len);
    buf.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]); // VXLAN, VNI 1
    buf.extend_from_slice(&[0x0a, 0x58, 0x0a, 0xf4, 0, 2]);
    buf.extend_from_slice(&[0x0a, 0x58, 0x0a, 0xf4, 1, 7]);
    buf.extend_from_slice(&0x0800u16.to_be_bytes());
    let payload = inner - 28;
    buf.extend_from_slice(&[0x45, 0]);
    buf.extend_from_slice(&(inner as u16).to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    buf.extend_from_slice(&[10, 244, 1, 7, 10, 244, 2, 9]);
    buf.extend_from_slice(&5000u16.to_be_bytes());
    buf.extend_from_slice(&5001u16.to_be_bytes());
    buf.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    let mut x = h;
    for _ in 0..payload {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        buf.push((x >> 56) as u8);
    }
    checksums(buf, 17, TCP + 6);
}

/// Writes the connections of `plan` (in order, `slots` at a time) to `path`, starting at
/// `start_us`. Each slot begins its next connection a few tens of µs after the previous ended.
pub fn write(
    path: &Path,
    plan: &mut dyn Iterator<Item = Spec<'_>>,
    slots: usize,
    start_us: u64,
    udp: Option<Udp>,
) -> Result<Written> {
    let mut out = PcapOut::create(path)?;
    let mut live: Vec<Option<Instance<'_>>> = Vec::with_capacity(slots);
    let mut heap = BinaryHeap::new();
    let mut n: u64 = 0;
    for slot in 0..slots {
        let Some(spec) = plan.next() else { break };
        let inst = Instance::new(spec, n, start_us + slot as u64 * 37);
        n += 1;
        if let Some(t) = inst.next_ts() {
            heap.push(Reverse((t, slot)));
        }
        live.push(Some(inst));
    }
    let mut buf = Vec::with_capacity(2048);
    let mut last_ts = start_us;
    let mut tcp_frames: u64 = 0;
    while let Some(Reverse((_, slot))) = heap.pop() {
        let Some(Some(inst)) = live.get_mut(slot) else {
            continue;
        };
        let Some(ts) = inst.render(&mut buf) else {
            continue;
        };
        last_ts = last_ts.max(ts);
        out.write(last_ts, &buf)?;
        tcp_frames += 1;
        if let Some(u) = &udp
            && tcp_frames.is_multiple_of(u.every)
        {
            udp_frame(&mut buf, out.n.udp);
            out.write(last_ts, &buf)?;
            out.n.udp += 1;
        }
        match inst.next_ts() {
            Some(t) => heap.push(Reverse((t, slot))),
            None => {
                out.n.connections += 1;
                if let Some(spec) = plan.next() {
                    let gap = 20 + (mix(n) % 60);
                    let next = Instance::new(spec, n, last_ts + gap);
                    n += 1;
                    if let Some(t) = next.next_ts() {
                        heap.push(Reverse((t, slot)));
                    }
                    live[slot] = Some(next);
                } else {
                    live[slot] = None;
                }
            }
        }
    }
    out.w.flush()?;
    out.n.span_us = last_ts.saturating_sub(start_us);
    Ok(out.n)
}
