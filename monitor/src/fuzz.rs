//! Fuzzing harnesses: what the cargo-fuzz targets in `monitor/fuzz/` run on each input, here so
//! that every finding becomes a unit test calling the same function with the crashing input
//! (`fuzz/tests.rs`). None of this is on the packet path; it drives it.
//!
//! Input formats (the seed builder, `cargo xtask fuzz`, writes the same):
//! - [`pipeline`]: one configuration byte, then frames `[len: u16 LE][time step: u8][len bytes]`;
//!   each frame is one captured packet of the chosen link type, packet time advancing by
//!   `step × 10 ms`. Configuration bits: 0–2 link type, 3 `--any-port`, 4 tight limits (a few
//!   flows, small buffers and budgets, so eviction and shedding run), 5 a gap of 3 minutes in
//!   packet time after frame 8 (idle expiry).
//! - [`tls_stream`]: operations `[op: u8][len: u16 LE][len bytes]` on one connection's two
//!   directions: op bit 0 the side (0 client, 1 server), bits 1–2: 0 data, 1 a gap of `len`
//!   bytes, 2 FIN, 3 RST; bit 3 tight limits (first op only).
//! - [`certs`]: DER certificates `[len: u16 LE][len bytes]`, parsed, cached (a small cache, so
//!   eviction runs) and taken as a chain.
//! - [`file_reader`]: a whole pcap or pcapng file, read streamed and as a mapped file is (through
//!   a window of 1–64 bytes, picked by the first byte): both must give the same.
//! - [`ebpf_records`]: records of the TC program `[len: u16 LE][cut: u8][len bytes]`, each a
//!   record header and frame bytes (and padding) as a buffer hands them over; `cut` 255 reads it
//!   as a ring-buffer record, any other value as a perf sample wrapped after `cut` bytes.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use crate::base::{Side, Timestamp};
use crate::capture::file::FileSource;
use crate::capture::{LinkType, Packet};
use crate::cert::{self, CertCache, Presented};
use crate::config::{Limits, Services};
use crate::detect::{DetectConfig, Detector, Event};
use crate::export::json::JsonLines;
use crate::flow::{CloseReason, Endpoints, StreamHandler};
use crate::handshake::Tracker;
use crate::handshake::tracker::TrackerCtx;
use crate::pipeline::Pipeline;
use crate::stats::Stats;
use crate::trust::TrustedReference;

/// Frames of one input beyond this are ignored (keeps every input well under 100 ms).
const MAX_FRAMES: usize = 4096;

/// Splits `data` into `[len: u16 LE][rest: N bytes][len bytes]` records; a short last record is
/// cut to what is there.
fn records<const N: usize>(mut data: &[u8]) -> impl Iterator<Item = ([u8; N], &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 2 + N {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let mut head = [0u8; N];
        head.copy_from_slice(&data[2..2 + N]);
        let body = &data[2 + N..];
        let len = len.min(body.len());
        let (frame, rest) = body.split_at(len);
        data = rest;
        Some((head, frame))
    })
}

/// Splits `data` into `[op: u8][len: u16 LE][len bytes]` operations; a short last one is cut to
/// what is there.
fn operations(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&op, rest) = data.split_first()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (body, rest) = rest.split_at(len);
        data = rest;
        Some((op, body))
    })
}

const LINK_TYPES: [LinkType; 8] = [
    LinkType::Ethernet,
    LinkType::Raw,
    LinkType::Null,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::Loop,
];

/// Limits small enough that an input of a few kilobytes reaches every bound.
fn tight_limits() -> Limits {
    Limits {
        handshake_window: 2048,
        max_flows: 4,
        idle_timeout_us: 1_000_000,
        cert_cache: 2,
        max_chain_len: 3,
        flow_memory: 16 * 1024,
        cert_memory: 8 * 1024,
    }
}

