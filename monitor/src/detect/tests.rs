//! Detector rules over synthetic connection sequences (what the analyzer would emit). The rule
//! tables, one file per rule family, are in `tests/`; this file keeps the end-to-end stories.

mod classify;
mod collapse;
mod detector;
mod divergence;
mod reference;
mod script;

use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::base::KeyId;
use crate::export::text::timeline_line as render_timeline_line;
use crate::flow::Side;
use crate::handshake::{Alert, Outcome};
use crate::trust::testpki::TestCa;
use crate::trust::{TrustOptions, TrustedReference};

const A: &str = "10.0.0.1:10000";
const B: &str = "10.0.0.2:10000";

fn ts(s: f64) -> Timestamp {
    Timestamp::from_micros((s * 1e6).round() as i64)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

/// Edge `n` (its own IP), connecting from an ephemeral port.
fn edge(n: u32, port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::from([192, 168, 1, n as u8]), port)
}

enum How {
    Ok,
    /// Plain fatal alert `code` from `side` (TLS 1.2).
    Alert(Side, u8),
    /// Inferred encrypted alert from `side` (TLS 1.3).
    Encrypted(Side),
}

fn conn(t: f64, client: SocketAddr, server: &str, how: How, ca: Option<&str>) -> Connection {
    let at = ts(t);
    let (outcome, alerts) = match how {
        How::Ok => (Outcome::Established, vec![]),
        How::Alert(from, code) => (
            if from == Side::Client {
                Outcome::RejectedByClient
            } else {
                Outcome::RejectedByServer
            },
            vec![Alert::Plain {
                from,
                level: 2,
                code,
                ts: at,
            }],
        ),
        How::Encrypted(from) => (Outcome::Failed, vec![Alert::Encrypted { from, ts: at }]),
    };
    Connection {
        alerts,
        outcome,
        ca_key_id: ca.map(|k| KeyId::parse(k).expect("hex key id")),
        ..Connection::test_record(client, addr(server), ts(t - 0.01), at)
    }
}

fn detector() -> Detector {
    Detector::new(DetectConfig::default(), TrustedReference::default())
}

/// Differing keys are judged at once (no wait for rotation evidence): for tests of other rules.
fn no_rotation_grace() -> DetectConfig {
    DetectConfig {
        rotation_grace_us: 0,
        ..DetectConfig::default()
    }
}

fn names(ev: &[Event]) -> Vec<&'static str> {
    ev.iter().map(Event::name).collect()
}

const X: &str = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11";
const Y: &str = "bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22";

#[test]
fn collapse_fires_at_the_kth_distinct_failing_client_tls12() {
    let mut d = detector();
    let mut ev = Vec::new();
    for n in 1..=5 {
        d.observe(
            &conn(10.0 + f64::from(n), edge(n, 40000), A, How::Ok, Some(X)),
            &mut ev,
        );
    }
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(d.state("cloudhub"), Some(TrustState::Healthy));

    // CloudCore restarts with the other CA: edges abort with bad_certificate(42).
    d.observe(
        &conn(
            30.0,
            edge(1, 40001),
            A,
            How::Alert(Side::Client, 42),
            Some(Y),
        ),
        &mut ev,
    );
    assert_eq!(
        names(&ev),
        ["ca_changed"],
        "the server's CA key changed X -> Y"
    );
    assert_eq!(d.state("cloudhub"), Some(TrustState::Degraded));
    // The same edge retrying does not count twice.
    d.observe(
        &conn(
            30.5,
            edge(1, 40002),
            A,
            How::Alert(Side::Client, 42),
            Some(Y),
        ),
        &mut ev,
    );
    d.observe(
        &conn(
            31.0,
            edge(2, 40001),
            A,
            How::Alert(Side::Client, 42),
            Some(Y),
        ),
        &mut ev,
    );
    assert_eq!(names(&ev), ["ca_changed"]);
    d.observe(
        &conn(
            32.25,
            edge(3, 40001),
            A,
            How::Alert(Side::Client, 42),
            Some(Y),
        ),
        &mut ev,
    );
    assert_eq!(names(&ev), ["ca_changed", "trust_collapse"]);
    let e = &ev[1];
    assert_eq!(
        e.at,
        ts(32.25),
        "detected at the third distinct client's failure (packet time)"
    );
    let EventDetail::TrustCollapse(c) = &e.detail else {
        panic!()
    };
    assert_eq!(c.failing_clients, 3);
    assert_eq!(c.succeeding_clients, 2);
    assert!((c.failure_share - 0.6).abs() < 1e-9);
    assert_eq!(c.first_failure, ts(30.0));
    assert_eq!(c.previous_ca_key_id.as_deref(), Some(X));
    assert_eq!(c.current_ca_key_id.as_deref(), Some(Y));
    assert_eq!(c.rejecting_side, RejectingSide::Client);
    assert_eq!(c.servers, vec![addr(A)]);
    assert!(exit_worthy(e));
    assert_eq!(d.state("cloudhub"), Some(TrustState::Collapsed));
    // More failures: no second collapse event.
    d.observe(
        &conn(
            33.0,
            edge(4, 40001),
            A,
            How::Alert(Side::Client, 42),
            Some(Y),
        ),
        &mut ev,
    );
    assert_eq!(ev.len(), 2);
    assert!(d.exit_worthy_seen());
}

