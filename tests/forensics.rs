//! Offline incident forensics (issue 11): `trustwatch analyze` on what an SRE copies off a node —
//! rotated parts in any order, compressed, piped — and what it says when it finds nothing.
//!
//! The incident capture is generated packet by packet (`testkit::hostile::incident`): edge nodes
//! succeed under CA_A until the server switches to CA_B (same name and serial, another key), then
//! reject it with unknown_ca. Every variant of the same packets must give the same records and
//! events, byte for byte, as the single ordered file.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapReader, PcapWriter};
use serde_json::Value;
use trustwatch_testkit::hostile::{self, Pcap};
use trustwatch_testkit::pki::{LeafSpec, Pki};
use trustwatch_testkit::tempfile;

const BIN: &str = env!("CARGO_BIN_EXE_trustwatch");

fn analyze(args: &[&str], stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("analyze").args(args);
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An incident capture: 8 edges every 5 s, 2 minutes under CA_A, 2 minutes under CA_B.
struct Incident {
    dir: tempfile::TempDir,
    file: PathBuf,
    port: u16,
    switch: Duration,
    /// CA key ids (SKI, hex) of CA_A and CA_B.
    keys: (String, String),
    /// CA_A's certificate (PEM file), to trust.
    ca_a: PathBuf,
    /// notAfter of CA_A's server leaf, Unix seconds (ground truth).
    leaf_a_not_after: i64,
    _pki: Pki,
}

fn incident() -> Incident {
    incident_with(&LeafSpec::cloudcore())
}

/// The incident with CA_A's server leaf made to `spec_a` (times relative to now; the capture
/// starts 30 minutes ago).
fn incident_with(spec_a: &LeafSpec) -> Incident {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new().unwrap();
    let (ca_a, ca_b) = (pki.kubeedge_ca().unwrap(), pki.kubeedge_ca().unwrap());
    let (leaf_a, leaf_b) = (
        pki.leaf(&ca_a, spec_a).unwrap(),
        pki.server_leaf(&ca_b).unwrap(),
    );
    let (a, b) = (leaf_a.chain_der(), leaf_b.chain_der());
    let leaf_a_not_after = leaf_a.cert.not_after_unix;
    let a: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
    let b: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
    // A written capture: nothing listens, so the port need not be free. It stays below the
    // generator's client ports (30000 and up), as a server's port is below its clients'
    // ephemeral ones: the "busiest other ports" hint, which sees no flow state on unwatched
    // ports, guesses the server of a segment without SYN as the lower port (a port drawn from
    // `free_port()`, up to 31999, failed that one time in six).
    let port = 24_443;
    let server = SocketAddrV4::new(Ipv4Addr::new(10, 77, 255, 1), port);
    // A whole minute about half an hour ago: inside the certificates' validity (from an hour
    // ago), and minutes of the capture are minutes of the clock.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = Duration::from_secs(now.as_secs() / 60 * 60 - 1800);
    let switch = start + Duration::from_secs(120);
    let file = dir.path().join("incident.pcap");
    let mut p = Pcap::create(&file).unwrap();
    hostile::incident(
        &mut p,
        server,
        8,
        (&a, &b),
        (start, switch, switch + Duration::from_secs(120)),
        Duration::from_secs(5),
    )
    .unwrap();
    p.finish().unwrap();
    Incident {
        dir,
        file,
        port,
        switch,
        keys: (ca_a.key_id().to_string(), ca_b.key_id().to_string()),
        ca_a: ca_a.cert_path.clone(),
        leaf_a_not_after,
        _pki: pki,
    }
}

/// RFC 3339 with microseconds, as trustwatch writes times.
fn rfc3339(t: Duration) -> String {
    let s = t.as_secs() as i64;
    let (days, rem) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        t.subsec_micros()
    )
}

