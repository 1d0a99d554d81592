//! End-to-end tests of `trustwatch analyze` on captures of real TLS stacks.
//!
//! Each scenario makes its PKI with rcgen (ground truth: fingerprints, key ids), runs real peers
//! (rustls, the OpenSSL CLI, the Go peer in `tests/go`) over loopback while libpcap records
//! `lo`, checks with tshark that the capture holds what the scenario claims, then runs the
//! analyzer and compares its JSON Lines with the ground truth. Run as root (live capture).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use trustwatch_testkit::analyzer::{self, get, str_at};
use trustwatch_testkit::capture::Capture;
use trustwatch_testkit::peers::{self, ClientOpts, PeerResult, ServerSpec, Stack, TlsVersion};
use trustwatch_testkit::pki::{Ca, Leaf, Pki};
use trustwatch_testkit::rewrite::{self, Variant};
use trustwatch_testkit::tshark::{self, Summary};

const BIN: &str = env!("CARGO_BIN_EXE_trustwatch");

/// Alert descriptions used below (RFC 8446 §6).
const BAD_CERTIFICATE: u32 = 42;
const CERTIFICATE_EXPIRED: u32 = 45;
const UNKNOWN_CA: u32 = 48;
const CERTIFICATE_REQUIRED: u32 = 116;

/// A client address unique to the scenario, so records can't be confused.
fn client_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 10, n))
}

/// What one scenario ran and captured.
struct Run {
    _dir: trustwatch_testkit::tempfile::TempDir,
    port: u16,
    pcap: PathBuf,
    client: Vec<PeerResult>,
    server: Vec<PeerResult>,
    wire: Summary,
}

impl Run {
    /// The analyzer's records for this capture.
    fn analyze(&self) -> Vec<Value> {
        analyze_file(&self.pcap, self.port)
    }
}

fn analyze_file(path: &Path, port: u16) -> Vec<Value> {
    match analyzer::analyze(Path::new(BIN), &port.to_string(), &[path]) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// How a scenario's peers are set up.
struct Setup<'a> {
    name: &'a str,
    server: Stack,
    client: Stack,
    version: Option<TlsVersion>,
    server_leaf: &'a Leaf,
    /// CA the server verifies client certificates with (client auth required); `None`: off.
    client_ca: Option<&'a Ca>,
    /// Root the client trusts.
    trust: &'a Ca,
    identity: Option<&'a Leaf>,
    ip: IpAddr,
    attempts: usize,
    resume: bool,
    mss: Option<u32>,
    tickets: bool,
}

impl<'a> Setup<'a> {
    fn new(name: &'a str, stack: Stack, version: TlsVersion, server_leaf: &'a Leaf, trust: &'a Ca, ip: IpAddr) -> Self {
        Setup {
            name,
            server: stack,
            client: stack,
            version: Some(version),
            server_leaf,
            client_ca: None,
            trust,
            identity: None,
            ip,
            attempts: 1,
            resume: false,
            mss: None,
            tickets: false,
        }
    }

