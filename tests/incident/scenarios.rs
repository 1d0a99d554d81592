//! The issue-3 scenarios, generic over the TLS stack of the server and of the edges: each acts the
//! situation out with real peers on loopback, checks the peers' own verdicts (ground truth), runs
//! `trustwatch analyze` on the capture and asserts what must fire and what must stay quiet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use trustwatch_testkit::analyzer::str_at;
use trustwatch_testkit::peers::go::{self, ServerOpts};
use trustwatch_testkit::peers::{PeerResult, Stack, TlsVersion};
use trustwatch_testkit::pki::{Ca, Leaf};

use super::harness::*;

/// Edges per scenario (K = 3 must fail for a collapse).
pub const EDGES: usize = 4;

fn ports(w: &World) -> String {
    format!("{}=cloudhub", w.port)
}

fn scenario(name: &str, server: Stack, client: Stack, v: TlsVersion) -> String {
    format!(
        "{name}/{}-server/{}-edges/tls{}",
        stack_name(server),
        stack_name(client),
        v.as_str()
    )
}

/// A CloudCore that serves `first` (client CA `first_ca`) for `switch_after` connections, then
/// `second` (client CA `second_ca`) for `after` more. Go switches identity in-process (as on a
/// SIGHUP); rustls and OpenSSL restart on the same port with the other certificate.
#[allow(clippy::too_many_arguments)]
fn serve_switching<F: FnOnce(), G: FnOnce()>(
    stack: Stack,
    addr: SocketAddr,
    version: TlsVersion,
    (first, first_ca): (&Leaf, &Ca),
    (second, second_ca): (&Leaf, &Ca),
    (before, after): (usize, usize),
    phase1: F,
    phase2: G,
) {
    if stack == Stack::Go {
        let mut o = ServerOpts::new(addr, first);
        o.client_ca = Some(first_ca.cert_path.clone());
        o.max_version = Some(version);
        o.second = Some((second, second_ca.cert_path.clone()));
        o.switch_after = before;
        o.accept = before + after;
        let s = go::server(o).expect("go server");
        phase1();
        std::thread::sleep(Duration::from_millis(100));
        phase2();
        let rec = s.join(Duration::from_secs(5));
        assert!(rec.iter().any(|r| r["event"] == "switch"), "{rec:?}");
    } else {
        let s = serve(stack, addr, first, Some(first_ca), version, before);
        phase1();
        let _ = s.join();
        std::thread::sleep(Duration::from_millis(100));
        let s = serve(stack, addr, second, Some(second_ca), version, after);
        phase2();
        let _ = s.join();
    }
}

/// Healthy: every edge trusts the server's CA and holds a certificate the server trusts.
pub fn healthy(stack: Stack, version: TlsVersion, net: u8) {
    let name = scenario("healthy", stack, stack, version);
    let w = World::new();
    let leaf = w.cloudcore(&w.ca_a);
    let certs = w.edges(&w.ca_a, "h", EDGES);
    let edges: Vec<Edge> = certs
        .iter()
        .enumerate()
        .map(|(i, c)| Edge {
            ip: edge_ip(net, i as u8 + 1),
            trust: &w.ca_a,
            identity: Some(c),
        })
        .collect();
    let cap = w.capture("healthy");
    let s = serve(stack, w.addr(1), &leaf, Some(&w.ca_a), version, EDGES * 2);
    let res = connect_all(stack, w.addr(1), version, &edges, 2);
    let _ = s.join();
    let pcap = cap.stop().expect("stop").path;
    assert!(res.iter().all(|r| r.ok), "{name}: {res:?}");

    let a = analyze(&pcap, &ports(&w), &[]);
    eprintln!("{name}:\n{}", a.dump());
    a.expect_quiet();
    assert_eq!(a.conns.len(), EDGES * 2, "{name}\n{}", a.dump());
    for c in &a.conns {
        assert_eq!(str_at(c, "trustwatch.outcome"), Some("established"), "{name}: {c}");
        assert_eq!(str_at(c, "tls.version"), Some(version.as_str()), "{name}: {c}");
        match version {
            TlsVersion::V12 => {
                assert_eq!(str_at(c, "trustwatch.ca_key_id"), Some(w.ca_a.key_id()))
            }
            TlsVersion::V13 => assert_eq!(str_at(c, "trustwatch.ca_key_id"), None),
        }
    }
}

/// The incident: CloudCore switches from CA_A to CA_B; the edges trust only CA_A and hold
/// CA_A-signed certificates. Returns the capture for further analyses (reference flags).
pub fn incident(server: Stack, client: Stack, version: TlsVersion, net: u8) -> (World, PathBuf) {
    incident_with(server, client, version, net, false)
}