/// Splits `file` into `n` parts of about equal packet counts (as `tcpdump -C` would: anywhere,
/// mid-connection), named `part1.pcap`.. in `dir`.
fn split(file: &Path, n: usize, dir: &Path) -> Vec<PathBuf> {
    let mut r = PcapReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let header = r.header();
    let mut packets = Vec::new();
    while let Some(p) = r.next_packet() {
        packets.push(p.unwrap().into_owned());
    }
    let per = packets.len().div_ceil(n);
    packets
        .chunks(per)
        .enumerate()
        .map(|(i, chunk)| {
            let path = dir.join(format!("part{}.pcap", i + 1));
            let mut w =
                PcapWriter::with_header(std::fs::File::create(&path).unwrap(), header).unwrap();
            for p in chunk {
                w.write_packet(p).unwrap();
            }
            path
        })
        .collect()
}

fn gzip(path: &Path) -> PathBuf {
    let out = PathBuf::from(format!("{}.gz", path.display()));
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&out).unwrap(),
        flate2::Compression::default(),
    );
    e.write_all(&std::fs::read(path).unwrap()).unwrap();
    e.finish().unwrap();
    out
}

fn zstd_file(path: &Path) -> PathBuf {
    let out = PathBuf::from(format!("{}.zst", path.display()));
    std::fs::write(
        &out,
        zstd::encode_all(&std::fs::read(path).unwrap()[..], 3).unwrap(),
    )
    .unwrap();
    out
}

