//! Probes against real rustls servers on loopback.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use sha2::{Digest as _, Sha256};

use super::*;
use crate::base::Timestamp;
use crate::detect::{CaSource, DetectConfig, Detector, DivergenceBasis, EventDetail};
use crate::trust::testpki::{TestCa, TestLeaf};
use crate::trust::tests::TempDir;
use crate::trust::{CaHash, TrustOptions, TrustedReference};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(
    leaf: &TestLeaf,
    require_client_cert_from: Option<&TestCa>,
    tls13_only: bool,
) -> Arc<ServerConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let b = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap();
    let b = match require_client_cert_from {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(CertificateDer::from(ca.der())).unwrap();
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_pkcs8.clone()));
    Arc::new(
        b.with_single_cert(vec![CertificateDer::from(leaf.der.clone())], key)
            .unwrap(),
    )
}

#[derive(Clone, Copy)]
enum Body {
    Length,
    Chunked,
    Status404,
}

/// Serves `GET /ca.crt` with `body` over TLS, for `conns` connections.
fn spawn_https(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    body: Vec<u8>,
    mode: Body,
    conns: usize,
) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for _ in 0..conns {
            let Ok((sock, _)) = listener.accept() else {
                return;
            };
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut tls =
                rustls::StreamOwned::new(ServerConnection::new(cfg.clone()).unwrap(), sock);
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            assert!(
                req.starts_with(b"GET /ca.crt HTTP/1.1\r\n"),
                "{}",
                String::from_utf8_lossy(&req)
            );
            let resp = match mode {
                Body::Length => {
                    let mut r =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
                Body::Chunked => {
                    let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                    for c in body.chunks(100) {
                        r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        r.extend_from_slice(c);
                        r.extend_from_slice(b"\r\n");
                    }
                    r.extend_from_slice(b"0\r\n\r\n");
                    r
                }
                Body::Status404 => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = tls.write_all(&resp);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    addr
}

/// A replica: a CA, its serving leaf for 127.0.0.x, and an HTTPS server returning the CA.
fn replica(ip: &str, port: u16, ca: &TestCa, mode: Body, conns: usize) -> SocketAddr {
    let listener = TcpListener::bind((ip, port)).unwrap();
    let leaf = ca.leaf(&[ip, "localhost"]);
    spawn_https(
        listener,
        server_config(&leaf, None, false),
        ca.der(),
        mode,
        conns,
    )
}

fn target(kind: ProbeKind, a: SocketAddr) -> ProbeTarget {
    ProbeTarget {
        kind,
        host: a.ip().to_string(),
        port: a.port(),
        addr: None,
    }
}

fn quick() -> ProbeLimits {
    ProbeLimits {
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_millis(800),
        deadline: Duration::from_secs(5),
        max_response: 16 * 1024,
        resolve_timeout: Duration::from_secs(2),
    }
}

#[test]
fn probe_ca_fetches_the_replica_ca_like_keadm_join() {
    let ca = TestCa::kubeedge();
    for mode in [Body::Length, Body::Chunked] {
        let a = replica("127.0.0.1", 0, &ca, mode, 1);
        let mut connected = None;
        let r = probe_ca(&target(ProbeKind::CaEndpoint, a), &quick(), &mut |l| {
            connected = Some(l)
        });
        let f = r.outcome.as_ref().expect("probe ok");
        let got = f.ca.as_ref().unwrap();
        assert_eq!(got.sha256, hex::encode(Sha256::digest(ca.der())));
        assert_eq!(got.key_id, ca.key_id());
        assert_eq!(r.addr, Some(a));
        assert!(r.local.is_some() && r.local == connected);
    }
    let a = replica("127.0.0.1", 0, &ca, Body::Status404, 1);
    let r = probe_ca(&target(ProbeKind::CaEndpoint, a), &quick(), &mut |_| {});
    assert!(r.outcome.unwrap_err().contains("404"));
}

#[test]
fn probe_ca_results_drive_inconsistency_and_divergence() {
    let (stored, rogue) = (TestCa::kubeedge(), TestCa::kubeedge());
    // Replica 1 holds the stored CA, replica 2 made its own; same port on two loopback addresses.
    let a = replica("127.0.0.2", 0, &stored, Body::Length, 1);
    let b = replica("127.0.0.3", a.port(), &rogue, Body::Length, 1);
    let dir = TempDir::new("probe-secret");
    std::fs::write(dir.path().join("cadata"), stored.der()).unwrap();
    let reference = TrustedReference::load(&TrustOptions {
        kubeedge_secret_dir: Some(dir.path().into()),
        join_token_hash: Some(
            CaHash::from_join_token(&format!("{}.eyJhbGciOi.sig", CaHash::of_der(&stored.der())))
                .unwrap(),
        ),
        ..Default::default()
    })
    .unwrap();
    let mut d = Detector::new(DetectConfig::default(), reference);
    let mut ev = Vec::new();
    let now = Timestamp::from_micros(1_000_000);
    let ra = probe_ca(&target(ProbeKind::CaEndpoint, a), &quick(), &mut |_| {});
    d.observe_probe(&ra, now, &mut ev);
    assert!(
        ev.is_empty(),
        "the stored CA agrees with the Secret and the token hash: {ev:?}"
    );
    let rb = probe_ca(&target(ProbeKind::CaEndpoint, b), &quick(), &mut |_| {});
    d.observe_probe(&rb, now, &mut ev);
    let names: Vec<&str> = ev.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        ["ca_inconsistent"],
        "divergence waits for the rotation grace"
    );
    d.tick(Timestamp::from_micros(31_000_000), &mut ev);
    let names: Vec<&str> = ev.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["ca_inconsistent", "ca_divergence"]);
    let EventDetail::CaInconsistent(i) = &ev[0].detail else {
        panic!()
    };
    assert_eq!(i.server, Some(b));
    assert_eq!(i.source, CaSource::ProbeCa);
    assert_eq!(
        i.presented.der_sha256.as_deref(),
        Some(hex::encode(Sha256::digest(rogue.der())).as_str())
    );
    assert_eq!(
        i.disagreements.len(),
        2,
        "both the Secret and the join-token hash disagree: {:?}",
        i.disagreements
    );
    let EventDetail::CaDivergence(dv) = &ev[1].detail else {
        panic!()
    };
    assert_eq!(dv.basis, DivergenceBasis::PresentedKeys);
    let keys: Vec<_> = dv
        .replicas
        .iter()
        .map(|r| (r.address, r.ca_key_id.clone(), r.ca_source))
        .collect();
    assert_eq!(
        keys,
        vec![
            (a, Some(stored.key_id()), Some(CaSource::ProbeCa)),
            (b, Some(rogue.key_id()), Some(CaSource::ProbeCa))
        ]
    );
    assert_eq!(d.stats().probes, 2);
    // The probes' own connections would be skipped if the capture saw them.
    assert!(ra.local.is_some());
}