#[test]
fn collapse_tls13_server_side_partial_then_total() {
    let mut d = detector();
    let mut ev = Vec::new();
    // Ten healthy edges; then failures from three: 3/10 is below R=0.5 but at P=0.2, a partial
    // collapse (one replica, a share of the edges).
    for n in 1..=10 {
        d.observe(
            &conn(1.0 + f64::from(n) * 0.1, edge(n, 40000), A, How::Ok, None),
            &mut ev,
        );
    }
    for n in 1..=3 {
        d.observe(
            &conn(
                5.0 + f64::from(n),
                edge(n, 40001),
                A,
                How::Encrypted(Side::Server),
                None,
            ),
            &mut ev,
        );
    }
    assert_eq!(names(&ev), ["trust_collapse"]);
    assert_eq!(
        ev[0].at,
        ts(8.0),
        "the third failing client: K=3 at 3/10 >= P"
    );
    let EventDetail::TrustCollapse(c) = &ev[0].detail else {
        panic!()
    };
    assert_eq!(c.scope, CollapseScope::Partial);
    assert_eq!(c.rejecting_side, RejectingSide::Server);
    assert_eq!(c.current_ca_key_id, None, "TLS 1.3 hides the chain");
    assert_eq!(c.first_failure, ts(6.0));
    assert!(exit_worthy(&ev[0]));
    // Two more fail: 5/10 reaches R, the same collapse is now total (no second event).
    for n in 4..=5 {
        d.observe(
            &conn(
                9.0 + f64::from(n),
                edge(n, 40001),
                A,
                How::Encrypted(Side::Server),
                None,
            ),
            &mut ev,
        );
    }
    assert_eq!(names(&ev), ["trust_collapse"]);
    let s = &d.snapshot().services[0];
    assert_eq!(
        (s.state, s.scope),
        (TrustState::Collapsed, Some(CollapseScope::Total))
    );
}

#[test]
fn below_the_partial_share_stays_degraded() {
    let mut d = detector();
    let mut ev = Vec::new();
    // 3 failing of 20 (0.15 < P=0.2): a handful of misconfigured edges, not a collapse.
    for n in 1..=20 {
        d.observe(
            &conn(f64::from(n) * 0.1, edge(n, 1), A, How::Ok, None),
            &mut ev,
        );
    }
    for n in 1..=3 {
        d.observe(
            &conn(
                5.0 + f64::from(n),
                edge(n, 2),
                A,
                How::Encrypted(Side::Server),
                None,
            ),
            &mut ev,
        );
    }
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(d.state("cloudhub"), Some(TrustState::Degraded));
}

