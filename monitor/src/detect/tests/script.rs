//! A small language for the detector's rule tables: a script of inputs (connections, probes,
//! ticks) with checks of the state in between, and the events it must produce, one line each.
//!
//! Names keep the rows short: servers `A`, `B`, `C` (replicas on the cloudhub port), edges `e1`,
//! `e2`, … (`192.168.1.n`), CA keys `X`, `Y`, `Z`, `W`, `V`, `U`, times in seconds.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};

use super::super::*;
use crate::base::KeyId;
use crate::flow::Side;
use crate::handshake::{Alert, Outcome};
use crate::trust::probe::{ProbeFinding, ProbeKind, ProbeResult, ProbeTarget};
use crate::trust::{CaIdentity, TrustedReference};

pub const A: &str = "10.0.0.1:10000";
pub const B: &str = "10.0.0.2:10000";
pub const C: &str = "10.0.0.3:10000";

/// CA key ids by letter.
pub const KEYS: [(&str, &str); 6] = [
    ("X", "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11"),
    ("Y", "bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22"),
    ("Z", "cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33"),
    ("W", "dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44"),
    ("V", "ee55ee55ee55ee55ee55ee55ee55ee55ee55ee55"),
    ("U", "ff66ff66ff66ff66ff66ff66ff66ff66ff66ff66"),
];

/// The configuration of the rule tables that judge differing CA keys: at once, without the wait
/// for rotation evidence (the grace has its own tests in `detect/tests.rs`).
pub fn keys_at_once() -> DetectConfig {
    DetectConfig {
        rotation_grace_us: 0,
        ..DetectConfig::default()
    }
}

pub fn ts(s: f64) -> Timestamp {
    Timestamp::from_micros((s * 1e6).round() as i64)
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

/// The key id of letter `k` (`""`: none).
pub fn key(k: &str) -> Option<KeyId> {
    if k.is_empty() {
        return None;
    }
    let hex = KEYS
        .iter()
        .find(|(name, _)| *name == k)
        .map_or(k, |(_, hex)| *hex);
    Some(KeyId::parse(hex).expect("hex key id"))
}

/// Edge `n`'s address, from a port no other connection of the test run used.
pub fn edge(n: u8) -> SocketAddr {
    static PORT: AtomicU16 = AtomicU16::new(20000);
    edge_port(n, PORT.fetch_add(1, Ordering::Relaxed))
}

pub fn edge_port(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from([192, 168, 1, n]), port)
}