#[test]
fn probe_chain_records_the_chain_of_a_tls13_server_that_requires_client_certs() {
    let ca = TestCa::kubeedge();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let cfg = server_config(&leaf, Some(&ca), true);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tls = rustls::StreamOwned::new(ServerConnection::new(cfg).unwrap(), sock);
        let mut buf = [0u8; 16];
        // The handshake fails on our side: no client certificate.
        tls.read(&mut buf).map(|_| ()).map_err(|e| e.to_string())
    });
    let r = probe_chain(&target(ProbeKind::Chain, a), &quick(), &mut |_| {});
    let f = r.outcome.as_ref().expect("chain recorded");
    assert_eq!(f.issuer_key_id.as_deref(), Some(ca.key_id().as_str()));
    assert_eq!(f.chain_len, 1);
    assert_eq!(
        f.leaf.as_ref().unwrap().sha256,
        hex::encode(Sha256::digest(&leaf.der))
    );
    assert!(f.ca.is_none(), "the server sent only its leaf");
    let server_saw = server.join().unwrap();
    assert!(
        server_saw.is_err_and(|e| e.to_lowercase().contains("certificate")),
        "server rejected the missing client cert"
    );
    // The detector keys the service by the port's name and records the presented CA.
    let mut d = Detector::new(DetectConfig::default(), TrustedReference::default());
    let mut ev = Vec::new();
    d.observe_probe(&r, Timestamp::from_micros(1), &mut ev);
    let snap = d.snapshot();
    let s = &snap.services[0];
    assert_eq!(s.service, format!("tcp/{}", a.port()));
    assert_eq!(
        s.servers[0].presented_ca_key_id.as_deref(),
        Some(ca.key_id().as_str())
    );
    assert_eq!(s.servers[0].presented_source, Some(CaSource::ProbeChain));
    assert_eq!(
        s.window.handshakes, 0,
        "probes are not counted as handshakes"
    );
}

