//! End-to-end tests of `trustwatch analyze` on captures of real TLS stacks.
//!
//! Each scenario makes its PKI with rcgen (ground truth: fingerprints, key ids), runs real peers
//! (rustls, the OpenSSL CLI, the Go peer in `tests/go`) over loopback while libpcap records
//! `lo`, checks with tshark that the capture holds what the scenario claims, then runs the
//! analyzer and compares its JSON Lines with the ground truth. Run as root (live capture).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::Value;
use trustwatch_testkit::analyzer::{self, get, str_at};
use trustwatch_testkit::capture::Capture;
use trustwatch_testkit::peers::rustls_peer::{self, HangUp};
use trustwatch_testkit::peers::{self, ClientOpts, PeerResult, ServerSpec, Stack, TlsVersion};
use trustwatch_testkit::pki::{Ca, CertTruth, Leaf, Pki};
use trustwatch_testkit::rewrite::{self, Variant};
use trustwatch_testkit::tshark::{self, Summary};

const BIN: &str = env!("CARGO_BIN_EXE_trustwatch");

/// Alert descriptions used below (RFC 8446 §6).
const BAD_CERTIFICATE: u32 = 42;
const CERTIFICATE_EXPIRED: u32 = 45;
const UNKNOWN_CA: u32 = 48;
const CERTIFICATE_REQUIRED: u32 = 116;

/// A client address no other scenario of this run uses, so records can't be confused.
fn next_client_ip() -> IpAddr {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        10,
        NEXT.fetch_add(1, Ordering::Relaxed),
    ))
}

/// What one scenario ran and captured.
struct Run {
    _dir: trustwatch_testkit::tempfile::TempDir,
    port: u16,
    pcap: PathBuf,
    client: Vec<PeerResult>,
    server: Vec<PeerResult>,
    wire: Summary,
    /// The server chain on the wire (ground truth, wire order).
    chain: Vec<CertTruth>,
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
    write_chunk: Option<usize>,
}

impl<'a> Setup<'a> {
    fn new(
        name: &'a str,
        stack: Stack,
        version: TlsVersion,
        server_leaf: &'a Leaf,
        trust: &'a Ca,
        ip: IpAddr,
    ) -> Self {
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
            write_chunk: None,
        }
    }

    fn run(&self) -> Run {
        let dir = trustwatch_testkit::tempfile::Builder::new()
            .prefix("trustwatch-e2e-")
            .tempdir()
            .expect("tempdir");
        let port = trustwatch_testkit::free_port().expect("port");
        let cap = Capture::start_port(dir.path(), self.name, port).expect("capture");
        let mut spec = ServerSpec::new(self.server, port, self.server_leaf);
        spec.client_ca = self.client_ca;
        spec.version = self.version;
        spec.accept = self.attempts;
        spec.tickets = self.tickets;
        spec.write_chunk = self.write_chunk;
        let chain = peers::wire_chain(&spec);
        let server = peers::start_server(&spec).expect("server");
        let mut opts = ClientOpts::new(SocketAddr::from(([127, 0, 0, 1], port))).local_ip(self.ip);
        opts.version = self.version;
        opts.attempts = self.attempts;
        opts.resume = self.resume;
        opts.mss = self.mss;
        let client =
            peers::run_client(self.client, &opts, self.trust, self.identity).expect("client");
        let server = server.join();
        let captured = cap.stop().expect("capture stop");
        let wire = Summary::read(&captured.path, port).expect("tshark");
        eprintln!(
            "[{}] client: {client:?}\n[{}] server: {server:?}",
            self.name, self.name
        );
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
            chain,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions on analyzer records

/// The one record of the connection from `ip`.
fn record_from(records: &[Value], ip: IpAddr) -> &Value {
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| str_at(r, "source.ip") == Some(&ip.to_string()))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "expected one record from {ip}, got {records:#?}"
    );
    mine[0]
}

