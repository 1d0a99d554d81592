use std::io::Write;

use super::*;

const PCAPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/validation/pcaps");

fn pcaps() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(PCAPS)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn tshark_count(p: &Path) -> Option<u64> {
    let out = std::process::Command::new("capinfos")
        .args(["-c", "-M", "-T", "-r"])
        .arg(p)
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    s.lines().last()?.split('\t').nth(1)?.trim().parse().ok()
}

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tw-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn reason(e: Error) -> String {
    match e {
        Error::File { reason, .. } => reason,
        other => panic!("expected Error::File, got {other}"),
    }
}

#[test]
fn opens_every_validation_pcap_and_counts_packets() {
    let files = pcaps();
    assert_eq!(files.len(), 60, "validation corpus at {PCAPS}");
    let have_capinfos = tshark_count(&files[0]).is_some();
    for f in &files {
        let mut src = FileSource::open(f).unwrap_or_else(|e| panic!("{e}"));
        let mut n = 0u64;
        while let Some(p) = src.next_packet().unwrap() {
            assert!(!p.data.is_empty());
            assert!(p.ts.micros() > 0, "{}: ts {}", f.display(), p.ts.micros());
            n += 1;
        }
        assert!(n > 0, "{}", f.display());
        assert!(!src.truncated(), "{}", f.display());
        assert_eq!(src.position(), src.file_size());
        assert_eq!(src.packets(), n);
        if have_capinfos {
            assert_eq!(Some(n), tshark_count(f), "{}", f.display());
        }
    }
}

#[test]
fn link_types_of_the_corpus() {
    let lt = |name: &str| {
        FileSource::open(Path::new(PCAPS).join(name))
            .unwrap()
            .linktype()
    };
    assert_eq!(lt("sv-tls-store-02-tls-client-auth.pcap"), LinkType::Null);
    assert_eq!(lt("sv-tls-pre-1970.pcap"), LinkType::Raw);
    assert_eq!(lt("zeek-pppoe-over-qinq.pcap"), LinkType::Ethernet);
    assert_eq!(lt("ndpi-whois.pcapng"), LinkType::Ethernet);
}

#[test]
fn timestamps_are_microseconds() {
    // First packet of sv-ja4-tls.pcap, as tshark prints it (epoch seconds with µs).
    let mut src = FileSource::open(Path::new(PCAPS).join("sv-ja4-tls.pcap")).unwrap();
    let p = src.next_packet().unwrap().unwrap();
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(Path::new(PCAPS).join("sv-ja4-tls.pcap"))
        .args(["-c", "1", "-T", "fields", "-e", "frame.time_epoch"])
        .output();
    if let Ok(out) = out
        && let Ok(s) = String::from_utf8(out.stdout)
        && let Ok(t) = s.trim().parse::<f64>()
    {
        assert!(
            (p.ts.secs_f64() - t).abs() < 1e-5,
            "{} vs {t}",
            p.ts.secs_f64()
        );
    }
    assert!(p.ts.micros() > 1_000_000_000_000_000);
}

/// Every packet of `path` as libpcap reads it (nanosecond precision, as trustwatch did).
fn libpcap_packets(path: &Path) -> Vec<(Timestamp, i32, Vec<u8>)> {
    let mut cap = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).unwrap();
    let dlt = cap.get_datalink().0;
    let mut out = Vec::new();
    while let Ok(p) = cap.next_packet() {
        let (sec, nsec) = (p.header.ts.tv_sec, p.header.ts.tv_usec);
        let ts = Timestamp::from_micros(sec * 1_000_000 + nsec.div_euclid(1000));
        out.push((ts, dlt, p.data.to_vec()));
    }
    out
}

fn all_packets(src: &mut FileSource) -> Vec<Packet> {
    let mut v = Vec::new();
    while let Some(p) = src.next_packet().unwrap() {
        v.push(p);
    }
    v
}