fn lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn rotated_reversed_compressed_and_piped_inputs_are_one_capture() {
    let inc = incident();
    let port = inc.port.to_string();
    let base = ["--json", "--ports", port.as_str()];
    let whole = analyze(&[&base[..], &[inc.file.to_str().unwrap()]].concat(), None);
    assert_eq!(
        whole.status.code(),
        Some(3),
        "the collapse: {}",
        text(&whole.stderr)
    );
    let records = lines(&whole);
    // 8 edges x 24 rounds x 2 phases of 2 minutes: 24 rounds each, one connection per edge each.
    let conns: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["kind"] != "alert")
        .collect();
    assert!(conns.len() >= 384, "{}", conns.len());
    let collapse = records
        .iter()
        .find(|r| r["event"]["action"] == "trust_collapse")
        .unwrap_or_else(|| panic!("no collapse event: {}", text(&whole.stderr)));
    // The first edge meets CA_B at the switch and rejects it 3 ms into its connection.
    let tw = &collapse["trustwatch"];
    assert_eq!(
        tw["first_failure"],
        rfc3339(inc.switch + Duration::from_millis(3))
    );
    assert_eq!(tw["previous_ca_key_id"], inc.keys.0.as_str());
    assert_eq!(tw["current_ca_key_id"], inc.keys.1.as_str());

    let parts = split(&inc.file, 4, inc.dir.path());
    let p: Vec<&str> = parts.iter().map(|p| p.to_str().unwrap()).collect();
    let gz1 = gzip(&parts[0]);
    let zst3 = zstd_file(&parts[2]);
    let gz_whole = gzip(&inc.file);
    let (gz1, zst3) = (gz1.to_str().unwrap(), zst3.to_str().unwrap());

    let variants: Vec<(&str, Vec<&str>, Option<&Path>)> = vec![
        ("in order", vec![p[0], p[1], p[2], p[3]], None),
        ("reversed", vec![p[3], p[2], p[1], p[0]], None),
        ("shuffled, gzip and zstd", vec![zst3, p[3], gz1, p[1]], None),
        ("piped", vec!["-"], Some(inc.file.as_path())),
        ("piped gzip", vec!["-"], Some(gz_whole.as_path())),
        (
            "a part piped among files",
            vec![p[2], "-", p[0], p[3]],
            Some(parts[1].as_path()),
        ),
    ];
    for (what, files, stdin) in variants {
        let out = analyze(&[&base[..], &files[..]].concat(), stdin);
        assert_eq!(out.status.code(), Some(3), "{what}: {}", text(&out.stderr));
        assert!(
            out.stdout == whole.stdout,
            "{what}: records and events differ from the single ordered file"
        );
        let stderr = text(&out.stderr);
        let reordered = stderr.contains("inputs given out of time order");
        let expect_reordered = what != "in order" && files.len() > 1;
        assert_eq!(reordered, expect_reordered, "{what}: {stderr}");
        assert!(
            !stderr.contains("overlap") && !stderr.contains("no packets for"),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn overlapping_inputs_and_gaps_are_reported_once_each() {
    let inc = incident();
    let parts = split(&inc.file, 4, inc.dir.path());
    let port = inc.port.to_string();
    // The same part twice overlaps itself; leaving parts 2 and 3 out is a gap of about 2 minutes.
    let out = analyze(
        &[
            "--quiet",
            "--ports",
            &port,
            parts[3].to_str().unwrap(),
            parts[0].to_str().unwrap(),
            parts[3].to_str().unwrap(),
        ],
        None,
    );
    let stderr = text(&out.stderr);
    let notes: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        notes.iter().filter(|l| l.contains("overlap by")).count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        notes
            .iter()
            .filter(|l| l.contains("no packets for")
                && l.contains("part1.pcap")
                && l.contains("part4.pcap"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        notes.iter().all(|l| l.starts_with("trustwatch: ")),
        "{stderr}"
    );
}

#[test]
fn nothing_found_on_the_watched_ports_is_a_warning_and_exit_5() {
    let inc = incident();
    let file = inc.file.to_str().unwrap();
    // The default ports (CloudCore's 10000..10004) see nothing of a server on another port.
    let out = analyze(&["--quiet", file], None);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    // Every segment that is a SYN or carries payload, counted by server port: per connection
    // SYN, SYN-ACK, ClientHello, the server's flight; then 4 more (both Finished flights and
    // application data both ways) for the 192 established, 1 (the alert) for the 192 rejected.
    let segments = 384 * 4 + 192 * 4 + 192;
    assert_eq!(
        lines[0],
        format!(
            "trustwatch: warning: no TLS connection found on the watched ports (10000, 10002, 10003, 10004) in 3648 packets; \
             busiest other TCP ports: {} ({segments} segments); try --ports {} or --any-port",
            inc.port, inc.port
        )
    );
    // As suggested: found.
    let port = inc.port.to_string();
    assert_eq!(
        analyze(&["--quiet", "--ports", &port, file], None)
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        analyze(&["--quiet", "--any-port", file], None)
            .status
            .code(),
        Some(3)
    );
    // No packets at all (a capture filtered to nothing).
    let udp = inc.dir.path().join("udp.pcap");
    let p = Pcap::create(&udp).unwrap();
    p.finish().unwrap();
    let out = analyze(&["--quiet", "--any-port", udp.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "trustwatch: warning: no TLS connection found on any TCP port in 0 packets"
    );
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

/// Chrome's TLS 1.3 ClientHello offers ALPS; its extra encrypted record before Finished is its
/// EncryptedExtensions, not a certificate: Zeek and the handshake say no certificate was asked.
#[test]
fn chrome_alps_handshake_is_not_client_auth() {
    let pcap = validation_pcap("zeek-chrome-1250-tls-x25519-kyber.pcap");
    // Ground truth from an independent dissector: the ClientHello carries application_settings.
    let hello = trustwatch_testkit::tshark::fields(
        &pcap,
        "tls.handshake.type == 1",
        &["tls.handshake.extension.type"],
    )
    .unwrap();
    assert_eq!(hello.len(), 1);
    assert!(
        hello[0][0].split(',').any(|t| t == "17513" || t == "17613"),
        "{hello:?}"
    );
    let out = analyze(&["--any-port", "--json", pcap.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records = lines(&out);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["trustwatch"]["outcome"], "established");
    assert_eq!(records[0]["trustwatch"]["client_auth_requested"], false);
}

/// Verdicts at handshake time on the incident: CA_A's server leaf expires one minute into the
/// capture; with CA_A trusted, CA_B's chain (same name and serial) fails by signature.
#[test]
fn certificate_verdicts_at_handshake_time() {
    // The capture starts 30 to 31 minutes ago; the leaf expires 29.5 minutes ago.
    let spec = LeafSpec {
        not_before: -7200,
        not_after: -1770,
        ..LeafSpec::cloudcore()
    };
    let inc = incident_with(&spec);
    let port = inc.port.to_string();
    let out = analyze(
        &[
            "--json",
            "--ports",
            &port,
            "--trusted-ca",
            inc.ca_a.to_str().unwrap(),
            inc.file.to_str().unwrap(),
        ],
        None,
    );
    let records: Vec<Value> = lines(&out)
        .into_iter()
        .filter(|r| r["event"]["kind"] == "event")
        .collect();
    assert_eq!(records.len(), 384, "{}", text(&out.stderr));
    let expiry = Duration::from_secs(u64::try_from(inc.leaf_a_not_after).unwrap());
    // It expires during the CA_A phase (about a minute in).
    assert!(
        expiry > inc.switch - Duration::from_secs(110)
            && expiry < inc.switch - Duration::from_secs(10)
    );
    let mut seen = (0, 0, 0);
    for r in &records {
        let tw = &r["trustwatch"];
        let start = r["event"]["start"].as_str().unwrap();
        let problems: Vec<&str> = tw["certificate_problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        let server = &tw["certificates"]["server"];
        if tw["ca_key_id"] == inc.keys.1.as_str() {
            // CA_B: valid dates, same issuer name as the trusted CA_A, another key.
            assert_eq!(tw["outcome"], "rejected_by_client");
            assert_eq!(server["anchor"], "bad_signature", "{r}");
            assert_eq!(problems, ["server_chain_bad_signature"]);
            seen.2 += 1;
        } else if start <= rfc3339(expiry).as_str() {
            // notAfter itself is still valid (second precision on the wire, microseconds here).
            assert_eq!(tw["outcome"], "established");
            assert_eq!(server["validity"], "valid", "{r}");
            assert_eq!(server["anchor"], "verified");
            assert_eq!(tw["healthy"], true);
            assert!(problems.is_empty());
            seen.0 += 1;
        } else {
            // Established over a leaf that had expired: not healthy.
            assert_eq!(tw["outcome"], "established");
            assert_eq!(server["validity"], "expired", "{r}");
            assert_eq!(server["anchor"], "verified");
            assert_eq!(server["order"], "ordered");
            assert_eq!(tw["healthy"], false);
            assert_eq!(problems, ["server_certificate_expired"]);
            seen.1 += 1;
        }
    }
    let summary = analyze(&["--ports", &port, inc.file.to_str().unwrap()], None);
    let summary = text(&summary.stdout);
    let line = format!(
        "certificate problems at handshake time: server_certificate_expired {} ({} established handshakes not healthy)",
        seen.1, seen.1
    );
    assert!(summary.contains(&line), "{summary}");
    // 24 rounds of 8 edges under each CA; under CA_A both before and after the expiry.
    assert_eq!(seen.0 + seen.1, 192);
    assert!(seen.0 >= 5 * 8 && seen.1 >= 5 * 8, "{seen:?}");
    assert_eq!(seen.2, 192);
}

/// `tshark -r IN -Y DISPLAY_FILTER -w OUT` (an independent dissector's selection).
fn tshark_select(input: &Path, display_filter: &str, out: &Path) {
    let st = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(input)
        .args(["-Y", display_filter, "-F", "pcap", "-w"])
        .arg(out)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "tshark -Y {display_filter}");
}

/// `tcpdump -r IN -w OUT EXPR` (the same BPF expression through tcpdump).
fn tcpdump_select(input: &Path, expr: &str, out: &Path) {
    let st = Command::new("tcpdump")
        .args(["-r"])
        .arg(input)
        .arg("-w")
        .arg(out)
        .arg(expr)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "tcpdump {expr}");
}

#[test]
fn filters_select_what_tshark_and_tcpdump_select() {
    let inc = incident();
    let port = inc.port.to_string();
    let file = inc.file.to_str().unwrap();
    let json = |extra: &[&str], f: &str| {
        let out = analyze(
            &[&["--json", "--ports", &port][..], extra, &[f]].concat(),
            None,
        );
        assert!(
            matches!(out.status.code(), Some(0 | 3 | 5)),
            "{}",
            text(&out.stderr)
        );
        out
    };
    // BPF expression, its tshark display-filter twin.
    let cases = [
        ("host 10.77.0.3", "ip.addr == 10.77.0.3"),
        (
            "src net 10.77.0.0/30 or dst net 10.77.0.0/30",
            "ip.addr == 10.77.0.0/30",
        ),
        (
            "tcp and not host 10.77.0.5",
            "tcp && !(ip.addr == 10.77.0.5)",
        ),
    ];
    for (i, (bpf, display)) in cases.iter().enumerate() {
        let filtered = json(&["--filter", bpf], file);
        let by_tshark = inc.dir.path().join(format!("tshark{i}.pcap"));
        tshark_select(&inc.file, display, &by_tshark);
        let by_tcpdump = inc.dir.path().join(format!("tcpdump{i}.pcap"));
        tcpdump_select(&inc.file, bpf, &by_tcpdump);
        let t = json(&[], by_tshark.to_str().unwrap());
        let d = json(&[], by_tcpdump.to_str().unwrap());
        assert!(!lines(&filtered).is_empty(), "{bpf}: nothing selected");
        assert!(
            filtered.stdout == t.stdout,
            "{bpf}: differs from tshark -Y {display:?}"
        );
        assert!(filtered.stdout == d.stdout, "{bpf}: differs from tcpdump");
        assert!(
            text(&filtered.stderr).contains("selection: "),
            "{}",
            text(&filtered.stderr)
        );
    }
    // A time range relative to the first packet, against tshark's frame times.
    let start = inc.switch - Duration::from_secs(120);
    let (from, to) = (start.as_secs() + 60, start.as_secs() + 150);
    let ranged = json(&["--from", "+60s", "--to", "+2m30s"], file);
    let by_time = inc.dir.path().join("time.pcap");
    tshark_select(
        &inc.file,
        &format!("frame.time_epoch >= {from} && frame.time_epoch <= {to}"),
        &by_time,
    );
    assert!(
        ranged.stdout == json(&[], by_time.to_str().unwrap()).stdout,
        "--from/--to differ from tshark"
    );
    // The same range in RFC 3339.
    let absolute = json(
        &[
            "--from",
            &rfc3339(Duration::from_secs(from)),
            "--to",
            &rfc3339(Duration::from_secs(to)),
        ],
        file,
    );
    assert!(absolute.stdout == ranged.stdout);
    // Addresses select whole connections, by side.
    let all = lines(&json(&[], file));
    let conns = |v: &[Value]| -> Vec<String> {
        v.iter()
            .filter(|r| r["event"]["kind"] == "event")
            .map(|r| format!("{}:{}", r["source"]["ip"], r["source"]["port"]))
            .collect()
    };
    let expect: Vec<String> = conns(&all)
        .into_iter()
        .filter(|c| c.starts_with("\"10.77.0.2\"") || c.starts_with("\"10.77.0.3\""))
        .collect();
    let clients = lines(&json(&["--client", "10.77.0.2/31"], file));
    assert_eq!(conns(&clients), expect);
    assert_eq!(expect.len(), 2 * 48);
    // The server is on the other side: as a client address it selects nothing.
    let out = json(&["--client", "10.77.255.1"], file);
    assert!(lines(&out).iter().all(|r| r["event"]["kind"] != "event"));
    assert_eq!(
        conns(&lines(&json(&["--server", "10.77.255.1/32"], file))).len(),
        384
    );
    // A bad expression or time is one line, exit 2.
    for bad in [
        &["--filter", "tcp port"][..],
        &["--from", "+5x"],
        &["--client", "10.0.0.0/33"],
        &["--from", "+2m", "--to", "+1m"],
    ] {
        let out = analyze(&[bad, &[file]].concat(), None);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stderr).lines().count(),
            1,
            "{}",
            text(&out.stderr)
        );
    }
}

/// `--report` in each format from the incident capture: HTML parsed (well-formed, self-contained,
/// the timeline has a lane per CA key and the event markers), CSV columns (the re-join list),
/// Markdown tables.
#[test]
fn reports_in_html_markdown_and_csv() {
    let inc = incident();
    let port = inc.port.to_string();
    let file = inc.file.to_str().unwrap();
    let report = |name: &str| {
        let path = inc.dir.path().join(name);
        let out = analyze(
            &[
                "--quiet",
                "--ports",
                &port,
                "--report",
                path.to_str().unwrap(),
                file,
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        std::fs::read_to_string(path).unwrap()
    };
    let (a, b) = (&inc.keys.0, &inc.keys.1);
    let start = inc.switch - Duration::from_secs(120);

    // CSV: the 8 edges, each failing from its first meeting with CA_B, last good under CA_A.
    let csv = report("rejoin.csv");
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows[0],
        [
            "client",
            "first_failure",
            "last_failure",
            "failures",
            "successes",
            "last_success",
            "last_success_ca_key_id",
            "failing_at_end"
        ]
    );
    assert_eq!(rows.len(), 9, "{csv}");
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], format!("10.77.0.{}", i + 1));
        // Edge i connects i x 625 ms into each 5-second round; the first round under CA_B is at the switch.
        let offset = Duration::from_millis(625 * i as u64);
        assert_eq!(row[1], &ms(inc.switch + offset));
        assert_eq!(row[3], "24");
        assert_eq!(row[4], "24");
        assert_eq!(row[5], &ms(inc.switch - Duration::from_secs(5) + offset));
        assert_eq!(row[6], a.as_str());
        assert_eq!(row[7], "true");
    }

    // Markdown: tables with a header separator and as many cells per row as the header.
    let md = report("ticket.md");
    let mut tables = 0;
    let lines: Vec<&str> = md.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("|---") || l.starts_with("|---:") {
            tables += 1;
            let cols = lines[i - 1].matches(" |").count();
            for row in lines[i + 1..].iter().take_while(|r| r.starts_with('|')) {
                assert_eq!(row.matches(" |").count(), cols, "{row}");
            }
        }
    }
    assert!(tables >= 6, "{md}");
    assert!(
        md.contains(&format!("Capture: {}", &rfc3339(start)[..23])),
        "{md}"
    );
    assert!(
        md.contains("| trust_collapse |") && md.contains("## Affected clients (8)"),
        "{md}"
    );
    assert!(
        md.contains(&format!("| {a} | CN=KubeEdge | 192 | 0 |"))
            && md.contains(&format!("| {b} | CN=KubeEdge | 0 | 192 |")),
        "{md}"
    );

    // HTML: strict XML once the doctype is set aside; nothing loaded from elsewhere.
    let html = report("incident.html");
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "self-contained"
    );
    assert_eq!(
        html.matches("http").count(),
        1,
        "only the SVG namespace names a URL"
    );
    assert!(!html.contains("src=") && !html.contains("href="));
    let body = html.strip_prefix("<!DOCTYPE html>\n").unwrap();
    let doc = roxmltree::Document::parse(body).unwrap();
    let by_id = |id: &str| {
        doc.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no #{id}"))
    };
    let lanes: Vec<&str> = by_id("timeline")
        .descendants()
        .filter_map(|n| n.attribute("data-key"))
        .collect();
    assert_eq!(
        lanes,
        [a.as_str(), b.as_str()],
        "a lane per CA key, in order of appearance"
    );
    let bars = |class: &str| {
        by_id("timeline")
            .descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .count()
    };
    // Per minute (the capture starts on a whole minute): CA_A succeeded in minutes 0 and 1, CA_B
    // failed in minutes 2 and 3; two events.
    assert_eq!((bars("ok"), bars("failed"), bars("event")), (2, 2, 2));
    let ticks: Vec<String> = by_id("timeline")
        .descendants()
        .filter(|n| n.attribute("class") == Some("tick"))
        .filter_map(|n| n.text().map(String::from))
        .collect();
    assert_eq!(
        ticks.first().map(String::as_str),
        Some(&rfc3339(start)[11..16])
    );
    let rows = |id: &str| {
        by_id(id)
            .descendants()
            .filter(|n| n.has_tag_name("tr"))
            .count()
            - 1
    };
    assert_eq!(
        (
            rows("events"),
            rows("replicas"),
            rows("clients"),
            rows("keys")
        ),
        (2, 1, 8, 2)
    );
    assert!(
        by_id("span")
            .text()
            .unwrap_or_default()
            .contains("Capture from")
    );
    let counters: Vec<String> = by_id("counters")
        .descendants()
        .filter(|n| n.has_tag_name("td"))
        .filter_map(|n| n.text().map(String::from))
        .collect();
    assert!(
        counters
            .windows(2)
            .any(|w| w[0] == "packets" && w[1] == "3648"),
        "{counters:?}"
    );

    // An extension that names no format: one line, exit 2, before anything is read.
    let out = analyze(&["--report", "x.pdf", file], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "trustwatch: --report x.pdf: the extension names the format: .html, .md or .csv"
    );
}

