//! In-process checks of the same incident: the library pipeline and the detector fed exactly as
//! `trustwatch analyze` feeds them, with the probe of `/ca.crt` confirming a divergence. Real Go
//! peers (crypto/tls, like CloudCore and EdgeCore) over loopback, captured with libpcap.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use trustwatch::capture::file::FileSource;
use trustwatch::config::{Limits, Services};
use trustwatch::detect::{
    CaSource, DetectConfig, Detector, DivergenceBasis, Event, EventDetail, RejectingSide,
    TrustState, exit_worthy,
};
use trustwatch::handshake::{Connection, Outcome};
use trustwatch::pipeline::Pipeline;
use trustwatch::trust::probe::{self, ProbeKind, ProbeLimits, ProbeTarget};
use trustwatch::trust::{TrustOptions, TrustedReference};
use trustwatch_testkit::capture::Capture;
use trustwatch_testkit::peers::go::{self, ServerOpts};
use trustwatch_testkit::peers::{ClientOpts, PeerResult, TlsVersion};
use trustwatch_testkit::pki::{Ca, Leaf, LeafSpec, Pki};

/// What cloudhub answers an edge's websocket upgrade with (the Go peer's default 5-byte "pong" is
/// the size of an encrypted alert; real cloudhub traffic is not).
const WS_101: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

fn edge_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 20, n))
}

/// CloudCore's serving certificate, valid for the replica addresses used here.
fn cloudcore_leaf(pki: &Pki, ca: &Ca) -> Leaf {
    let spec = LeafSpec {
        sans: vec![
            "127.0.0.1".into(),
            "127.0.0.2".into(),
            "127.0.0.3".into(),
            "localhost".into(),
        ],
        ..LeafSpec::cloudcore()
    };
    pki.leaf(ca, &spec).expect("leaf")
}

/// An edge (trusting `ca`, holding `identity`) connecting `n` times to `server`.
fn edge(
    server: SocketAddr,
    ip: IpAddr,
    version: TlsVersion,
    ca: &Ca,
    identity: &Leaf,
    n: usize,
) -> Vec<PeerResult> {
    let mut o = ClientOpts::new(server).local_ip(ip).version(version);
    o.attempts = n;
    o.interval = Duration::from_millis(50);
    go::client(&o, &ca.cert_path, Some(identity), None).expect("go client")
}

/// The capture through the pipeline, then the detector: returns the connections and events.
fn detect(
    pcap: &Path,
    port: u16,
    reference: TrustedReference,
) -> (Vec<Connection>, Vec<Event>, Detector) {
    let services: Services = format!("{port}=cloudhub").parse().expect("ports");
    let mut pipeline = Pipeline::new(services.clone(), Limits::default());
    let cfg = DetectConfig {
        services,
        ..DetectConfig::default()
    };
    let mut detector = Detector::new(cfg, reference);
    let mut conns = Vec::new();
    let mut src = FileSource::open(pcap).expect("open capture");
    while let Some(pkt) = src.next_packet().expect("read") {
        pipeline.packet(&pkt, &mut |c| conns.push(c));
    }
    pipeline.finish(&mut |c| conns.push(c));
    let mut events = Vec::new();
    for c in &conns {
        detector.observe(c, &mut events);
    }
    if let Some(last) = conns.iter().map(|c| c.end).max() {
        detector.tick(last, &mut events);
    }
    for c in &conns {
        eprintln!(
            "conn {} -> {} {:?} {:?} ca={:?} {}",
            c.client, c.server, c.version, c.outcome, c.ca_key_id, c.evidence
        );
    }
    for e in &events {
        eprintln!("{}", trustwatch::export::text::timeline_line(e));
    }
    (conns, events, detector)
}

fn names(ev: &[Event]) -> Vec<&'static str> {
    ev.iter().map(Event::name).collect()
}

