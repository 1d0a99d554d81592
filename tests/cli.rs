//! `trustwatch analyze` on bad input: one line on stderr naming the file and the problem, exit code
//! 2, never a panic or a backtrace; a capture cut short is analyzed up to the cut.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn analyze(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustwatch"))
        .arg("analyze")
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run trustwatch")
}

fn validation_pcap(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/validation/pcaps")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: ../shared must be beside the repository",
        p.display()
    );
    p
}

/// A pcap global header (microsecond, little-endian) with the given link type.
fn pcap_header(linktype: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&linktype.to_le_bytes());
    h
}

/// Exit 2 and exactly one stderr line that names `name` and contains `problem`.
fn assert_bad_input(out: &Output, name: &str, problem: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "no output on bad input");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains(name) && lines[0].contains(problem),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn bad_files_are_one_line_errors_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let missing = d.join("missing.pcap");
    assert_bad_input(
        &analyze(&[missing.to_str().unwrap()]),
        "missing.pcap",
        "no such file",
    );
    assert_bad_input(
        &analyze(&[d.to_str().unwrap()]),
        &d.display().to_string(),
        "directory",
    );

    let empty = d.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    assert_bad_input(&analyze(&[empty.to_str().unwrap()]), "empty.pcap", "empty");

    let garbage = d.join("garbage.pcap");
    std::fs::write(
        &garbage,
        b"this is not a capture file at all, just text\n".repeat(20),
    )
    .unwrap();
    assert_bad_input(
        &analyze(&[garbage.to_str().unwrap()]),
        "garbage.pcap",
        "not a pcap",
    );

    // 802.11 radiotap (127): a real link type trustwatch does not decode.
    let wifi = d.join("wifi.pcap");
    std::fs::write(&wifi, pcap_header(127)).unwrap();
    assert_bad_input(
        &analyze(&[wifi.to_str().unwrap()]),
        "wifi.pcap",
        "unsupported link type 127",
    );

    // A bad file among good ones fails before any output.
    let good = validation_pcap("sv-ja4-tls.pcap");
    let out = analyze(&["--json", good.to_str().unwrap(), garbage.to_str().unwrap()]);
    assert_bad_input(&out, "garbage.pcap", "not a pcap");
}

#[test]
fn bad_flags_exit_2() {
    let good = validation_pcap("sv-ja4-tls.pcap");
    for args in [
        vec!["--ports", "0"],
        vec!["--ports", "http"],
        vec!["--max-flows", "0"],
        vec!["--collapse-share", "1.5"],
        vec!["--ca-hash", "xyz"],
        vec!["--no-such-flag"],
        vec!["--join-token", "nothex.eyJhbGciOi.SECRET-JWT"],
    ] {
        let mut all = args.clone();
        all.push(good.to_str().unwrap());
        let out = analyze(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("trustwatch: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("SECRET-JWT") && !stderr.contains("eyJ"),
            "{stderr}"
        );
    }
    // A missing argument names it on the one line.
    let out = analyze(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("<FILE>"), "{stderr}");
}

#[test]
fn truncated_capture_is_analyzed_up_to_the_cut() {
    let src = validation_pcap("sv-tls-cert-issuer.pcap");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 4]).unwrap();

    let full = analyze(&["--any-port", "--json", "-q", src.to_str().unwrap()]);
    let part = analyze(&["--any-port", "--json", "-q", cut.to_str().unwrap()]);
    assert_eq!(full.status.code(), Some(0));
    assert_eq!(
        part.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&part.stderr)
    );
    let stderr = String::from_utf8_lossy(&part.stderr);
    assert!(
        stderr.contains("cut.pcap") && stderr.contains("cut short"),
        "{stderr}"
    );
    let n = |o: &Output| String::from_utf8_lossy(&o.stdout).lines().count();
    assert_eq!(n(&full), 5, "sv-tls-cert-issuer holds 5 TLS sessions");
    assert!(
        n(&part) >= 1 && n(&part) <= n(&full),
        "{} of {}",
        n(&part),
        n(&full)
    );
}