/// Live, failures ask the probes which CA the replicas present now; the collapse waits up to the
/// probe grace for their answer (it names the current key), then goes ahead without it.
#[test]
fn a_collapse_waits_for_the_probes_failures_asked_for_then_goes_ahead() {
    let mut d = detector();
    let mut ev = Vec::new();
    for n in 1..=4 {
        d.observe(
            &conn(f64::from(n) * 0.1, edge(n, 1), A, How::Ok, None),
            &mut ev,
        );
    }
    d.observe(
        &conn(5.0, edge(1, 2), A, How::Encrypted(Side::Server), None),
        &mut ev,
    );
    assert!(d.take_probe_request(), "the first failure asks for probes");
    assert!(!d.take_probe_request(), "once");
    for n in 2..=3 {
        d.observe(
            &conn(
                5.0 + f64::from(n) * 0.1,
                edge(n, 2),
                A,
                How::Encrypted(Side::Server),
                None,
            ),
            &mut ev,
        );
    }
    d.tick(ts(5.9), &mut ev);
    assert!(ev.is_empty(), "waiting for the probes: {ev:?}");
    assert_eq!(d.state("cloudhub"), Some(TrustState::Degraded));
    d.tick(ts(6.0), &mut ev);
    assert_eq!(names(&ev), ["trust_collapse"]);
    let EventDetail::TrustCollapse(c) = &ev[0].detail else {
        panic!()
    };
    assert_eq!(c.detection_latency_us, 1_000_000);
}

/// One replica rejects half the edges, the other accepts them: every edge alternates success and
/// failure. One collapse, held while they keep failing, no recovery until they stop for the hold.
#[test]
fn a_steady_partial_failure_is_one_collapse_and_does_not_flap() {
    let mut d = detector();
    let mut ev = Vec::new();
    let mut t = 1.0;
    for round in 0..40u16 {
        for n in 1..=6 {
            let (server, how) = if (u32::from(round) + n) % 2 == 0 {
                (A, How::Ok)
            } else {
                (B, How::Encrypted(Side::Client))
            };
            d.observe(&conn(t, edge(n, 1000 + round), server, how, None), &mut ev);
            t += 0.1;
        }
        d.tick(ts(t), &mut ev);
    }
    let collapses = names(&ev)
        .iter()
        .filter(|n| **n == "trust_collapse")
        .count();
    let recoveries = names(&ev)
        .iter()
        .filter(|n| **n == "trust_recovered")
        .count();
    assert_eq!((collapses, recoveries), (1, 0), "{:?}", names(&ev));
    assert_eq!(d.state("cloudhub"), Some(TrustState::Collapsed));
    // The failures stop: recovered once the hold has passed with fewer than K failing.
    let stop = t;
    for n in 1..=6 {
        d.observe(&conn(t, edge(n, 9000), A, How::Ok, None), &mut ev);
        t += 0.1;
    }
    d.tick(ts(stop + 14.0), &mut ev);
    assert_eq!(
        d.state("cloudhub"),
        Some(TrustState::Collapsed),
        "inside the hold"
    );
    d.tick(ts(t + 15.0), &mut ev);
    assert_eq!(d.state("cloudhub"), Some(TrustState::Recovered));
    let recoveries = names(&ev)
        .iter()
        .filter(|n| **n == "trust_recovered")
        .count();
    assert_eq!(recoveries, 1);
}

#[test]
fn recovery_after_successes_resume_and_the_hold() {
    let mut d = detector();
    let mut ev = Vec::new();
    for n in 1..=3 {
        d.observe(
            &conn(
                f64::from(n),
                edge(n, 40000),
                A,
                How::Alert(Side::Server, 48),
                Some(Y),
            ),
            &mut ev,
        );
    }
    assert_eq!(names(&ev), ["trust_collapse"]);
    let EventDetail::TrustCollapse(c) = &ev[0].detail else {
        panic!()
    };
    assert_eq!(c.rejecting_side, RejectingSide::Server);
    assert_eq!(c.previous_ca_key_id, None, "no success was ever seen");
    // The operator restores the CA: edges reconnect and succeed. Fewer than K fail from t=20.
    d.observe(&conn(20.0, edge(1, 40001), A, How::Ok, Some(X)), &mut ev);
    d.observe(&conn(21.0, edge(2, 40001), A, How::Ok, Some(X)), &mut ev);
    assert_eq!(
        names(&ev),
        ["trust_collapse", "ca_changed"],
        "inside the hold"
    );
    d.tick(ts(34.9), &mut ev);
    assert_eq!(d.state("cloudhub"), Some(TrustState::Collapsed));
    d.tick(ts(35.0), &mut ev);
    assert_eq!(
        names(&ev),
        ["trust_collapse", "ca_changed", "trust_recovered"]
    );
    let e = ev.last().unwrap();
    assert_eq!(
        e.at,
        ts(35.0),
        "15 s (--recovery-hold) after fewer than K failed"
    );
    let EventDetail::TrustRecovered(r) = &e.detail else {
        panic!()
    };
    assert_eq!(r.collapsed_at, ts(3.0));
    assert_eq!(r.ca_key_id.as_deref(), Some(X));
    assert_eq!(r.succeeding_clients, 2);
    assert_eq!(r.failing_clients, 1);
    assert!(!exit_worthy(e));
    assert_eq!(d.state("cloudhub"), Some(TrustState::Recovered));
    // A new failure episode starts from degraded again.
    d.observe(
        &conn(
            36.0,
            edge(3, 40002),
            A,
            How::Alert(Side::Server, 48),
            Some(X),
        ),
        &mut ev,
    );
    assert_eq!(d.state("cloudhub"), Some(TrustState::Degraded));
}

