//! The incident demo in its CI form (`demo --quick`): `trustwatch live` captures on `lo` while Go
//! cloudhub/certsvc servers switch from CA_A to CA_B (same name and serial, other key) and twelve
//! Go edges that trust only CA_A start failing over TLS 1.3. Asserts against the edges' own logs
//! and the PKI: the collapse is detected, names both CA key ids and the rejecting side, reaches
//! /metrics, and the monitor's handshake counts match what the edges saw. Runs on free ports,
//! about 16 s; every child is stopped when the run ends.

use std::time::Duration;

use trustwatch_testkit::Result;
use trustwatch_testkit::demo::Ports;
use trustwatch_testkit::demo::scenario::{self, Options};

const BIN: &str = env!("CARGO_BIN_EXE_trustwatch");

fn count(r: &[(String, f64)], outcome: &str) -> f64 {
    r.iter()
        .filter(|(k, _)| k == outcome)
        .map(|(_, v)| *v)
        .sum()
}

#[test]
fn quick_demo_detects_the_collapse_live() -> Result<()> {
    let o = Options {
        ports: Ports::free()?,
        ..Options::quick(BIN.into())
    };
    let r = scenario::run(&o)?;
    print!("{}", scenario::summary(&r));

    assert!(r.switched_at.is_some(), "the servers switched to CA_B");
    assert!(
        r.edge_ok >= 12,
        "healthy phase: every edge succeeded: {r:?}"
    );
    assert_eq!(
        r.edge_ok_after_switch, 0,
        "an edge that met CA_B never succeeds again"
    );
    assert_eq!(r.failures.len(), 12, "every edge failed after the switch");
    assert!(
        r.edge_error
            .as_deref()
            .is_some_and(|e| e.contains("unknown authority")),
        "{:?}",
        r.edge_error
    );

    let c = r.collapse().ok_or("no trust_collapse event on cloudhub")?;
    let tw = &c.json["trustwatch"];
    assert_eq!(tw["rejecting_side"], "client", "{tw}");
    assert_eq!(tw["previous_ca_key_id"], r.ca_a_key_id.as_str(), "{tw}");
    assert_eq!(tw["current_ca_key_id"], r.ca_b_key_id.as_str(), "{tw}");
    assert!(tw["failing_clients"].as_u64().unwrap_or(0) >= 3, "{tw}");
    assert_eq!(
        r.events
            .iter()
            .filter(|e| e.name == "trust_collapse")
            .count(),
        1
    );
    assert!(
        r.events.iter().any(|e| e.name == "ca_changed"
            && e.service == "cloudhub"
            && e.json["trustwatch"]["current_ca_key_id"] == r.ca_b_key_id.as_str()
            && e.json["trustwatch"]["previous_ca_key_id"] == r.ca_a_key_id.as_str()),
        "{:?}",
        r.events
    );
    assert!(
        r.events
            .iter()
            .all(|e| e.name == "ca_changed" || e.name == "trust_collapse"),
        "{:?}",
        r.events
    );
    let switched = r.switched_at.unwrap_or_default();
    assert!(c.at > switched, "no collapse before the switch");
    assert!(
        r.metrics_collapsed_at.is_some(),
        "trust_state 2 on /metrics"
    );
    // Loose bound for a loaded CI machine; the benchmark reports the real figure.
    let after_k = r
        .after_nth(r.collapse_clients, Some(c.at))
        .ok_or("no K-th failure")?;
    assert!(after_k < Duration::from_secs(5), "{after_k:?}");

    // The monitor saw what the edges saw (a run's last attempts may be cut by the stop).
    let est = count(&r.monitor_handshakes, "established");
    let rej = count(&r.monitor_handshakes, "rejected_by_client");
    assert!((est - r.edge_ok as f64).abs() <= 2.0, "{est} vs {r:?}");
    assert!((rej - r.edge_failed as f64).abs() <= 2.0, "{rej} vs {r:?}");
    assert_eq!(r.monitor_exit, Some(0), "SIGINT: clean exit");
    Ok(())
}
