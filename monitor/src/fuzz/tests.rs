//! The fuzz harnesses on known inputs: the input formats do what they say (a generated handshake
//! yields its record through each harness), and every input a fuzz run ever found crashing or slow
//! stays a regression test (`monitor/fuzz/regressions/<target>/`, committed).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use trustwatch_testkit::hostile::{self, Pcap};
use trustwatch_testkit::pki::Pki;

use super::*;
use crate::handshake::Outcome;

const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");

/// Every committed regression input of `target`, through `harness`.
fn regressions(target: &str, harness: impl Fn(&[u8])) -> usize {
    let dir = Path::new(REGRESSIONS).join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let data = std::fs::read(entry.path()).expect("regression input");
        eprintln!("{target}: {}", entry.path().display());
        harness(&data);
        n += 1;
    }
    n
}

/// A TLS 1.2 handshake the client aborts with bad_certificate after the server's chain, as
/// (client, server) byte streams, and the chain's DER.
fn failing_handshake() -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let pki = Pki::new().expect("pki");
    let ca = pki.kubeedge_ca().expect("ca");
    let chain = pki.server_leaf(&ca).expect("leaf").chain_der();
    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let mut client = hostile::record(22, &hostile::client_hello(1));
    client.extend(hostile::record(21, &[2, 42]));
    let mut flight = hostile::server_hello(false);
    flight.extend(hostile::certificate(&refs));
    flight.extend(hostile::handshake(14, &[]));
    (client, hostile::record(22, &flight), chain)
}

fn op(out: &mut Vec<u8>, op: u8, body: &[u8]) {
    out.push(op);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(body);
}

#[test]
fn tls_stream_format_and_regressions() {
    let (client, server, _) = failing_handshake();
    let (hello, alert) = client.split_at(client.len() - 7);
    let mut input = Vec::new();
    op(&mut input, 0, hello);
    // The server's flight in two pieces, across a record boundary.
    let (a, b) = server.split_at(100);
    op(&mut input, 1, a);
    op(&mut input, 1, b);
    op(&mut input, 0, alert);
    op(&mut input, 4, &[]);
    let c = tls_stream(&input).expect("a record");
    assert_eq!(c.outcome, Outcome::RejectedByClient, "{c:?}");
    assert!(c.ca_key_id.is_some());
    // The same with a gap in the server's direction before its flight: no chain seen.
    let mut gapped = Vec::new();
    op(&mut gapped, 0, hello);
    op(&mut gapped, 3, &[0; 10]);
    op(&mut gapped, 1, b);
    op(&mut gapped, 0, alert);
    let c = tls_stream(&gapped).expect("a record");
    assert!(c.ca_key_id.is_none(), "{c:?}");
    regressions("tls_stream", |d| {
        tls_stream(d);
    });
}

#[test]
fn certs_format_and_regressions() {
    let (_, _, chain) = failing_handshake();
    let mut input = Vec::new();
    for der in &chain {
        input.extend_from_slice(&(der.len() as u16).to_le_bytes());
        input.extend_from_slice(der);
    }
    assert_eq!(certs(&input), chain.len());
    // Cut inside the last certificate: it no longer parses.
    assert_eq!(certs(&input[..input.len() - 10]), chain.len() - 1);
    regressions("certs", |d| {
        certs(d);
    });
}

/// Frames of a generated capture: three failing handshakes.
fn generated_capture() -> (
    trustwatch_testkit::tempfile::TempDir,
    std::path::PathBuf,
    u64,
) {
    let (_, _, chain) = failing_handshake();
    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let dir = trustwatch_testkit::tempfile::tempdir().expect("tmp");
    let path = dir.path().join("three.pcap");
    let mut p = Pcap::create(&path).expect("pcap");
    let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10000);
    let start = Duration::from_secs(1_700_000_000);
    hostile::failing_clients(&mut p, server, 3, &refs, start, Duration::from_secs(1))
        .expect("write");
    let frames = p.frames;
    p.finish().expect("finish");
    (dir, path, frames)
}