fn chain_field(rec: &Value, chain: &str, field: &str) -> Vec<String> {
    get(rec, &format!("trustwatch.{chain}"))
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c[field].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The record's addresses and ports are the scenario's.
fn assert_endpoints(rec: &Value, ip: IpAddr, port: u16, service_port: bool) {
    assert_eq!(
        str_at(rec, "source.ip"),
        Some(ip.to_string().as_str()),
        "{rec:#}"
    );
    assert!(
        get(rec, "source.port").as_u64().is_some_and(|p| p > 0),
        "{rec:#}"
    );
    assert_eq!(str_at(rec, "destination.ip"), Some("127.0.0.1"), "{rec:#}");
    assert_eq!(
        get(rec, "destination.port").as_u64(),
        Some(u64::from(port)),
        "{rec:#}"
    );
    if service_port {
        assert!(str_at(rec, "trustwatch.service").is_some(), "{rec:#}");
    }
}

/// The server chain the record reports is exactly the one the generator made, in wire order,
/// and the CA key id is the issuing CA's SKI.
fn assert_server_chain(rec: &Value, chain: &[CertTruth], issuer_key_id: &str) {
    let leaf = &chain[0];
    let want256: Vec<String> = chain.iter().map(|c| c.sha256.clone()).collect();
    let want1: Vec<String> = chain.iter().map(|c| c.sha1.clone()).collect();
    assert_eq!(
        chain_field(rec, "server_chain", "sha256"),
        want256,
        "server chain sha256: {rec:#}"
    );
    assert_eq!(
        chain_field(rec, "server_chain", "sha1"),
        want1,
        "server chain sha1: {rec:#}"
    );
    assert_eq!(
        str_at(rec, "tls.server.hash.sha256"),
        Some(leaf.sha256_upper().as_str()),
        "{rec:#}"
    );
    assert_eq!(
        str_at(rec, "tls.server.hash.sha1"),
        Some(leaf.sha1_upper().as_str()),
        "{rec:#}"
    );
    assert_eq!(
        str_at(rec, "trustwatch.ca_key_id"),
        Some(issuer_key_id),
        "ca_key_id: {rec:#}"
    );
    let got_chain = get(rec, "trustwatch.server_chain")
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (got, want) in got_chain.iter().zip(chain) {
        assert_eq!(
            got["serial"].as_str(),
            Some(want.serial.as_str()),
            "serial: {got:#}"
        );
        assert_eq!(got["ski"].as_str(), want.ski.as_deref(), "ski: {got:#}");
        assert_eq!(got["aki"].as_str(), want.aki.as_deref(), "aki: {got:#}");
        assert_eq!(
            got["spki_sha256"].as_str(),
            Some(want.spki_sha256.as_str()),
            "spki: {got:#}"
        );
        assert_eq!(got["is_ca"].as_bool(), Some(want.is_ca), "is_ca: {got:#}");
        assert!(
            got["subject"]
                .as_str()
                .is_some_and(|s| s.contains(&want.subject_cn)),
            "subject: {got:#}"
        );
        assert!(
            got["issuer"]
                .as_str()
                .is_some_and(|s| s.contains(&want.issuer_cn)),
            "issuer: {got:#}"
        );
    }
    assert!(
        str_at(rec, "tls.server.subject").is_some_and(|s| s.contains(&leaf.subject_cn)),
        "{rec:#}"
    );
    assert!(
        str_at(rec, "tls.server.issuer").is_some_and(|s| s.contains(&leaf.issuer_cn)),
        "{rec:#}"
    );
    assert!(
        str_at(rec, "tls.server.not_before").is_some()
            && str_at(rec, "tls.server.not_after").is_some()
    );
}

fn assert_client_chain(rec: &Value, chain: Option<&[CertTruth]>) {
    let want: Vec<String> = chain
        .map(|l| l.iter().map(|c| c.sha256.clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        chain_field(rec, "client_chain", "sha256"),
        want,
        "client chain: {rec:#}"
    );
    match chain.and_then(|c| c.first()) {
        Some(l) => assert_eq!(
            str_at(rec, "tls.client.hash.sha1"),
            Some(l.sha1_upper().as_str()),
            "{rec:#}"
        ),
        None => assert!(get(rec, "tls.client.hash.sha1").is_null(), "{rec:#}"),
    }
}

/// A TLS 1.3 record: nothing of the encrypted flight may be reported as seen.
fn assert_no_chains(rec: &Value) {
    assert_eq!(
        chain_field(rec, "server_chain", "sha256"),
        Vec::<String>::new(),
        "{rec:#}"
    );
    assert_eq!(
        chain_field(rec, "client_chain", "sha256"),
        Vec::<String>::new(),
        "{rec:#}"
    );
    assert!(get(rec, "trustwatch.ca_key_id").is_null(), "{rec:#}");
}

fn assert_outcome(rec: &Value, outcome: &str, version: TlsVersion) {
    assert_eq!(str_at(rec, "trustwatch.outcome"), Some(outcome), "{rec:#}");
    assert_eq!(
        str_at(rec, "tls.version"),
        Some(version.as_str()),
        "{rec:#}"
    );
    assert_eq!(
        get(rec, "tls.established").as_bool(),
        Some(outcome == "established"),
        "{rec:#}"
    );
    assert!(
        str_at(rec, "trustwatch.evidence").is_some_and(|e| !e.is_empty()),
        "{rec:#}"
    );
    assert!(
        str_at(rec, "tls.cipher").is_some_and(|c| c.starts_with("TLS_")),
        "{rec:#}"
    );
    assert!(
        str_at(rec, "tls.client.ja3").is_some_and(|j| j.len() == 32),
        "{rec:#}"
    );
    assert!(
        str_at(rec, "tls.client.ja4").is_some_and(|j| j.starts_with('t')),
        "{rec:#}"
    );
    assert!(str_at(rec, "@timestamp").is_some(), "{rec:#}");
    if outcome == "established" {
        assert!(
            get(rec, "trustwatch.alert").is_null()
                || get(rec, "trustwatch.alert.level") == "warning",
            "{rec:#}"
        );
    }
}

/// The deciding alert: from which side, the exact code when plaintext, `encrypted` otherwise.
fn assert_alert(rec: &Value, from: &str, code: Option<u32>) {
    let a = get(rec, "trustwatch.alert");
    assert!(a.is_object(), "no alert: {rec:#}");
    assert_eq!(a["from"].as_str(), Some(from), "alert side: {rec:#}");
    match code {
        Some(c) => {
            assert_eq!(
                a["code"].as_u64(),
                Some(u64::from(c)),
                "alert code: {rec:#}"
            );
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
    assert_eq!(
        run.wire.client_hellos(),
        run.client.len(),
        "one ClientHello per attempt"
    );
    assert!(
        run.wire.alerts(true).is_empty() && run.wire.alerts(false).is_empty(),
        "no plaintext alerts"
    );
}

/// TLS 1.2 plaintext: the server's Certificate message holds exactly the generated chain.
fn assert_wire_chain_12(run: &Run) {
    let want: Vec<String> = run.chain.iter().map(|c| hex::encode(&c.der)).collect();
    assert_eq!(
        run.wire.certificates(true),
        want,
        "server Certificate on the wire"
    );
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
    Cloud {
        pki,
        ca,
        server,
        edge,
    }
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
            assert_wire_chain_12(&run);
            assert!(
                run.wire.handshake_types(true).contains(&13),
                "CertificateRequest in plaintext"
            );
            let client_chain = peers::wire_client_chain(stack, &c.edge, &c.ca);
            let want: Vec<String> = client_chain.iter().map(|c| hex::encode(&c.der)).collect();
            assert_eq!(
                run.wire.certificates(false),
                want,
                "client Certificate on the wire"
            );
        }
        TlsVersion::V13 => assert!(
            run.wire.certificates(true).is_empty(),
            "1.3 chain is encrypted"
        ),
    }

    let records = run.analyze();
    let rec = record_from(&records, ip);
    assert_endpoints(rec, ip, run.port, false);
    assert_outcome(rec, "established", version);
    assert_eq!(
        get(rec, "trustwatch.resumed").as_bool(),
        Some(false),
        "{rec:#}"
    );
    match version {
        TlsVersion::V12 => {
            assert_server_chain(rec, &run.chain, c.ca.key_id());
            assert_client_chain(rec, Some(&peers::wire_client_chain(stack, &c.edge, &c.ca)));
            assert_eq!(
                get(rec, "trustwatch.client_auth_requested").as_bool(),
                Some(true),
                "{rec:#}"
            );
        }
        TlsVersion::V13 => {
            assert_no_chains(rec);
            // CertificateRequest is encrypted: inferred from the client's Certificate records.
            assert_eq!(
                get(rec, "trustwatch.client_auth_requested").as_bool(),
                Some(true),
                "{rec:#}"
            );
        }
    }
}

/// The client trusts another CA with the same name and serial (KubeEdge's trust collapse).
fn client_rejects_server(
    stack: Stack,
    version: TlsVersion,
    ip: IpAddr,
) -> (Run, Cloud, Vec<Value>) {
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
    assert!(
        run.client.iter().all(|r| !r.handshake_ok),
        "client must fail: {:?}",
        run.client
    );
    assert_eq!(run.wire.client_hellos(), 1);
    if version == TlsVersion::V12 {
        assert_wire_chain_12(&run);
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

fn server_rejects_client(
    stack: Stack,
    version: TlsVersion,
    ip: IpAddr,
    bad: BadClient,
) -> (Run, Cloud, Vec<Value>) {
    let c = cloud();
    let other = c.pki.kubeedge_ca().expect("ca B");
    let identity = match bad {
        BadClient::Other => Some(c.pki.client_leaf(&other, "node-03").expect("edge B")),
        BadClient::Expired => Some(
            c.pki
                .expired_client_leaf(&c.ca, "node-04")
                .expect("expired"),
        ),
        BadClient::Missing => None,
    };
    let mut s = Setup::new("server-rejects", stack, version, &c.server, &c.ca, ip);
    s.client_ca = Some(&c.ca);
    s.identity = identity.as_ref();
    let run = s.run();
    assert!(
        run.client.iter().all(|r| !r.ok),
        "client must fail: {:?}",
        run.client
    );
    assert_eq!(run.wire.client_hellos(), 1);
    if version == TlsVersion::V12 {
        assert_wire_chain_12(&run);
    }
    let records = run.analyze();
    (run, c, records)
}

const DECRYPT_ERROR: u32 = 51;
const HANDSHAKE_FAILURE: u32 = 40;

/// How a failing side's alert is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnWire {
    /// A plaintext fatal alert with this code.
    Plain(u32),
    /// One encrypted 19-byte record (2-byte alert + type + 16-byte AEAD tag), no plaintext alert.
    Encrypted,
}

/// What each stack sends when it rejects the server's chain from a CA with the same name and
/// serial but another key (measured; see the report in `tests/testkit/examples/wire.rs`).
fn client_rejection(stack: Stack, version: TlsVersion) -> OnWire {
    match (stack, version) {
        (Stack::Go, TlsVersion::V12) => OnWire::Plain(BAD_CERTIFICATE),
        (Stack::Openssl, _) => OnWire::Plain(UNKNOWN_CA), // plaintext even in TLS 1.3
        (Stack::Rustls, TlsVersion::V12) => OnWire::Plain(DECRYPT_ERROR), // same-name issuer: BadSignature
        (_, TlsVersion::V13) => OnWire::Encrypted,
    }
}

fn server_rejection(stack: Stack, version: TlsVersion, bad: BadClient) -> OnWire {
    if version == TlsVersion::V13 {
        return OnWire::Encrypted;
    }
    OnWire::Plain(match (stack, bad) {
        (Stack::Rustls, BadClient::Other) => DECRYPT_ERROR,
        (_, BadClient::Other) => UNKNOWN_CA,
        (_, BadClient::Expired) => CERTIFICATE_EXPIRED,
        (Stack::Rustls, BadClient::Missing) => CERTIFICATE_REQUIRED,
        (_, BadClient::Missing) => HANDSHAKE_FAILURE,
    })
}

fn assert_wire_alert(run: &Run, from_server: bool, expect: OnWire) {
    let other = run.wire.alerts(!from_server);
    assert!(other.is_empty(), "no alert from the other side: {other:?}");
    match expect {
        OnWire::Plain(code) => assert_eq!(
            run.wire.alerts(from_server),
            vec![(2, code)],
            "plaintext fatal alert"
        ),
        OnWire::Encrypted => {
            assert!(
                run.wire.alerts(from_server).is_empty(),
                "no plaintext alert"
            );
            assert_eq!(
                run.wire.app_data_lengths(from_server).last(),
                Some(&19),
                "encrypted alert record"
            );
        }
    }
}

fn assert_record_alert(rec: &Value, from: &str, expect: OnWire) {
    match expect {
        OnWire::Plain(code) => assert_alert(rec, from, Some(code)),
        OnWire::Encrypted => assert_alert(rec, from, None),
    }
}

fn check_client_rejects(stack: Stack, version: TlsVersion, ip: IpAddr) {
    let (run, c, records) = client_rejects_server(stack, version, ip);
    let expect = client_rejection(stack, version);
    assert_wire_alert(&run, false, expect);
    let rec = record_from(&records, ip);
    assert_endpoints(rec, ip, run.port, false);
    assert_outcome(rec, "rejected_by_client", version);
    assert_record_alert(rec, "client", expect);
    match version {
        TlsVersion::V12 => {
            // The chain the client refused, and the key of the CA that signed it (not the one
            // the client trusts).
            assert_server_chain(rec, &run.chain, c.ca.key_id());
            assert_client_chain(rec, None);
        }
        TlsVersion::V13 => assert_no_chains(rec),
    }
}

fn check_server_rejects(stack: Stack, version: TlsVersion, ip: IpAddr, bad: BadClient) {
    let (run, c, records) = server_rejects_client(stack, version, ip, bad);
    let expect = server_rejection(stack, version, bad);
    assert_wire_alert(&run, true, expect);
    let rec = record_from(&records, ip);
    assert_endpoints(rec, ip, run.port, false);
    assert_outcome(rec, "rejected_by_server", version);
    assert_record_alert(rec, "server", expect);
    match version {
        TlsVersion::V12 => {
            assert_server_chain(rec, &run.chain, c.ca.key_id());
            assert_eq!(
                get(rec, "trustwatch.client_auth_requested").as_bool(),
                Some(true),
                "{rec:#}"
            );
            let sent = chain_field(rec, "client_chain", "sha256");
            assert_eq!(
                sent.is_empty(),
                bad == BadClient::Missing,
                "client chain: {rec:#}"
            );
            if let Some(first) = sent.first() {
                assert_ne!(first, &c.edge.cert.sha256, "not the good edge certificate");
            }
        }
        TlsVersion::V13 => assert_no_chains(rec),
    }
}

// ---------------------------------------------------------------------------------------------
// Resumption

fn resumption(stack: Stack, version: TlsVersion, tickets: bool, ip: IpAddr) {
    let c = cloud();
    let mut s = Setup::new("resume", stack, version, &c.server, &c.ca, ip);
    s.client_ca = Some(&c.ca);
    s.identity = Some(&c.edge);
    s.attempts = 2;
    s.resume = true;
    s.tickets = tickets;
    let run = s.run();
    assert_wire_established(&run);
    let resumed: Vec<bool> = run.client.iter().map(|r| r.resumed).collect();
    assert_eq!(
        resumed,
        vec![false, true],
        "the stack resumed the second connection"
    );
    if version == TlsVersion::V12 {
        // Only the full handshake carries the chain.
        assert_eq!(run.wire.certificates(true).len(), run.chain.len());
        assert_eq!(
            run.wire
                .handshake_types(true)
                .iter()
                .filter(|t| **t == 11)
                .count(),
            1
        );
    }
    let records = run.analyze();
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| str_at(r, "source.ip") == Some(&ip.to_string()))
        .collect();
    assert_eq!(mine.len(), 2, "{records:#?}");
    for (r, truth) in run.client.iter().enumerate() {
        let port = truth.local.map(|a| a.port()).expect("client port");
        let rec = mine
            .iter()
            .find(|v| get(v, "source.port").as_u64() == Some(u64::from(port)))
            .unwrap_or_else(|| panic!("no record for client port {port}: {mine:#?}"));
        assert_outcome(rec, "established", version);
        assert_eq!(
            get(rec, "trustwatch.resumed").as_bool(),
            Some(truth.resumed),
            "attempt {r}: {rec:#}"
        );
        if version == TlsVersion::V12 {
            if truth.resumed {
                assert_eq!(
                    chain_field(rec, "server_chain", "sha256"),
                    Vec::<String>::new(),
                    "{rec:#}"
                );
            } else {
                assert_server_chain(rec, &run.chain, c.ca.key_id());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Chains: intermediates and a chain spanning many TCP segments

fn chain_scenario(stack: Stack, leaf: &Leaf, root: &Ca, ip: IpAddr, mss: Option<u32>) -> Run {
    let mut s = Setup::new("chain", stack, TlsVersion::V12, leaf, root, ip);
    s.mss = mss;
    s.write_chunk = mss.map(|m| m as usize);
    let run = s.run();
    assert_wire_established(&run);
    assert_wire_chain_12(&run);
    run
}

fn issuer_key_id(leaf: &Leaf) -> String {
    leaf.cert.aki.clone().expect("leaf has an AKI")
}

#[test]
fn intermediate_chain_openssl_12() {
    let pki = Pki::new().expect("pki");
    let (root, ica, leaf) = pki.intermediate_chain().expect("chain");
    assert_eq!(leaf.chain.len(), 2);
    let ip = next_client_ip();
    let run = chain_scenario(Stack::Openssl, &leaf, &root, ip, None);
    let records = run.analyze();
    let rec = record_from(&records, ip);
    assert_outcome(rec, "established", TlsVersion::V12);
    assert_server_chain(rec, &run.chain, ica.key_id());
    assert_eq!(
        get(rec, "trustwatch.client_auth_requested").as_bool(),
        Some(false),
        "{rec:#}"
    );
}

#[test]
fn big_chain_many_segments() {
    let pki = Pki::new().expect("pki");
    let (root, leaf) = pki.big_chain().expect("big chain");
    assert_eq!(leaf.chain.len(), 4);
    let total: usize = leaf.chain.iter().map(|c| c.der.len()).sum();
    assert!(
        total > 16_384,
        "chain of {total} bytes spans several TLS records"
    );
    let ip = next_client_ip();
    let run = chain_scenario(Stack::Rustls, &leaf, &root, ip, Some(536));
    let segments = tshark::data_segments(&run.pcap, run.port).expect("tshark");
    assert!(segments >= 30, "server flight in {segments} segments");
    let records = run.analyze();
    let rec = record_from(&records, ip);
    assert_outcome(rec, "established", TlsVersion::V12);
    assert_server_chain(rec, &run.chain, &issuer_key_id(&leaf));
}

// ---------------------------------------------------------------------------------------------
// Capture variants: the same connections, differently packaged

/// A capture with four Go connections on one port: 1.2 and 1.3 established, 1.3 rejected by the
/// client (other CA), 1.2 rejected by the server (other CA); client MSS 536 so flights span
/// several segments.
struct Base {
    _dir: trustwatch_testkit::tempfile::TempDir,
    pcap: PathBuf,
    port: u16,
    records: Vec<Value>,
}

fn base() -> &'static Base {
    static BASE: std::sync::OnceLock<Base> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let c = cloud();
        let other = c.pki.kubeedge_ca().expect("ca B");
        let bad_edge = c.pki.client_leaf(&other, "node-09").expect("edge B");
        let dir = trustwatch_testkit::tempfile::tempdir().expect("tempdir");
        let port = trustwatch_testkit::free_port().expect("port");
        let cap = Capture::start_port(dir.path(), "base", port).expect("capture");
        let mut spec = ServerSpec::new(Stack::Go, port, &c.server)
            .client_ca(&c.ca)
            .accept(4);
        spec.write_chunk = Some(300);
        let server = peers::start_server(&spec).expect("server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let runs: [(TlsVersion, &Ca, &Leaf, bool); 4] = [
            (TlsVersion::V12, &c.ca, &c.edge, true),
            (TlsVersion::V13, &c.ca, &c.edge, true),
            (TlsVersion::V13, &other, &c.edge, false),
            (TlsVersion::V12, &c.ca, &bad_edge, false),
        ];
        for (v, trust, id, ok) in runs {
            let opts = ClientOpts::new(addr)
                .local_ip(next_client_ip())
                .version(v)
                .mss(536);
            let r = peers::run_client(Stack::Go, &opts, trust, Some(id)).expect("client");
            assert_eq!(r.iter().all(|r| r.ok), ok, "{r:?}");
        }
        let _ = server.join();
        let captured = cap.stop().expect("stop");
        let records = analyze_file(&captured.path, port);
        Base {
            _dir: dir,
            pcap: captured.path,
            port,
            records,
        }
    })
}

/// The contract fields of a record, with addresses mapped back for the IPv6 variant.
fn projection(rec: &Value, ipv6: bool) -> Value {
    let mut out = serde_json::Map::new();
    for path in [
        "@timestamp",
        "source.ip",
        "source.port",
        "destination.ip",
        "destination.port",
        "tls.version",
        "tls.cipher",
        "tls.established",
        "tls.client.ja3",
        "tls.client.ja4",
        "tls.server.hash.sha256",
        "tls.client.hash.sha1",
        "trustwatch.outcome",
        "trustwatch.alert",
        "trustwatch.server_chain",
        "trustwatch.client_chain",
        "trustwatch.ca_key_id",
        "trustwatch.client_auth_requested",
        "trustwatch.resumed",
    ] {
        let mut v = get(rec, path).clone();
        if ipv6
            && path.ends_with(".ip")
            && let Some(ip) = v.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok())
        {
            v = Value::String(rewrite::ipv6_of(ip).to_string());
        }
        out.insert(path.to_string(), v);
    }
    Value::Object(out)
}

fn sorted_projection(records: &[Value], ipv6: bool) -> Vec<Value> {
    let mut v: Vec<Value> = records.iter().map(|r| projection(r, ipv6)).collect();
    v.sort_by_key(|r| (r["source.ip"].to_string(), r["source.port"].as_u64()));
    v
}

fn check_variant(variant: Variant) {
    let b = base();
    assert_eq!(b.records.len(), 4, "base capture: {:#?}", b.records);
    let outcomes: Vec<String> = sorted_projection(&b.records, false)
        .iter()
        .map(|r| r["trustwatch.outcome"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        outcomes,
        [
            "established",
            "established",
            "rejected_by_client",
            "rejected_by_server"
        ]
    );
    let path = rewrite::write_variant(&b.pcap, variant).expect("rewrite");
    // tshark agrees the variant holds the same TLS traffic.
    let orig = Summary::read(&b.pcap, b.port).expect("tshark");
    let var = Summary::read(&path, b.port).expect("tshark");
    // (tshark does not dissect retransmitted segments, so duplicates don't count twice.)
    assert_eq!(var.client_hellos(), orig.client_hellos(), "{variant:?}");
    assert_eq!(var.alerts(true), orig.alerts(true), "{variant:?}");
    assert_eq!(var.alerts(false), orig.alerts(false), "{variant:?}");
    let got = analyze_file(&path, b.port);
    assert_eq!(
        sorted_projection(&got, false),
        sorted_projection(&b.records, variant == Variant::Ipv6),
        "{variant:?} differs from the original"
    );
}

#[test]
fn variant_reordered() {
    let trace = rewrite::Trace::read(&base().pcap).expect("read");
    let (_, swaps) = trace.reordered().expect("reorder");
    assert!(swaps >= 3, "only {swaps} swaps");
    check_variant(Variant::Reordered);
}
#[test]
fn variant_duplicated() {
    let orig = rewrite::Trace::read(&base().pcap).expect("read");
    assert_eq!(orig.duplicated().frames.len(), 2 * orig.frames.len());
    check_variant(Variant::Duplicated);
}

// ---------------------------------------------------------------------------------------------
// A client that gives up mid-handshake: what it leaves on the wire decides the outcome

/// A rustls client reads the CloudCore-like Go server's whole first flight, then hangs up
/// `how` without its own answer (no Finished). TLS 1.2: a bare close before Finished is a
/// failure (not incomplete: the detector must see it), a warning alert then the close names
/// its sender; TLS 1.3: a client that closes with no sealed record of its own aborted.
fn client_hangs_up(version: TlsVersion, how: HangUp, ip: IpAddr) {
    let c = cloud();
    let dir = trustwatch_testkit::tempfile::tempdir().expect("tempdir");
    let port = trustwatch_testkit::free_port().expect("port");
    let cap = Capture::start_port(dir.path(), "hang-up", port).expect("capture");
    let spec = ServerSpec::new(Stack::Go, port, &c.server)
        .client_ca(&c.ca)
        .version(version);
    let server = peers::start_server(&spec).expect("server");
    let opts = ClientOpts::new(SocketAddr::from(([127, 0, 0, 1], port)))
        .local_ip(ip)
        .version(version);
    let client = rustls_peer::client_hang_up(&opts, &[&c.ca.root.der], how).expect("client");
    assert!(
        !client.handshake_ok
            && client
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("hung up")),
        "{client:?}"
    );
    let server = server.join();
    assert!(
        server.iter().all(|r| !r.ok),
        "the server saw no handshake: {server:?}"
    );
    let captured = cap.stop().expect("capture stop");
    let wire = Summary::read(&captured.path, port).expect("tshark");

    // Wire facts: the client's only handshake message is its ClientHello (no Finished, nothing
    // sealed in TLS 1.3); its alerts are the warnings or none; the server sends none; the
    // client's FIN comes first.
    assert_eq!(
        wire.handshake_types(false),
        vec![1],
        "client handshake messages"
    );
    assert!(
        wire.app_data_lengths(false).is_empty(),
        "no client record after the hello"
    );
    let warnings = match how {
        HangUp::Bare => vec![],
        HangUp::Warning => vec![(1, 90), (1, 0)],
    };
    assert_eq!(wire.alerts(false), warnings, "client alerts");
    assert!(wire.alerts(true).is_empty(), "server alerts");
    let fins = tshark::fields(&captured.path, "tcp.flags.fin==1", &["tcp.srcport"]).expect("fins");
    assert_eq!(
        fins.first().map(|f| f[0].as_str()),
        client.local.map(|a| a.port().to_string()).as_deref(),
        "the client closes first: {fins:?}"
    );
    let server_records = wire.app_data_lengths(true).len();

    let records = analyze_file(&captured.path, port);
    let rec = record_from(&records, ip);
    assert_endpoints(rec, ip, port, false);
    let (outcome, evidence) = match (version, how) {
        (TlsVersion::V12, HangUp::Bare) => (
            "failed",
            "connection closed before the handshake completed (FIN from client)".to_string(),
        ),
        (TlsVersion::V12, HangUp::Warning) => (
            "rejected_by_client",
            "client sent warning alert close_notify(0) in plaintext and the connection closed \
             (FIN from client)"
                .to_string(),
        ),
        (TlsVersion::V13, _) => {
            assert!(
                server_records >= 2,
                "the server's encrypted flight: {server_records}"
            );
            (
                "rejected_by_client",
                format!(
                    "TLS 1.3: connection closed (FIN from client) after {server_records} server \
                     records, without any client record"
                ),
            )
        }
    };
    assert_outcome(rec, outcome, version);
    assert_eq!(
        str_at(rec, "trustwatch.evidence"),
        Some(evidence.as_str()),
        "{rec:#}"
    );
    match how {
        HangUp::Bare => assert!(get(rec, "trustwatch.alert").is_null(), "{rec:#}"),
        HangUp::Warning => {
            let a = get(rec, "trustwatch.alert");
            assert_eq!(
                (a["from"].as_str(), a["code"].as_u64(), a["level"].as_str()),
                (Some("client"), Some(0), Some("warning")),
                "{rec:#}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios, one test each (they run in parallel)

/// `name => expression;`: one `#[test]` per row.
macro_rules! scenarios {
    ($($name:ident => $run:expr;)*) => {
        $(
            #[test]
            fn $name() {
                $run;
            }
        )*
    };
}

scenarios! {
    // Mutual TLS that completes, on each stack and version
    mtls_established_rustls_12 => mtls_established(Stack::Rustls, TlsVersion::V12, next_client_ip());
    mtls_established_rustls_13 => mtls_established(Stack::Rustls, TlsVersion::V13, next_client_ip());
    mtls_established_openssl_12 => mtls_established(Stack::Openssl, TlsVersion::V12, next_client_ip());
    mtls_established_openssl_13 => mtls_established(Stack::Openssl, TlsVersion::V13, next_client_ip());
    mtls_established_go_12 => mtls_established(Stack::Go, TlsVersion::V12, next_client_ip());
    mtls_established_go_13 => mtls_established(Stack::Go, TlsVersion::V13, next_client_ip());
    // The client rejects the server's chain (it trusts another CA)
    client_rejects_unknown_ca_go_12 => check_client_rejects(Stack::Go, TlsVersion::V12, next_client_ip());
    client_rejects_unknown_ca_go_13 => check_client_rejects(Stack::Go, TlsVersion::V13, next_client_ip());
    client_rejects_unknown_ca_openssl_12 => check_client_rejects(Stack::Openssl, TlsVersion::V12, next_client_ip());
    client_rejects_unknown_ca_openssl_13 => check_client_rejects(Stack::Openssl, TlsVersion::V13, next_client_ip());
    client_rejects_unknown_ca_rustls_12 => check_client_rejects(Stack::Rustls, TlsVersion::V12, next_client_ip());
    client_rejects_unknown_ca_rustls_13 => check_client_rejects(Stack::Rustls, TlsVersion::V13, next_client_ip());
    // The server rejects the client's certificate: another CA, expired, or none at all. Go answers
    // a missing certificate with certificate_required (116), encrypted in TLS 1.3: the client's
    // error text is the ground truth for the code the analyzer can only infer.
    server_rejects_client_other_ca_go_12 => check_server_rejects(Stack::Go, TlsVersion::V12, next_client_ip(), BadClient::Other);
    server_rejects_client_other_ca_go_13 => check_server_rejects(Stack::Go, TlsVersion::V13, next_client_ip(), BadClient::Other);
    server_rejects_client_other_ca_openssl_12 => check_server_rejects(Stack::Openssl, TlsVersion::V12, next_client_ip(), BadClient::Other);
    server_rejects_client_other_ca_openssl_13 => check_server_rejects(Stack::Openssl, TlsVersion::V13, next_client_ip(), BadClient::Other);
    server_rejects_client_other_ca_rustls_12 => check_server_rejects(Stack::Rustls, TlsVersion::V12, next_client_ip(), BadClient::Other);
    server_rejects_client_other_ca_rustls_13 => check_server_rejects(Stack::Rustls, TlsVersion::V13, next_client_ip(), BadClient::Other);
    server_rejects_expired_client_go_12 => check_server_rejects(Stack::Go, TlsVersion::V12, next_client_ip(), BadClient::Expired);
    server_rejects_expired_client_go_13 => check_server_rejects(Stack::Go, TlsVersion::V13, next_client_ip(), BadClient::Expired);
    server_requires_client_cert_go_12 => check_server_rejects(Stack::Go, TlsVersion::V12, next_client_ip(), BadClient::Missing);
    server_requires_client_cert_go_13 => check_server_rejects(Stack::Go, TlsVersion::V13, next_client_ip(), BadClient::Missing);
    server_requires_client_cert_rustls_12 => check_server_rejects(Stack::Rustls, TlsVersion::V12, next_client_ip(), BadClient::Missing);
    // Resumption: TLS 1.2 session id and ticket, TLS 1.3 PSK
    resumption_rustls_12_session_id => resumption(Stack::Rustls, TlsVersion::V12, false, next_client_ip());
    resumption_rustls_12_ticket => resumption(Stack::Rustls, TlsVersion::V12, true, next_client_ip());
    resumption_rustls_13_psk => resumption(Stack::Rustls, TlsVersion::V13, false, next_client_ip());
    resumption_go_12_ticket => resumption(Stack::Go, TlsVersion::V12, true, next_client_ip());
    resumption_go_13_psk => resumption(Stack::Go, TlsVersion::V13, true, next_client_ip());
    // The base capture repackaged: every variant must analyze the same
    variant_vlan => check_variant(Variant::Vlan);
    variant_qinq => check_variant(Variant::QinQ);
    variant_ipv6 => check_variant(Variant::Ipv6);
    variant_sll => check_variant(Variant::Sll);
    variant_sll2 => check_variant(Variant::Sll2);
    variant_null => check_variant(Variant::Null);
    variant_raw => check_variant(Variant::Raw);
    variant_pcapng => check_variant(Variant::PcapNg);
    // A client that gives up after the server's flight
    client_hangs_up_without_alert_12 => client_hangs_up(TlsVersion::V12, HangUp::Bare, next_client_ip());
    client_hangs_up_with_warnings_12 => client_hangs_up(TlsVersion::V12, HangUp::Warning, next_client_ip());
    client_hangs_up_without_alert_13 => client_hangs_up(TlsVersion::V13, HangUp::Bare, next_client_ip());
}
