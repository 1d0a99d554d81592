//! Hostile traffic: captures an attacker who can reach CloudCore's ports could produce, written
//! frame by frame (Ethernet, IPv4, TCP built here; TLS records built here or taken from real
//! certificates), streamed to a pcap file so a million flows need no memory in the test.
//!
//! Each attack is a function writing its frames from a start time; [`append_shifted`] then adds a
//! real capture (the incident acted out by Go peers) after the attack, so a test can check that the
//! legitimate traffic is still analysed under the attack. Addresses come from `10.0.0.0/8` (clients)
//! and the server address the caller gives (the incident's server, to attack the same service).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};

use crate::Result;

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH_ACK: u8 = 0x18;
const ACK: u8 = 0x10;
const SYN_ACK: u8 = 0x12;
const FIN_ACK: u8 = 0x11;

/// A pcap file being written, Ethernet frames.
pub struct Pcap {
    w: PcapWriter<BufWriter<File>>,
    /// Frames written.
    pub frames: u64,
    /// The time of the last frame.
    pub last: Duration,
}

impl Pcap {
    pub fn create(path: &Path) -> Result<Pcap> {
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            snaplen: 262_144,
            ..Default::default()
        };
        let w = PcapWriter::with_header(
            BufWriter::with_capacity(1 << 20, File::create(path)?),
            header,
        )?;
        Ok(Pcap {
            w,
            frames: 0,
            last: Duration::ZERO,
        })
    }

    fn frame(&mut self, ts: Duration, data: &[u8]) -> Result<()> {
        self.w
            .write_packet(&PcapPacket::new(ts, data.len() as u32, data))?;
        self.frames += 1;
        self.last = self.last.max(ts);
        Ok(())
    }

    /// One TCP segment `from` → `to` with sequence and acknowledgment numbers `seq_ack`.
    pub fn tcp(
        &mut self,
        ts: Duration,
        (from, to): (SocketAddrV4, SocketAddrV4),
        seq_ack: (u32, u32),
        flags: u8,
        payload: &[u8],
    ) -> Result<()> {
        let frame = tcp_frame((from, to), seq_ack, flags, payload);
        self.frame(ts, &frame)
    }

    pub fn finish(self) -> Result<()> {
        let mut inner = self.w.into_writer();
        std::io::Write::flush(&mut inner)?;
        Ok(())
    }
}

/// Ethernet + IPv4 + TCP (no options), checksums left zero (the analyzer does not check them).
pub fn tcp_frame(
    (from, to): (SocketAddrV4, SocketAddrV4),
    (seq, ack): (u32, u32),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload.len());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&from.ip().octets());
    f.extend_from_slice(&to.ip().octets());
    f.extend_from_slice(&from.port().to_be_bytes());
    f.extend_from_slice(&to.port().to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The `n`-th attacker address: 10.x.y.z, distinct for every n below 2^24.
pub fn attacker(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff))
}

/// A TLS record.
pub fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 3, 3];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// A handshake message (type, 24-bit length, body).
pub fn handshake(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![msg_type];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend_from_slice(body);
    m
}

fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut e = ty.to_be_bytes().to_vec();
    e.extend_from_slice(&(data.len() as u16).to_be_bytes());
    e.extend_from_slice(data);
    e
}

/// A ClientHello offering TLS 1.3 and 1.2, with SNI `kubeedge.io` (the handshake message).
pub fn client_hello(random_seed: u32) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend((0..32u32).map(|i| (random_seed.wrapping_mul(31).wrapping_add(i)) as u8));
    b.push(0);
    b.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2b]);
    b.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    let name = b"kubeedge.io";
    let mut sni = ((name.len() + 3) as u16).to_be_bytes().to_vec();
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    exts.extend(ext(0x0000, &sni));
    exts.extend(ext(0x000a, &[0, 2, 0, 0x1d]));
    exts.extend(ext(0x000d, &[0, 2, 0x04, 0x03]));
    exts.extend(ext(0x002b, &[4, 3, 4, 3, 3]));
    exts.extend(ext(0x0033, &[0, 0]));
    b.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    b.extend(exts);
    handshake(1, &b)
}

/// A ServerHello selecting TLS 1.3 (`tls13`) or TLS 1.2 (the handshake message).
pub fn server_hello(tls13: bool) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend([0x5a; 32]);
    b.push(0);
    if tls13 {
        b.extend_from_slice(&[0x13, 0x01, 0]);
        let exts = ext(0x002b, &[3, 4]);
        b.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        b.extend(exts);
    } else {
        b.extend_from_slice(&[0xc0, 0x2b, 0]);
        b.extend_from_slice(&[0, 0]);
    }
    handshake(2, &b)
}