#[test]
fn pipeline_format_and_regressions() {
    let (_dir, path, _) = generated_capture();
    let mut src = FileSource::open(&path).expect("open");
    let mut input = vec![0u8];
    while let Some(pkt) = src.next_packet().expect("read") {
        input.extend_from_slice(&(pkt.data.len() as u16).to_le_bytes());
        input.push(1);
        input.extend_from_slice(&pkt.data);
    }
    assert_eq!(pipeline(&input), 3);
    input[0] |= 16 | 32 | 8;
    assert_eq!(pipeline(&input), 3, "tight limits still see each handshake");
    assert_eq!(pipeline(&[]), 0);
    assert_eq!(pipeline(&[7, 0xff, 0xff, 0]), 0);
    regressions("pipeline", |d| {
        pipeline(d);
    });
}

#[test]
fn file_reader_format_and_regressions() {
    let (_dir, path, frames) = generated_capture();
    let bytes = std::fs::read(&path).expect("read");
    assert!(frames >= 3 * 7, "{frames}");
    assert_eq!(file_reader(&bytes), frames);
    assert_eq!(
        file_reader(&bytes[..bytes.len() - 5]),
        frames - 1,
        "cut file"
    );
    assert_eq!(file_reader(&[]), 0);
    assert_eq!(file_reader(b"not a capture"), 0);
    regressions("file_reader", |d| {
        file_reader(d);
    });
}

/// The generated capture's frames as eBPF records: header, frame, `pad` bytes of padding.
fn ebpf_input(flags: u16, cut: u8, pad: usize) -> Vec<u8> {
    let (_dir, path, _) = generated_capture();
    let mut src = FileSource::open(&path).expect("open");
    let mut input = Vec::new();
    let mut ts_ns = 5_000_000_000u64;
    while let Some(pkt) = src.next_packet().expect("read") {
        ts_ns += 1_000_000;
        let hdr = trustwatch_ebpf::RecordHeader {
            ts_ns,
            ifindex: 1,
            len: pkt.data.len() as u32,
            caplen: pkt.data.len() as u32,
            flags,
            vlan_tci: 7,
            vlan_proto: 0x8100,
            ..Default::default()
        };
        // SAFETY: RecordHeader is plain integers; viewing it as bytes is sound.
        let head = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&hdr).cast::<u8>(),
                trustwatch_ebpf::RECORD_HEADER_LEN,
            )
        };
        let len = head.len() + pkt.data.len() + pad;
        input.extend_from_slice(&(len as u16).to_le_bytes());
        input.push(cut);
        input.extend_from_slice(head);
        input.extend_from_slice(&pkt.data);
        input.extend(std::iter::repeat_n(0xee, pad));
    }
    input
}

#[test]
fn ebpf_records_format_and_regressions() {
    use trustwatch_ebpf::flags;
    // Ring records, then perf samples wrapped inside the header, at its end and in the frame;
    // with a tag from the metadata put back, and padded: each way, the three handshakes.
    for (flags, cut, pad) in [
        (0, u8::MAX, 0),
        (0, 5, 0),
        (0, 32, 3),
        (flags::VLAN, 40, 7),
        (flags::VLAN, u8::MAX, 0),
    ] {
        let input = ebpf_input(flags, cut, pad);
        assert_eq!(
            ebpf_records(&input),
            3,
            "flags {flags}, cut {cut}, pad {pad}"
        );
    }
    // A record claiming more bytes than it holds is skipped, read whole or wrapped (the two
    // readings disagreeing would panic).
    let mut short = ebpf_input(0, 5, 0);
    let len = u16::from_le_bytes([short[0], short[1]]);
    short[0..2].copy_from_slice(&(len - 1).to_le_bytes());
    assert_eq!(ebpf_records(&short[..3 + usize::from(len) - 1]), 0);
    assert_eq!(ebpf_records(&[]), 0);
    regressions("ebpf_records", |d| {
        ebpf_records(d);
    });
}