#[test]
fn window_expiry_returns_to_healthy_and_forgets() {
    let mut d = detector();
    let mut ev = Vec::new();
    d.observe(
        &conn(1.0, edge(1, 1), A, How::Alert(Side::Client, 42), None),
        &mut ev,
    );
    d.observe(
        &conn(2.0, edge(2, 1), A, How::Alert(Side::Client, 42), None),
        &mut ev,
    );
    assert_eq!(d.state("cloudhub"), Some(TrustState::Degraded));
    d.tick(ts(62.5), &mut ev);
    assert_eq!(d.state("cloudhub"), Some(TrustState::Healthy));
    // Two more failures 70 s later: the old two are out of the window, no collapse.
    d.observe(
        &conn(70.0, edge(3, 1), A, How::Alert(Side::Client, 42), None),
        &mut ev,
    );
    d.observe(
        &conn(71.0, edge(4, 1), A, How::Alert(Side::Client, 42), None),
        &mut ev,
    );
    assert!(ev.is_empty(), "{ev:?}");
    let snap = d.snapshot();
    assert_eq!(snap.services[0].failing_clients, 2);
    assert_eq!(snap.services[0].window.cert_failures, 2);
}

#[test]
fn quiet_single_misconfigured_client() {
    let mut d = detector();
    let mut ev = Vec::new();
    for n in 1..=6 {
        d.observe(
            &conn(f64::from(n), edge(n, 40000), A, How::Ok, Some(X)),
            &mut ev,
        );
    }
    // Edge 9 has a certificate from another CA and retries every 2 s for five minutes.
    for i in 0..150 {
        let t = 10.0 + f64::from(i) * 2.0;
        d.observe(
            &conn(
                t,
                edge(9, 41000 + i as u16),
                A,
                How::Alert(Side::Server, 48),
                Some(X),
            ),
            &mut ev,
        );
        if i % 10 == 0 {
            d.tick(ts(t), &mut ev);
        }
    }
    assert!(
        ev.is_empty(),
        "one misconfigured client is not a collapse: {ev:?}"
    );
    assert_eq!(d.state("cloudhub"), Some(TrustState::Degraded));
}

#[test]
fn quiet_burst_from_one_address() {
    let mut d = detector();
    let mut ev = Vec::new();
    // 500 certificate failures in one second from one address, nothing else: share 100%, K=1.
    for i in 0..500u16 {
        d.observe(
            &conn(
                5.0 + f64::from(i) * 0.002,
                edge(7, 30000 + i),
                A,
                How::Encrypted(Side::Client),
                None,
            ),
            &mut ev,
        );
    }
    d.tick(ts(6.0), &mut ev);
    assert!(ev.is_empty(), "{ev:?}");
}

#[test]
fn quiet_benign_rotation_clients_trust_both() {
    let mut d = detector();
    let mut ev = Vec::new();
    for i in 0..40u16 {
        let n = u32::from(i % 8) + 1;
        let ca = if i < 20 { X } else { Y };
        d.observe(
            &conn(f64::from(i), edge(n, 40000 + i), A, How::Ok, Some(ca)),
            &mut ev,
        );
    }
    d.tick(ts(100.0), &mut ev);
    assert_eq!(names(&ev), ["ca_changed"]);
    let EventDetail::CaChanged(c) = &ev[0].detail else {
        panic!()
    };
    assert_eq!(
        (c.previous_ca_key_id.as_str(), c.current_ca_key_id.as_str()),
        (X, Y)
    );
    assert_eq!(c.server, Some(addr(A)));
    assert_eq!(c.source, CaSource::Passive);
    assert_eq!(ev[0].at, ts(20.0));
    assert!(!exit_worthy(&ev[0]));
    assert!(!d.exit_worthy_seen());
}