/// [`incident`]; `ca_in_chain`: the server sends its CA after its leaf (the CA DER is on the wire
/// in TLS 1.2, so hash references can be compared).
pub fn incident_with(
    server: Stack,
    client: Stack,
    version: TlsVersion,
    net: u8,
    ca_in_chain: bool,
) -> (World, PathBuf) {
    let name = scenario("incident", server, client, version);
    let w = World::new();
    let (mut leaf_a, mut leaf_b) = (w.cloudcore(&w.ca_a), w.cloudcore(&w.ca_b));
    if ca_in_chain {
        leaf_a = with_ca(&w, leaf_a, &w.ca_a);
        leaf_b = with_ca(&w, leaf_b, &w.ca_b);
    }
    let certs = w.edges(&w.ca_a, "i", EDGES);
    let edges: Vec<Edge> = certs
        .iter()
        .enumerate()
        .map(|(i, c)| Edge {
            ip: edge_ip(net, i as u8 + 1),
            trust: &w.ca_a,
            identity: Some(c),
        })
        .collect();
    let cap = w.capture("incident");
    let mut before = Vec::new();
    let mut after = Vec::new();
    serve_switching(
        server,
        w.addr(1),
        version,
        (&leaf_a, &w.ca_a),
        (&leaf_b, &w.ca_b),
        (EDGES, EDGES * 2),
        || before = connect_all(client, w.addr(1), version, &edges, 1),
        || after = connect_all(client, w.addr(1), version, &edges, 2),
    );
    let pcap = cap.stop().expect("stop").path;
    assert!(before.iter().all(|r| r.ok), "{name}: edges trust CA_A: {before:?}");
    assert!(
        after.iter().all(|r| !r.ok && !r.handshake_ok),
        "{name}: no edge accepts CA_B: {after:?}"
    );

    let a = analyze(&pcap, &ports(&w), &[]);
    eprintln!("{name}:\n{}", a.dump());
    a.expect_code(3);
    assert_eq!(a.conns.len(), EDGES * 3, "{name}\n{}", a.dump());
    assert_eq!(a.successes().len(), EDGES, "{name}\n{}", a.dump());
    let failures = a.failures();
    assert_eq!(failures.len(), EDGES * 2, "{name}\n{}", a.dump());
    report_wire(&name, &failures);
    for f in &failures {
        assert_cert_rejection(f, "client");
    }
    eprintln!("WIRE {name}: {}", wire_check(&pcap, w.port, &a));
    check_collapse_timing(&a, &name, &failures);
    let c = tw(a.one("trust_collapse"));
    assert_eq!(c["rejecting_side"], "client", "{name}: {c}");
    match version {
        TlsVersion::V12 => {
            // Chains are visible: the CA the edges trusted, the CA presented now, and the change.
            assert_eq!(c["previous_ca_key_id"], w.ca_a.key_id(), "{name}: {c}");
            assert_eq!(c["current_ca_key_id"], w.ca_b.key_id(), "{name}: {c}");
            let ch = tw(a.one("ca_changed"));
            assert_eq!(ch["previous_ca_key_id"], w.ca_a.key_id());
            assert_eq!(ch["current_ca_key_id"], w.ca_b.key_id());
            assert_eq!(ch["source"], "passive");
            assert_eq!(ch["server"], w.addr(1).to_string());
            assert_eq!(a.names(), ["ca_changed", "trust_collapse"], "{name}");
            assert_timeline(&a, "cloudhub", "ca_changed", short(w.ca_b.key_id()));
            assert_timeline(&a, "cloudhub", "trust_collapse", short(w.ca_a.key_id()));
            assert_timeline(&a, "cloudhub", "trust_collapse", short(w.ca_b.key_id()));
        }
        TlsVersion::V13 => {
            // Chains are encrypted: the collapse stands on inferred rejections alone.
            assert!(c["previous_ca_key_id"].is_null(), "{name}: {c}");
            assert!(c["current_ca_key_id"].is_null(), "{name}: {c}");
            assert_eq!(a.names(), ["trust_collapse"], "{name}");
            assert_timeline(&a, "cloudhub", "trust_collapse", "(client rejecting)");
        }
    }
    (w, pcap)
}

/// `leaf` with its CA appended to the chain file the server loads.
fn with_ca(w: &World, leaf: Leaf, ca: &Ca) -> Leaf {
    let mut chain = leaf.chain.clone();
    chain.push(ca.cert.clone());
    let pem: String = chain.iter().map(|c| c.pem.as_str()).collect();
    let path = w.dir.path().join(format!("{}-with-ca.pem", &ca.key_id()[..8]));
    std::fs::write(&path, pem).expect("chain");
    Leaf {
        chain,
        chain_path: path,
        ..leaf
    }
}