#[test]
fn probes_are_bounded() {
    // Nothing listening.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = l.local_addr().unwrap();
    drop(l);
    let r = probe_ca(
        &target(ProbeKind::CaEndpoint, closed),
        &quick(),
        &mut |_| {},
    );
    assert!(r.outcome.unwrap_err().contains("connect"));
    // A server that accepts and never speaks: the read timeout ends it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = silent.local_addr().unwrap();
    let hold = thread::spawn(move || {
        let s = silent.accept();
        thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let t0 = Instant::now();
    let r = probe_chain(&target(ProbeKind::Chain, a), &quick(), &mut |_| {});
    assert!(r.outcome.is_err());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // A response over the cap.
    let ca = TestCa::kubeedge();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let big = vec![0x41u8; 100 * 1024];
    let b = spawn_https(
        listener,
        server_config(&leaf, None, false),
        big,
        Body::Length,
        1,
    );
    let r = probe_ca(&target(ProbeKind::CaEndpoint, b), &quick(), &mut |_| {});
    assert!(r.outcome.unwrap_err().contains("larger than"));
    let _ = hold.join();
}

#[test]
fn http_response_parsing() {
    let der = b"\x30\x03\x02\x01\x01";
    let mut ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec();
    ok.extend_from_slice(der);
    assert_eq!(http_body(&ok).unwrap(), der);
    assert!(response_complete(&ok));
    assert!(!response_complete(&ok[..ok.len() - 1]));
    assert!(
        http_body(&ok[..ok.len() - 1])
            .unwrap_err()
            .contains("truncated")
    );
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n\x30\x03\x02\r\n2;x=y\r\n\x01\x01\r\n0\r\n\r\n";
    assert_eq!(http_body(chunked).unwrap(), der);
    assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    assert!(
        http_body(b"HTTP/1.1 500 Oops\r\n\r\n")
            .unwrap_err()
            .contains("500")
    );
    assert!(http_body(b"garbage").is_err());
}

#[test]
fn target_parsing() {
    let t = ProbeTarget::parse_ca_url("https://cloudcore-0.kubeedge:10002").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.kind),
        ("cloudcore-0.kubeedge", 10002, ProbeKind::CaEndpoint)
    );
    assert_eq!(
        ProbeTarget::parse_ca_url("https://10.0.0.1/").unwrap().port,
        10002
    );
    assert_eq!(
        ProbeTarget::parse_ca_url("https://10.0.0.1:1/ca.crt")
            .unwrap()
            .port,
        1
    );
    let v6 = ProbeTarget::parse_ca_url("https://[fd00::1]:10002").unwrap();
    assert_eq!(
        (v6.host.as_str(), v6.authority()),
        ("fd00::1", "[fd00::1]:10002".to_string())
    );
    for bad in [
        "http://x:1",
        "https://:1",
        "https://x:0",
        "https://x:1/other",
        "https://[::1",
    ] {
        let e = ProbeTarget::parse_ca_url(bad).unwrap_err();
        assert!(e.to_string().starts_with("--probe-ca "), "{e}");
    }
    let c = ProbeTarget::parse_chain("10.0.0.1:10000").unwrap();
    assert_eq!(
        (c.host.as_str(), c.port, c.kind),
        ("10.0.0.1", 10000, ProbeKind::Chain)
    );
    assert_eq!(ProbeTarget::parse_chain("[::1]:10000").unwrap().host, "::1");
    assert!(
        ProbeTarget::parse_chain("10.0.0.1")
            .unwrap_err()
            .to_string()
            .starts_with("--probe-chain ")
    );
}