/// A time as the reports write it: RFC 3339 to the millisecond.
fn ms(t: Duration) -> String {
    format!("{}Z", &rfc3339(t)[..23])
}

/// The human summary: capture span, correct plurals and sizes, the per-minute table around the
/// events.
#[test]
fn summary_has_span_plurals_and_minutes_around_events() {
    let one = analyze(
        &[
            "--any-port",
            validation_pcap("zeek-chrome-1250-tls-x25519-kyber.pcap")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    let one = text(&one.stdout);
    let first = one.lines().next().unwrap();
    assert!(
        first.starts_with("trustwatch: 1 TLS connection in ") && first.ends_with(" KiB)"),
        "{first}"
    );
    assert!(one.contains("(port 443): 1 connection\n"), "{one}");
    assert!(!one.contains("versions: none"), "{one}");

    let inc = incident();
    let port = inc.port.to_string();
    let out = analyze(&["--ports", &port, inc.file.to_str().unwrap()], None);
    let s = text(&out.stdout);
    let start = inc.switch - Duration::from_secs(120);
    // Bytes vary with the ECDSA signatures' lengths: about 512 KiB.
    let head = s.lines().next().unwrap();
    assert!(
        head.starts_with("trustwatch: 384 TLS connections in 3648 packets (51")
            && head.ends_with(" KiB)"),
        "{s}"
    );
    // The last packet: the last edge's FIN, 7 ms into its connection in the last round (3 m 55 s
    // in, edge 8 of 8 at 7 x 625 ms).
    let last = start + Duration::from_millis(3 * 60_000 + 55_000 + 7 * 625 + 7);
    assert!(
        s.contains(&format!(
            "capture span: {} to {} (3 m 59 s)\n",
            rfc3339(start),
            rfc3339(last)
        )),
        "{s}"
    );
    let table: Vec<&str> = s
        .split("per minute around the events (UTC, handshakes ok / failed):\n")
        .nth(1)
        .unwrap()
        .lines()
        .collect();
    let minute = |t: Duration| rfc3339(t)[..16].replace('T', " ");
    // 8 edges, one connection every 5 s each: 96 a minute; the switch is two minutes in.
    assert_eq!(
        table,
        [
            format!("    {}  ok     96  failed      0", minute(start)),
            format!(
                "    {}  ok     96  failed      0",
                minute(start + Duration::from_secs(60))
            ),
            format!(
                "    {}  ok      0  failed     96  <- event",
                minute(inc.switch)
            ),
            format!(
                "    {}  ok      0  failed     96",
                minute(inc.switch + Duration::from_secs(60))
            ),
        ]
    );
}

/// Community IDs of `(src ip, dst ip, src port, dst port)` flows by the published reference
/// implementation (PyPI `communityid`, installed by `cargo xtask setup`).
fn reference_community_ids(flows: &[(String, String, u64, u64)]) -> Vec<String> {
    let python = trustwatch_testkit::tools::pytool("python").unwrap();
    let script = "import communityid, json, sys\n\
                  cid = communityid.CommunityID()\n\
                  for l in sys.stdin:\n\
                  \x20   s, d, sp, dp = json.loads(l)\n\
                  \x20   print(cid.calc(communityid.FlowTuple.make_tcp(s, d, sp, dp)))\n";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = flows
        .iter()
        .map(|f| serde_json::to_string(&(&f.0, &f.1, f.2, f.3)).unwrap() + "\n")
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "communityid (pip) missing? run `cargo xtask setup`"
    );
    text(&out.stdout).lines().map(String::from).collect()
}

/// ECS: `ecs.version`, `network.community_id` equal to the reference implementation's (IPv4 and
/// IPv6 captures), the leaf certificates under `tls.server.x509.*`, evidence codes beside the text.
#[test]
fn ecs_fields_community_id_x509_and_evidence_codes() {
    let inc = incident();
    let port = inc.port.to_string();
    let mut records = lines(&analyze(
        &["--json", "--ports", &port, inc.file.to_str().unwrap()],
        None,
    ));
    let v6 = validation_pcap("ndpi-http_ipv6.pcap");
    let v6_out = analyze(&["--json", "--any-port", v6.to_str().unwrap()], None);
    records.extend(lines(&v6_out));
    let conns: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["kind"] == "event")
        .collect();
    let flows: Vec<(String, String, u64, u64)> = conns
        .iter()
        .map(|r| {
            (
                r["source"]["ip"].as_str().unwrap().to_string(),
                r["destination"]["ip"].as_str().unwrap().to_string(),
                r["source"]["port"].as_u64().unwrap(),
                r["destination"]["port"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = reference_community_ids(&flows);
    assert_eq!(expected.len(), conns.len());
    let mut distinct = std::collections::HashSet::new();
    for (r, id) in conns.iter().zip(&expected) {
        assert_eq!(r["network"]["community_id"], id.as_str(), "{}", r["source"]);
        distinct.insert(id.clone());
    }
    assert_eq!(distinct.len(), conns.len(), "one id per connection");
    assert!(
        flows.iter().any(|f| f.0.contains(':')),
        "an IPv6 flow is checked too"
    );
    for r in &records {
        assert_eq!(r["ecs"]["version"], "8.11.0");
    }
    // x509 of the server leaf, against the PKI's ground truth, and evidence codes.
    let established = conns
        .iter()
        .find(|r| {
            r["trustwatch"]["outcome"] == "established"
                && r["trustwatch"]["ca_key_id"] == inc.keys.0.as_str()
        })
        .unwrap();
    let x = &established["tls"]["server"]["x509"];
    assert_eq!(
        x["subject"]["common_name"],
        serde_json::json!(["CloudCore"])
    );
    assert_eq!(x["issuer"]["distinguished_name"], "CN=KubeEdge");
    assert_eq!(x["issuer"]["common_name"], serde_json::json!(["KubeEdge"]));
    assert_eq!(x["public_key_algorithm"], "EC");
    assert_eq!(x["public_key_size"], 256);
    assert_eq!(
        x["alternative_names"],
        serde_json::json!(["127.0.0.1", "localhost"])
    );
    let serial = x["serial_number"].as_str().unwrap();
    assert!(
        serial.len() >= 8
            && serial
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
        "{serial}"
    );
    assert_eq!(
        serial.to_lowercase(),
        established["trustwatch"]["server_chain"][0]["serial"]
            .as_str()
            .unwrap()
    );
    assert_eq!(
        established["trustwatch"]["evidence_code"],
        "tls12_finished_both"
    );
    let rejected = conns
        .iter()
        .find(|r| r["trustwatch"]["outcome"] == "rejected_by_client")
        .unwrap();
    assert_eq!(
        rejected["trustwatch"]["evidence_code"],
        "plaintext_fatal_alert"
    );
    assert!(
        rejected["trustwatch"]["evidence"]
            .as_str()
            .unwrap()
            .contains("unknown_ca(48)")
    );
    let collapse = records
        .iter()
        .find(|r| r["event"]["action"] == "trust_collapse")
        .unwrap();
    assert_eq!(
        collapse["trustwatch"]["evidence_code"],
        "trust_collapse_partial"
    );
    let changed = records
        .iter()
        .find(|r| r["event"]["action"] == "ca_changed")
        .unwrap();
    assert_eq!(changed["trustwatch"]["evidence_code"], "ca_changed_passive");
}