/// A Certificate message (TLS 1.2 layout) carrying `chain`.
pub fn certificate(chain: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for der in chain {
        list.extend_from_slice(&(der.len() as u32).to_be_bytes()[1..]);
        list.extend_from_slice(der);
    }
    let mut b = (list.len() as u32).to_be_bytes()[1..].to_vec();
    b.extend(list);
    handshake(11, &b)
}

/// Bytes of `data` as TLS records of at most 16 KiB, each as one or more segments of `mss`.
fn segments(data: &[u8], mss: usize) -> impl Iterator<Item = &[u8]> {
    data.chunks(mss.max(1))
}

/// One connection's handshake opening: SYN, SYN-ACK, ACK. Returns the next client and server
/// sequence numbers.
fn open(
    p: &mut Pcap,
    t: Duration,
    client: SocketAddrV4,
    server: SocketAddrV4,
) -> Result<(u32, u32)> {
    let (cs, ss) = (1000u32, 5000u32);
    p.tcp(t, (client, server), (cs, 0), SYN, &[])?;
    p.tcp(t, (server, client), (ss, cs + 1), SYN_ACK, &[])?;
    p.tcp(t, (client, server), (cs + 1, ss + 1), ACK, &[])?;
    Ok((cs + 1, ss + 1))
}

/// Sends `data` from `from` in segments, advancing `seq`.
fn send(
    p: &mut Pcap,
    t: Duration,
    from: SocketAddrV4,
    to: SocketAddrV4,
    seq: &mut u32,
    ack: u32,
    data: &[u8],
) -> Result<()> {
    for s in segments(data, 1448) {
        p.tcp(t, (from, to), (*seq, ack), PSH_ACK, s)?;
        *seq = seq.wrapping_add(s.len() as u32);
    }
    Ok(())
}

/// Spreads `n` items over `span` from `start`.
fn at(start: Duration, span: Duration, i: u64, n: u64) -> Duration {
    start + span.mul_f64(i as f64 / n.max(1) as f64)
}

/// `n` SYNs from distinct addresses and ports, never answered.
pub fn syn_flood(
    p: &mut Pcap,
    server: SocketAddrV4,
    n: u64,
    start: Duration,
    span: Duration,
) -> Result<()> {
    for i in 0..n {
        let client = SocketAddrV4::new(attacker(i as u32 / 16), 1024 + (i % 16) as u16);
        p.tcp(at(start, span, i, n), (client, server), (7, 0), SYN, &[])?;
    }
    Ok(())
}

/// `n` connections that send the first `sent` bytes of a TLS record announcing 16 KiB, then
/// nothing: each leaves a partial record buffered until its flow times out.
pub fn partial_records(
    p: &mut Pcap,
    server: SocketAddrV4,
    n: u64,
    sent: usize,
    start: Duration,
    span: Duration,
) -> Result<()> {
    let mut rec = vec![22, 3, 1, 0x40, 0];
    rec.resize(sent.max(6), 0x41);
    for i in 0..n {
        let t = at(start, span, i, n);
        let client = SocketAddrV4::new(attacker(i as u32), 40000);
        let (mut cs, ss) = open(p, t, client, server)?;
        send(p, t, client, server, &mut cs, ss, &rec)?;
    }
    Ok(())
}

/// `n` connections each sending `size` bytes of one handshake message that never completes (it
/// announces `size + 1` bytes), in 16 KiB records.
pub fn giant_messages(
    p: &mut Pcap,
    server: SocketAddrV4,
    n: u64,
    size: usize,
    start: Duration,
    span: Duration,
) -> Result<()> {
    let announced = (size + 1) as u32;
    let mut message = vec![1];
    message.extend_from_slice(&announced.to_be_bytes()[1..]);
    message.resize(size, 0x42);
    let mut stream = Vec::with_capacity(size + size / 16_000 * 5 + 5);
    for chunk in message.chunks(16_384) {
        stream.extend(record(22, chunk));
    }
    for i in 0..n {
        let t = at(start, span, i, n);
        let client = SocketAddrV4::new(attacker(i as u32), 40001);
        let (mut cs, ss) = open(p, t, client, server)?;
        send(p, t, client, server, &mut cs, ss, &stream)?;
    }
    Ok(())
}

/// `flows` connections each sending `segs` one-byte segments after a hole at the first byte
/// (so none is ever delivered), every other byte, last first: the worst case for an
/// out-of-order buffer that allocates per segment.
pub fn one_byte_out_of_order(
    p: &mut Pcap,
    server: SocketAddrV4,
    flows: u64,
    segs: u32,
    start: Duration,
    span: Duration,
) -> Result<()> {
    for i in 0..flows {
        let t = at(start, span, i, flows);
        let client = SocketAddrV4::new(attacker(i as u32), 40002);
        let (cs, ss) = open(p, t, client, server)?;
        for k in (1..=segs).rev() {
            p.tcp(t, (client, server), (cs + 2 * k, ss), PSH_ACK, &[0x16])?;
        }
    }
    Ok(())
}

