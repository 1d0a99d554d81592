//! What every end-to-end scenario shares: the KubeEdge PKI of a scenario, servers and edge clients
//! of any stack, the capture, and `trustwatch analyze --json` run as a process (exit code, JSON
//! Lines on stdout, report and trust timeline on stderr), plus the checks on its events.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use trustwatch_testkit::analyzer::{get, str_at};
use trustwatch_testkit::capture::Capture;
use trustwatch_testkit::peers::{self, ClientOpts, PeerResult, ServerSpec, Stack, TlsVersion};
use trustwatch_testkit::pki::{Ca, Leaf, LeafSpec, Pki};
use trustwatch_testkit::tempfile::TempDir;

/// K of the collapse rule (`--collapse-clients` default).
pub const K: usize = 3;

/// The source address of edge `n` in scenario `net` (every scenario its own /24 of 127/8).
pub fn edge_ip(net: u8, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, n))
}

pub fn stack_name(s: Stack) -> &'static str {
    match s {
        Stack::Go => "go",
        Stack::Openssl => "openssl",
        Stack::Rustls => "rustls",
    }
}

/// Two KubeEdge CAs (same CN, same serial 1024, different keys) and what is made from them.
pub struct World {
    pub pki: Pki,
    pub ca_a: Ca,
    pub ca_b: Ca,
    pub dir: TempDir,
    pub port: u16,
}

impl World {
    pub fn new() -> World {
        let pki = Pki::new().expect("pki");
        let ca_a = pki.kubeedge_ca().expect("ca a");
        let ca_b = pki.kubeedge_ca().expect("ca b");
        // The premise of the incident: the CAs are indistinguishable by name and serial.
        assert_eq!(
            (&ca_a.cert.subject_cn, &ca_a.cert.serial),
            (&ca_b.cert.subject_cn, &ca_b.cert.serial)
        );
        assert_eq!(ca_a.cert.serial, "400");
        assert_ne!(ca_a.key_id(), ca_b.key_id());
        World {
            pki,
            ca_a,
            ca_b,
            dir: trustwatch_testkit::tempfile::tempdir().expect("tmp"),
            port: trustwatch_testkit::free_port().expect("port"),
        }
    }

    /// CloudCore's serving certificate from `ca`, valid for the replica addresses used here.
    pub fn cloudcore(&self, ca: &Ca) -> Leaf {
        let spec = LeafSpec {
            sans: vec![
                "127.0.0.1".into(),
                "127.0.0.2".into(),
                "127.0.0.3".into(),
                "localhost".into(),
            ],
            ..LeafSpec::cloudcore()
        };
        self.pki.leaf(ca, &spec).expect("server leaf")
    }

    /// `n` edge certificates from `ca` (`CN=node-<tag>-<i>`).
    pub fn edges(&self, ca: &Ca, tag: &str, n: usize) -> Vec<Leaf> {
        (1..=n)
            .map(|i| {
                self.pki
                    .client_leaf(ca, &format!("node-{tag}-{i}"))
                    .expect("edge")
            })
            .collect()
    }

    pub fn addr(&self, last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], self.port))
    }

    pub fn capture(&self, name: &str) -> Capture {
        Capture::start_port(self.dir.path(), name, self.port).expect("capture")
    }

    /// A PEM file holding several CAs (what edges trust during a rotation).
    pub fn bundle(&self, cas: &[&Ca]) -> PathBuf {
        let pem: String = cas.iter().map(|c| c.cert.pem.as_str()).collect();
        let path = self.dir.path().join(format!("bundle-{}.pem", cas.len()));
        std::fs::write(&path, pem).expect("bundle");
        path
    }
}

/// A server of `stack` on `addr` serving `identity`, verifying clients against `client_ca`.
pub fn serve(
    stack: Stack,
    addr: SocketAddr,
    identity: &Leaf,
    client_ca: Option<&Ca>,
    version: TlsVersion,
    accept: usize,
) -> peers::Server {
    let mut spec = ServerSpec::new(stack, addr.port(), identity).version(version);
    spec.listen = addr;
    spec.client_ca = client_ca;
    spec.accept = accept;
    peers::start_server(&spec).expect("server")
}

/// One edge: its address, what it trusts and the certificate it holds.
pub struct Edge<'a> {
    pub ip: IpAddr,
    pub trust: &'a Ca,
    pub identity: Option<&'a Leaf>,
}

/// One edge per certificate, on 127.0.`net`.1, .2, …, trusting `ca`.
pub fn edges_trusting<'a>(certs: &'a [Leaf], net: u8, ca: &'a Ca) -> Vec<Edge<'a>> {
    certs
        .iter()
        .enumerate()
        .map(|(i, c)| Edge {
            ip: edge_ip(net, i as u8 + 1),
            trust: ca,
            identity: Some(c),
        })
        .collect()
}