/// Raw link-layer frames through the whole pipeline, the detector and the JSON writer. Returns
/// the connection records produced.
pub fn pipeline(data: &[u8]) -> usize {
    let Some((&config, frames)) = data.split_first() else {
        return 0;
    };
    let linktype = LINK_TYPES[usize::from(config & 7)];
    let mut services: Services = "443,10000=cloudhub,10002".parse().unwrap_or_default();
    services.any_port = config & 8 != 0;
    let limits = if config & 16 != 0 {
        tight_limits()
    } else {
        Limits::default()
    };
    let mut detect_cfg = DetectConfig {
        services: services.clone(),
        ..DetectConfig::default()
    };
    if config & 16 != 0 {
        detect_cfg.limits.max_clients = 4;
        detect_cfg.limits.max_window_entries = 8;
        detect_cfg.limits.max_ca_keys = 2;
        detect_cfg.limits.max_servers = 2;
    }
    let mut pipeline = Pipeline::new(services, limits);
    let mut detector = Detector::new(detect_cfg, TrustedReference::default());
    let mut out = JsonLines::new(io::sink(), false);
    let mut events: Vec<Event> = Vec::new();
    let mut ts = 1_700_000_000_000_000i64;
    let mut produced = 0;
    let mut emit = |c: crate::handshake::Connection, events: &mut Vec<Event>| {
        produced += 1;
        let _ = out.connection(&c);
        detector.observe(&c, events);
    };
    for (n, ([step], frame)) in records::<1>(frames).take(MAX_FRAMES).enumerate() {
        ts += i64::from(step) * 10_000;
        if n == 8 && config & 32 != 0 {
            ts += 180_000_000;
        }
        let pkt = Packet {
            ts: Timestamp(ts),
            linktype,
            data: Bytes::copy_from_slice(frame),
        };
        let mut conns = Vec::new();
        pipeline.packet(&pkt, &mut |c| conns.push(c));
        for c in conns {
            emit(c, &mut events);
        }
    }
    let mut conns = Vec::new();
    pipeline.finish(&mut |c| conns.push(c));
    for c in conns {
        emit(c, &mut events);
    }
    detector.tick(Timestamp(ts + 1_000_000), &mut events);
    let mut sink = JsonLines::new(io::sink(), false);
    for e in &events {
        let _ = sink.event(e);
        let _ = crate::export::text::timeline_line(e);
    }
    let _ = pipeline.stats();
    produced
}

/// One connection's two byte streams through the handshake tracker (records, handshake messages,
/// hellos, certificates, alerts, the outcome), then its record as JSON. Returns the record.
pub fn tls_stream(data: &[u8]) -> Option<crate::handshake::Connection> {
    let tight = data.first().is_some_and(|op| op & 8 != 0);
    let limits = if tight {
        tight_limits()
    } else {
        Limits::default()
    };
    let endpoints = Endpoints {
        client: ([10, 0, 0, 1], 40000).into(),
        server: ([10, 0, 0, 2], 10000).into(),
    };
    let start = Timestamp(1_700_000_000_000_000);
    let mut tracker = Tracker::new(endpoints, Arc::from("cloudhub"), start, None, &limits);
    let mut ctx = TrackerCtx {
        certs: CertCache::new(limits.cert_cache, limits.cert_memory),
        stats: Stats::default(),
    };
    let mut out = JsonLines::new(io::sink(), false);
    let mut ts = start;
    let mut decided = None;
    for (op, body) in operations(data).take(MAX_FRAMES) {
        ts = Timestamp(ts.0 + 1000);
        let side = if op & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        };
        match (op >> 1) & 3 {
            0 => {
                if tracker.wants_data() {
                    tracker.on_data(&mut ctx, side, ts, body);
                }
            }
            1 => tracker.on_gap(&mut ctx, side, body.len() as u64),
            k => tracker.on_close_from(&mut ctx, side, ts, k == 3),
        }
        let _ = tracker.heap_bytes();
        let _ = tracker.worth();
        if let Some(c) = tracker.take_decided() {
            let _ = out.connection(&c);
            decided = Some(c);
        }
    }
    if let Some(c) = tracker.finish(CloseReason::CaptureEnd, ts) {
        let _ = out.connection(&c);
        decided = Some(c);
    }
    decided
}

/// DER certificates: parsed alone, through a small cache twice (hits and evictions), and as one
/// chain (the CA key id). Returns the certificates that parsed.
pub fn certs(data: &[u8]) -> usize {
    let mut cache = CertCache::new(3, 24 * 1024);
    let mut chain: Vec<Presented> = Vec::new();
    for (_, der) in records::<0>(data).take(64) {
        let direct = cert::parse(der);
        let cached = cache.get(der);
        let again = cache.get(der);
        assert_eq!(direct.sha256(), cached.sha256());
        assert_eq!(cached.sha256(), again.sha256());
        assert_eq!(direct.info().is_some(), cached.info().is_some());
        chain.push(cached);
        let _ = cache.heap_bytes();
    }
    let _ = cert::ca_key_id(&chain);
    assert!(cache.len() <= 3);
    chain.iter().filter(|c| c.info().is_some()).count()
}

