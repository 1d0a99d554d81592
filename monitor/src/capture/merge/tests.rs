use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;
use crate::capture::input;

/// A pcap (µs) file of Ethernet frames, one per timestamp (seconds), each frame carrying its
/// timestamp so the merged order can be read back.
fn pcap_bytes(ts_secs: &[u32]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for t in ts_secs {
        let mut frame = vec![0u8; 14];
        frame.extend_from_slice(&t.to_be_bytes());
        b.extend_from_slice(&t.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        b.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        b.extend_from_slice(&frame);
    }
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn merged(paths: &[PathBuf]) -> Merged {
    Merged::new(input::open_all(paths).unwrap()).unwrap()
}

fn times(m: &mut Merged) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some(p) = m.next_packet().unwrap() {
        let t = u32::from_be_bytes(p.data[14..18].try_into().unwrap());
        assert_eq!(i64::from(t) * 1_000_000, p.ts.micros());
        out.push(t);
    }
    out
}

#[test]
fn parts_in_any_order_and_any_compression_merge_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "part1.pcap", &pcap_bytes(&[10, 11, 12]));
    let b = write(dir.path(), "part2.pcap.gz", &gzip(&pcap_bytes(&[13, 14])));
    let c = write(
        dir.path(),
        "part10.pcap.zst",
        &zstd::encode_all(&pcap_bytes(&[15, 16])[..], 3).unwrap(),
    );
    let mut m = merged(&[c.clone(), a.clone(), b.clone()]);
    assert_eq!(times(&mut m), [10, 11, 12, 13, 14, 15, 16]);
    let notices = m.notices();
    assert_eq!(
        notices,
        [Notice::Reordered {
            order: vec![a.clone(), b.clone(), c.clone()]
        }]
    );
    assert_eq!(m.span().unwrap().0.micros(), 10_000_000);
    let mut inorder = merged(&[a, b, c]);
    assert_eq!(times(&mut inorder), [10, 11, 12, 13, 14, 15, 16]);
    assert!(inorder.notices().is_empty());
}

#[test]
fn overlaps_gaps_and_clock_steps_are_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.pcap",
        &pcap_bytes(&[100, 102, 104, 101, 106]),
    );
    let b = write(dir.path(), "b.pcap", &pcap_bytes(&[103, 105, 107]));
    let c = write(dir.path(), "c.pcap", &pcap_bytes(&[300, 301]));
    let mut m = merged(&[a.clone(), b.clone(), c.clone()]);
    // a's own order is kept (101 after 104); b interleaves by time.
    assert_eq!(
        times(&mut m),
        [100, 102, 103, 104, 101, 105, 106, 107, 300, 301]
    );
    let n = m.notices();
    assert_eq!(n.len(), 3, "{n:?}");
    assert!(matches!(&n[0], Notice::Overlap { earlier, later, from, to }
        if *earlier == a && *later == b && from.micros() == 103_000_000 && to.micros() == 106_000_000));
    assert!(matches!(&n[1], Notice::Gap { before, after, from, to }
        if *before == b && *after == c && from.micros() == 107_000_000 && to.micros() == 300_000_000));
    assert!(
        matches!(&n[2], Notice::BackInTime { input, times: 1, largest_us: 3_000_000, first_at_packet: 4 } if *input == a)
    );
    assert_eq!(
        n[1].to_string(),
        format!(
            "no packets for 3 m 13 s between the end of {} (1970-01-01T00:01:47.000000Z) and the start of {} (1970-01-01T00:05:00.000000Z): a part of the capture missing?",
            b.display(),
            c.display()
        )
    );
}

#[test]
fn damaged_compressed_inputs_are_one_line_errors_or_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let full = gzip(&pcap_bytes(&(0..2000).collect::<Vec<_>>()));
    // Cut inside the compressed stream: read up to the cut, flagged as cut short.
    let cut = write(dir.path(), "cut.pcap.gz", &full[..full.len() / 2]);
    let mut m = merged(&[cut]);
    let n = times(&mut m).len();
    assert!(n > 100 && n < 2000, "{n}");
    assert!(m.inputs().next().unwrap().source.truncated());
    // Garbage after a valid gzip header: an error naming the file and gzip.
    let mut bad = full[..20].to_vec();
    bad.extend(std::iter::repeat_n(0xff, 4000));
    let bad = write(dir.path(), "bad.pcap.gz", &bad);
    let err = match input::open_all(std::slice::from_ref(&bad)).and_then(Merged::new) {
        Ok(mut m) => loop {
            match m.next_packet() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a corrupt stream read to its end"),
                Err(e) => break e,
            }
        },
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.starts_with(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("gzip") && !msg.contains('\n'), "{msg}");
    // Not a capture inside the compression.
    let text = write(
        dir.path(),
        "notes.txt.zst",
        &zstd::encode_all(&b"hello world, no capture"[..], 3).unwrap(),
    );
    let msg = input::open_all(&[text]).err().unwrap().to_string();
    assert!(msg.contains("unknown file format"), "{msg}");
}