/// One input of a script, or a check of the detector's state at that point.
pub enum Step {
    Conn(Box<Connection>),
    Tick(f64),
    Probe(Box<ProbeResult>, f64),
    /// A probe's local address announced before its handshake.
    ExcludeProbe(SocketAddr, f64),
    /// Check: the cloudhub service's trust state now (`None`: not tracked).
    State(Option<TrustState>),
    /// Check: the CA keys the cloudhub snapshot reports as divergent now.
    Divergent(&'static [&'static str]),
    /// Check: the cloudhub window as [`Script::window`] shows it.
    Window(&'static str),
    /// Check: the cloudhub service's flags as [`Script::flags`] shows them.
    Flags(&'static str),
    /// The live loop takes the probe request (at the latest packet time); check what it got.
    TakeProbeRequest(bool),
}

/// A connection record as the analyzer would emit it.
pub fn conn(
    t: f64,
    client: SocketAddr,
    server: &str,
    outcome: Outcome,
    alerts: Vec<Alert>,
    ca: &str,
) -> Connection {
    Connection {
        alerts,
        outcome,
        evidence_code: "",
        ca_key_id: key(ca),
        ..Connection::test_record(client, addr(server), ts(t - 0.01), ts(t))
    }
}

fn plain(from: Side, code: u8, t: f64) -> Vec<Alert> {
    vec![Alert::Plain {
        from,
        level: 2,
        code,
        ts: ts(t),
    }]
}

/// Edge `n` completes a handshake with `server`, which presented CA key `ca` (`""`: hidden).
pub fn ok(t: f64, n: u8, server: &str, ca: &str) -> Step {
    Step::Conn(Box::new(conn(
        t,
        edge(n),
        server,
        Outcome::Established,
        vec![],
        ca,
    )))
}

/// Edge `n` refuses `server`'s chain from CA `ca` with bad_certificate(42) in plaintext (TLS 1.2).
pub fn refuses(t: f64, n: u8, server: &str, ca: &str) -> Step {
    Step::Conn(Box::new(conn(
        t,
        edge(n),
        server,
        Outcome::RejectedByClient,
        plain(Side::Client, 42, t),
        ca,
    )))
}

/// `server` refuses edge `n`'s certificate with unknown_ca(48) in plaintext (TLS 1.2).
pub fn refused(t: f64, n: u8, server: &str, ca: &str) -> Step {
    Step::Conn(Box::new(conn(
        t,
        edge(n),
        server,
        Outcome::RejectedByServer,
        plain(Side::Server, 48, t),
        ca,
    )))
}

/// TLS 1.3: `side` aborted edge `n`'s handshake with an encrypted alert (inferred).
pub fn sealed(t: f64, n: u8, server: &str, side: Side) -> Step {
    let outcome = match side {
        Side::Client => Outcome::RejectedByClient,
        Side::Server => Outcome::RejectedByServer,
    };
    let alerts = vec![Alert::Encrypted {
        from: side,
        ts: ts(t),
    }];
    Step::Conn(Box::new(conn(t, edge(n), server, outcome, alerts, "")))
}

/// `server` aborts edge `n`'s handshake with handshake_failure(40): not a trust problem.
pub fn other(t: f64, n: u8, server: &str) -> Step {
    Step::Conn(Box::new(conn(
        t,
        edge(n),
        server,
        Outcome::RejectedByServer,
        plain(Side::Server, 40, t),
        "",
    )))
}

pub fn tick(t: f64) -> Step {
    Step::Tick(t)
}

fn probe(t: f64, kind: ProbeKind, server: &str, finding: Result<ProbeFinding, String>) -> Step {
    let a = addr(server);
    Step::Probe(
        Box::new(ProbeResult {
            target: ProbeTarget {
                kind,
                host: a.ip().to_string(),
                port: a.port(),
                addr: None,
            },
            addr: Some(a),
            local: None,
            elapsed_ms: 3,
            outcome: finding,
        }),
        t,
    )
}

/// A CA certificate known only by its key `k` and the sha256 `sha` of its DER.
pub fn ca_identity(k: &str, sha: &str) -> CaIdentity {
    let id = key(k).expect("key");
    CaIdentity {
        key_id: id.clone(),
        key_ids: vec![id],
        sha256: sha.to_string(),
        subject: "CN=KubeEdge".into(),
        issuer: "CN=KubeEdge".into(),
        serial: "400".into(),
        not_after: "2035-01-01T00:00:00Z".into(),
        not_after_unix: 2_051_222_400,
        der: std::sync::Arc::from([]),
    }
}

/// `GET /ca.crt` on `server` returned the CA with key `k` and DER hash `sha`.
pub fn probe_ca(t: f64, server: &str, k: &str, sha: &str) -> Step {
    probe(
        t,
        ProbeKind::CaEndpoint,
        server,
        Ok(ProbeFinding {
            ca: Some(ca_identity(k, sha)),
            issuer_key_id: None,
            leaf: None,
            chain_len: 0,
            note: None,
        }),
    )
}

/// A `--probe-chain` handshake with `server` saw a leaf issued by CA key `k`.
pub fn probe_chain(t: f64, server: &str, k: &str) -> Step {
    probe(
        t,
        ProbeKind::Chain,
        server,
        Ok(ProbeFinding {
            ca: None,
            issuer_key_id: key(k),
            leaf: None,
            chain_len: 1,
            note: None,
        }),
    )
}

/// A probe of `server` that failed (connection refused, handshake error).
pub fn probe_failed(t: f64, server: &str) -> Step {
    probe(
        t,
        ProbeKind::Chain,
        server,
        Err("connection refused".into()),
    )
}

/// Runs scripts against one detector and shows its events one line each.
pub struct Script {
    pub d: Detector,
    pub out: Vec<Event>,
    /// Extra names for key ids and hashes (e.g. of generated CAs).
    pub aliases: Vec<(String, String)>,
}

impl Script {
    pub fn new(cfg: DetectConfig) -> Script {
        Script::with_reference(cfg, TrustedReference::default())
    }

    pub fn with_reference(cfg: DetectConfig, reference: TrustedReference) -> Script {
        Script {
            d: Detector::new(cfg, reference),
            out: Vec::new(),
            aliases: Vec::new(),
        }
    }

    pub fn alias(mut self, long: &str, short: &str) -> Script {
        self.aliases.push((long.to_string(), short.to_string()));
        self
    }

    /// Feeds the steps, checking the `State` and `Divergent` steps as they come.
    pub fn run(&mut self, rule: &str, steps: Vec<Step>) -> &mut Script {
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Step::Conn(c) => self.d.observe(&c, &mut self.out),
                Step::Tick(t) => self.d.tick(ts(t), &mut self.out),
                Step::Probe(r, t) => self.d.observe_probe(&r, ts(t), &mut self.out),
                Step::ExcludeProbe(a, t) => self.d.exclude_probe_client(a, ts(t)),
                Step::State(want) => {
                    assert_eq!(self.d.state("cloudhub"), want, "{rule}: state at step {i}")
                }
                Step::Divergent(want) => {
                    let snap = self.d.snapshot();
                    let got: Vec<String> = snap
                        .services
                        .iter()
                        .filter(|s| s.service == "cloudhub")
                        .flat_map(|s| s.divergent_ca_key_ids.iter().map(|k| self.name(k)))
                        .collect();
                    assert_eq!(got, want, "{rule}: divergent keys at step {i}");
                }
                Step::Window(want) => {
                    assert_eq!(self.window(), want, "{rule}: window at step {i}")
                }
                Step::Flags(want) => {
                    assert_eq!(self.flags(), want, "{rule}: flags at step {i}")
                }
                Step::TakeProbeRequest(want) => {
                    assert_eq!(
                        self.d.take_probe_request(),
                        want,
                        "{rule}: probe request at step {i}"
                    )
                }
            }
        }
        self
    }

    /// The cloudhub service's window in one line: handshakes (ok/cert/other), distinct failing
    /// and succeeding clients, per CA key ok/cert, per server address hs: ok/cert/other and the
    /// presented key.
    pub fn window(&self) -> String {
        let snap = self.d.snapshot();
        let Some(s) = snap.services.iter().find(|s| s.service == "cloudhub") else {
            return "-".into();
        };
        let counts = |c: &Counts| {
            format!(
                "{}={}/{}/{}",
                c.handshakes, c.successes, c.cert_failures, c.other_failures
            )
        };
        format!(
            "hs {} clients failing={} ok={} keys={} servers={} failing={}",
            counts(&s.window),
            s.failing_clients,
            s.succeeding_clients,
            Self::list(&s.ca_keys, |k| format!(
                "{}:{}/{}",
                self.name(&k.ca_key_id),
                k.successes,
                k.failures
            )),
            Self::list(&s.servers, |v| format!(
                "{}:{}:{}",
                self.addr(&v.address),
                counts(&v.window),
                self.key(v.presented_ca_key_id.as_ref())
            )),
            Self::list(&s.failing_client_list, |c| format!(
                "{}@{}",
                self.ip(&c.address),
                c.failing_since
                    .as_deref()
                    .and_then(|t| t.split(['T', 'Z']).nth(1))
                    .unwrap_or("-")
            )),
        )
    }

    /// The cloudhub service's collapse scope, rotation and saturation flags in one line.
    pub fn flags(&self) -> String {
        let snap = self.d.snapshot();
        let Some(s) = snap.services.iter().find(|s| s.service == "cloudhub") else {
            return "-".into();
        };
        format!(
            "scope={} rotation={} saturated={}",
            s.scope.map_or("-", CollapseScope::as_str),
            s.rotation_in_progress,
            s.saturated
        )
    }

    /// The events so far, one line each.
    pub fn lines(&self) -> Vec<String> {
        self.out.iter().map(|e| self.show(e)).collect()
    }

    /// Runs `steps` on a fresh detector with `cfg` and checks the events it emits, in order.
    pub fn check(rule: &str, cfg: &DetectConfig, steps: Vec<Step>, want: &[&str]) -> Script {
        let mut s = Script::new(cfg.clone());
        s.run(rule, steps);
        s.expect(rule, want);
        s
    }

    pub fn expect(&self, rule: &str, want: &[&str]) {
        let got = self.lines();
        assert!(
            got == want,
            "{rule}\n got:\n  {}\n want:\n  {}",
            got.join("\n  "),
            want.join("\n  ")
        );
    }

    /// Short name of a key id, hash or address.
    pub fn name(&self, long: &str) -> String {
        if let Some((_, short)) = self.aliases.iter().find(|(l, _)| l == long) {
            return short.clone();
        }
        if let Some((short, _)) = KEYS.iter().find(|(_, hex)| *hex == long) {
            return short.to_string();
        }
        long.to_string()
    }

    fn key(&self, k: Option<&KeyId>) -> String {
        k.map_or("-".into(), |k| self.name(k))
    }

    fn addr(&self, a: &SocketAddr) -> String {
        for (short, long) in [("A", A), ("B", B), ("C", C)] {
            if *a == addr(long) {
                return short.into();
            }
        }
        match a.ip() {
            IpAddr::V4(v4) if v4.octets()[..3] == [192, 168, 1] => format!("e{}", v4.octets()[3]),
            _ => a.to_string(),
        }
    }

    fn ip(&self, ip: &IpAddr) -> String {
        self.addr(&SocketAddr::new(*ip, 0))
    }

    fn list<T>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> String) -> String {
        let v: Vec<String> = items.into_iter().map(f).collect();
        format!("[{}]", v.join(","))
    }

    /// One line per event with every field of its kind.
    pub fn show(&self, e: &Event) -> String {
        let secs = |t: Timestamp| t.secs_f64();
        let head = format!("@{} {} {}", secs(e.at), e.service, e.name());
        let detail = match &e.detail {
            EventDetail::TrustCollapse(c) => format!(
                "scope={} prev={} cur={} side={} failing={} ok={} share={:.2} clients={} handshakes={} \
                 cert_failures={} first={} latency={} servers={}",
                c.scope.as_str(),
                self.key(c.previous_ca_key_id.as_ref()),
                self.key(c.current_ca_key_id.as_ref()),
                c.rejecting_side.as_str(),
                c.failing_clients,
                c.succeeding_clients,
                c.failure_share,
                Self::list(&c.clients, |ip| self.ip(ip)),
                c.handshakes,
                c.cert_failures,
                secs(c.first_failure),
                c.detection_latency_us as f64 / 1e6,
                Self::list(&c.servers, |a| self.addr(a)),
            ),
            EventDetail::TrustRecovered(r) => format!(
                "collapsed_at={} ca={} prev={} ok={} failing={}",
                secs(r.collapsed_at),
                self.key(r.ca_key_id.as_ref()),
                self.key(r.previous_ca_key_id.as_ref()),
                r.succeeding_clients,
                r.failing_clients,
            ),
            EventDetail::CaChanged(c) => format!(
                "server={} {}->{} source={}",
                c.server.map_or("-".into(), |a| self.addr(&a)),
                self.name(&c.previous_ca_key_id),
                self.name(&c.current_ca_key_id),
                c.source.as_str(),
            ),
            EventDetail::CaDivergence(d) => format!(
                "basis={} keys={} split={} replicas={}",
                serde_json::to_value(d.basis)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                Self::list(&d.ca_key_ids, |k| self.name(k)),
                d.split_clients,
                Self::list(&d.replicas, |r| format!(
                    "{}:{}/{} hs={}/{} clients={}/{}",
                    self.addr(&r.address),
                    self.key(r.ca_key_id.as_ref()),
                    r.ca_source.map_or("-", CaSource::as_str),
                    r.successes,
                    r.cert_failures,
                    r.clients_succeeded,
                    r.clients_rejected,
                )),
            ),
            EventDetail::CaRotation(r) => format!(
                "keys={} replicas={}",
                Self::list(&r.ca_key_ids, |k| self.name(k)),
                Self::list(&r.replicas, |r| format!(
                    "{}:{}/{} hs={}/{} clients={}/{}",
                    self.addr(&r.address),
                    self.key(r.ca_key_id.as_ref()),
                    r.ca_source.map_or("-", CaSource::as_str),
                    r.successes,
                    r.cert_failures,
                    r.clients_succeeded,
                    r.clients_rejected,
                )),
            ),
            EventDetail::CaInconsistent(i) => format!(
                "server={} presented={} sha={} source={} expected={}",
                i.server.map_or("-".into(), |a| self.addr(&a)),
                Self::list(&i.presented.key_ids, |k| self.name(k)),
                i.presented
                    .der_sha256
                    .as_deref()
                    .map_or("-".into(), |s| self.name(s)),
                i.source.as_str(),
                Self::list(&i.disagreements, |d| format!(
                    "{}:{}",
                    d.source.split(' ').next().unwrap_or_default(),
                    d.expected
                        .iter()
                        .map(|x| self.name(x.strip_prefix("sha256:").unwrap_or(x)))
                        .collect::<Vec<_>>()
                        .join("|")
                )),
            ),
        };
        format!("{head} {detail}")
    }
}