/// A reader that goes away (`| head`) or a full disk ends the run with one line and exit code 4,
/// never a panic or an abort.
#[test]
fn closed_pipes_and_full_disks_are_one_line_with_exit_4() {
    use std::process::Stdio;
    let pcap = validation_pcap("zeek-tls-fragmented-handshake.pcap");
    let bin = env!("CARGO_BIN_EXE_trustwatch");
    for json in [false, true] {
        // `trustwatch analyze FILE | head -1` once head has exited: the pipe's reader is gone.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(bin)
            .arg("analyze")
            .args(json.then_some("--json"))
            .args(["--any-port"])
            .arg(&pcap)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "json {json}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "json {json}: {stderr}");
        assert!(stderr.contains("broken pipe"), "json {json}: {stderr}");
    }
    // The summary to a full disk (stderr is /dev/full with --json): nothing can be said, but the
    // exit code says it, and there is no abort (SIGABRT would be no exit code at all).
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = Command::new(bin)
        .args(["analyze", "--json", "--any-port"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(full)
        .status()
        .expect("run");
    assert_eq!(out.code(), Some(4));
    // And the JSON itself to a full disk.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = Command::new(bin)
        .args(["analyze", "--json", "--any-port"])
        .arg(&pcap)
        .stdout(full)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("no space left"), "{stderr}");
}

/// The README's openssl lines for the key id of casecret's `cadata` ("The key id of casecret's
/// CA, with openssl"), run as written on generated CAs, give the key id trustwatch reports for
/// that `cadata`: the Subject Key Identifier when there is one, else RFC 5280 method 1.
#[test]
fn readme_openssl_key_id_is_trustwatchs() {
    use trustwatch::trust::{TrustOptions, TrustedReference};

    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let block = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("get secret casecret") && b.contains("-ext subjectKeyIdentifier"))
        .expect("the README's key-id block");
    let lines: Vec<&str> = block
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(lines[0].starts_with("kubectl ") && lines[0].ends_with("> cadata.der"));
    let ski_line = lines[1];
    assert!(ski_line.contains("-ext subjectKeyIdentifier"), "{ski_line}");
    let method1 = lines[2..].join("\n");
    let sh = |dir: &Path, script: &str| -> String {
        let out = Command::new("sh")
            .args(["-euc", script])
            .current_dir(dir)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    };

    let pki = trustwatch_testkit::pki::Pki::new().expect("pki");
    let kubeedge = pki.kubeedge_ca().expect("CA");
    let work = tempfile::tempdir().expect("tempdir");
    let openssl_ca = |args: &str, name: &str| -> Vec<u8> {
        let out = work.path().join(name);
        sh(
            work.path(),
            &format!(
                "openssl req -x509 {args} -nodes -keyout {name}.key -subj /CN=KubeEdge -days 2 \
                 -addext subjectKeyIdentifier=none -addext authorityKeyIdentifier=none \
                 -outform DER -out {name} 2>/dev/null; rm {name}.key"
            ),
        );
        std::fs::read(out).expect("openssl CA")
    };
    let cases = [
        (
            "KubeEdge-like, ECDSA P-256 with SKI",
            kubeedge.cert.der.clone(),
            true,
        ),
        (
            "ECDSA P-256 without SKI",
            openssl_ca("-newkey ec -pkeyopt ec_paramgen_curve:P-256", "ec.der"),
            false,
        ),
        (
            "RSA 2048 without SKI",
            openssl_ca("-newkey rsa:2048", "rsa.der"),
            false,
        ),
    ];
    for (what, der, has_ski) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cadata"), &der).expect("cadata");
        let reference = TrustedReference::load(&TrustOptions {
            trusted_ca: Vec::new(),
            kubeedge_secret_dir: Some(dir.path().to_path_buf()),
            ca_hash: None,
            join_token_hash: None,
        })
        .expect("trustwatch reads the cadata");
        let ca = reference.secret_ca().expect("the secret's CA");
        // The README's commands, with cadata.der in place of the kubectl line.
        std::fs::write(dir.path().join("cadata.der"), &der).expect("cadata.der");
        let ski = sh(dir.path(), ski_line);
        let m1 = sh(dir.path(), &method1);
        assert_eq!(m1.len(), 40, "{what}: {m1}");
        if has_ski {
            assert_eq!(ski, ca.key_id.as_str(), "{what}");
            assert!(
                ca.key_ids.iter().any(|k| *k == m1),
                "{what}: {m1} vs {:?}",
                ca.key_ids
            );
        } else {
            assert_eq!(ski, "", "{what}");
            assert_eq!(m1, ca.key_id.as_str(), "{what}");
        }
    }
}

