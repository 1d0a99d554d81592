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

#[test]
fn arena_reuses_free_chunks_and_leaves_held_ones() {
    let mut arena = PacketArena::default();
    let first = arena.copy(b"first");
    let base = first.as_ptr();
    drop(first);
    // Fill the chunk with packets that are dropped at once: the chunk is reused from its start.
    let mut wrapped = false;
    for i in 0..2 * ARENA_CHUNK / 1000 {
        let p = arena.copy(&[i as u8; 1000]);
        assert_eq!(&p[..], &[i as u8; 1000][..]);
        wrapped |= i > 0 && p.as_ptr() == base;
    }
    assert!(wrapped);
    // A packet kept alive keeps its bytes; later packets go elsewhere without touching them.
    let kept = arena.copy(b"kept");
    for i in 0..2 * ARENA_CHUNK / 1000 {
        let p = arena.copy(&[i as u8; 1000]);
        assert!(!std::ptr::eq(p.as_ptr(), kept.as_ptr()));
    }
    assert_eq!(&kept[..], b"kept");
    // A packet larger than a chunk gets a chunk of its own.
    let big = vec![7u8; 3 * ARENA_CHUNK];
    assert_eq!(arena.copy(&big), big);
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