/// `n` TLS 1.2 handshakes whose server presents a distinct certificate each: `template` with the
/// bytes at `vary` (inside a filler extension) changed per connection, so every DER differs.
pub fn distinct_certificates(
    p: &mut Pcap,
    server: SocketAddrV4,
    n: u64,
    template: &[u8],
    vary: usize,
    start: Duration,
    span: Duration,
) -> Result<()> {
    let mut der = template.to_vec();
    for i in 0..n {
        let t = at(start, span, i, n);
        let client = SocketAddrV4::new(attacker(i as u32), 40003);
        let (mut cs, mut ss) = open(p, t, client, server)?;
        send(
            p,
            t,
            client,
            server,
            &mut cs,
            ss,
            &record(22, &client_hello(i as u32)),
        )?;
        if let Some(b) = der.get_mut(vary..vary + 8) {
            b.copy_from_slice(&i.to_be_bytes());
        }
        let mut flight = server_hello(false);
        flight.extend(certificate(&[&der]));
        flight.extend(handshake(14, &[]));
        let mut stream = Vec::new();
        for chunk in flight.chunks(16_384) {
            stream.extend(record(22, chunk));
        }
        send(p, t, server, client, &mut ss, cs, &stream)?;
        p.tcp(t, (client, server), (cs, ss), RST, &[])?;
    }
    Ok(())
}

/// `n` connections from `addresses` distinct clients: ClientHello, ServerHello (TLS 1.3), then a
/// reset — handshakes that never reach a certificate decision, as fast as an attacker likes.
pub fn hello_resets(
    p: &mut Pcap,
    server: SocketAddrV4,
    n: u64,
    addresses: u32,
    start: Duration,
    span: Duration,
) -> Result<()> {
    let ch = record(22, &client_hello(7));
    let sh = record(22, &server_hello(true));
    for i in 0..n {
        let t = at(start, span, i, n);
        let addr = attacker((i % u64::from(addresses.max(1))) as u32);
        let port = 1024 + ((i / u64::from(addresses.max(1))) % 60_000) as u16;
        let client = SocketAddrV4::new(addr, port);
        let (mut cs, mut ss) = open(p, t, client, server)?;
        send(p, t, client, server, &mut cs, ss, &ch)?;
        send(p, t, server, client, &mut ss, cs, &sh)?;
        p.tcp(t, (client, server), (cs, ss), RST, &[])?;
    }
    Ok(())
}

/// `n` distinct clients whose TLS 1.2 handshake the client aborts with a fatal bad_certificate
/// alert after the server's chain `chain` (the incident, from many more clients than any cluster
/// has edges).
pub fn failing_clients(
    p: &mut Pcap,
    server: SocketAddrV4,
    n: u64,
    chain: &[&[u8]],
    start: Duration,
    span: Duration,
) -> Result<()> {
    let mut flight = server_hello(false);
    flight.extend(certificate(chain));
    flight.extend(handshake(14, &[]));
    let flight = record(22, &flight);
    let alert = record(21, &[2, 42]);
    for i in 0..n {
        let t = at(start, span, i, n);
        let client = SocketAddrV4::new(attacker(i as u32), 40004);
        let (mut cs, mut ss) = open(p, t, client, server)?;
        send(
            p,
            t,
            client,
            server,
            &mut cs,
            ss,
            &record(22, &client_hello(i as u32)),
        )?;
        send(p, t, server, client, &mut ss, cs, &flight)?;
        send(p, t, client, server, &mut cs, ss, &alert)?;
        p.tcp(t, (client, server), (cs, ss), FIN_ACK, &[])?;
    }
    Ok(())
}

/// `n` connections in which the server sends `alerts` warning alerts each after its hello.
pub fn alert_storm(
    p: &mut Pcap,
    server: SocketAddrV4,
    n: u64,
    alerts: usize,
    start: Duration,
    span: Duration,
) -> Result<()> {
    let storm: Vec<u8> = (0..alerts).flat_map(|_| record(21, &[1, 0])).collect();
    for i in 0..n {
        let t = at(start, span, i, n);
        let client = SocketAddrV4::new(attacker(i as u32), 40005);
        let (mut cs, mut ss) = open(p, t, client, server)?;
        send(
            p,
            t,
            client,
            server,
            &mut cs,
            ss,
            &record(22, &client_hello(i as u32)),
        )?;
        send(
            p,
            t,
            server,
            client,
            &mut ss,
            cs,
            &record(22, &server_hello(false)),
        )?;
        send(p, t, server, client, &mut ss, cs, &storm)?;
    }
    Ok(())
}