/// A pcap or pcapng file through the file source (pcap-parser framing, damage recovery) and the
/// decoder, read from memory. Returns the packets read.
pub fn file_reader(data: &[u8]) -> u64 {
    let opened = FileSource::from_reader(
        "fuzz-input",
        Box::new(std::io::Cursor::new(data.to_vec())),
        data.len() as u64,
    );
    // The same bytes as a mapped file is read, through a window of a few bytes (the first byte
    // picks it), so that every record and every damaged stretch crosses window moves: what it
    // reads must be what the streamed reader reads.
    let window = 1 + usize::from(data.first().copied().unwrap_or(0) % 64);
    let windowed = FileSource::from_bytes_windowed(
        std::path::Path::new("fuzz-input"),
        Bytes::copy_from_slice(data),
        window,
    );
    let (mut src, mut win) = match (opened, windowed) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "window {window}");
            return 0;
        }
        (a, b) => panic!(
            "streamed {:?}, windowed {:?} (window {window})",
            a.err(),
            b.err()
        ),
    };
    for _ in 0..MAX_FRAMES {
        match (src.next_frame(), win.next_frame()) {
            (Ok(Some(frame)), Ok(Some(other))) => {
                assert_eq!(
                    (frame.ts, frame.linktype, frame.data),
                    (other.ts, other.linktype, other.data),
                    "window {window}"
                );
                let _ = crate::decode::decode(&frame);
            }
            (Ok(None), Ok(None)) => break,
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "window {window}");
                break;
            }
            (a, b) => panic!(
                "streamed {:?}, windowed {:?} (window {window})",
                a.map(|f| f.map(|f| f.data.len()))
                    .map_err(|e| e.to_string()),
                b.map(|f| f.map(|f| f.data.len()))
                    .map_err(|e| e.to_string())
            ),
        }
    }
    assert_eq!(
        (src.truncated(), src.damage(), src.damaged_regions()),
        (win.truncated(), win.damage(), win.damaged_regions()),
        "window {window}"
    );
    let _ = src.linktype();
    src.packets()
}

/// eBPF records through the record decoder (header, frame, VLAN tag put back; perf samples
/// split anywhere must read as the whole record does) and the pipeline. Returns the connection
/// records produced.
pub fn ebpf_records(data: &[u8]) -> usize {
    use crate::capture::ebpf::{buffers, clock::Clock, record};
    use trustwatch_ebpf::flags;

    let clock = Clock::with_offset_ns(1_700_000_000_000_000_000);
    let services: Services = "10000=cloudhub,10002".parse().unwrap_or_default();
    let mut pipeline = Pipeline::new(services, Limits::default());
    let mut produced = 0;
    let mut sink = |_: crate::handshake::Connection| produced += 1;
    for ([cut], rec) in records::<1>(data).take(MAX_FRAMES) {
        let whole = record::header(rec).and_then(|h| record::frame(rec, &h).map(|f| (h, f)));
        let (hdr, pieces) = if cut == u8::MAX {
            match whole {
                Ok((h, f)) => (h, [f, &[][..]]),
                Err(_) => continue,
            }
        } else {
            let (head, tail) = rec.split_at(usize::from(cut).min(rec.len()));
            match (buffers::sample(head, tail), whole) {
                (Ok((h, [a, b])), Ok((h_whole, f))) => {
                    assert_eq!(h, h_whole, "a wrapped sample reads another header");
                    assert_eq!([a, b].concat(), f, "a wrapped sample reads other bytes");
                    (h, [a, b])
                }
                (Err(_), Err(_)) => continue,
                (got, whole) => panic!("wrapped {:?}, whole {:?}", got.is_ok(), whole.is_ok()),
            }
        };
        let pkt = record::packet(&hdr, pieces, &clock);
        let caplen = hdr.caplen as usize;
        let tagged = hdr.flags & flags::VLAN != 0 && hdr.flags & flags::RAW_IP == 0 && caplen >= 12;
        assert_eq!(pkt.data.len(), caplen + if tagged { 4 } else { 0 });
        pipeline.packet(&pkt, &mut sink);
    }
    pipeline.finish(&mut sink);
    produced
}

#[cfg(test)]
mod tests;