#[test]
fn quiet_non_certificate_failures() {
    let mut d = detector();
    let mut ev = Vec::new();
    // handshake_failure(40) and protocol_version(70) from many clients are not trust problems.
    for n in 1..=10 {
        let code = if n % 2 == 0 { 40 } else { 70 };
        d.observe(
            &conn(
                f64::from(n),
                edge(n, 1),
                A,
                How::Alert(Side::Server, code),
                None,
            ),
            &mut ev,
        );
    }
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(d.state("cloudhub"), Some(TrustState::Healthy));
}

#[test]
fn divergence_by_presented_keys() {
    let mut d = detector();
    let mut ev = Vec::new();
    d.observe(&conn(1.0, edge(1, 1), A, How::Ok, Some(X)), &mut ev);
    d.observe(&conn(2.0, edge(2, 1), A, How::Ok, Some(X)), &mut ev);
    assert!(ev.is_empty());
    // Replica B came up with its own CA; no edge has failed yet, and each edge only ever talks
    // to its own replica (they joined through it). Until the rotation grace is over this could
    // still turn out to be a rotation; then it is the leading indicator of the incident.
    for i in 0..=30u16 {
        let t = 3.0 + f64::from(i);
        d.observe(&conn(t, edge(1, 2 + i), A, How::Ok, Some(X)), &mut ev);
        d.observe(&conn(t + 0.5, edge(3, 2 + i), B, How::Ok, Some(Y)), &mut ev);
        if t + 0.5 < 33.5 {
            assert!(ev.is_empty(), "at {t}: {ev:?}");
        }
    }
    assert_eq!(names(&ev), ["ca_divergence"]);
    assert_eq!(
        ev[0].at,
        ts(33.5),
        "the grace (30 s) after B's key was first seen"
    );
    let EventDetail::CaDivergence(dv) = &ev[0].detail else {
        panic!()
    };
    assert_eq!(dv.basis, DivergenceBasis::PresentedKeys);
    assert_eq!(dv.ca_key_ids, vec![X.to_string(), Y.to_string()]);
    let keys: Vec<(SocketAddr, Option<&str>)> = dv
        .replicas
        .iter()
        .map(|r| (r.address, r.ca_key_id.as_deref()))
        .collect();
    assert_eq!(keys, vec![(addr(A), Some(X)), (addr(B), Some(Y))]);
    assert!(exit_worthy(&ev[0]));
    // Reported once while it lasts, even if a client now succeeds under both.
    for i in 0..10 {
        d.observe(
            &conn(
                34.0 + f64::from(i),
                edge(4, 2 + i as u16),
                if i % 2 == 0 { A } else { B },
                How::Ok,
                Some(if i % 2 == 0 { X } else { Y }),
            ),
            &mut ev,
        );
    }
    assert_eq!(ev.len(), 1);
    let snap = d.snapshot();
    assert_eq!(
        snap.services[0].divergent_ca_key_ids,
        vec![X.to_string(), Y.to_string()]
    );
}

/// Over TLS 1.3 a new key is known (from a probe, or a first client) before any client that
/// knew the old one has met it: the evidence for a rotation arrives within the grace.
#[test]
fn a_rotation_whose_evidence_comes_within_the_grace_is_no_divergence() {
    let mut d = detector();
    let mut ev = Vec::new();
    d.observe(&conn(1.0, edge(1, 1), A, How::Ok, Some(X)), &mut ev);
    d.observe(&conn(2.0, edge(3, 1), B, How::Ok, Some(Y)), &mut ev);
    d.tick(ts(20.0), &mut ev);
    assert!(ev.is_empty(), "{ev:?}");
    // Edge 1, which succeeded under X, now succeeds on B under Y: it was given both CAs.
    d.observe(&conn(21.0, edge(1, 2), B, How::Ok, Some(Y)), &mut ev);
    assert_eq!(names(&ev), ["ca_rotation"]);
    d.tick(ts(40.0), &mut ev);
    assert!(d.snapshot().services[0].rotation_in_progress);
    // No divergence after the grace; once A's key is no longer seen, the rotation is over.
    d.tick(ts(70.0), &mut ev);
    assert_eq!(names(&ev), ["ca_rotation"]);
    assert!(!d.snapshot().services[0].rotation_in_progress);
}