/// Offsets of the records of a little-endian, 16-byte-header pcap file.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut at = 24;
    let mut v = Vec::new();
    while at + 16 <= bytes.len() {
        v.push(at);
        at += 16 + u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
    }
    v
}

#[test]
fn corrupt_record_header_midway_is_skipped_with_a_warning() {
    let src = validation_pcap("sv-tls-cert-issuer.pcap");
    let bytes = std::fs::read(&src).unwrap();
    let offsets = record_offsets(&bytes);
    // The last record: its header gets a capture length no file can have.
    let k = offsets.len() - 1;
    let mut damaged = bytes.clone();
    damaged[offsets[k] + 8..offsets[k] + 12].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    // And one in the middle, whose connection keeps its other packets.
    let m = offsets.len() / 2;
    damaged[offsets[m] + 8..offsets[m] + 12].copy_from_slice(&0x00FF_FF00u32.to_le_bytes());
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("damaged.pcap");
    std::fs::write(&bad, &damaged).unwrap();

    let full = analyze(&["--any-port", "--json", "-q", src.to_str().unwrap()]);
    let part = analyze(&["--any-port", "--json", "-q", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&part.stderr);
    assert_eq!(part.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line per damaged stretch: {stderr}");
    assert!(
        lines[0].contains("damaged.pcap")
            && lines[0].contains(&format!("offset {}", offsets[m]))
            && lines[0].contains(&format!("after {m} packets"))
            && lines[0].contains(&format!(
                "skipped {} bytes, resumed at offset {}",
                offsets[m + 1] - offsets[m],
                offsets[m + 1]
            )),
        "{stderr}"
    );
    assert!(
        lines[1].contains(&format!("offset {}", offsets[k]))
            && lines[1].contains(&format!(
                "the last {} bytes were skipped",
                bytes.len() - offsets[k]
            )),
        "{stderr}"
    );
    // The analysis went on past the damage: every session is still reported.
    let n = |o: &Output| String::from_utf8_lossy(&o.stdout).lines().count();
    assert_eq!(n(&part), n(&full), "{stderr}");
}

/// A capture file is read through a memory map; if another process truncates it meanwhile, the
/// next touch of a vanished page raises SIGBUS. That ends the run like any bad input: one line,
/// exit 2, no core and no silence.
#[test]
fn a_capture_truncated_while_it_is_read_is_one_line_with_exit_2() {
    use std::io::Read;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::process::Stdio;
    use std::time::Duration;
    use trustwatch_testkit::hostile::{self, Pcap};

    let pki = trustwatch_testkit::pki::Pki::new().expect("pki");
    let ca = pki.kubeedge_ca().expect("CA");
    let chain = pki.server_leaf(&ca).expect("leaf").chain_der();
    let chain: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("growing.pcap");
    let mut p = Pcap::create(&path).expect("pcap");
    let server = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10), 10000);
    // Records from the start (they fill the output pipe, which nobody reads yet, so the analyzer
    // stops early in the file), some twenty megabytes of them.
    let t0 = Duration::from_secs(1_700_000_000);
    hostile::failing_clients(&mut p, server, 20_000, &chain, t0, Duration::from_secs(60))
        .expect("write");
    p.finish().expect("finish");
    let size = std::fs::metadata(&path).expect("size").len();
    assert!(size > 16 << 20, "{size} bytes");

    let mut child = Command::new(env!("CARGO_BIN_EXE_trustwatch"))
        .args(["analyze", "--json", "--ports", "10000"])
        .arg(&path)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let mut stdout = child.stdout.take().expect("stdout");
    // The first output: the analyzer has mapped the file and is writing records.
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("first record");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(1 << 20))
        .expect("truncate");
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).expect("read the rest");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: the capture file shrank while it was being read",
            path.display()
        )),
        "{stderr}"
    );
    // It stopped early: far fewer records than the 20,000 connections.
    let records = rest.iter().filter(|&&b| b == b'\n').count();
    assert!(records < 10_000, "{records} records");
}
