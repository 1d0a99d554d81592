//! `analyze --threads N` gives what one thread gives: the same connection records and events,
//! byte for byte and in the same order, and the same summary (issue 12).
//!
//! Runs the real binary with `--threads 1` (no worker thread) and with 2, 3 and 4 threads (1, 2
//! and 3 workers behind the reader; with 2, the reader analyses a share of the connections
//! itself) on
//! - the 60 public captures of `../shared/validation` (`--any-port`), and
//! - a generated capture that crosses every place where order is decided: several epochs of
//!   frames (more than `parallel::EPOCH_FRAMES`), idle sweeps that close flows of every worker
//!   at once, packet times that go back (each generator writes its own time range), detector
//!   ticks through a quiet gap, and two collapses the detector must date the same way; once
//!   more through a packet selection that keeps every frame (`--filter tcp`), the path of owned
//!   packets rather than frames borrowed from the reader.
//!
//! The summary is compared without the certificate cache's hit counts: each worker keeps its own
//! cache (documented), so they may differ.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use trustwatch_testkit::hostile::{self, Pcap};
use trustwatch_testkit::pki::Pki;

const BIN: &str = env!("CARGO_BIN_EXE_trustwatch");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/validation/pcaps");

/// What one run printed: stdout (JSON Lines), the summary (stderr without the certificate cache
/// hit counts), the exit code.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    json: String,
    summary: String,
    code: Option<i32>,
}

fn analyze(pcap: &Path, threads: usize, extra: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("analyze")
        .arg(pcap)
        .args(["--json", "--threads", &threads.to_string()])
        .args(extra)
        .output()
        .expect("run trustwatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("internal error") && !stderr.contains("panicked"),
        "{}: {stderr}",
        pcap.display()
    );
    Run {
        json: String::from_utf8(out.stdout).expect("utf-8 JSON"),
        summary: stderr
            .lines()
            .map(without_cert_cache_counts)
            .collect::<Vec<_>>()
            .join("\n"),
        code: out.status.code(),
    }
}

/// A summary line without the certificate cache's counts (one cache per thread): the other
/// counters on the same line are still compared.
fn without_cert_cache_counts(line: &str) -> String {
    line.split(", ")
        .filter(|item| !item.trim_start().starts_with("certificate cache hits "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first line where `a` and `b` differ, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    for (n, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  1 thread:  {x}\n  N threads: {y}", n + 1);
        }
    }
    format!("{} lines vs {}", a.lines().count(), b.lines().count())
}

fn assert_same(pcap: &Path, extra: &[&str], threads: &[usize]) -> Run {
    let one = analyze(pcap, 1, extra);
    for &n in threads {
        let many = analyze(pcap, n, extra);
        assert!(
            one.json == many.json,
            "{} --threads {n}: records or events differ, {}",
            pcap.display(),
            first_difference(&one.json, &many.json)
        );
        assert_eq!(
            one.summary,
            many.summary,
            "{} --threads {n}: summary",
            pcap.display()
        );
        assert_eq!(one.code, many.code, "{} --threads {n}", pcap.display());
    }
    one
}

#[test]
fn the_public_captures_give_the_same_output_on_every_thread_count() {
    let mut pcaps: Vec<PathBuf> = std::fs::read_dir(CORPUS)
        .unwrap_or_else(|e| panic!("{CORPUS}: {e} (CI checks out `shared` beside the clone)"))
        .map(|e| e.expect("entry").path())
        .collect();
    pcaps.sort();
    assert!(pcaps.len() >= 60, "{} captures", pcaps.len());
    let mut records = 0;
    for pcap in &pcaps {
        let one = assert_same(pcap, &["--any-port"], &[2, 3]);
        records += one.json.lines().count();
    }
    // The corpus holds 114 TLS connections and events: the comparison compared something.
    assert!(records >= 100, "{records} JSON lines in all");
}

#[test]
fn a_capture_across_epochs_sweeps_and_a_collapse_gives_the_same_output() {
    let pki = Pki::new().expect("pki");
    let (ca_a, ca_b) = (
        pki.kubeedge_ca().expect("ca"),
        pki.kubeedge_ca().expect("ca"),
    );
    let chain_a = pki.server_leaf(&ca_a).expect("leaf").chain_der();
    let chain_b = pki.server_leaf(&ca_b).expect("leaf").chain_der();
    let a: Vec<&[u8]> = chain_a.iter().map(Vec::as_slice).collect();
    let b: Vec<&[u8]> = chain_b.iter().map(Vec::as_slice).collect();

    let dir = trustwatch_testkit::tempfile::tempdir().expect("tmp");
    let path = dir.path().join("mixed.pcap");
    let mut p = Pcap::create(&path).expect("pcap");
    let server = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10), 10000);
    let t0 = Duration::from_secs(1_700_000_000);
    let s = Duration::from_secs;
    // 0–60 s: 2,000 half-open connections (SYN, nothing after), 1,500 that stop inside a TLS
    // record and 500 whose server sends warning alerts and then nothing: the last two become
    // records when an idle sweep closes them, hundreds per sweep from every worker. Then 1,500
    // connections that reset after the hellos.
    hostile::syn_flood(&mut p, server, 2_000, t0, s(60)).expect("syn");
    hostile::partial_records(&mut p, server, 1_500, 300, t0, s(60)).expect("partial");
    hostile::alert_storm(&mut p, server, 500, 3, t0 + s(10), s(40)).expect("alerts");
    hostile::hello_resets(&mut p, server, 1_500, 40, t0 + s(60), s(30)).expect("resets");
    // 90–180 s: 4,500 clients failing on a certificate (the idle sweeps close the half-open
    // flows meanwhile).
    hostile::failing_clients(&mut p, server, 4_500, &a, t0 + s(90), s(90)).expect("failing");
    // A quiet minute, then the incident: 24 edges every 2 s succeed under CA_A, then reject CA_B.
    let start = t0 + s(240);
    hostile::incident(
        &mut p,
        server,
        24,
        (&a, &b),
        (start, start + s(40), start + s(100)),
        s(2),
    )
    .expect("incident");
    let frames = p.frames;
    p.finish().expect("finish");
    assert!(frames > 3 * 16_384, "{frames} frames: several epochs");

    let one = assert_same(&path, &["--ports", "10000"], &[2, 3, 4]);
    // A packet selection takes the other path to the workers (owned packets, selected, rather
    // than frames borrowed from the reader): one that keeps every frame gives the same again.
    let selected = assert_same(&path, &["--ports", "10000", "--filter", "tcp"], &[2, 3]);
    assert_eq!(selected.json, one.json);
    // What the comparison covered.
    let lines: Vec<serde_json::Value> = one
        .json
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let text = |v: &serde_json::Value, path: &[&str]| -> String {
        path.iter()
            .fold(v, |v, k| &v[*k])
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let count = |path: &[&str], value: &str| {
        lines
            .iter()
            .filter(|v| text(v, path).contains(value))
            .count()
    };
    // The attackers' failures under CA_A, then the incident (CA_B presented): two collapses.
    assert_eq!(
        count(&["event", "action"], "trust_collapse"),
        2,
        "{}",
        one.summary
    );
    // Records that idle sweeps closed (the alert storm's connections): sweeps were compared.
    assert_eq!(
        count(&["trustwatch", "evidence"], "[flow idle timeout]"),
        500,
        "{}",
        one.summary
    );
    assert_eq!(count(&["event", "kind"], "event"), 7_700, "{}", one.summary);
    assert_eq!(one.code, Some(3), "{}", one.summary);
}
