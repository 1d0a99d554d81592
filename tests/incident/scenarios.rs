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

/// The edges of `tag` (trusting CA_A, holding CA_A certificates) connect once while the server
/// presents `first`, then twice after it "restarts" with `second`; returns both phases' results
/// and the capture. Go switches in place (`-switch-after`); other stacks restart on the port.
fn switch_run(
    w: &World,
    (server, client, version, net): (Stack, Stack, TlsVersion, u8),
    tag: &str,
    (first, first_ca): (&Leaf, &Ca),
    (second, second_ca): (&Leaf, &Ca),
) -> (Vec<PeerResult>, Vec<PeerResult>, PathBuf) {
    let certs = w.edges(&w.ca_a, tag, EDGES);
    let edges = edges_trusting(&certs, net, &w.ca_a);
    let cap = w.capture(tag);
    let addr = w.addr(1);
    let (before, after);
    if server == Stack::Go {
        let mut o = ServerOpts::new(addr, first);
        o.client_ca = Some(first_ca.cert_path.clone());
        o.max_version = Some(version);
        o.second = Some((second, second_ca.cert_path.clone()));
        o.switch_after = EDGES;
        o.accept = EDGES * 3;
        let s = go::server(o).expect("go server");
        before = connect_all(client, addr, version, &edges, 1);
        std::thread::sleep(Duration::from_millis(100));
        after = connect_all(client, addr, version, &edges, 2);
        let rec = s.join(Duration::from_secs(5));
        assert!(rec.iter().any(|r| r["event"] == "switch"), "{rec:?}");
    } else {
        let s = serve(server, addr, first, Some(first_ca), version, EDGES);
        before = connect_all(client, addr, version, &edges, 1);
        let _ = s.join();
        std::thread::sleep(Duration::from_millis(100));
        let s = serve(server, addr, second, Some(second_ca), version, EDGES * 2);
        after = connect_all(client, addr, version, &edges, 2);
        let _ = s.join();
    }
    (before, after, cap.stop().expect("stop").path)
}