#[test]
fn every_corpus_packet_reads_as_libpcap_reads_it() {
    let mut compared = 0;
    for f in pcaps() {
        let expected = libpcap_packets(&f);
        let mut src = FileSource::open(&f).unwrap();
        let got = all_packets(&mut src);
        assert_eq!(got.len(), expected.len(), "{}", f.display());
        for (i, (p, (ts, dlt, data))) in got.iter().zip(&expected).enumerate() {
            assert_eq!(p.ts, *ts, "{} packet {i}", f.display());
            assert_eq!(
                Some(p.linktype),
                LinkType::from_linktype(*dlt),
                "{} packet {i}",
                f.display()
            );
            assert_eq!(&p.data[..], &data[..], "{} packet {i}", f.display());
        }
        compared += got.len();
    }
    assert!(compared > 5_000, "{compared}");
}

/// A pcap file (little-endian unless `be`, microseconds unless `nanos`) of the given records.
fn pcap_file(be: bool, nanos: bool, linktype: u32, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
    let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut f = Vec::new();
    f.extend_from_slice(&w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    f.extend_from_slice(&w16(2));
    f.extend_from_slice(&w16(4));
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&w32(65535));
    f.extend_from_slice(&w32(linktype));
    for &(sec, frac, data) in records {
        f.extend_from_slice(&w32(sec));
        f.extend_from_slice(&w32(frac));
        f.extend_from_slice(&w32(data.len() as u32));
        f.extend_from_slice(&w32(data.len() as u32 + 4));
        f.extend_from_slice(data);
    }
    f
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = tmpdir().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn both_byte_orders_and_both_resolutions() {
    let records: [(u32, u32, &[u8]); 2] = [(1, 999_999, b"\x45abc"), (2, 5, b"\x45de")];
    for be in [false, true] {
        let f = write(
            &format!("us-{be}.pcap"),
            &pcap_file(be, false, 101, &records),
        );
        let got = all_packets(&mut FileSource::open(&f).unwrap());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].ts, Timestamp::from_micros(1_999_999));
        assert_eq!(got[1].ts, Timestamp::from_micros(2_000_005));
        assert_eq!(&got[1].data[..], b"\x45de");
        assert_eq!(got[0].linktype, LinkType::Raw);
        // The same file in nanoseconds: 999_999 ns is 999 µs.
        let f = write(
            &format!("ns-{be}.pcap"),
            &pcap_file(be, true, 101, &records),
        );
        let got = all_packets(&mut FileSource::open(&f).unwrap());
        assert_eq!(got[0].ts, Timestamp::from_micros(1_000_999));
        assert_eq!(got[1].ts, Timestamp::from_micros(2_000_000));
        // libpcap agrees on every one of them.
        let lib = libpcap_packets(&f);
        assert_eq!(
            lib.iter().map(|p| p.0).collect::<Vec<_>>(),
            [got[0].ts, got[1].ts]
        );
    }
}