/// Appends the frames of `capture` (Ethernet) shifted so its first frame lands at `start`.
/// Returns the time of its first frame in the original file.
pub fn append_shifted(p: &mut Pcap, capture: &Path, start: Duration) -> Result<Duration> {
    let mut r = PcapReader::new(BufReader::new(File::open(capture)?))?;
    if r.header().datalink != DataLink::ETHERNET {
        return Err(format!("{}: not an Ethernet capture", capture.display()).into());
    }
    let mut first = None;
    while let Some(pkt) = r.next_packet() {
        let pkt = pkt?;
        let origin = *first.get_or_insert(pkt.timestamp);
        p.frame(start + pkt.timestamp.saturating_sub(origin), &pkt.data)?;
    }
    Ok(first.unwrap_or_default())
}

/// How a generated TLS 1.2 session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Both Finished messages, then application data both ways.
    Established,
    /// The client sends a fatal alert with this description after the server's flight.
    ClientAlert(u8),
}

/// One TLS 1.2 session at `t` from `client` to `server`, the server presenting `chain`.
pub fn tls12_session(
    p: &mut Pcap,
    t: Duration,
    client: SocketAddrV4,
    server: SocketAddrV4,
    chain: &[&[u8]],
    ending: Ending,
    seed: u32,
) -> Result<()> {
    let ms = Duration::from_millis(1);
    let (mut cs, mut ss) = open(p, t, client, server)?;
    let hello = record(22, &client_hello(seed));
    send(p, t + ms, client, server, &mut cs, ss, &hello)?;
    let mut flight = server_hello(false);
    flight.extend(certificate(chain));
    flight.extend(handshake(14, &[]));
    send(
        p,
        t + 2 * ms,
        server,
        client,
        &mut ss,
        cs,
        &record(22, &flight),
    )?;
    match ending {
        Ending::Established => {
            let mut fin = record(22, &handshake(16, &[4; 65]));
            fin.extend(record(20, &[1]));
            fin.extend(record(22, &[7; 40]));
            send(p, t + 3 * ms, client, server, &mut cs, ss, &fin)?;
            let mut sfin = record(20, &[1]);
            sfin.extend(record(22, &[9; 40]));
            send(p, t + 4 * ms, server, client, &mut ss, cs, &sfin)?;
            send(
                p,
                t + 5 * ms,
                client,
                server,
                &mut cs,
                ss,
                &record(23, &[1; 100]),
            )?;
            send(
                p,
                t + 6 * ms,
                server,
                client,
                &mut ss,
                cs,
                &record(23, &[2; 300]),
            )?;
        }
        Ending::ClientAlert(desc) => {
            send(
                p,
                t + 3 * ms,
                client,
                server,
                &mut cs,
                ss,
                &record(21, &[2, desc]),
            )?;
        }
    }
    p.tcp(t + 7 * ms, (client, server), (cs, ss), FIN_ACK, &[])?;
    p.tcp(t + 7 * ms, (server, client), (ss, cs + 1), FIN_ACK, &[])?;
    Ok(())
}

/// The `n`-th edge node address: 10.77.x.y, from 10.77.0.1.
pub fn edge(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a4d_0000 | (n.wrapping_add(1) & 0xffff))
}

/// The KubeEdge incident in packets: `edges` edge nodes connect to `server` every `every`,
/// succeeding under `chain_a` until `switch`, then rejecting `chain_b` with unknown_ca (48) until
/// `end`. Each edge uses a new source port per connection. Frames are in time order.
pub fn incident(
    p: &mut Pcap,
    server: SocketAddrV4,
    edges: u32,
    (chain_a, chain_b): (&[&[u8]], &[&[u8]]),
    (start, switch, end): (Duration, Duration, Duration),
    every: Duration,
) -> Result<()> {
    let mut t = start;
    let mut round = 0u32;
    while t < end {
        for e in 0..edges {
            let at = t + every.mul_f64(f64::from(e) / f64::from(edges.max(1)));
            let client = SocketAddrV4::new(edge(e), 30_000 + (round % 30_000) as u16);
            let (chain, ending) = if at < switch {
                (chain_a, Ending::Established)
            } else {
                (chain_b, Ending::ClientAlert(48))
            };
            tls12_session(p, at, client, server, chain, ending, round * 1000 + e)?;
        }
        t += every;
        round += 1;
    }
    Ok(())
}