/// Healthy: every edge trusts the server's CA and holds a certificate the server trusts.
pub fn healthy(stack: Stack, version: TlsVersion, net: u8) {
    let name = scenario("healthy", stack, stack, version);
    let w = World::new();
    let leaf = w.cloudcore(&w.ca_a);
    let certs = w.edges(&w.ca_a, "h", EDGES);
    let edges: Vec<Edge> = edges_trusting(&certs, net, &w.ca_a);
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
        assert_eq!(
            str_at(c, "trustwatch.outcome"),
            Some("established"),
            "{name}: {c}"
        );
        assert_eq!(
            str_at(c, "tls.version"),
            Some(version.as_str()),
            "{name}: {c}"
        );
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
    let (before, after, pcap) = switch_run(
        &w,
        (server, client, version, net),
        "i",
        (&leaf_a, &w.ca_a),
        (&leaf_b, &w.ca_b),
    );
    assert!(
        before.iter().all(|r| r.ok),
        "{name}: edges trust CA_A: {before:?}"
    );
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
    let path = w
        .dir
        .path()
        .join(format!("{}-with-ca.pem", &ca.key_id()[..8]));
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
    let (before, after, pcap) = switch_run(
        &w,
        (server, client, version, net),
        "s",
        (&leaf_a, &w.ca_a),
        (&leaf_a, &w.ca_b),
    );
    assert!(before.iter().all(|r| r.ok), "{name}: {before:?}");
    assert!(
        after.iter().all(|r| !r.ok),
        "{name}: server rejects: {after:?}"
    );

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
    assert_eq!(
        a.names(),
        ["trust_collapse"],
        "{name}: the server's CA did not change"
    );
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
            .flat_map(|c| {
                c["trustwatch"]["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|al| al["from"] == side && al["encrypted"] == false)
            .filter_map(|al| al["code"].as_u64())
            .collect();
        theirs.sort_unstable();
        ours.sort_unstable();
        assert_eq!(
            ours, theirs,
            "plaintext alerts from the {side}: trustwatch vs tshark"
        );
        let encrypted = a
            .conns
            .iter()
            .flat_map(|c| {
                c["trustwatch"]["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|al| al["from"] == side && al["encrypted"] == true)
            .count();
        out.push(format!(
            "{side}: plaintext {:?}, inferred encrypted alerts {encrypted}",
            ours
        ));
    }
    out.join("; ")
}

/// Two replicas with different CAs at once (127.0.0.2 with CA_A, 127.0.0.3 with CA_B): every edge
/// is balanced to B first (rejected), then to A (works). Their cert services (Go certsvc mode)
/// hand out different `/ca.crt`.
pub fn divergence(version: TlsVersion, net: u8) {
    let name = format!("divergence/go/tls{}", version.as_str());
    let w = World::new();
    let (leaf_a, leaf_b) = (w.cloudcore(&w.ca_a), w.cloudcore(&w.ca_b));
    let certs = w.edges(&w.ca_a, "d", EDGES);
    let edges: Vec<Edge> = edges_trusting(&certs, net, &w.ca_a);
    let certsvc = trustwatch_testkit::free_port().expect("port");
    let cap = trustwatch_testkit::capture::Capture::start(
        w.dir.path(),
        "divergence",
        &format!("tcp port {} or tcp port {certsvc}", w.port),
    )
    .expect("capture");
    let (a_addr, b_addr) = (w.addr(2), w.addr(3));
    let sa = serve(Stack::Go, a_addr, &leaf_a, Some(&w.ca_a), version, EDGES);
    let sb = serve(Stack::Go, b_addr, &leaf_b, Some(&w.ca_b), version, EDGES);
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for e in &edges {
        on_b.extend(connect_all(
            Stack::Go,
            b_addr,
            version,
            std::slice::from_ref(e),
            1,
        ));
        on_a.extend(connect_all(
            Stack::Go,
            a_addr,
            version,
            std::slice::from_ref(e),
            1,
        ));
    }
    let _ = (sa.join(), sb.join());
    // certsvc: GET /ca.crt from both replicas (the edges' view during `keadm join`), TLS 1.2.
    let mut bodies = Vec::new();
    for (last, leaf, ca) in [(2, &leaf_a, &w.ca_a), (3, &leaf_b, &w.ca_b)] {
        let addr = SocketAddr::from(([127, 0, 0, last], certsvc));
        let mut o = ServerOpts::new(addr, leaf);
        o.client_ca = Some(ca.cert_path.clone());
        o.certsvc = true;
        o.max_version = Some(TlsVersion::V12);
        o.accept = 1;
        let s = go::server(o).expect("certsvc");
        bodies.push(get_ca_crt(addr, ca, edge_ip(net, 9)));
        let _ = s.join(Duration::from_secs(5));
    }
    let pcap = cap.stop().expect("stop").path;
    assert!(
        all_ok(&on_a) && on_b.iter().all(|r| !r.ok),
        "{name}: A {on_a:?} B {on_b:?}"
    );
    assert_eq!(
        bodies[0], w.ca_a.cert.sha256,
        "{name}: replica A hands out CA_A"
    );
    assert_eq!(
        bodies[1], w.ca_b.cert.sha256,
        "{name}: replica B hands out CA_B"
    );
    assert_ne!(bodies[0], bodies[1]);

    let a = analyze(
        &pcap,
        &format!("{}=cloudhub,{certsvc}=certsvc", w.port),
        &[],
    );
    eprintln!("{name}:\n{}", a.dump());
    a.expect_code(3);
    assert!(
        a.all("trust_collapse").is_empty(),
        "{name}: every edge still works on A"
    );
    let mut keys = vec![w.ca_a.key_id().to_string(), w.ca_b.key_id().to_string()];
    keys.sort();
    let div: Vec<&Value> = a.all("ca_divergence");
    let svc = |e: &&Value| str_at(e, "trustwatch.service").map(str::to_string);
    // certsvc over TLS 1.2: the two addresses present different CA keys.
    let cs: Vec<&&Value> = div
        .iter()
        .filter(|e| svc(e).as_deref() == Some("certsvc"))
        .collect();
    assert_eq!(cs.len(), 1, "{name}: {:?}", a.names());
    let d = tw(cs[0]);
    assert_eq!(d["basis"], "presented_keys");
    assert_eq!(d["ca_key_ids"], serde_json::json!(keys), "{name}: {d}");
    let ch: Vec<&&Value> = div
        .iter()
        .filter(|e| svc(e).as_deref() == Some("cloudhub"))
        .collect();
    let bases: Vec<&str> = ch
        .iter()
        .filter_map(|e| str_at(e, "trustwatch.basis"))
        .collect();
    // TLS 1.2: the keys differ as soon as both replicas were seen (the first success on A); the
    // outcome split is reported too, once the second edge shows it. TLS 1.3: only the split.
    let want: &[&str] = match version {
        TlsVersion::V12 => &["presented_keys", "outcome_split"],
        TlsVersion::V13 => &["outcome_split"],
    };
    assert_eq!(bases, want, "{name}: {:?}", a.names());
    let first_on_a = a
        .conns
        .iter()
        .find(|c| str_at(c, "destination.ip") == Some("127.0.0.2"))
        .expect("conn on A");
    if version == TlsVersion::V12 {
        assert_eq!(
            str_at(ch[0], "trustwatch.detection_time"),
            str_at(first_on_a, "event.end"),
            "{name}: the key divergence is reported as soon as both keys were seen"
        );
    }
    let d = tw(ch[0]);
    let replica = |addr: SocketAddr| {
        d["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .find(|r| r["address"] == addr.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("{name}: replica {addr} in {d}"))
    };
    match version {
        TlsVersion::V12 => {
            assert_eq!(d["basis"], "presented_keys", "{name}: {d}");
            assert_eq!(d["ca_key_ids"], serde_json::json!(keys), "{name}: {d}");
            assert_eq!(replica(a_addr)["ca_key_id"], w.ca_a.key_id());
            assert_eq!(replica(b_addr)["ca_key_id"], w.ca_b.key_id());
        }
        TlsVersion::V13 => {
            // Encrypted chains: the same edges succeed on A and are rejected by B.
            assert_eq!(d["basis"], "outcome_split", "{name}: {d}");
            assert!(d["split_clients"].as_u64().unwrap_or(0) >= 2, "{name}: {d}");
            assert_eq!(replica(b_addr)["clients_succeeded"], 0);
            assert!(replica(b_addr)["clients_rejected"].as_u64().unwrap_or(0) >= 2);
            assert!(replica(a_addr)["clients_succeeded"].as_u64().unwrap_or(0) >= 2);
            assert_eq!(replica(a_addr)["clients_rejected"], 0);
        }
    }
    assert_timeline(&a, "cloudhub", "ca_divergence", &b_addr.to_string());
    assert_timeline(&a, "certsvc", "ca_divergence", short(w.ca_b.key_id()));
}

/// `GET /ca.crt` with the Go client from `local` (trusting `ca`): sha256 of the body.
fn get_ca_crt(addr: SocketAddr, ca: &Ca, local: std::net::IpAddr) -> String {
    let out = std::process::Command::new(go::binary().expect("go peer"))
        .args([
            "client",
            "-connect",
            &addr.to_string(),
            "-max",
            "1.2",
            "-get",
            "/ca.crt",
        ])
        .arg("-ca")
        .arg(&ca.cert_path)
        .args(["-local", &local.to_string()])
        .output()
        .expect("go client");
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(v["status"], 200, "{v}");
    v["body_sha256"].as_str().expect("body hash").to_string()
}

/// Benign rotation: the edges trust CA_A and CA_B; CloudCore switches from CA_A to CA_B (client
/// CA unchanged). Only `ca_changed` where chains are visible; no collapse; exit 0.
pub fn benign_rotation(version: TlsVersion, net: u8) {
    let name = format!("benign-rotation/go/tls{}", version.as_str());
    let w = World::new();
    let (leaf_a, leaf_b) = (w.cloudcore(&w.ca_a), w.cloudcore(&w.ca_b));
    let certs = w.edges(&w.ca_a, "r", EDGES);
    let bundle = w.bundle(&[&w.ca_a, &w.ca_b]);
    let cap = w.capture("rotation");
    let mut o = ServerOpts::new(w.addr(1), &leaf_a);
    o.client_ca = Some(w.ca_a.cert_path.clone());
    o.max_version = Some(version);
    o.second = Some((&leaf_b, w.ca_a.cert_path.clone()));
    o.switch_after = EDGES;
    o.accept = EDGES * 3;
    let s = go::server(o).expect("go server");
    let run = |attempts| {
        let mut r = Vec::new();
        for (i, c) in certs.iter().enumerate() {
            let o = trustwatch_testkit::peers::ClientOpts::new(w.addr(1))
                .local_ip(edge_ip(net, i as u8 + 1))
                .version(version)
                .attempts(attempts, Duration::from_millis(50));
            r.extend(go::client(&o, &bundle, Some(c), None).expect("client"));
        }
        r
    };
    let before = run(1);
    std::thread::sleep(Duration::from_millis(100));
    let after = run(2);
    let rec = s.join(Duration::from_secs(5));
    let pcap = cap.stop().expect("stop").path;
    assert!(rec.iter().any(|r| r["event"] == "switch"));
    assert!(
        all_ok(&before) && all_ok(&after),
        "{name}: {before:?} {after:?}"
    );

    let a = analyze(&pcap, &ports(&w), &[]);
    eprintln!("{name}:\n{}", a.dump());
    a.expect_code(0);
    assert_eq!(a.successes().len(), EDGES * 3, "{name}\n{}", a.dump());
    match version {
        TlsVersion::V12 => {
            assert_eq!(a.names(), ["ca_changed"], "{name}: only the change");
            let ch = tw(a.one("ca_changed"));
            assert_eq!(ch["previous_ca_key_id"], w.ca_a.key_id());
            assert_eq!(ch["current_ca_key_id"], w.ca_b.key_id());
            assert_eq!(a.one("ca_changed")["event"]["severity"], 1);
            assert_timeline(&a, "cloudhub", "ca_changed", short(w.ca_b.key_id()));
        }
        TlsVersion::V13 => a.expect_quiet(),
    }
}

/// One misconfigured edge (it trusts a third CA) failing repeatedly among good ones: quiet.
pub fn one_bad_client(version: TlsVersion, net: u8) {
    let name = format!("one-bad-client/go/tls{}", version.as_str());
    let w = World::new();
    let leaf_a = w.cloudcore(&w.ca_a);
    let certs = w.edges(&w.ca_a, "b", EDGES + 1);
    let mut edges: Vec<Edge> = edges_trusting(&certs, net, &w.ca_a);
    edges[EDGES].trust = &w.ca_b;
    let cap = w.capture("one-bad");
    let s = serve(
        Stack::Go,
        w.addr(1),
        &leaf_a,
        Some(&w.ca_a),
        version,
        EDGES * 2 + 3,
    );
    let good = connect_all(Stack::Go, w.addr(1), version, &edges[..EDGES], 2);
    let bad = connect_all(Stack::Go, w.addr(1), version, &edges[EDGES..], 3);
    let _ = s.join();
    let pcap = cap.stop().expect("stop").path;
    assert!(all_ok(&good) && bad.iter().all(|r| !r.ok), "{name}");

    let a = analyze(&pcap, &ports(&w), &[]);
    eprintln!("{name}:\n{}", a.dump());
    a.expect_quiet();
    let failures = a.failures();
    assert_eq!(failures.len(), 3, "{name}\n{}", a.dump());
    for f in &failures {
        assert_cert_rejection(f, "client");
        assert_eq!(
            str_at(f, "source.ip"),
            Some(edge_ip(net, EDGES as u8 + 1).to_string().as_str())
        );
    }
}

/// Expired edge certificates: one is attributed (server rejects, certificate alert) and stays
/// quiet; at the K-th expired edge the trust collapses with the server rejecting.
pub fn expired(version: TlsVersion, net: u8) {
    let name = format!("expired/go/tls{}", version.as_str());
    let w = World::new();
    let leaf_a = w.cloudcore(&w.ca_a);
    let good = w.edges(&w.ca_a, "g", K);
    let expired: Vec<Leaf> = (1..=K)
        .map(|i| {
            w.pki
                .expired_client_leaf(&w.ca_a, &format!("node-x-{i}"))
                .expect("leaf")
        })
        .collect();
    let edge = |i: usize, c| Edge {
        ip: edge_ip(net, i as u8 + 1),
        trust: &w.ca_a,
        identity: Some(c),
    };
    let good_edges: Vec<Edge> = good.iter().enumerate().map(|(i, c)| edge(i, c)).collect();
    let bad_edges: Vec<Edge> = expired
        .iter()
        .enumerate()
        .map(|(i, c)| edge(K + i, c))
        .collect();
    let cap = w.capture("expired");
    let s = serve(Stack::Go, w.addr(1), &leaf_a, Some(&w.ca_a), version, K * 2);
    let ok = connect_all(Stack::Go, w.addr(1), version, &good_edges, 1);
    let bad = connect_all(Stack::Go, w.addr(1), version, &bad_edges, 1);
    let _ = s.join();
    let pcap = cap.stop().expect("stop").path;
    assert!(all_ok(&ok) && bad.iter().all(|r| !r.ok), "{name}: {bad:?}");

    let a = analyze(&pcap, &ports(&w), &[]);
    eprintln!("{name}:\n{}", a.dump());
    a.expect_code(3);
    let failures = a.failures();
    assert_eq!(failures.len(), K, "{name}\n{}", a.dump());
    for f in &failures {
        assert_cert_rejection(f, "server");
        if version == TlsVersion::V12 {
            // Go servers name the reason: certificate_expired(45).
            assert_eq!(f["trustwatch"]["alert"]["code"], 45, "{name}: {f}");
        } else {
            assert_eq!(f["trustwatch"]["alert"]["encrypted"], true, "{name}: {f}");
        }
    }
    report_wire(&name, &failures);
    eprintln!("WIRE {name}: {}", wire_check(&pcap, w.port, &a));
    // Quiet after the first expired edge: the only event is the collapse at the K-th.
    assert_eq!(a.names(), ["trust_collapse"], "{name}");
    check_collapse_timing(&a, &name, &failures);
    let c = tw(a.one("trust_collapse"));
    assert_eq!(c["rejecting_side"], "server", "{name}: {c}");
    assert_timeline(&a, "cloudhub", "trust_collapse", "(server rejecting)");
}

/// TLS 1.3, client authentication required, one edge sends no certificate: the server's
/// certificate_required(116) is encrypted; trustwatch infers a server rejection. One edge: quiet.
pub fn no_client_cert(server: Stack, net: u8) {
    let name = format!("no-client-cert/{}/tls1.3", stack_name(server));
    let version = TlsVersion::V13;
    let w = World::new();
    let leaf_a = w.cloudcore(&w.ca_a);
    let certs = w.edges(&w.ca_a, "n", K);
    let mut edges: Vec<Edge> = edges_trusting(&certs, net, &w.ca_a);
    edges.push(Edge {
        ip: edge_ip(net, K as u8 + 1),
        trust: &w.ca_a,
        identity: None,
    });
    let cap = w.capture("no-cert");
    let s = serve(server, w.addr(1), &leaf_a, Some(&w.ca_a), version, K + 1);
    let res = connect_all(server, w.addr(1), version, &edges, 1);
    let _ = s.join();
    let pcap = cap.stop().expect("stop").path;
    assert!(all_ok(&res[..K]) && !res[K].ok, "{name}: {res:?}");

    let a = analyze(&pcap, &ports(&w), &[]);
    eprintln!("{name}:\n{}", a.dump());
    a.expect_quiet();
    let failures = a.failures();
    assert_eq!(failures.len(), 1, "{name}\n{}", a.dump());
    assert_cert_rejection(failures[0], "server");
    report_wire(&name, &failures);
    eprintln!("WIRE {name}: {}", wire_check(&pcap, w.port, &a));
    if server == Stack::Go {
        assert_eq!(
            failures[0]["trustwatch"]["alert"]["encrypted"], true,
            "{name}"
        );
    }
    assert!(
        failures[0]["trustwatch"]["client_chain"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{name}"
    );
}

/// The TLS 1.2 incident against the trusted-CA references: `--trusted-ca`, a mounted
/// `--kubeedge-secret-dir` (only `cadata` may be read), `--ca-hash` and `--join-token` (whose JWT
/// must never be echoed). The references hold CA_A (what the edges joined with); CloudCore
/// presents CA_B after the switch, with the CA in its chain so hash references can compare.
pub fn references(net: u8) {
    let name = "references/go/tls1.2";
    let (w, pcap) = incident_with(Stack::Go, Stack::Go, TlsVersion::V12, net, true);
    let ports = ports(&w);
    let expect_inconsistent = |a: &Analysis, source: &str| {
        a.expect_code(3);
        let e = a.one("ca_inconsistent");
        let i = tw(e);
        assert_eq!(i["server"], w.addr(1).to_string(), "{name}: {i}");
        assert_eq!(i["source"], "passive");
        assert_eq!(i["presented"]["key_ids"][0], w.ca_b.key_id(), "{name}: {i}");
        assert_eq!(
            i["presented"]["der_sha256"], w.ca_b.cert.sha256,
            "{name}: {i}"
        );
        let d = &i["disagreements"][0];
        assert!(
            d["source"].as_str().unwrap_or_default().starts_with(source),
            "{name}: {i}"
        );
        assert_eq!(e["event"]["severity"], 3);
        // Reported at the first connection that presented CA_B, before the collapse.
        let first_b = a
            .conns
            .iter()
            .find(|c| str_at(c, "trustwatch.ca_key_id") == Some(w.ca_b.key_id()))
            .expect("CA_B on the wire");
        assert_eq!(
            str_at(e, "trustwatch.detection_time"),
            str_at(first_b, "event.end")
        );
        assert_eq!(
            a.names(),
            ["ca_inconsistent", "ca_changed", "trust_collapse"],
            "{name}"
        );
        assert_timeline(a, "cloudhub", "ca_inconsistent", source);
        i["disagreements"][0]["expected"].clone()
    };

    // Without a reference nothing is inconsistent.
    let a = analyze(&pcap, &ports, &[]);
    assert!(
        a.all("ca_inconsistent").is_empty(),
        "{name}: {:?}",
        a.names()
    );

    let ca_pem = w.ca_a.cert_path.to_str().expect("path").to_string();
    let a = analyze(&pcap, &ports, &["--trusted-ca", &ca_pem]);
    let exp = expect_inconsistent(&a, "trusted-ca");
    assert_eq!(exp, serde_json::json!([w.ca_a.key_id()]));
    // The CA the edges trust agrees: CA_A's connections are not reported.
    let a = analyze(
        &pcap,
        &ports,
        &["--trusted-ca", w.ca_b.cert_path.to_str().unwrap()],
    );
    let i = tw(a.one("ca_inconsistent"));
    assert_eq!(
        i["presented"]["key_ids"][0],
        w.ca_a.key_id(),
        "with CA_B as reference, CA_A is the odd one"
    );

    // A casecret mount: cadata (DER) plus cakeydata. cakeydata is a FIFO: opening it for reading
    // blocks (even for root) until a writer comes, so a monitor that opened it would hang and the
    // bounded run fails. Its name and a junk marker never appear in the output either.
    let secret = w.dir.path().join("casecret");
    std::fs::create_dir_all(&secret).expect("dir");
    std::fs::write(secret.join("cadata"), &w.ca_a.cert.der).expect("cadata");
    let fifo = secret.join("cakeydata");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let dir = secret.to_str().expect("path").to_string();
    let a = analyze(&pcap, &ports, &["--kubeedge-secret-dir", &dir]);
    let exp = expect_inconsistent(&a, "casecret");
    assert_eq!(exp, serde_json::json!([w.ca_a.key_id()]));
    assert!(!a.stdout.contains("cakeydata") && !a.stderr.contains("cakeydata"));
    // A regular cakeydata with junk key material: never shown.
    std::fs::remove_file(&fifo).expect("rm fifo");
    const JUNK: &str = "-----BEGIN EC PRIVATE KEY-----\nTRUSTWATCH-MUST-NEVER-READ-THIS\n";
    std::fs::write(&fifo, JUNK).expect("cakeydata");
    let a = analyze(&pcap, &ports, &["--kubeedge-secret-dir", &dir]);
    expect_inconsistent(&a, "casecret");
    for s in [&a.stdout, &a.stderr] {
        assert!(!s.contains("TRUSTWATCH-MUST-NEVER-READ") && !s.contains("PRIVATE KEY"));
    }
    // And cadata alone is enough.
    std::fs::remove_file(&fifo).expect("rm");
    let a = analyze(&pcap, &ports, &["--kubeedge-secret-dir", &dir]);
    expect_inconsistent(&a, "casecret");

    // --ca-hash and --join-token: sha256 of CA_A's DER (compared with the CA DER on the wire).
    let hash = w.ca_a.cert.sha256.clone();
    let a = analyze(&pcap, &ports, &["--ca-hash", &hash]);
    let exp = expect_inconsistent(&a, "ca-hash");
    assert_eq!(exp, serde_json::json!([format!("sha256:{hash}")]));
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2VjcmV0LXNpZ25hdHVyZS1kby1ub3Qtc2hvdw";
    let token = format!("{hash}.{JWT}");
    let a = analyze(&pcap, &ports, &["--join-token", &token]);
    expect_inconsistent(&a, "join-token");
    for part in JWT.split('.') {
        assert!(
            !a.stdout.contains(part) && !a.stderr.contains(part),
            "{name}: the JWT leaks"
        );
    }
}

/// A malformed join token is bad input (exit 2), and its JWT is not echoed in the error either.
pub fn bad_join_token_not_echoed() {
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2VjcmV0LXNpZ25hdHVyZS1kby1ub3Qtc2hvdw";
    let dir = trustwatch_testkit::tempfile::tempdir().expect("tmp");
    let pcap = dir.path().join("empty.pcap");
    // A valid, empty capture (pcap header only, Ethernet).
    let mut hdr = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    hdr.extend([0u8; 8]);
    hdr.extend(65535u32.to_le_bytes());
    hdr.extend(1u32.to_le_bytes());
    std::fs::write(&pcap, hdr).expect("pcap");
    for token in [
        format!("nothex.{JWT}"),
        format!("{}.{JWT}", "ab".repeat(31)),
    ] {
        let a = analyze_raw(&pcap, "10000=cloudhub", &["--join-token", &token]);
        assert_eq!(a.code, 2, "{}", a.stderr);
        for part in JWT.split('.') {
            assert!(
                !a.stderr.contains(part) && !a.stdout.contains(part),
                "the JWT leaks in the error: {}",
                a.stderr
            );
        }
    }
}