/// pcapng blocks, little-endian.
mod ng {
    pub fn block(ty: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.resize(8 + padded, 0);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }
    pub fn shb() -> Vec<u8> {
        let mut body = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes());
        block(0x0A0D_0D0A, &body)
    }
    /// An interface; `tsresol`/`tsoffset` options when given.
    pub fn idb(linktype: u16, tsresol: Option<u8>, tsoffset: Option<i64>) -> Vec<u8> {
        let mut body = linktype.to_le_bytes().to_vec();
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&0u32.to_le_bytes());
        if let Some(r) = tsresol {
            body.extend_from_slice(&9u16.to_le_bytes());
            body.extend_from_slice(&1u16.to_le_bytes());
            body.extend_from_slice(&[r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            body.extend_from_slice(&14u16.to_le_bytes());
            body.extend_from_slice(&8u16.to_le_bytes());
            body.extend_from_slice(&o.to_le_bytes());
        }
        if tsresol.is_some() || tsoffset.is_some() {
            body.extend_from_slice(&[0; 4]);
        }
        block(1, &body)
    }
    pub fn epb(iface: u32, t: u64, data: &[u8]) -> Vec<u8> {
        let mut body = iface.to_le_bytes().to_vec();
        body.extend_from_slice(&((t >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(t as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        block(6, &body)
    }
    pub fn spb(data: &[u8]) -> Vec<u8> {
        let mut body = (data.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(data);
        block(3, &body)
    }
    /// The obsolete Packet Block.
    pub fn pb(iface: u16, t: u64, data: &[u8]) -> Vec<u8> {
        let mut body = iface.to_le_bytes().to_vec();
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&((t >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(t as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        block(2, &body)
    }
}

#[test]
fn pcapng_interfaces_keep_their_own_link_type_and_clock() {
    let mut f = ng::shb();
    f.extend(ng::idb(1, None, None)); // Ethernet, microseconds
    f.extend(ng::idb(101, Some(0x80 | 20), Some(10))); // raw IP, 2^-20 s, +10 s
    f.extend(ng::idb(105, None, None)); // 802.11: not decoded
    f.extend(ng::block(4, &[0; 8])); // a Name Resolution Block: skipped
    f.extend(ng::epb(0, 1_500_000, b"eth"));
    f.extend(ng::epb(1, 3 << 19, b"\x45raw")); // 1.5 s units of 2^-20
    f.extend(ng::epb(2, 7, b"wifi"));
    f.extend(ng::spb(b"simple")); // interface 0, no timestamp
    f.extend(ng::pb(1, 1 << 20, b"\x45old")); // 1 s
    // A second section: interfaces start over (nanoseconds, Linux cooked v2).
    f.extend(ng::shb());
    f.extend(ng::idb(276, Some(9), None));
    f.extend(ng::epb(0, 2_000_000_123, b"sll2"));
    let path = write("multi.pcapng", &f);
    let mut src = FileSource::open(&path).unwrap();
    let got = all_packets(&mut src);
    let seen: Vec<(LinkType, i64, &[u8])> = got
        .iter()
        .map(|p| (p.linktype, p.ts.micros(), &p.data[..]))
        .collect();
    assert_eq!(
        seen,
        [
            (LinkType::Ethernet, 1_500_000, &b"eth"[..]),
            (LinkType::Raw, 11_500_000, &b"\x45raw"[..]),
            (LinkType::Ethernet, 0, &b"simple"[..]),
            (LinkType::Raw, 11_000_000, &b"\x45old"[..]),
            (LinkType::LinuxSll2, 2_000_000, &b"sll2"[..]),
        ]
    );
    assert_eq!(
        src.unsupported(),
        Unsupported {
            packets: 1,
            linktype: Some(105)
        }
    );
    assert!(!src.truncated());
    assert!(src.damage().is_empty());
    assert_eq!(src.position(), f.len() as u64);
}

#[test]
fn pcapng_without_a_decodable_interface_is_refused() {
    let mut f = ng::shb();
    f.extend(ng::idb(105, None, None));
    f.extend(ng::epb(0, 1, b"wifi"));
    match FileSource::open(write("wifi.pcapng", &f)).unwrap_err() {
        Error::LinkType { linktype, .. } => assert_eq!(linktype, 105),
        other => panic!("{other}"),
    }
    let mut f = ng::shb();
    f.extend(ng::block(4, &[0; 8]));
    let r = reason(FileSource::open(write("noidb.pcapng", &f)).unwrap_err());
    assert!(r.contains("no Interface Description"), "{r}");
}

/// Offsets of the records of a plain little-endian pcap file.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut at = 24;
    let mut v = Vec::new();
    while at + 16 <= bytes.len() {
        v.push(at);
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + caplen;
    }
    v
}

#[test]
fn a_corrupt_record_header_is_skipped_and_reported() {
    let orig = Path::new(PCAPS).join("zeek-tls1.2.pcap");
    let full = all_packets(&mut FileSource::open(&orig).unwrap());
    let bytes = std::fs::read(&orig).unwrap();
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), full.len());
    let k = full.len() / 2;
    let mut bad = bytes.clone();
    bad[offsets[k] + 8..offsets[k] + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let mut src = FileSource::open(write("corrupt.pcap", &bad)).unwrap();
    let got = all_packets(&mut src);
    // Every record but the damaged one, in order, unchanged.
    assert_eq!(got.len(), full.len() - 1);
    for (i, p) in got.iter().enumerate() {
        let want = &full[if i < k { i } else { i + 1 }];
        assert_eq!((p.ts, &p.data[..]), (want.ts, &want.data[..]), "{i}");
    }
    let damage = src.damage();
    assert_eq!(damage.len(), 1);
    assert_eq!(damage[0].offset, offsets[k] as u64);
    assert_eq!(damage[0].skipped, (offsets[k + 1] - offsets[k]) as u64);
    assert_eq!(damage[0].after_packets, k as u64);
    assert!(damage[0].resumed);
    assert!(
        damage[0].reason.contains("4294967280"),
        "{}",
        damage[0].reason
    );
    assert!(!src.truncated());

    // The last record's header corrupt: nothing readable follows, the rest is skipped.
    let last = *offsets.last().unwrap();
    let mut bad = bytes.clone();
    bad[last + 8..last + 12].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
    let mut src = FileSource::open(write("corrupt-last.pcap", &bad)).unwrap();
    assert_eq!(all_packets(&mut src).len(), full.len() - 1);
    assert_eq!(
        (src.damage()[0].resumed, src.damage()[0].skipped),
        (false, (bytes.len() - last) as u64)
    );
}

#[test]
fn a_corrupt_pcapng_block_is_skipped_and_reported() {
    let mut f = ng::shb();
    f.extend(ng::idb(101, None, None));
    let mut offsets = Vec::new();
    for i in 0..6u64 {
        offsets.push(f.len());
        f.extend(ng::epb(0, i, &[0x45, i as u8, 0, 0, 0, 0, 0, 0]));
    }
    // The third block's length no longer matches its trailer.
    f[offsets[2] + 4] = 0x7c;
    let mut src = FileSource::open(write("corrupt.pcapng", &f)).unwrap();
    let got = all_packets(&mut src);
    assert_eq!(
        got.iter().map(|p| p.data[1]).collect::<Vec<_>>(),
        [0, 1, 3, 4, 5]
    );
    assert_eq!(src.damage().len(), 1);
    assert_eq!(src.damage()[0].offset, offsets[2] as u64);
    assert_eq!(src.damage()[0].skipped, (offsets[3] - offsets[2]) as u64);
}

/// Hands out at most `step` bytes per read.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn any_reader_in_any_pieces_gives_the_same_packets() {
    for name in ["zeek-tls1.2.pcap", "ndpi-whois.pcapng"] {
        let path = Path::new(PCAPS).join(name);
        let full = all_packets(&mut FileSource::open(&path).unwrap());
        let data = std::fs::read(&path).unwrap();
        for step in [1, 7, 4096, 1 << 20] {
            let reader = Trickle {
                data: data.clone(),
                at: 0,
                step,
            };
            let mut src = FileSource::from_reader(&path, Box::new(reader), 0).unwrap();
            let got = all_packets(&mut src);
            assert_eq!(got.len(), full.len(), "{name} in pieces of {step}");
            assert!(
                got.iter()
                    .zip(&full)
                    .all(|(a, b)| a.ts == b.ts && a.data == b.data),
                "{name} in pieces of {step}"
            );
        }
    }
}

#[test]
fn owned_packets_share_the_buffer_and_outlive_it() {
    // Records almost as large as the read size, and many small ones.
    let big = vec![0x45u8; 200_000];
    let small = vec![0x45u8; 1_000];
    let mut records: Vec<(u32, u32, &[u8])> = Vec::new();
    for i in 0..2_000u32 {
        records.push((i, 0, if i % 500 == 0 { &big } else { &small }));
    }
    let mut file = pcap_file(false, false, 101, &records);
    // A larger snapshot length than the default of the helper.
    file[16..20].copy_from_slice(&262_144u32.to_le_bytes());
    let path = write("big.pcap", &file);
    let mut src = FileSource::open(&path).unwrap();
    let first = src.next_packet().unwrap().unwrap();
    let second = src.next_packet().unwrap().unwrap();
    // Zero copy: both are views of one buffer, one after the other.
    assert_eq!(
        second.data.as_ptr() as usize,
        first.data.as_ptr() as usize + first.data.len() + 16
    );
    // Held packets keep their bytes while the reader moves on (and reads new buffers).
    let rest = all_packets(&mut src);
    assert_eq!(rest.len(), 1_998);
    assert_eq!(first.data.len(), 200_000);
    assert!(first.data.iter().all(|&b| b == 0x45));
    assert_eq!(rest[498].data.len(), 200_000);
    assert_eq!(
        rest.last().unwrap().ts,
        Timestamp::from_micros(1_999_000_000)
    );
}

#[test]
fn missing_file_and_directory() {
    let e = FileSource::open("/nonexistent/x.pcap").unwrap_err();
    assert_eq!(e.to_string(), "/nonexistent/x.pcap: no such file");
    let d = tmpdir();
    let r = reason(FileSource::open(&d).unwrap_err());
    assert!(r.contains("directory"), "{r}");
}

#[test]
fn empty_and_garbage_files() {
    let d = tmpdir();
    let empty = d.join("empty.pcap");
    std::fs::File::create(&empty).unwrap();
    assert!(reason(FileSource::open(&empty).unwrap_err()).contains("empty"));

    let garbage = d.join("garbage.pcap");
    std::fs::write(
        &garbage,
        b"this is not a capture file at all, just text\n".repeat(10),
    )
    .unwrap();
    let r = reason(FileSource::open(&garbage).unwrap_err());
    assert!(r.contains("not a pcap"), "{r}");
    assert!(!r.contains('\n'));

    // Three bytes of a pcap magic: too short to be a header.
    let short = d.join("short.pcap");
    std::fs::write(&short, [0xd4, 0xc3, 0xb2]).unwrap();
    let r = reason(FileSource::open(&short).unwrap_err());
    assert!(!r.is_empty() && !r.contains('\n'), "{r}");
}

#[test]
fn truncated_copy_ends_with_flag() {
    let d = tmpdir();
    for name in ["zeek-tls1.2.pcap", "ndpi-whois.pcapng"] {
        let orig = Path::new(PCAPS).join(name);
        let full: Vec<Packet> = FileSource::open(&orig)
            .unwrap()
            .map(|p| p.unwrap())
            .collect();
        let bytes = std::fs::read(&orig).unwrap();
        let cut = d.join(format!("cut-{name}"));
        let mut f = std::fs::File::create(&cut).unwrap();
        f.write_all(&bytes[..bytes.len() * 2 / 3]).unwrap();
        drop(f);
        let mut src = FileSource::open(&cut).unwrap();
        let mut n = 0;
        while let Some(p) = src.next_packet().unwrap() {
            assert_eq!(p.data, full[n].data);
            n += 1;
        }
        assert!(src.truncated(), "{name}");
        assert!(n > 0 && n < full.len(), "{name}: {n}");
        // Further calls stay at the end.
        assert!(src.next_packet().unwrap().is_none());
    }
}

#[test]
fn unsupported_link_type() {
    // A pcap header with LINKTYPE_IEEE802_11 (105) and no records.
    let d = tmpdir();
    let p = d.join("wifi.pcap");
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&105u32.to_le_bytes());
    std::fs::write(&p, h).unwrap();
    match FileSource::open(&p).unwrap_err() {
        Error::LinkType { linktype, name, .. } => {
            assert_eq!(linktype, 105);
            assert_eq!(name, "IEEE802_11");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn nanosecond_pcap_keeps_microseconds() {
    // A nanosecond-magic pcap with one raw-IP record at 1.000123456 s.
    let d = tmpdir();
    let p = d.join("nano.pcap");
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b23c4du32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&101u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&123_456u32.to_le_bytes());
    h.extend_from_slice(&4u32.to_le_bytes());
    h.extend_from_slice(&4u32.to_le_bytes());
    h.extend_from_slice(&[0x45, 0, 0, 4]);
    std::fs::write(&p, h).unwrap();
    let mut src = FileSource::open(&p).unwrap();
    assert_eq!(src.linktype(), LinkType::Raw);
    let pkt = src.next_packet().unwrap().unwrap();
    assert_eq!(pkt.ts, Timestamp::from_micros(1_000_123));
    assert!(src.next_packet().unwrap().is_none());
    assert!(!src.truncated());
}

/// What a reader gave: every packet (time, bytes), whether it ended at a cut, and the damage.
type Reading = (Vec<(Timestamp, Vec<u8>)>, bool, Vec<Damage>);

fn reading(mut src: FileSource) -> Reading {
    let packets = all_packets(&mut src)
        .into_iter()
        .map(|p| (p.ts, p.data.to_vec()))
        .collect();
    (packets, src.truncated(), src.damage().to_vec())
}

#[test]
fn a_mapped_file_reads_as_the_same_bytes_streamed() {
    // A regular file is mapped; the same bytes from a reader (a pipe, a decompressor) are not.
    let orig = Path::new(PCAPS).join("zeek-tls1.2.pcap");
    let bytes = std::fs::read(&orig).unwrap();
    assert!(FileSource::open(&orig).unwrap().hand_over_map(0).is_some());
    let streamed = |data: &[u8]| {
        let reader = Trickle {
            data: data.to_vec(),
            at: 0,
            step: 1 << 20,
        };
        FileSource::from_reader(&orig, Box::new(reader), 0).unwrap()
    };
    assert!(streamed(&bytes).hand_over_map(0).is_none());
    // Whole, cut short in its last record, and with a corrupt record header midway: the same
    // packets, the same cut, the same damage.
    let offsets = record_offsets(&bytes);
    let k = offsets.len() / 2;
    let mut corrupt = bytes.clone();
    corrupt[offsets[k] + 8..offsets[k] + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let cut = &bytes[..offsets[k] + 20];
    // A damaged stretch longer than the window a mapped reader looks at: 5 MiB of 0xFF
    // between two records (the scan for where records frame again crosses windows).
    let mut long = bytes[..offsets[k]].to_vec();
    long.extend(std::iter::repeat_n(0xFFu8, 5 << 20));
    long.extend_from_slice(&bytes[offsets[k]..]);
    const { assert!(5 << 20 > 2 * mapped::WINDOW) };
    for (name, data) in [
        ("whole", &bytes[..]),
        ("cut", cut),
        ("corrupt", &corrupt),
        ("long-damage", &long),
    ] {
        let mapped = reading(FileSource::open(write(&format!("{name}.pcap"), data)).unwrap());
        let read = reading(streamed(data));
        assert_eq!(mapped, read, "{name}");
        assert!(mapped.0.len() >= k, "{name}: {} packets", mapped.0.len());
    }
    // Every packet of the long-damage file: the 5 MiB are skipped in one stretch.
    let (packets, truncated, damage) =
        reading(FileSource::open(write("long-damage.pcap", &long)).unwrap());
    assert_eq!(packets.len(), offsets.len());
    assert!(!truncated);
    assert_eq!(
        damage
            .iter()
            .map(|d| (d.offset, d.skipped, d.resumed))
            .collect::<Vec<_>>(),
        [(offsets[k] as u64, 5 << 20, true)]
    );
}

/// 40 MiB of 60 KB records, record `i` filled with `i % 251`: far more than the window; its
/// bytes and where they were written as `name`.
fn long_file(name: &str) -> (Vec<u8>, std::path::PathBuf) {
    let records: Vec<Vec<u8>> = (0..700u32).map(|i| vec![(i % 251) as u8; 60_000]).collect();
    let list: Vec<(u32, u32, &[u8])> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u32, 0, &r[..]))
        .collect();
    let mut file = pcap_file(false, false, 101, &list);
    file[16..20].copy_from_slice(&262_144u32.to_le_bytes());
    let path = write(name, &file);
    (file, path)
}

#[test]
fn pages_behind_the_reader_are_released_and_held_packets_stay_valid() {
    let (_, path) = long_file("mapped-long.pcap");
    let mut src = FileSource::open(&path).unwrap();
    let first = src.next_packet().unwrap().unwrap();
    let at = first.data.as_ptr() as usize;
    let mut n = 1;
    let mut peak = 0;
    while let Some(p) = src.next_packet().unwrap() {
        assert!(p.data.iter().all(|&b| b == (n % 251) as u8), "record {n}");
        n += 1;
        peak = peak.max(mapped::resident_kib_of_map(at));
    }
    assert_eq!(n, 700);
    // The reader touched 40 MiB of the map; what stayed resident is a few windows.
    let window_kib = (mapped::WINDOW / 1024) as u64;
    assert!(
        peak > 0 && peak <= 4 * window_kib,
        "{peak} KiB of the map resident"
    );
    // The first packet's pages were released long ago: touching them maps the same bytes again.
    assert!(first.data.iter().all(|&b| b == 0));
}

#[test]
fn handed_over_pages_are_mapped_and_released_by_whoever_runs_the_planned_work() {
    let (file, path) = long_file("mapped-handed-over.pcap");
    let mut src = FileSource::open(&path).unwrap();
    const MIB: usize = 1 << 20;
    let (bytes, mut pages) = src.hand_over_map(16 * MIB).unwrap();
    assert_eq!(bytes.len(), file.len());
    let at = bytes.as_ptr() as usize;
    let kib = |n: usize| (n / 1024) as u64;
    // Planned work maps what it names, once.
    let work = pages.plan(0, 0..12 * MIB).expect("12 MiB to map");
    work.run();
    let mapped = mapped::resident_kib_of_map(at);
    assert!(mapped >= kib(12 * MIB), "{mapped} KiB mapped");
    assert!(pages.plan(0, 4 * MIB..12 * MIB).is_none(), "mapped twice");
    // Past a gap, mapping starts where it is asked to, not where the last range ended.
    pages
        .plan(0, 20 * MIB..24 * MIB)
        .expect("4 MiB to map")
        .run();
    let mapped = mapped::resident_kib_of_map(at);
    assert!(
        mapped >= kib(16 * MIB) && mapped < kib(20 * MIB),
        "{mapped} KiB mapped"
    );
    // The reader now maps nothing ahead and keeps 16 MiB behind it.
    let mut n = 0;
    let mut peak = 0;
    while let Some(f) = src.next_frame().unwrap() {
        assert!(f.data.iter().all(|&b| b == (n % 251) as u8), "record {n}");
        n += 1;
        peak = peak.max(mapped::resident_kib_of_map(at));
    }
    assert_eq!(n, 700);
    let window = mapped::WINDOW;
    assert!(
        peak >= kib(16 * MIB) && peak <= kib(16 * MIB + 4 * window),
        "{peak} KiB of the map resident"
    );
    // What the reader kept (16 MiB behind where it last moved its window) is released by
    // whoever runs the planned work.
    let left = mapped::resident_kib_of_map(at);
    assert!(left >= kib(8 * MIB), "{left} KiB left");
    pages
        .plan(file.len(), 0..0)
        .expect("pages to release")
        .run();
    let left = mapped::resident_kib_of_map(at);
    assert!(left <= 4, "{left} KiB left after the release");
    assert!(pages.plan(file.len(), 0..0).is_none(), "released twice");
    // A file read into a buffer has no pages to hand over.
    let mut streamed =
        FileSource::from_reader(&path, Box::new(std::io::Cursor::new(file)), 0).unwrap();
    assert!(streamed.hand_over_map(0).is_none());
}