/// Each edge in turn connects `attempts` times (50 ms apart) with `stack`.
pub fn connect_all(
    stack: Stack,
    server: SocketAddr,
    version: TlsVersion,
    edges: &[Edge<'_>],
    attempts: usize,
) -> Vec<PeerResult> {
    let mut out = Vec::new();
    for e in edges {
        let o = ClientOpts::new(server)
            .local_ip(e.ip)
            .version(version)
            .attempts(attempts, Duration::from_millis(50));
        out.extend(peers::run_client(stack, &o, e.trust, e.identity).expect("client"));
    }
    out
}

/// What `trustwatch analyze --json` produced.
pub struct Analysis {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Connection records (`event.kind: "event"`), in output order.
    pub conns: Vec<Value>,
    /// Detector events (`event.kind: "alert"`), in output order.
    pub events: Vec<Value>,
}

/// Runs the real binary: `trustwatch analyze --ports <ports> --json <extra> <pcap>`, bounded in time.
pub fn analyze(pcap: &Path, ports: &str, extra: &[&str]) -> Analysis {
    let child = Command::new(env!("CARGO_BIN_EXE_trustwatch"))
        .arg("analyze")
        .args(["--ports", ports, "--json"])
        .args(extra)
        .arg(pcap)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run trustwatch");
    finish(child, extra)
}

/// [`analyze`] for runs that must fail before any output (bad input): no record parsing.
pub fn analyze_raw(pcap: &Path, ports: &str, extra: &[&str]) -> Analysis {
    let child = Command::new(env!("CARGO_BIN_EXE_trustwatch"))
        .arg("analyze")
        .args(["--ports", ports, "--json"])
        .args(extra)
        .arg(pcap)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run trustwatch");
    let mut a = finish(child, extra);
    a.conns.clear();
    a
}

fn finish(mut child: std::process::Child, extra: &[&str]) -> Analysis {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("trustwatch analyze {extra:?} did not finish in 30 s (blocked opening a file?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut conns = Vec::new();
    let mut events = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        match str_at(&v, "event.kind") {
            Some("alert") => events.push(v),
            Some("event") => conns.push(v),
            k => panic!("unexpected record kind {k:?}: {line}"),
        }
    }
    Analysis {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr,
        conns,
        events,
    }
}

impl Analysis {
    pub fn names(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| str_at(e, "trustwatch.event").unwrap_or("?"))
            .collect()
    }

    pub fn all(&self, name: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| str_at(e, "trustwatch.event") == Some(name))
            .collect()
    }

    /// The only event called `name`.
    pub fn one(&self, name: &str) -> &Value {
        let v = self.all(name);
        assert_eq!(
            v.len(),
            1,
            "one {name} expected: {:?}\n{}",
            self.names(),
            self.stderr
        );
        v[0]
    }

    /// The timeline part of the report (stderr with `--json`).
    pub fn timeline(&self) -> &str {
        let i = self
            .stderr
            .find("trust timeline:")
            .unwrap_or_else(|| panic!("no timeline on stderr:\n{}", self.stderr));
        &self.stderr[i..]
    }

    pub fn failures(&self) -> Vec<&Value> {
        self.conns
            .iter()
            .filter(|c| str_at(c, "event.outcome") == Some("failure"))
            .collect()
    }

    pub fn successes(&self) -> Vec<&Value> {
        self.conns
            .iter()
            .filter(|c| str_at(c, "event.outcome") == Some("success"))
            .collect()
    }

    /// A one-line description per connection, for failure messages and the test log.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for c in &self.conns {
            s.push_str(&format!(
                "{} {}:{} {} v={} alert={} ca={} | {}\n",
                str_at(c, "event.end").unwrap_or("-"),
                str_at(c, "source.ip").unwrap_or("-"),
                get(c, "source.port"),
                str_at(c, "trustwatch.outcome").unwrap_or("-"),
                str_at(c, "tls.version").unwrap_or("-"),
                alert_desc(c),
                str_at(c, "trustwatch.ca_key_id").unwrap_or("-"),
                str_at(c, "trustwatch.evidence").unwrap_or("-"),
            ));
        }
        for e in &self.events {
            s.push_str(&format!("EVENT {}\n", str_at(e, "message").unwrap_or("-")));
        }
        s
    }

    /// Exit code and the shape every run must have.
    pub fn expect_code(&self, code: i32) {
        assert_eq!(
            self.code,
            code,
            "exit code\n{}\nstderr:\n{}",
            self.dump(),
            self.stderr
        );
        assert!(self.stderr.contains("trust timeline:"), "{}", self.stderr);
    }

    /// Exit 0, no event, and the timeline says so.
    pub fn expect_quiet(&self) {
        self.expect_code(0);
        assert!(
            self.events.is_empty(),
            "no events expected:\n{}",
            self.dump()
        );
        assert!(
            self.timeline()
                .contains("no trust events (healthy throughout)"),
            "{}",
            self.timeline()
        );
    }
}