#[test]
fn scheduler_interval_trigger_rate_limit_and_single_flight() {
    let a = ProbeTarget::parse_ca_url("https://10.0.0.1:10002").unwrap();
    let b = ProbeTarget::parse_chain("10.0.0.2:10000").unwrap();
    let mut s = ProbeScheduler::new(
        vec![a.clone(), b.clone()],
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    let t0 = Instant::now();
    assert_eq!(
        s.due(t0),
        vec![a.clone(), b.clone()],
        "first run probes everything"
    );
    assert!(
        s.due(t0 + Duration::from_secs(100)).is_empty(),
        "in flight: never two at once"
    );
    s.completed(&a);
    s.completed(&b);
    assert!(s.due(t0 + Duration::from_secs(1)).is_empty());
    s.trigger();
    assert!(
        s.due(t0 + Duration::from_secs(2)).is_empty(),
        "trigger is rate-limited by min_gap"
    );
    assert_eq!(
        s.due(t0 + Duration::from_secs(5)),
        vec![a.clone(), b.clone()],
        "then runs at once"
    );
    s.completed(&a);
    s.completed(&b);
    assert!(
        s.due(t0 + Duration::from_secs(30)).is_empty(),
        "trigger consumed"
    );
    assert_eq!(s.due(t0 + Duration::from_secs(65)), vec![a, b], "periodic");
}

/// A resolver whose answer the test changes; counts its calls.
#[derive(Clone)]
struct FakeDns {
    answer: Arc<std::sync::Mutex<Result<Vec<IpAddr>, String>>>,
    delay: Duration,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeDns {
    fn new(ips: &[&str]) -> FakeDns {
        let d = FakeDns {
            answer: Arc::new(std::sync::Mutex::new(Ok(Vec::new()))),
            delay: Duration::ZERO,
            calls: Arc::default(),
        };
        d.set(ips);
        d
    }
    fn set(&self, ips: &[&str]) {
        *self.answer.lock().unwrap() = Ok(ips.iter().map(|i| i.parse().unwrap()).collect());
    }
    fn fail(&self, why: &str) {
        *self.answer.lock().unwrap() = Err(why.to_string());
    }
    fn resolver(&self) -> ResolveFn {
        let d = self.clone();
        Arc::new(move |_host: &str, _port: u16| {
            d.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            thread::sleep(d.delay);
            d.answer.lock().unwrap().clone()
        })
    }
}

/// `due(now)` until it returns something (the answer of a background resolution), at most 2 s.
fn due_soon(s: &mut ProbeScheduler, now: Instant) -> Vec<ProbeTarget> {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let d = s.due(now);
        if !d.is_empty() || Instant::now() > until {
            return d;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn authorities(t: &[ProbeTarget]) -> Vec<String> {
    let mut a: Vec<String> = t.iter().map(ProbeTarget::authority).collect();
    a.sort();
    a
}

#[test]
fn scheduler_probes_every_address_of_a_name_and_follows_its_changes() {
    let name = ProbeTarget::parse_ca_url("https://cloudcore-replicas.kubeedge.svc:10002").unwrap();
    let dns = FakeDns::new(&["10.0.0.2", "10.0.0.1", "10.0.0.2"]);
    let mut s = ProbeScheduler::new(
        vec![name.clone()],
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .with_resolver(dns.resolver());
    // The test's clock jumps by minutes: no resolution may count as timed out here.
    s.resolve_timeout = Duration::from_secs(3600);
    let t0 = Instant::now();
    let first = due_soon(&mut s, t0);
    assert_eq!(
        authorities(&first),
        ["10.0.0.1:10002", "10.0.0.2:10002"],
        "one probe per address, duplicates merged"
    );
    assert!(
        first.iter().all(|t| t.host == name.host),
        "SNI stays the name"
    );
    for t in &first {
        s.completed(t);
    }
    assert!(s.due(t0 + Duration::from_secs(1)).is_empty());

    // The next interval: the known addresses are probed while the name is resolved again in
    // the background; its answer adds the new replica and drops the vanished one.
    dns.set(&["10.0.0.2", "10.0.0.3"]);
    let t1 = t0 + Duration::from_secs(60);
    let periodic = s.due(t1);
    assert_eq!(authorities(&periodic), ["10.0.0.1:10002", "10.0.0.2:10002"]);
    let new = due_soon(&mut s, t1);
    assert_eq!(
        authorities(&new),
        ["10.0.0.3:10002"],
        "the new address at once"
    );
    assert_eq!(
        authorities(&s.targets()),
        [
            "10.0.0.2:10002",
            "10.0.0.3:10002",
            "cloudcore-replicas.kubeedge.svc:10002"
        ],
        "the vanished address is no longer a target (its probe in flight completes)"
    );
    s.completed(&name.at("10.0.0.1".parse().unwrap()));
    assert!(
        s.due(t1 + Duration::from_secs(120))
            .iter()
            .all(|t| t.addr != Some("10.0.0.1".parse().unwrap())),
        "never probed again"
    );
    s.completed(&name.at("10.0.0.2".parse().unwrap()));

    // Another vanishes while its probe is in flight (10.0.0.3, handed out above).
    dns.set(&["10.0.0.2"]);
    let t2 = t1 + Duration::from_secs(240);
    let _ = s.due(t2);
    let until = Instant::now() + Duration::from_secs(2);
    while s.targets().len() != 2 && Instant::now() < until {
        let _ = s.due(t2);
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        authorities(&s.targets()),
        ["10.0.0.2:10002", "cloudcore-replicas.kubeedge.svc:10002"]
    );
    s.completed(&name.at("10.0.0.3".parse().unwrap()));
    s.completed(&name.at("10.0.0.2".parse().unwrap()));

    // A failed resolution keeps the known addresses and hands out the name once (its probe
    // reports the error).
    dns.fail("resolve cloudcore-replicas.kubeedge.svc: no such host");
    let calls = dns.calls.load(std::sync::atomic::Ordering::SeqCst);
    s.trigger();
    let t3 = t2 + Duration::from_secs(10);
    let mut report = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while !report.contains(&name) && Instant::now() < until {
        report.extend(s.due(t3));
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        dns.calls.load(std::sync::atomic::Ordering::SeqCst) > calls,
        "trigger re-resolves"
    );
    assert!(report.contains(&name), "{report:?}");
    assert!(
        s.due(t3).iter().all(|t| *t != name),
        "reported once until completed"
    );
    assert!(s.targets().contains(&name.at("10.0.0.2".parse().unwrap())));
    let r = run(&name, &quick(), &mut |_| {});
    assert!(r.outcome.is_err(), "the name itself does not resolve here");
    s.completed(&name);
}

#[test]
fn scheduler_resolution_times_out_without_blocking_and_skips_addresses_probed_already() {
    let name = ProbeTarget::parse_ca_url("https://replicas:10002").unwrap();
    let own = ProbeTarget::parse_ca_url("https://10.0.0.7:10002").unwrap();
    let mut dns = FakeDns::new(&["10.0.0.7", "10.0.0.8"]);
    dns.delay = Duration::from_millis(400);
    let mut s = ProbeScheduler::new(
        vec![own.clone(), name.clone()],
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .with_resolver(dns.resolver());
    s.resolve_timeout = Duration::from_millis(100);
    let t0 = Instant::now();
    let started = Instant::now();
    assert_eq!(
        s.due(t0),
        vec![own.clone()],
        "literal addresses need no resolution"
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "due() never waits"
    );
    thread::sleep(Duration::from_millis(150));
    assert_eq!(
        s.due(Instant::now()),
        vec![name.clone()],
        "past the resolve timeout the name is reported"
    );
    // The late answer is still used; the node's own address is not probed twice.
    let late = due_soon(&mut s, Instant::now());
    assert_eq!(authorities(&late), ["10.0.0.8:10002"]);
}

#[test]
fn resolve_all_with_a_timeout() {
    let t = Duration::from_secs(2);
    assert_eq!(
        resolve_all("10.1.2.3", 1, t, 8).unwrap(),
        ["10.1.2.3".parse::<IpAddr>().unwrap()]
    );
    let local = resolve_all("localhost", 10002, t, 8).unwrap();
    assert!(local.contains(&"127.0.0.1".parse().unwrap()), "{local:?}");
    let e = resolve_all("no-such-host.invalid", 10002, t, 8).unwrap_err();
    assert!(e.starts_with("resolve no-such-host.invalid"), "{e}");
}

#[test]
fn probes_accept_host_names() {
    let ca = TestCa::kubeedge();
    let a = replica("127.0.0.1", 0, &ca, Body::Length, 1);
    let t = ProbeTarget::parse_ca_url(&format!("https://localhost:{}", a.port())).unwrap();
    let r = probe_ca(&t, &quick(), &mut |_| {});
    let f = r.outcome.as_ref().expect("probe by name");
    assert_eq!(
        f.ca.as_ref().map(|c| c.sha256.clone()),
        Some(hex::encode(Sha256::digest(ca.der())))
    );
    assert_eq!(r.addr.map(|a| a.ip()), Some("127.0.0.1".parse().unwrap()));
    assert_eq!(t.authority(), format!("localhost:{}", a.port()));
    assert_eq!(
        t.at("127.0.0.1".parse().unwrap()).authority(),
        format!("127.0.0.1:{}", a.port())
    );
}

/// Every probe's ClientHello carries trustwatch's mark, which the handshake stage recognises: the
/// bytes a probe sends, parsed as any captured ClientHello is.
#[test]
fn probes_carry_the_marker_in_their_client_hello() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while got.len() < 5 || got.len() < 5 + usize::from(u16::from_be_bytes([got[3], got[4]])) {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let _ = run(&target(ProbeKind::Chain, addr), &quick(), &mut |_| {});
    let record = server.join().unwrap();
    let body = &record[5 + 4..];
    let hello = crate::tls::hello::parse_client_hello(body).expect("a ClientHello");
    assert_eq!(hello.sni.as_deref(), Some(crate::config::PROBE_SNI));
}
