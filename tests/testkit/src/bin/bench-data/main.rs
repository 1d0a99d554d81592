//! `bench-data`: the inputs of `cargo xtask bench`, and the check of the analyzer's answer.
//!
//! - `seed DIR`: captures real mutual-TLS sessions over loopback (see [`seed`]) unless present.
//! - `throughput SEED_DIR OUT BYTES`: ~BYTES of pcap — a few thousand mTLS handshakes on
//!   CloudCore's ports 10000/10002, most of them followed by nothing but a ping, some by 1–4 MiB of
//!   application data, plus unrelated TLS on other ports and UDP (VXLAN, DNS).
//! - `handshakes SEED_DIR OUT COUNT`: COUNT full TLS 1.2 mTLS handshakes on port 10000, both
//!   sides presenting leaf → intermediate → root.
//! - `check MANIFEST`: reads `trustwatch analyze --json` output on stdin and compares it with
//!   what the generator wrote (`OUT.manifest`); exit 1 on a mismatch.
//!
//! Files are written under a temporary name and renamed when complete, so a cache never holds a
//! partial file.

mod seed;
mod synth;
mod template;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use trustwatch_testkit::Result;

use seed::SeedFiles;
use synth::{Spec, Udp};
use template::Template;

const CLOUDCORE: [u8; 4] = [10, 0, 0, 10];
const OTHER_SERVER: [u8; 4] = [10, 0, 0, 20];

struct Seeds {
    hs12: Vec<Template>,
    hs13: Vec<Template>,
    bulk12: Vec<Template>,
    bulk13: Vec<Template>,
}

fn load_seeds(dir: &Path) -> Result<Seeds> {
    let f = SeedFiles::in_dir(dir);
    if !f.exist() {
        seed::capture(dir)?;
    }
    Ok(Seeds {
        hs12: template::load(&f.hs12)?,
        hs13: template::load(&f.hs13)?,
        bulk12: template::load(&f.bulk12)?,
        bulk13: template::load(&f.bulk13)?,
    })
}

/// Counts written into the manifest next to a generated file.
#[derive(Default)]
struct Manifest(BTreeMap<&'static str, u64>);

impl Manifest {
    fn add(&mut self, k: &'static str, v: u64) {
        *self.0.entry(k).or_default() += v;
    }
    fn write(&self, path: &Path) -> Result<()> {
        let text: String = self.0.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(path, text)?;
        Ok(())
    }
}

fn manifest_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".manifest");
    PathBuf::from(s)
}

fn tmp_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The kinds of connection in the throughput file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Handshake,
    Bulk,
}

fn throughput(seed_dir: &Path, out: &Path, target: u64) -> Result<()> {
    let s = load_seeds(seed_dir)?;
    // A cycle of 40 connections: 4 bulk + 33 handshake-only to CloudCore (ports 10000/10002),
    // 1 bulk (8443) + 2 handshake-only (443) to an unrelated TLS service; TLS 1.3 and 1.2
    // alternate.
    let mut plan: Vec<Spec<'_>> = Vec::new();
    let mut m = Manifest::default();
    let mut planned: u64 = 0;
    let mut i: usize = 0;
    while planned < target {
        let pos = i % 40;
        let (kind, watched) = match pos {
            0..4 => (Kind::Bulk, true),
            4 => (Kind::Bulk, false),
            5 | 6 => (Kind::Handshake, false),
            _ => (Kind::Handshake, true),
        };
        let v13 = i.is_multiple_of(2);
        let pool = match (kind, v13) {
            (Kind::Bulk, true) => &s.bulk13,
            (Kind::Bulk, false) => &s.bulk12,
            (Kind::Handshake, true) => &s.hs13,
            (Kind::Handshake, false) => &s.hs12,
        };
        let t = &pool[(i / 2) % pool.len()];
        let (port, ip) = match (watched, kind) {
            (true, Kind::Bulk) => (10000, CLOUDCORE),
            (true, Kind::Handshake) if (i / 2) % 4 == 1 => (10002, CLOUDCORE),
            (true, Kind::Handshake) => (10000, CLOUDCORE),
            (false, Kind::Bulk) => (8443, OTHER_SERVER),
            (false, Kind::Handshake) => (443, OTHER_SERVER),
        };
        plan.push(Spec {
            template: t,
            server_port: port,
            server_ip: ip,
        });
        if watched {
            m.add("watched_connections", 1);
            m.add(
                if v13 {
                    "watched_tls13"
                } else {
                    "watched_tls12"
                },
                1,
            );
            if kind == Kind::Bulk {
                m.add("watched_bulk_connections", 1);
                m.add("watched_bulk_payload_bytes", t.payload_bytes);
            }
        } else {
            m.add("unwatched_connections", 1);
        }
        // UDP adds ~1/24 of the frames at ~750 bytes.
        planned += t.pcap_bytes + t.frames.len() as u64 * 766 / 24;
        i += 1;
    }
    let start = s.hs12.first().map_or(0, |t| t.start_us);
    let tmp = tmp_path(out);
    let w = synth::write(
        &tmp,
        &mut plan.into_iter(),
        48,
        start,
        Some(Udp { every: 24 }),
    )?;
    finish(out, &tmp, w, m)
}