/// CloudCore restarts and loads the other replica's CA from the Secret: every edge that joined
/// through the first replica fails at once.
fn restart_with_stored_ca(version: TlsVersion) {
    let pki = Pki::new().expect("pki");
    let (ca_a, ca_b) = (
        pki.kubeedge_ca().expect("ca"),
        pki.kubeedge_ca().expect("ca"),
    );
    let (leaf_a, leaf_b) = (cloudcore_leaf(&pki, &ca_a), cloudcore_leaf(&pki, &ca_b));
    let edges: Vec<Leaf> = (1..=4)
        .map(|n| pki.client_leaf(&ca_a, &format!("node-{n}")).expect("edge"))
        .collect();
    let dir = trustwatch_testkit::tempfile::tempdir().expect("tmp");
    let port = trustwatch_testkit::free_port().expect("port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let cap = Capture::start_port(dir.path(), "restart", port).expect("capture");
    let mut opts = ServerOpts::new(addr, &leaf_a);
    opts.client_ca = Some(ca_a.cert_path.clone());
    opts.max_version = Some(version);
    opts.second = Some((&leaf_b, ca_b.cert_path.clone()));
    opts.switch_after = 4;
    opts.extra = vec!["-reply".into(), WS_101.into()];
    opts.accept = 4 + 4 * 2;
    let server = go::server(opts).expect("go server");
    let mut before = Vec::new();
    for (n, leaf) in edges.iter().enumerate() {
        before.extend(edge(addr, edge_ip(n as u8 + 1), version, &ca_a, leaf, 1));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut after = Vec::new();
    for (n, leaf) in edges.iter().enumerate() {
        after.extend(edge(addr, edge_ip(n as u8 + 1), version, &ca_a, leaf, 2));
    }
    let _ = server.join_results(Duration::from_secs(5));
    let pcap = cap.stop().expect("stop").path;
    assert!(
        before.iter().all(|r| r.ok),
        "edges trust replica A: {before:?}"
    );
    assert!(
        after.iter().all(|r| !r.ok),
        "after the restart no edge connects: {after:?}"
    );

    // The Secret holds the CA the restarted CloudCore loaded (ca_b).
    let secret = dir.path().join("casecret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("cadata"), &ca_b.cert.der).unwrap();
    let reference = TrustedReference::load(&TrustOptions {
        kubeedge_secret_dir: Some(secret),
        ..Default::default()
    })
    .unwrap();
    let (conns, events, detector) = detect(&pcap, port, reference);
    assert_eq!(conns.len(), 12, "{conns:#?}");
    let failed: Vec<&Connection> = conns
        .iter()
        .filter(|c| c.outcome != Outcome::Established)
        .collect();
    assert_eq!(failed.len(), 8);

    let collapses: Vec<&Event> = events
        .iter()
        .filter(|e| e.name() == "trust_collapse")
        .collect();
    assert_eq!(collapses.len(), 1, "{:?}", names(&events));
    let e = collapses[0];
    let EventDetail::TrustCollapse(c) = &e.detail else {
        unreachable!()
    };
    // Detected at the third distinct edge's first failure, in packet time.
    let mut seen = Vec::new();
    let third = failed
        .iter()
        .find(|c| {
            if !seen.contains(&c.client.ip()) {
                seen.push(c.client.ip());
            }
            seen.len() == 3
        })
        .expect("third edge");
    assert_eq!(e.at, third.end);
    assert_eq!(c.first_failure, failed[0].end);
    assert!(
        e.at.since(c.first_failure) < 5_000_000,
        "latency in capture time"
    );
    assert_eq!(c.failing_clients, 3);
    assert_eq!(
        c.rejecting_side,
        RejectingSide::Client,
        "Go edges abort on the unknown server CA"
    );
    assert!(exit_worthy(e));
    assert_eq!(detector.state("cloudhub"), Some(TrustState::Collapsed));
    match version {
        TlsVersion::V12 => {
            // Chains are visible: the change, the keys and the inconsistency with the Secret.
            assert_eq!(c.previous_ca_key_id.as_deref(), Some(ca_a.key_id()));
            assert_eq!(c.current_ca_key_id.as_deref(), Some(ca_b.key_id()));
            let incons = events
                .iter()
                .find(|e| e.name() == "ca_inconsistent")
                .expect("inconsistent");
            assert!(
                incons.at < e.at,
                "the replica disagreed with the Secret before the collapse"
            );
            let changed = events
                .iter()
                .find(|e| e.name() == "ca_changed")
                .expect("changed");
            let EventDetail::CaChanged(ch) = &changed.detail else {
                unreachable!()
            };
            assert_eq!(
                (
                    ch.previous_ca_key_id.as_str(),
                    ch.current_ca_key_id.as_str()
                ),
                (ca_a.key_id(), ca_b.key_id())
            );
            assert_eq!(ch.source, CaSource::Passive);
        }
        TlsVersion::V13 => {
            // Chains are encrypted: no key ids, the collapse comes from inferred rejections alone.
            assert_eq!(c.current_ca_key_id, None);
            assert!(
                !events
                    .iter()
                    .any(|e| e.name() == "ca_changed" || e.name() == "ca_inconsistent")
            );
        }
    }
}

#[test]
fn restart_with_stored_ca_collapses_tls13() {
    restart_with_stored_ca(TlsVersion::V13);
}

#[test]
fn restart_with_stored_ca_collapses_tls12() {
    restart_with_stored_ca(TlsVersion::V12);
}

/// Two replicas with different CAs, before anything breaks: the same edges succeed on one and
/// are rejected by the other. Over TLS 1.3 that split is the only passive sign.
#[test]
fn replicas_disagree_outcome_split_tls13_and_probe_confirms() {
    let pki = Pki::new().expect("pki");
    let (ca_a, ca_b) = (
        pki.kubeedge_ca().expect("ca"),
        pki.kubeedge_ca().expect("ca"),
    );
    let (leaf_a, leaf_b) = (cloudcore_leaf(&pki, &ca_a), cloudcore_leaf(&pki, &ca_b));
    let edges: Vec<Leaf> = (1..=3)
        .map(|n| pki.client_leaf(&ca_a, &format!("node-{n}")).expect("edge"))
        .collect();
    let dir = trustwatch_testkit::tempfile::tempdir().expect("tmp");
    let port = trustwatch_testkit::free_port().expect("port");
    let (a, b) = (
        SocketAddr::from(([127, 0, 0, 2], port)),
        SocketAddr::from(([127, 0, 0, 3], port)),
    );
    let cap = Capture::start_port(dir.path(), "split", port).expect("capture");
    let start = |addr, leaf: &Leaf, ca: &Ca| {
        let mut o = ServerOpts::new(addr, leaf);
        o.client_ca = Some(ca.cert_path.clone());
        o.max_version = Some(TlsVersion::V13);
        o.accept = 3;
        o.extra = vec!["-reply".into(), WS_101.into()];
        go::server(o).expect("server")
    };
    let (sa, sb) = (start(a, &leaf_a, &ca_a), start(b, &leaf_b, &ca_b));
    // Each edge is load-balanced to B first (rejected), then to A (works).
    let mut on_b = Vec::new();
    let mut on_a = Vec::new();
    for (n, leaf) in edges.iter().enumerate() {
        on_b.extend(edge(
            b,
            edge_ip(n as u8 + 1),
            TlsVersion::V13,
            &ca_a,
            leaf,
            1,
        ));
        on_a.extend(edge(
            a,
            edge_ip(n as u8 + 1),
            TlsVersion::V13,
            &ca_a,
            leaf,
            1,
        ));
    }
    let _ = (
        sa.join_results(Duration::from_secs(5)),
        sb.join_results(Duration::from_secs(5)),
    );
    let pcap = cap.stop().expect("stop").path;
    assert!(
        on_a.iter().all(|r| r.ok) && on_b.iter().all(|r| !r.ok),
        "A: {on_a:?} B: {on_b:?}"
    );

    let (conns, events, mut detector) = detect(&pcap, port, TrustedReference::default());
    assert_eq!(conns.len(), 6);
    assert_eq!(
        names(&events),
        ["ca_divergence"],
        "divergence, and no collapse: every edge still works on A"
    );
    let EventDetail::CaDivergence(d) = &events[0].detail else {
        unreachable!()
    };
    assert_eq!(d.basis, DivergenceBasis::OutcomeSplit);
    // Detected when the second edge showed the split: its success on A.
    let second_ok_on_a = conns
        .iter()
        .filter(|c| c.server == a)
        .nth(1)
        .expect("second on A");
    assert_eq!(events[0].at, second_ok_on_a.end);
    let split: Vec<(SocketAddr, u32, u32)> = d
        .replicas
        .iter()
        .map(|r| (r.address, r.clients_succeeded, r.clients_rejected))
        .collect();
    assert_eq!(split, vec![(a, 2, 0), (b, 0, 2)]);

    // The certsvc probe confirms with the CAs the replicas hold (Go cert service, GET /ca.crt).
    let certsvc_port = trustwatch_testkit::free_port().expect("port");
    let mut probed = Vec::new();
    for (ip, leaf, ca) in [
        ([127, 0, 0, 2], &leaf_a, &ca_a),
        ([127, 0, 0, 3], &leaf_b, &ca_b),
    ] {
        let addr = SocketAddr::from((ip, certsvc_port));
        let mut o = ServerOpts::new(addr, leaf);
        o.client_ca = Some(ca.cert_path.clone());
        o.certsvc = true;
        o.accept = 1;
        let s = go::server(o).expect("certsvc");
        let t = ProbeTarget {
            kind: ProbeKind::CaEndpoint,
            host: ip_str(addr),
            port: certsvc_port,
            addr: None,
        };
        let r = probe::probe_ca(&t, &ProbeLimits::default(), &mut |_| {});
        let _ = s.join(Duration::from_secs(5));
        let f = r.outcome.as_ref().expect("probe");
        assert_eq!(f.ca.as_ref().unwrap().sha256, ca.cert.sha256.to_lowercase());
        assert_eq!(f.ca_key_id(), Some(ca.key_id()));
        probed.push(r);
    }
    let mut ev = Vec::new();
    let now = conns.last().unwrap().end;
    for r in &probed {
        detector.observe_probe(r, now, &mut ev);
    }
    // On a service with no client yet nothing says whether this is a rotation: the divergence
    // comes after the rotation grace (30 s).
    assert!(ev.is_empty(), "{:?}", names(&ev));
    let later = trustwatch::base::Timestamp::from_micros(now.micros() + 30_000_000);
    detector.tick(later, &mut ev);
    assert_eq!(names(&ev), ["ca_divergence"]);
    let EventDetail::CaDivergence(d) = &ev[0].detail else {
        unreachable!()
    };
    assert_eq!(d.basis, DivergenceBasis::PresentedKeys);
    assert_eq!(d.ca_key_ids.len(), 2);
    assert!(
        d.replicas
            .iter()
            .all(|r| r.ca_source == Some(CaSource::ProbeCa))
    );
}

fn ip_str(a: SocketAddr) -> String {
    a.ip().to_string()
}