/// What the deciding alert of a record looks like: `plain:<name>(<code>)/<from>` or `encrypted/<from>`.
pub fn alert_desc(c: &Value) -> String {
    let a = get(c, "trustwatch.alert");
    if a.is_null() {
        return "none".into();
    }
    if a["encrypted"] == true {
        format!("encrypted/{}", a["from"].as_str().unwrap_or("?"))
    } else {
        format!(
            "plain:{}({})/{}",
            a["name"].as_str().unwrap_or("?"),
            a["code"],
            a["from"].as_str().unwrap_or("?")
        )
    }
}

/// Alerts that reject the peer's chain (RFC 8446 §6.2): bad_certificate .. certificate_unknown,
/// unknown_ca, certificate_required, and decrypt_error (rustls' answer to a same-name CA with
/// another key).
pub const CERT_ALERTS: [u64; 8] = [42, 43, 44, 45, 46, 48, 51, 116];

/// The record's failure is one the detector must count as a certificate rejection by `side`:
/// attributed to that side, with a certificate alert or an (inferred) encrypted one from it.
pub fn assert_cert_rejection(c: &Value, side: &str) {
    let outcome = format!("rejected_by_{side}");
    assert_eq!(
        str_at(c, "trustwatch.outcome"),
        Some(outcome.as_str()),
        "{c}"
    );
    let a = get(c, "trustwatch.alert");
    assert_eq!(a["from"], side, "alert from the rejecting side: {c}");
    if a["encrypted"] != true {
        let code = a["code"].as_u64().expect("alert code");
        assert!(
            CERT_ALERTS.contains(&code),
            "certificate alert expected: {c}"
        );
    }
}

/// Microseconds since the epoch of an RFC 3339 UTC time as trustwatch writes it
/// (`2026-01-02T03:04:05.000006Z`).
pub fn micros(s: &str) -> i64 {
    let p = |r: std::ops::Range<usize>| -> i64 {
        s.get(r)
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("bad time {s}"))
    };
    let (y, m, d) = (p(0..4), p(5..7), p(8..10));
    let (hh, mm, ss, us) = (p(11..13), p(14..16), p(17..19), p(20..26));
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + us
}

/// The collapse came exactly at the K-th distinct failing client's failure, its first failure is
/// the first failing connection, and the latency field agrees; returns the latency (µs of capture
/// time). `failing` are the failure records that belong to the collapse, in output order.
pub fn check_collapse_timing(a: &Analysis, scenario: &str, failing: &[&Value]) -> i64 {
    let e = a.one("trust_collapse");
    let mut seen: Vec<&str> = Vec::new();
    let kth = failing
        .iter()
        .find(|c| {
            let ip = str_at(c, "source.ip").unwrap_or_default();
            if !seen.contains(&ip) {
                seen.push(ip);
            }
            seen.len() == K
        })
        .unwrap_or_else(|| panic!("{scenario}: fewer than {K} failing clients\n{}", a.dump()));
    let at = str_at(e, "trustwatch.detection_time").expect("detection_time");
    assert_eq!(
        Some(at),
        str_at(kth, "event.end"),
        "{scenario}: the collapse comes at the {K}-th failing client, no later\n{}",
        a.dump()
    );
    assert_eq!(str_at(e, "@timestamp"), Some(at));
    let first = str_at(failing[0], "event.end").expect("end");
    assert_eq!(
        str_at(e, "trustwatch.first_failure"),
        Some(first),
        "{scenario}: first failure\n{}",
        a.dump()
    );
    let latency = e["trustwatch"]["detection_latency_us"]
        .as_i64()
        .expect("latency");
    assert_eq!(latency, micros(at) - micros(first), "{scenario}");
    assert!(
        (0..5_000_000).contains(&latency),
        "{scenario}: {latency} µs"
    );
    assert_eq!(e["trustwatch"]["failing_clients"], K, "{scenario}: {e}");
    assert_eq!(e["event"]["severity"], 3);
    let clients: Vec<&str> = e["trustwatch"]["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut want = seen.clone();
    want.sort();
    let mut got = clients.clone();
    got.sort();
    assert_eq!(got, want, "{scenario}: the failing clients are named");
    eprintln!(
        "LATENCY {scenario}: {latency} us of capture time from the first certificate failure \
         ({first}) to trust_collapse ({at}) at the {K}-th failing client"
    );
    latency
}

/// The timeline has one line for `event` (upper-case) under `service`, containing `needle`.
pub fn assert_timeline(a: &Analysis, service: &str, event: &str, needle: &str) {
    let t = a.timeline();
    assert!(t.contains(&format!("  {service}:\n")), "{t}");
    let upper = event.to_uppercase();
    assert!(
        t.lines().any(|l| l.contains(&upper) && l.contains(needle)),
        "timeline line {upper} with {needle:?} expected:\n{t}"
    );
}

/// The first 16 hex digits of a key id, as the timeline shows it.
pub fn short(key: &str) -> &str {
    &key[..16]
}

/// The `trustwatch` fields of an event.
pub fn tw(e: &Value) -> &Value {
    &e["trustwatch"]
}