#[test]
fn divergence_by_outcome_split_tls13() {
    let mut d = detector();
    let mut ev = Vec::new();
    // Edges 1 and 2 joined through replica A: A works, B rejects them (encrypted alerts).
    d.observe(&conn(1.0, edge(1, 1), A, How::Ok, None), &mut ev);
    d.observe(
        &conn(2.0, edge(1, 2), B, How::Encrypted(Side::Client), None),
        &mut ev,
    );
    assert!(
        ev.is_empty(),
        "one split client is below split_min_clients=2: {ev:?}"
    );
    d.observe(
        &conn(3.0, edge(2, 1), B, How::Encrypted(Side::Client), None),
        &mut ev,
    );
    assert!(ev.is_empty());
    d.observe(&conn(4.5, edge(2, 2), A, How::Ok, None), &mut ev);
    assert_eq!(names(&ev), ["ca_divergence"]);
    assert_eq!(ev[0].at, ts(4.5));
    let EventDetail::CaDivergence(dv) = &ev[0].detail else {
        panic!()
    };
    assert_eq!(dv.basis, DivergenceBasis::OutcomeSplit);
    assert_eq!(dv.split_clients, 2);
    let split: Vec<(SocketAddr, u32, u32)> = dv
        .replicas
        .iter()
        .map(|r| (r.address, r.clients_succeeded, r.clients_rejected))
        .collect();
    assert_eq!(split, vec![(addr(A), 2, 0), (addr(B), 0, 2)]);
    // Two failing clients: not a collapse.
    assert_ne!(d.state("cloudhub"), Some(TrustState::Collapsed));
    // Still split: no repeat; after the window it clears and can fire again.
    d.observe(
        &conn(5.0, edge(1, 3), B, How::Encrypted(Side::Client), None),
        &mut ev,
    );
    d.tick(ts(30.0), &mut ev);
    assert_eq!(ev.len(), 1);
    d.tick(ts(100.0), &mut ev);
    assert_eq!(ev.len(), 1);
}

#[test]
fn single_client_failing_on_every_replica_is_not_a_split() {
    let mut d = detector();
    let mut ev = Vec::new();
    for i in 0..20u16 {
        d.observe(
            &conn(
                f64::from(i),
                edge(1, i),
                if i % 2 == 0 { A } else { B },
                How::Encrypted(Side::Server),
                None,
            ),
            &mut ev,
        );
        d.observe(
            &conn(
                f64::from(i) + 0.5,
                edge(2 + u32::from(i % 3), i),
                if i % 2 == 0 { A } else { B },
                How::Ok,
                None,
            ),
            &mut ev,
        );
    }
    assert!(ev.is_empty(), "{ev:?}");
}

#[test]
fn alternating_keys_on_one_address_is_divergence_not_changes() {
    let mut d = Detector::new(no_rotation_grace(), TrustedReference::default());
    let mut ev = Vec::new();
    // Two replicas behind one service address: the presented key flips back and forth, and each
    // edge succeeds under one key only (it joined through one replica).
    for i in 0..6u16 {
        d.observe(
            &conn(
                f64::from(i),
                edge(1 + u32::from(i % 2), i),
                A,
                How::Ok,
                Some(if i % 2 == 0 { X } else { Y }),
            ),
            &mut ev,
        );
    }
    assert_eq!(names(&ev), ["ca_changed", "ca_divergence"]);
    let EventDetail::CaDivergence(dv) = &ev[1].detail else {
        panic!()
    };
    assert_eq!(dv.basis, DivergenceBasis::Alternating);
}