/// The server rejects the edges: after a switch its client CA is another one (CA_B) while it keeps
/// serving with CA_A.
pub fn server_rejects(server: Stack, client: Stack, version: TlsVersion, net: u8) {
    let name = scenario("server-rejects", server, client, version);
    let w = World::new();
    let leaf_a = w.cloudcore(&w.ca_a);
    let certs = w.edges(&w.ca_a, "s", EDGES);
    let edges: Vec<Edge> = certs
        .iter()
        .enumerate()
        .map(|(i, c)| Edge {
            ip: edge_ip(net, i as u8 + 1),
            trust: &w.ca_a,
            identity: Some(c),
        })
        .collect();
    let cap = w.capture("server-rejects");
    let mut before = Vec::new();
    let mut after = Vec::new();
    serve_switching(
        server,
        w.addr(1),
        version,
        (&leaf_a, &w.ca_a),
        (&leaf_a, &w.ca_b),
        (EDGES, EDGES * 2),
        || before = connect_all(client, w.addr(1), version, &edges, 1),
        || after = connect_all(client, w.addr(1), version, &edges, 2),
    );
    let pcap = cap.stop().expect("stop").path;
    assert!(before.iter().all(|r| r.ok), "{name}: {before:?}");
    assert!(after.iter().all(|r| !r.ok), "{name}: server rejects: {after:?}");

    let a = analyze(&pcap, &ports(&w), &[]);
    eprintln!("{name}:\n{}", a.dump());
    a.expect_code(3);
    assert_eq!(a.conns.len(), EDGES * 3, "{name}\n{}", a.dump());
    let failures = a.failures();
    assert_eq!(failures.len(), EDGES * 2, "{name}\n{}", a.dump());
    for f in &failures {
        assert_cert_rejection(f, "server");
    }
    report_wire(&name, &failures);
    eprintln!("WIRE {name}: {}", wire_check(&pcap, w.port, &a));
    check_collapse_timing(&a, &name, &failures);
    let c = tw(a.one("trust_collapse"));
    assert_eq!(c["rejecting_side"], "server", "{name}: {c}");
    assert_eq!(a.names(), ["trust_collapse"], "{name}: the server's CA did not change");
    assert_timeline(&a, "cloudhub", "trust_collapse", "(server rejecting)");
    if version == TlsVersion::V12 {
        // The server still presents CA_A: the key that worked is the key presented now.
        assert_eq!(c["previous_ca_key_id"], w.ca_a.key_id(), "{name}: {c}");
        assert_eq!(c["current_ca_key_id"], w.ca_a.key_id(), "{name}: {c}");
    }
}

/// Prints what the rejecting side put on the wire (for the report).
fn report_wire(name: &str, failures: &[&Value]) {
    let mut kinds: Vec<String> = failures.iter().map(|f| alert_desc(f)).collect();
    kinds.sort();
    kinds.dedup();
    eprintln!("WIRE {name}: {}", kinds.join(", "));
}

/// Ground truth of a Go client run: all `ok` or all failed.
pub fn all_ok(r: &[PeerResult]) -> bool {
    !r.is_empty() && r.iter().all(|r| r.ok)
}

/// Checks the analyzer's plaintext alerts against tshark's dissection of the same capture (per
/// side, same codes in the same number) and returns what each side put on the wire.
pub fn wire_check(pcap: &std::path::Path, port: u16, a: &Analysis) -> String {
    let t = trustwatch_testkit::tshark::Summary::read(pcap, port).expect("tshark");
    let mut out = Vec::new();
    for (side, from_server) in [("client", false), ("server", true)] {
        let mut theirs: Vec<u64> = t
            .alerts(from_server)
            .iter()
            .map(|(_, d)| u64::from(*d))
            .collect();
        let mut ours: Vec<u64> = a
            .conns
            .iter()
            .flat_map(|c| c["trustwatch"]["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|al| al["from"] == side && al["encrypted"] == false)
            .filter_map(|al| al["code"].as_u64())
            .collect();
        theirs.sort_unstable();
        ours.sort_unstable();
        assert_eq!(ours, theirs, "plaintext alerts from the {side}: trustwatch vs tshark");
        let encrypted = a
            .conns
            .iter()
            .flat_map(|c| c["trustwatch"]["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|al| al["from"] == side && al["encrypted"] == true)
            .count();
        out.push(format!(
            "{side}: plaintext {:?}, inferred encrypted alerts {encrypted}",
            ours
        ));
    }
    out.join("; ")
}