fn handshakes(seed_dir: &Path, out: &Path, count: u64) -> Result<()> {
    let s = load_seeds(seed_dir)?;
    let pool = &s.hs12;
    let mut plan = (0..count).map(|i| Spec {
        template: &pool[i as usize % pool.len()],
        server_port: 10000,
        server_ip: CLOUDCORE,
    });
    let mut m = Manifest::default();
    m.add("watched_connections", count);
    m.add("watched_tls12", count);
    m.add("unwatched_connections", 0);
    let start = pool.first().map_or(0, |t| t.start_us);
    let tmp = tmp_path(out);
    let w = synth::write(&tmp, &mut plan, 256, start, None)?;
    finish(out, &tmp, w, m)
}

fn finish(out: &Path, tmp: &Path, w: synth::Written, mut m: Manifest) -> Result<()> {
    m.add("bytes", w.bytes);
    m.add("frames", w.frames);
    m.add("connections", w.connections);
    m.add("udp_packets", w.udp);
    m.add("span_us", w.span_us);
    std::fs::rename(tmp, out)?;
    m.write(&manifest_path(out))?;
    eprintln!(
        "bench-data: wrote {} ({:.1} MiB, {} frames, {} connections, {} UDP, {:.2} s of traffic)",
        out.display(),
        w.bytes as f64 / (1 << 20) as f64,
        w.frames,
        w.connections,
        w.udp,
        w.span_us as f64 / 1e6
    );
    Ok(())
}

fn read_manifest(path: &Path) -> Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(path)?;
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            m.insert(k.to_string(), v.trim().parse()?);
        }
    }
    Ok(m)
}

/// Compares the analyzer's JSON Lines (stdin) with the manifest.
fn check(manifest: &Path) -> Result<bool> {
    let m = read_manifest(manifest)?;
    let want = |k: &str| m.get(k).copied().unwrap_or(0);
    let mut records = 0u64;
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut ports: BTreeMap<u64, u64> = BTreeMap::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut chains3 = 0u64;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        records += 1;
        let outcome = v["trustwatch"]["outcome"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        *outcomes.entry(outcome.clone()).or_default() += 1;
        *ports
            .entry(v["destination"]["port"].as_u64().unwrap_or(0))
            .or_default() += 1;
        *versions
            .entry(v["tls"]["version"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        let len = |k: &str| v["trustwatch"][k].as_array().map_or(0, Vec::len);
        if outcome == "established" && len("server_chain") == 3 && len("client_chain") == 3 {
            chains3 += 1;
        }
    }
    let established = outcomes.get("established").copied().unwrap_or(0);
    println!("records={records}");
    println!("outcomes={outcomes:?}");
    println!("tls_versions={versions:?}");
    println!("destination_ports={ports:?}");
    println!("established_with_3cert_chains_both_sides={chains3}");
    let mut ok = true;
    let mut expect = |what: &str, got: u64, want: u64| {
        if got == want {
            println!("ok: {what} = {got}");
        } else {
            println!("MISMATCH: {what} = {got}, expected {want}");
            ok = false;
        }
    };
    expect("records", records, want("watched_connections"));
    expect("established", established, want("watched_connections"));
    expect(
        "established TLS 1.2 with 3-cert chains both sides",
        chains3,
        want("watched_tls12"),
    );
    Ok(ok)
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: bench-data seed DIR | throughput SEED_DIR OUT BYTES | handshakes SEED_DIR OUT COUNT | check MANIFEST < json"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match a.as_slice() {
        ["seed", dir] => load_seeds(Path::new(dir)).map(|_| true),
        ["throughput", seed, out, bytes] => match bytes.parse() {
            Ok(b) => throughput(Path::new(seed), Path::new(out), b).map(|()| true),
            Err(_) => return usage(),
        },
        ["handshakes", seed, out, count] => match count.parse() {
            Ok(n) => handshakes(Path::new(seed), Path::new(out), n).map(|()| true),
            Err(_) => return usage(),
        },
        ["check", manifest] => check(Path::new(manifest)),
        _ => return usage(),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench-data: {e}");
            ExitCode::FAILURE
        }
    }
}