/// Blue/green or rolling CA change: replicas present different keys while the same clients
/// succeed under both (they were given both CAs). A rotation in progress, not an incident — until
/// clients start failing.
#[test]
fn a_planned_rotation_is_not_a_divergence_until_clients_fail() {
    let mut d = detector();
    let mut ev = Vec::new();
    for i in 0..4u16 {
        for n in 1..=3 {
            let (server, key) = if i % 2 == 0 { (A, X) } else { (B, Y) };
            d.observe(
                &conn(
                    f64::from(i) + f64::from(n) * 0.1,
                    edge(n, i),
                    server,
                    How::Ok,
                    Some(key),
                ),
                &mut ev,
            );
        }
    }
    assert_eq!(names(&ev), ["ca_rotation"]);
    assert!(!exit_worthy(&ev[0]));
    let EventDetail::CaRotation(r) = &ev[0].detail else {
        panic!()
    };
    assert_eq!(r.ca_key_ids, vec![X.to_string(), Y.to_string()]);
    let s = &d.snapshot().services[0];
    assert!(s.rotation_in_progress);
    assert!(s.divergent_ca_key_ids.is_empty());
    // An edge that was not given the new CA fails on replica B: now it is a divergence.
    d.observe(
        &conn(5.0, edge(9, 1), B, How::Alert(Side::Client, 42), Some(Y)),
        &mut ev,
    );
    d.tick(ts(5.5), &mut ev);
    assert_eq!(names(&ev), ["ca_rotation", "ca_divergence"]);
    assert!(exit_worthy(&ev[1]));
    assert!(!d.snapshot().services[0].rotation_in_progress);
}

#[test]
fn inconsistent_with_trusted_reference() {
    let stored = TestCa::kubeedge();
    let other = TestCa::kubeedge();
    let dir = crate::trust::tests::TempDir::new("detect-ref");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, stored.pem()).unwrap();
    let reference = TrustedReference::load(&TrustOptions {
        trusted_ca: vec![path.clone()],
        ..Default::default()
    })
    .unwrap();
    let mut d = Detector::new(no_rotation_grace(), reference);
    let mut ev = Vec::new();
    d.observe(
        &conn(1.0, edge(1, 1), A, How::Ok, Some(&stored.key_id())),
        &mut ev,
    );
    assert!(ev.is_empty(), "{ev:?}");
    // Replica B serves a chain from the other CA (same CN, same serial, different key).
    d.observe(
        &conn(2.0, edge(2, 1), B, How::Ok, Some(&other.key_id())),
        &mut ev,
    );
    d.observe(
        &conn(3.0, edge(3, 1), B, How::Ok, Some(&other.key_id())),
        &mut ev,
    );
    assert_eq!(names(&ev), ["ca_inconsistent", "ca_divergence"]);
    let EventDetail::CaInconsistent(i) = &ev[0].detail else {
        panic!()
    };
    assert_eq!(i.server, Some(addr(B)));
    assert_eq!(i.presented.key_ids, vec![other.key_id()]);
    assert_eq!(i.disagreements.len(), 1);
    assert_eq!(i.disagreements[0].expected, vec![stored.key_id()]);
    assert!(i.disagreements[0].source.contains("ca.pem"));
    assert!(exit_worthy(&ev[0]));
}