    fn run(&self) -> Run {
        let dir = trustwatch_testkit::tempfile::Builder::new().prefix("trustwatch-e2e-").tempdir().expect("tempdir");
        let port = trustwatch_testkit::free_port().expect("port");
        let cap = Capture::start_port(dir.path(), self.name, port).expect("capture");
        let mut spec = ServerSpec::new(self.server, port, self.server_leaf);
        spec.client_ca = self.client_ca;
        spec.version = self.version;
        spec.accept = self.attempts;
        spec.tickets = self.tickets;
        let server = peers::start_server(&spec).expect("server");
        let mut opts = ClientOpts::new(SocketAddr::from(([127, 0, 0, 1], port))).local_ip(self.ip);
        opts.version = self.version;
        opts.attempts = self.attempts;
        opts.resume = self.resume;
        opts.mss = self.mss;
        let client = peers::run_client(self.client, &opts, self.trust, self.identity).expect("client");
        let server = server.join();
        let captured = cap.stop().expect("capture stop");
        let wire = Summary::read(&captured.path, port).expect("tshark");
        eprintln!("[{}] client: {client:?}\n[{}] server: {server:?}", self.name, self.name);
        for f in &wire.frames {
            eprintln!(
                "[{}] frame {} {}→{} types {:?} lens {:?} hs {:?} alerts {:?} certs {}",
                self.name,
                f.frame,
                f.src_port,
                f.dst_port,
                f.content_types,
                f.record_lengths,
                f.handshake_types,
                f.alerts,
                f.certificates.len()
            );
        }
        Run {
            _dir: dir,
            port,
            pcap: captured.path,
            client,
            server,
            wire,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions on analyzer records

/// The one record of the connection from `ip`.
fn record_from<'v>(records: &'v [Value], ip: IpAddr) -> &'v Value {
    let mine: Vec<&Value> = records.iter().filter(|r| str_at(r, "source.ip") == Some(&ip.to_string())).collect();
    assert_eq!(mine.len(), 1, "expected one record from {ip}, got {records:#?}");
    mine[0]
}

fn chain_field(rec: &Value, chain: &str, field: &str) -> Vec<String> {
    get(rec, &format!("trustwatch.{chain}"))
        .as_array()
        .map(|a| a.iter().map(|c| c[field].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

/// The record's addresses and ports are the scenario's.
fn assert_endpoints(rec: &Value, ip: IpAddr, port: u16, service_port: bool) {
    assert_eq!(str_at(rec, "source.ip"), Some(ip.to_string().as_str()), "{rec:#}");
    assert!(get(rec, "source.port").as_u64().is_some_and(|p| p > 0), "{rec:#}");
    assert_eq!(str_at(rec, "destination.ip"), Some("127.0.0.1"), "{rec:#}");
    assert_eq!(get(rec, "destination.port").as_u64(), Some(u64::from(port)), "{rec:#}");
    if service_port {
        assert!(str_at(rec, "trustwatch.service").is_some(), "{rec:#}");
    }
}

/// The server chain the record reports is exactly the one the generator made, in wire order,
/// and the CA key id is the issuing CA's SKI.
fn assert_server_chain(rec: &Value, leaf: &Leaf, issuer: &Ca) {
    let want256: Vec<String> = leaf.chain.iter().map(|c| c.sha256.clone()).collect();
    let want1: Vec<String> = leaf.chain.iter().map(|c| c.sha1.clone()).collect();
    assert_eq!(chain_field(rec, "server_chain", "sha256"), want256, "server chain sha256: {rec:#}");
    assert_eq!(chain_field(rec, "server_chain", "sha1"), want1, "server chain sha1: {rec:#}");
    assert_eq!(str_at(rec, "tls.server.hash.sha256"), Some(leaf.cert.sha256_upper().as_str()), "{rec:#}");
    assert_eq!(str_at(rec, "tls.server.hash.sha1"), Some(leaf.cert.sha1_upper().as_str()), "{rec:#}");
    assert_eq!(str_at(rec, "trustwatch.ca_key_id"), Some(issuer.key_id()), "ca_key_id: {rec:#}");
    let chain = get(rec, "trustwatch.server_chain").as_array().cloned().unwrap_or_default();
    for (got, want) in chain.iter().zip(&leaf.chain) {
        assert_eq!(got["serial"].as_str(), Some(want.serial.as_str()), "serial: {got:#}");
        assert_eq!(got["ski"].as_str(), Some(want.ski.as_str()), "ski: {got:#}");
        assert_eq!(got["aki"].as_str(), want.aki.as_deref(), "aki: {got:#}");
        assert_eq!(got["spki_sha256"].as_str(), Some(want.spki_sha256.as_str()), "spki: {got:#}");
        assert_eq!(got["is_ca"].as_bool(), Some(want.is_ca), "is_ca: {got:#}");
        assert!(got["subject"].as_str().is_some_and(|s| s.contains(&want.subject_cn)), "subject: {got:#}");
        assert!(got["issuer"].as_str().is_some_and(|s| s.contains(&want.issuer_cn)), "issuer: {got:#}");
    }
    assert!(str_at(rec, "tls.server.subject").is_some_and(|s| s.contains(&leaf.cert.subject_cn)), "{rec:#}");
    assert!(str_at(rec, "tls.server.issuer").is_some_and(|s| s.contains(&leaf.cert.issuer_cn)), "{rec:#}");
    assert!(str_at(rec, "tls.server.not_before").is_some() && str_at(rec, "tls.server.not_after").is_some());
}

fn assert_client_chain(rec: &Value, leaf: Option<&Leaf>) {
    let want: Vec<String> = leaf.map(|l| l.chain.iter().map(|c| c.sha256.clone()).collect()).unwrap_or_default();
    assert_eq!(chain_field(rec, "client_chain", "sha256"), want, "client chain: {rec:#}");
    match leaf {
        Some(l) => assert_eq!(str_at(rec, "tls.client.hash.sha1"), Some(l.cert.sha1_upper().as_str()), "{rec:#}"),
        None => assert!(get(rec, "tls.client.hash.sha1").is_null(), "{rec:#}"),
    }
}

/// A TLS 1.3 record: nothing of the encrypted flight may be reported as seen.
fn assert_no_chains(rec: &Value) {
    assert_eq!(chain_field(rec, "server_chain", "sha256"), Vec::<String>::new(), "{rec:#}");
    assert_eq!(chain_field(rec, "client_chain", "sha256"), Vec::<String>::new(), "{rec:#}");
    assert!(get(rec, "trustwatch.ca_key_id").is_null(), "{rec:#}");
}

fn assert_outcome(rec: &Value, outcome: &str, version: TlsVersion) {
    assert_eq!(str_at(rec, "trustwatch.outcome"), Some(outcome), "{rec:#}");
    assert_eq!(str_at(rec, "tls.version"), Some(version.as_str()), "{rec:#}");
    assert_eq!(get(rec, "tls.established").as_bool(), Some(outcome == "established"), "{rec:#}");
    assert!(str_at(rec, "trustwatch.evidence").is_some_and(|e| !e.is_empty()), "{rec:#}");
    assert!(str_at(rec, "tls.cipher").is_some_and(|c| c.starts_with("TLS_")), "{rec:#}");
    assert!(str_at(rec, "tls.client.ja3").is_some_and(|j| j.len() == 32), "{rec:#}");
    assert!(str_at(rec, "tls.client.ja4").is_some_and(|j| j.starts_with('t')), "{rec:#}");
    assert!(str_at(rec, "@timestamp").is_some(), "{rec:#}");
    if outcome == "established" {
        assert!(get(rec, "trustwatch.alert").is_null() || get(rec, "trustwatch.alert.level") == "warning", "{rec:#}");
    }
}

/// The deciding alert: from which side, the exact code when plaintext, `encrypted` otherwise.
fn assert_alert(rec: &Value, from: &str, code: Option<u32>) {
    let a = get(rec, "trustwatch.alert");
    assert!(a.is_object(), "no alert: {rec:#}");
    assert_eq!(a["from"].as_str(), Some(from), "alert side: {rec:#}");
    match code {
        Some(c) => {
            assert_eq!(a["code"].as_u64(), Some(u64::from(c)), "alert code: {rec:#}");
            assert_eq!(a["encrypted"].as_bool(), Some(false), "{rec:#}");
        }
        None => {
            assert!(a["code"].is_null(), "inferred alert has no code: {rec:#}");
            assert_eq!(a["encrypted"].as_bool(), Some(true), "{rec:#}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire facts (tshark), to know the fixture is what the scenario claims

fn assert_wire_established(run: &Run) {
    assert!(run.client.iter().all(|r| r.ok), "client: {:?}", run.client);
    assert_eq!(run.wire.client_hellos(), run.client.len(), "one ClientHello per attempt");
    assert!(run.wire.alerts(true).is_empty() && run.wire.alerts(false).is_empty(), "no plaintext alerts");
}

/// TLS 1.2 plaintext: the server's Certificate message holds exactly the generated chain.
fn assert_wire_chain_12(run: &Run, leaf: &Leaf) {
    let want: Vec<String> = leaf.chain.iter().map(|c| hex::encode(&c.der)).collect();
    assert_eq!(run.wire.certificates(true), want, "server Certificate on the wire");
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// The PKI of a cloudhub deployment: CA, CloudCore server leaf, one edge client leaf.
struct Cloud {
    pki: Pki,
    ca: Ca,
    server: Leaf,
    edge: Leaf,
}

fn cloud() -> Cloud {
    let pki = Pki::new().expect("pki");
    let ca = pki.kubeedge_ca().expect("ca");
    let server = pki.server_leaf(&ca).expect("server leaf");
    let edge = pki.client_leaf(&ca, "node-01").expect("edge leaf");
    Cloud { pki, ca, server, edge }
}

fn mtls_established(stack: Stack, version: TlsVersion, ip: IpAddr) {
    let c = cloud();
    let mut s = Setup::new("mtls", stack, version, &c.server, &c.ca, ip);
    s.client_ca = Some(&c.ca);
    s.identity = Some(&c.edge);
    let run = s.run();
    assert_wire_established(&run);
    assert!(run.server.iter().all(|r| r.ok), "server: {:?}", run.server);
    match version {
        TlsVersion::V12 => {
            assert_wire_chain_12(&run, &c.server);
            assert!(run.wire.handshake_types(true).contains(&13), "CertificateRequest in plaintext");
            let want: Vec<String> = c.edge.chain.iter().map(|c| hex::encode(&c.der)).collect();
            assert_eq!(run.wire.certificates(false), want, "client Certificate on the wire");
        }
        TlsVersion::V13 => assert!(run.wire.certificates(true).is_empty(), "1.3 chain is encrypted"),
    }

    let records = run.analyze();
    let rec = record_from(&records, ip);
    assert_endpoints(rec, ip, run.port, false);
    assert_outcome(rec, "established", version);
    assert_eq!(get(rec, "trustwatch.resumed").as_bool(), Some(false), "{rec:#}");
    match version {
        TlsVersion::V12 => {
            assert_server_chain(rec, &c.server, &c.ca);
            assert_client_chain(rec, Some(&c.edge));
            assert_eq!(get(rec, "trustwatch.client_auth_requested").as_bool(), Some(true), "{rec:#}");
        }
        TlsVersion::V13 => assert_no_chains(rec),
    }
}

#[test]
fn mtls_established_rustls_12() {
    mtls_established(Stack::Rustls, TlsVersion::V12, client_ip(1));
}
#[test]
fn mtls_established_rustls_13() {
    mtls_established(Stack::Rustls, TlsVersion::V13, client_ip(2));
}
#[test]
fn mtls_established_openssl_12() {
    mtls_established(Stack::Openssl, TlsVersion::V12, client_ip(3));
}
#[test]
fn mtls_established_openssl_13() {
    mtls_established(Stack::Openssl, TlsVersion::V13, client_ip(4));
}
#[test]
fn mtls_established_go_12() {
    mtls_established(Stack::Go, TlsVersion::V12, client_ip(5));
}
#[test]
fn mtls_established_go_13() {
    mtls_established(Stack::Go, TlsVersion::V13, client_ip(6));
}

/// The client trusts another CA with the same name and serial (KubeEdge's trust collapse).
fn client_rejects_server(stack: Stack, version: TlsVersion, ip: IpAddr) -> (Run, Cloud, Vec<Value>) {
    let c = cloud();
    let other = c.pki.kubeedge_ca().expect("ca B");
    assert_eq!(other.cert.subject_cn, c.ca.cert.subject_cn);
    assert_eq!(other.cert.serial, c.ca.cert.serial);
    assert_ne!(other.key_id(), c.ca.key_id());
    let edge_b = c.pki.client_leaf(&other, "node-02").expect("edge B");
    let mut s = Setup::new("client-rejects", stack, version, &c.server, &other, ip);
    s.client_ca = Some(&other);
    s.identity = Some(&edge_b);
    let run = s.run();
    assert!(run.client.iter().all(|r| !r.handshake_ok), "client must fail: {:?}", run.client);
    assert_eq!(run.wire.client_hellos(), 1);
    if version == TlsVersion::V12 {
        assert_wire_chain_12(&run, &c.server);
    }
    let records = run.analyze();
    (run, c, records)
}

/// The server requires client certificates from its CA; the edge presents one from another CA
/// (`Other`), an expired one (`Expired`), or none (`Missing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BadClient {
    Other,
    Expired,
    Missing,
}

fn server_rejects_client(stack: Stack, version: TlsVersion, ip: IpAddr, bad: BadClient) -> (Run, Cloud, Vec<Value>) {
    let c = cloud();
    let other = c.pki.kubeedge_ca().expect("ca B");
    let identity = match bad {
        BadClient::Other => Some(c.pki.client_leaf(&other, "node-03").expect("edge B")),
        BadClient::Expired => Some(c.pki.expired_client_leaf(&c.ca, "node-04").expect("expired")),
        BadClient::Missing => None,
    };
    let mut s = Setup::new("server-rejects", stack, version, &c.server, &c.ca, ip);
    s.client_ca = Some(&c.ca);
    s.identity = identity.as_ref();
    let run = s.run();
    assert!(run.client.iter().all(|r| !r.ok), "client must fail: {:?}", run.client);
    assert_eq!(run.wire.client_hellos(), 1);
    if version == TlsVersion::V12 {
        assert_wire_chain_12(&run, &c.server);
    }
    let records = run.analyze();
    (run, c, records)
}

#[test]
#[ignore]
fn explore_wire() {
    for stack in [Stack::Go, Stack::Openssl, Stack::Rustls] {
        for v in [TlsVersion::V12, TlsVersion::V13] {
            eprintln!("===== {stack:?} {v:?} client rejects");
            let _ = std::panic::catch_unwind(|| client_rejects_server(stack, v, client_ip(200)));
            for bad in [BadClient::Other, BadClient::Expired, BadClient::Missing] {
                eprintln!("===== {stack:?} {v:?} server rejects {bad:?}");
                let _ = std::panic::catch_unwind(|| server_rejects_client(stack, v, client_ip(201), bad));
            }
        }
    }
}