#[test]
fn secret_change_is_reported_and_rechecked() {
    let ca1 = TestCa::kubeedge();
    let ca2 = TestCa::kubeedge();
    let dir = crate::trust::tests::TempDir::new("detect-secret");
    let cadata = dir.path().join("cadata");
    std::fs::write(&cadata, ca1.der()).unwrap();
    let reference = TrustedReference::load(&TrustOptions {
        kubeedge_secret_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let cfg = DetectConfig {
        secret_check_interval: std::time::Duration::ZERO,
        ..no_rotation_grace()
    };
    let mut d = Detector::new(cfg, reference);
    let mut ev = Vec::new();
    d.observe(
        &conn(1.0, edge(1, 1), A, How::Ok, Some(&ca2.key_id())),
        &mut ev,
    );
    assert_eq!(names(&ev), ["ca_inconsistent"]);
    d.tick(ts(2.0), &mut ev);
    assert_eq!(ev.len(), 1, "unchanged Secret: nothing");
    // The Secret is overwritten by the other replica (last write wins).
    crate::trust::tests::rewrite(&cadata, &ca2.der());
    d.tick(ts(3.0), &mut ev);
    assert_eq!(names(&ev), ["ca_inconsistent", "ca_changed"]);
    assert_eq!(&*ev[1].service, SECRET_SERVICE);
    let EventDetail::CaChanged(c) = &ev[1].detail else {
        panic!()
    };
    assert_eq!(
        (c.previous_ca_key_id.clone(), c.current_ca_key_id.clone()),
        (ca1.key_id(), ca2.key_id())
    );
    assert_eq!(c.source, CaSource::Secret);
    // A now agrees with the stored CA; a server presenting ca1 is now the inconsistent one.
    d.observe(
        &conn(4.0, edge(2, 1), B, How::Ok, Some(&ca1.key_id())),
        &mut ev,
    );
    assert_eq!(
        names(&ev),
        [
            "ca_inconsistent",
            "ca_changed",
            "ca_inconsistent",
            "ca_divergence"
        ]
    );
    assert_eq!(d.stats().secret_reloads, 1);
}

#[test]
fn event_json_is_ecs_alert() {
    let mut d = detector();
    let mut ev = Vec::new();
    d.observe(
        &conn(1_700_000_000.5, edge(1, 1), A, How::Ok, Some(X)),
        &mut ev,
    );
    for n in 1..=3 {
        d.observe(
            &conn(
                1_700_000_010.0 + f64::from(n) * 0.000_001,
                edge(n, 2),
                A,
                How::Alert(Side::Client, 42),
                Some(Y),
            ),
            &mut ev,
        );
    }
    let e = ev
        .iter()
        .find(|e| e.name() == "trust_collapse")
        .expect("collapse");
    let v = serde_json::to_value(e).unwrap();
    assert_eq!(v["@timestamp"], "2023-11-14T22:13:30.000003Z");
    assert_eq!(v["event"]["kind"], "alert");
    assert_eq!(v["event"]["action"], "trust_collapse");
    assert_eq!(v["trustwatch"]["event"], "trust_collapse");
    assert_eq!(v["trustwatch"]["service"], "cloudhub");
    assert_eq!(v["trustwatch"]["previous_ca_key_id"], X);
    assert_eq!(v["trustwatch"]["current_ca_key_id"], Y);
    assert_eq!(v["trustwatch"]["rejecting_side"], "client");
    assert_eq!(v["trustwatch"]["failing_clients"], 3);
    assert_eq!(
        v["trustwatch"]["first_failure"],
        "2023-11-14T22:13:30.000001Z"
    );
    assert_eq!(
        v["trustwatch"]["detection_time"],
        "2023-11-14T22:13:30.000003Z"
    );
    assert_eq!(v["trustwatch"]["detection_latency_us"], 2);
    assert_eq!(v["server"]["port"], 10000);
    assert!(
        v["trustwatch"]["evidence"]
            .as_str()
            .unwrap()
            .contains("3 distinct clients")
    );
    let line = render_timeline_line(e);
    assert!(line.starts_with("2023-11-14T22:13:30.000003Z"), "{line}");
    assert!(
        line.contains("cloudhub") && line.contains("TRUST_COLLAPSE"),
        "{line}"
    );
    assert!(!line.contains('\n'));
    // Every kind serializes to an object with the common keys.
    for e in &ev {
        let v = serde_json::to_value(e).unwrap();
        assert_eq!(v["event"]["kind"], "alert");
        assert_eq!(v["trustwatch"]["event"], e.name());
    }
}

#[test]
fn limits_are_bounded_and_counted() {
    let mut cfg = DetectConfig::default();
    cfg.limits.max_clients = 2;
    cfg.limits.max_services = 1;
    let mut d = Detector::new(cfg, TrustedReference::default());
    let mut ev = Vec::new();
    for n in 1..=5 {
        d.observe(
            &conn(
                f64::from(n),
                edge(n, 1),
                A,
                How::Alert(Side::Client, 42),
                None,
            ),
            &mut ev,
        );
    }
    assert_eq!(d.stats().clients_evicted, 3);
    assert!(d.snapshot().services[0].saturated);
    assert!(ev.is_empty(), "only two clients fit: {ev:?}");
    let mut other = conn(6.0, edge(1, 2), A, How::Ok, None);
    other.service = Arc::from("stream");
    d.observe(&other, &mut ev);
    assert_eq!(d.stats().services_dropped, 1);
    let mut incomplete = conn(7.0, edge(1, 3), A, How::Ok, None);
    incomplete.outcome = Outcome::Incomplete;
    d.observe(&incomplete, &mut ev);
    assert_eq!(d.stats().connections_ignored, 1);
}

#[test]
fn probe_connections_are_excluded() {
    let mut d = detector();
    let mut ev = Vec::new();
    let me = edge(200, 55555);
    d.exclude_probe_client(me, ts(1.0));
    d.observe(
        &conn(1.1, me, A, How::Encrypted(Side::Server), None),
        &mut ev,
    );
    assert_eq!(d.stats().probe_connections_excluded, 1);
    assert_eq!(d.state("cloudhub"), None);
}
