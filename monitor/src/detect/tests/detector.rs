//! The detector around the per-service rules: configuration checks, the exclusion of the
//! monitor's own probes, probe results, memory bounds and their drop counters, what it keeps for
//! the snapshot.

use std::net::SocketAddr;

use super::script::*;
use crate::detect::{DetectConfig, Detector, TrustState, exit_worthy};
use crate::error::Error;
use crate::flow::Side::Client as BY_CLIENT;
use crate::handshake::Outcome;
use crate::trust::TrustedReference;

#[test]
fn rule_config_validation() {
    type Edit = fn(&mut DetectConfig);
    const WINDOW: &str = "--trust-window must be positive";
    const K: &str = "--collapse-clients must be at least 1";
    const R: &str = "--collapse-share must be in (0, 1]";
    const P: &str = "--partial-share must be in (0, --collapse-share]";
    const HOLDS: &str =
        "--collapse-hold, --recovery-hold, --probe-grace and --rotation-grace cannot be negative";
    const SPLIT: &str = "split client count must be at least 1";
    let rows: [(&str, Edit, Option<&str>); 26] = [
        ("defaults", |_| {}, None),
        ("window 0", |c| c.window_us = 0, Some(WINDOW)),
        ("window -1", |c| c.window_us = -1, Some(WINDOW)),
        ("window 1 µs", |c| c.window_us = 1, None),
        ("K 0", |c| c.min_failing_clients = 0, Some(K)),
        ("K 1", |c| c.min_failing_clients = 1, None),
        ("R 0", |c| c.min_failure_share = 0.0, Some(R)),
        // P must stay at or below R: lower it with R.
        (
            "R just above 0",
            |c| {
                c.min_failure_share = 1e-9;
                c.partial_share = 1e-9;
            },
            None,
        ),
        ("R 1", |c| c.min_failure_share = 1.0, None),
        ("R above 1", |c| c.min_failure_share = 1.000_001, Some(R)),
        ("R negative", |c| c.min_failure_share = -0.5, Some(R)),
        ("R NaN", |c| c.min_failure_share = f64::NAN, Some(R)),
        ("P 0", |c| c.partial_share = 0.0, Some(P)),
        ("P negative", |c| c.partial_share = -0.1, Some(P)),
        ("P NaN", |c| c.partial_share = f64::NAN, Some(P)),
        ("P just above 0", |c| c.partial_share = 1e-9, None),
        (
            "P equal to R",
            |c| c.partial_share = c.min_failure_share,
            None,
        ),
        (
            "P above R",
            |c| c.partial_share = c.min_failure_share + 1e-9,
            Some(P),
        ),
        ("collapse hold -1", |c| c.collapse_hold_us = -1, Some(HOLDS)),
        ("recovery hold -1", |c| c.recovery_hold_us = -1, Some(HOLDS)),
        ("probe grace -1", |c| c.probe_grace_us = -1, Some(HOLDS)),
        (
            "rotation grace -1",
            |c| c.rotation_grace_us = -1,
            Some(HOLDS),
        ),
        (
            "holds and grace 0",
            |c| {
                c.collapse_hold_us = 0;
                c.recovery_hold_us = 0;
                c.probe_grace_us = 0;
            },
            None,
        ),
        ("split 0", |c| c.split_min_clients = 0, Some(SPLIT)),
        ("split 1", |c| c.split_min_clients = 1, None),
        (
            "window 0 and K 0: the window first",
            |c| {
                c.window_us = 0;
                c.min_failing_clients = 0;
            },
            Some(WINDOW),
        ),
    ];
    for (what, edit, want) in rows {
        let mut cfg = keys_at_once();
        edit(&mut cfg);
        match (cfg.validate(), want) {
            (Ok(()), None) => {}
            (Err(Error::Usage(msg)), Some(w)) => assert_eq!(msg, w, "{what}"),
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

/// A failing TLS 1.3 connection from exactly `client`.
fn from(t: f64, client: SocketAddr) -> Step {
    let mut c = conn(
        t,
        client,
        A,
        Outcome::RejectedByServer,
        vec![crate::handshake::Alert::Encrypted {
            from: crate::flow::Side::Server,
            ts: ts(t),
        }],
        "",
    );
    c.client = client;
    Step::Conn(Box::new(c))
}

#[test]
fn rule_probe_exclusion_needs_the_probe_address_and_time() {
    let probe = edge_port(200, 5555);
    let rows: Vec<(&str, Vec<Step>, bool)> = vec![
        (
            "another port of the same host",
            vec![
                Step::ExcludeProbe(probe, 1.0),
                from(1.1, edge_port(200, 5556)),
            ],
            false,
        ),
        (
            "another host, same port",
            vec![
                Step::ExcludeProbe(probe, 1.0),
                from(1.1, edge_port(201, 5555)),
            ],
            false,
        ),
        (
            "a tick within the 120 s keeps the announcement",
            vec![
                Step::ExcludeProbe(probe, 1.0),
                tick(60.0),
                from(61.0, probe),
            ],
            true,
        ),
        (
            "120 s later, ticked in between",
            vec![
                Step::ExcludeProbe(probe, 1.0),
                tick(121.0),
                from(121.0, probe),
            ],
            true,
        ),
        (
            "later than 120 s",
            vec![Step::ExcludeProbe(probe, 1.0), from(121.000001, probe)],
            false,
        ),
        (
            "a record that ends 120 s before the announcement",
            vec![Step::ExcludeProbe(probe, 200.0), from(80.0, probe)],
            true,
        ),
        (
            "earlier",
            vec![Step::ExcludeProbe(probe, 200.0), from(79.999999, probe)],
            false,
        ),
        (
            "a probe result announces its local address",
            {
                let mut p = probe_failed(1.0, A);
                if let Step::Probe(r, _) = &mut p {
                    r.local = Some(probe);
                }
                vec![p, from(1.5, probe)]
            },
            true,
        ),
    ];
    for (rule, steps, excluded) in rows {
        let mut s = Script::new(keys_at_once());
        s.run(rule, steps);
        let stats = s.d.stats();
        assert_eq!(stats.connections, 1, "{rule}");
        assert_eq!(
            stats.probe_connections_excluded,
            u64::from(excluded),
            "{rule}"
        );
        assert_eq!(
            s.d.state("cloudhub"),
            (!excluded).then_some(TrustState::Degraded),
            "{rule}: an excluded connection leaves no trace"
        );
    }
    // Several probes at once, and the bound on how many are remembered.
    for (announced, first_excluded) in [(2u16, true), (256, true), (257, false)] {
        let mut d = Detector::new(keys_at_once(), TrustedReference::default());
        for p in 1..=announced {
            d.exclude_probe_client(edge_port(200, p), ts(1.0));
        }
        let first = conn(2.0, edge_port(200, 1), A, Outcome::Established, vec![], "");
        let last = conn(
            2.0,
            edge_port(200, announced),
            A,
            Outcome::Established,
            vec![],
            "",
        );
        assert_eq!(d.is_probe_connection(&first), first_excluded, "{announced}");
        assert!(d.is_probe_connection(&last), "{announced}");
    }
}

#[test]
fn probe_results_counted_and_attributed() {
    let mut s = Script::new(keys_at_once());
    let no_ca = {
        let mut p = probe_chain(1.0, A, "X");
        if let Step::Probe(r, _) = &mut p
            && let Ok(f) = &mut r.outcome
        {
            f.issuer_key_id = None;
        }
        p
    };
    let no_addr = {
        let mut p = probe_chain(1.0, A, "X");
        if let Step::Probe(r, _) = &mut p {
            r.addr = None;
        }
        p
    };
    s.run(
        "failed probes",
        vec![probe_failed(1.0, A), no_ca, no_addr, Step::State(None)],
    );
    assert_eq!((s.d.stats().probes, s.d.stats().probe_failures), (3, 3));
    s.run(
        "a probe of an unconfigured port names its service by port",
        vec![probe_chain(2.0, "10.0.0.1:8443", "X")],
    );
    assert_eq!((s.d.stats().probes, s.d.stats().probe_failures), (4, 3));
    assert_eq!(
        s.d.presented_key("tcp/8443", addr("10.0.0.1:8443")),
        key("X")
    );
    assert_eq!(s.d.presented_key("tcp/8443", addr("10.0.0.2:8443")), None);
    assert_eq!(s.d.presented_key("cloudhub", addr(A)), None);
    assert_eq!(s.d.state("tcp/8443"), Some(TrustState::Healthy));
}

/// (what, limits edit, steps, window after, drop and eviction counters).
type BoundRow = (
    &'static str,
    fn(&mut DetectConfig),
    Vec<Step>,
    &'static str,
    [u64; 5],
);

#[test]
fn rule_memory_bounds_and_drop_counters() {
    // Counters: services, clients, servers, keys dropped, window entries evicted.
    let other_service = || {
        let mut c = conn(5.0, edge(5), A, Outcome::Established, vec![], "");
        c.service = "stream".into();
        Step::Conn(Box::new(c))
    };
    let rows: Vec<BoundRow> = vec![
        (
            "services",
            |c| c.limits.max_services = 1,
            vec![
                ok(1.0, 1, A, ""),
                other_service(),
                probe_chain(6.0, "10.0.0.1:10003", "X"),
            ],
            "hs 1=1/0/0 clients failing=0 ok=1 keys=[] servers=[A:1=1/0/0:-] failing=[]",
            [2, 0, 0, 0, 0],
        ),
        (
            "clients: a new client evicts the least recently seen of equal value; every \
             handshake counts",
            |c| c.limits.max_clients = 2,
            vec![
                ok(1.0, 1, A, ""),
                ok(2.0, 2, A, ""),
                Step::Flags("scope=- rotation=false saturated=false"),
                ok(3.0, 3, A, ""),
                Step::Flags("scope=- rotation=false saturated=true"),
                ok(4.0, 1, A, ""),
                tick(64.0),
                Step::Flags("scope=- rotation=false saturated=true"),
                tick(64.000001),
                Step::Flags("scope=- rotation=false saturated=false"),
                ok(64.5, 4, A, ""),
                ok(65.0, 5, A, ""),
            ],
            "hs 2=2/0/0 clients failing=0 ok=2 keys=[] servers=[A:2=2/0/0:-] failing=[]",
            [0, 2, 0, 0, 0],
        ),
        (
            "clients: one that failed after a success is kept over a more recent success",
            |c| c.limits.max_clients = 2,
            vec![
                ok(1.0, 1, A, ""),
                sealed(2.0, 1, A, BY_CLIENT),
                ok(3.0, 2, A, ""),
                ok(4.0, 3, A, ""),
            ],
            "hs 4=3/1/0 clients failing=1 ok=1 keys=[] servers=[A:4=3/1/0:-] \
             failing=[e1@00:00:02.000000]",
            [0, 1, 0, 0, 0],
        ),
        (
            "clients: a failing one never seen to succeed is kept over a success, an \
             undecided one goes first",
            |c| c.limits.max_clients = 3,
            vec![
                sealed(1.0, 1, A, BY_CLIENT),
                ok(2.0, 2, A, ""),
                other(3.0, 3, A),
                ok(4.0, 4, A, ""),
                ok(5.0, 5, A, ""),
            ],
            "hs 5=3/1/1 clients failing=1 ok=2 keys=[] servers=[A:5=3/1/1:-] \
             failing=[e1@00:00:01.000000]",
            [0, 2, 0, 0, 0],
        ),
        (
            "clients: among equals, the crowded prefix loses one first",
            |c| c.limits.max_clients = 3,
            vec![
                from(1.0, addr("10.9.0.1:1000")),
                from(2.0, edge(1)),
                from(3.0, edge(2)),
                from(4.0, edge(3)),
            ],
            "hs 4=0/4/0 clients failing=3 ok=0 keys=[] servers=[A:4=0/4/0:-] \
             failing=[10.9.0.1:0@00:00:01.000000,e2@00:00:03.000000,e3@00:00:04.000000]",
            [0, 1, 0, 0, 0],
        ),
        (
            "clients: an IPv6 /64 is a prefix of its own, apart from every IPv4 /24",
            |c| c.limits.max_clients = 3,
            vec![
                from(1.0, addr("0.0.0.1:1000")),
                from(2.0, addr("[::1]:1000")),
                from(3.0, addr("[::2]:1000")),
                from(4.0, addr("[::3]:1000")),
            ],
            "hs 4=0/4/0 clients failing=3 ok=0 keys=[] servers=[A:4=0/4/0:-] \
             failing=[0.0.0.1:0@00:00:01.000000,[::2]:0@00:00:03.000000,\
             [::3]:0@00:00:04.000000]",
            [0, 1, 0, 0, 0],
        ),
        (
            "clients: a prefix's crowd counts the clients it has now, not those gone",
            |c| c.limits.max_clients = 3,
            vec![
                from(1.0, addr("10.9.0.1:1000")),
                from(2.0, addr("10.9.0.2:1000")),
                tick(70.0),
                from(71.0, edge(1)),
                from(72.0, edge(2)),
                from(73.0, addr("10.9.0.3:1000")),
                from(74.0, edge(3)),
            ],
            "hs 4=0/4/0 clients failing=3 ok=0 keys=[] servers=[A:4=0/4/0:-] \
             failing=[10.9.0.3:0@00:01:13.000000,e2@00:01:12.000000,e3@00:01:14.000000]",
            [0, 1, 0, 0, 0],
        ),
        (
            "servers: a new address is dropped while every known one has handshakes in the window",
            |c| c.limits.max_servers = 2,
            vec![
                ok(1.0, 1, A, "X"),
                ok(2.0, 2, B, ""),
                ok(3.0, 3, C, ""),
                probe_chain(4.0, C, "Y"),
            ],
            "hs 2=2/0/0 clients failing=0 ok=2 keys=[X:1/0] servers=[A:1=1/0/0:X,B:1=1/0/0:-] \
             failing=[]",
            [0, 0, 2, 0, 0],
        ),
        (
            "servers: an idle address makes room, the one without a presented key first, then \
             the one that presented longest ago",
            |c| c.limits.max_servers = 2,
            vec![
                ok(1.0, 1, A, "X"),
                ok(2.0, 2, B, ""),
                tick(70.0),
                ok(71.0, 3, C, "Y"),
                tick(140.0),
                ok(141.0, 4, C, "Y"),
                ok(142.0, 5, B, ""),
            ],
            "hs 2=2/0/0 clients failing=0 ok=2 keys=[Y:1/0] servers=[B:1=1/0/0:-,C:1=1/0/0:Y] \
             failing=[]",
            [0, 0, 0, 0, 0],
        ),
        (
            "CA keys: the attribution is dropped, the handshake counts",
            |c| c.limits.max_ca_keys = 1,
            vec![ok(1.0, 1, A, "X"), ok(2.0, 2, B, "Y"), ok(3.0, 3, A, "X")],
            "hs 3=3/0/0 clients failing=0 ok=3 keys=[X:2/0] servers=[A:2=2/0/0:X,B:1=1/0/0:Y] \
             failing=[]",
            [0, 0, 0, 1, 0],
        ),
        (
            "window entries: the oldest handshake leaves the counts, its client stays",
            |c| c.limits.max_window_entries = 2,
            vec![
                ok(1.0, 1, A, ""),
                ok(2.0, 2, A, ""),
                ok(3.0, 3, A, ""),
                tick(61.5),
                ok(62.0, 4, A, ""),
            ],
            "hs 2=2/0/0 clients failing=0 ok=3 keys=[] servers=[A:2=2/0/0:-] failing=[]",
            [0, 0, 0, 0, 2],
        ),
    ];
    for (rule, edit, steps, window, dropped) in rows {
        let mut cfg = keys_at_once();
        edit(&mut cfg);
        let mut s = Script::new(cfg.clone());
        assert_eq!(s.d.config(), &cfg);
        s.run(rule, steps);
        assert_eq!(s.window(), window, "{rule}");
        let st = s.d.stats();
        assert_eq!(
            [
                st.services_dropped,
                st.clients_evicted,
                st.servers_dropped,
                st.ca_keys_dropped,
                st.window_entries_evicted
            ],
            dropped,
            "{rule}"
        );
    }
}

#[test]
fn rule_a_client_remembers_16_server_addresses() {
    // With more replicas allowed, a client's outcomes are kept for 16 addresses: a rejection by
    // a 17th is not split evidence, one by the 16th is.
    let server = |i: u16| format!("10.0.1.{}:10000", i);
    for (servers, split) in [(16u16, true), (17, false)] {
        let mut cfg = DetectConfig {
            split_min_clients: 1,
            ..Default::default()
        };
        cfg.limits.max_servers = 100;
        let mut steps: Vec<Step> = (1..servers)
            .map(|i| ok(f64::from(i) * 0.1, 1, &server(i), ""))
            .collect();
        steps.push(sealed(10.0, 1, &server(servers), BY_CLIENT));
        let mut s = Script::new(cfg);
        s.run("per-client servers", steps);
        let names: Vec<&str> = s.out.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            if split { vec!["ca_divergence"] } else { vec![] },
            "{servers}"
        );
    }
}

#[test]
fn rule_a_client_whose_latest_verdict_says_nothing_keeps_its_history() {
    // e1 succeeded on A, then failed for another reason: still worth more than e2, which never
    // reached a certificate decision. The window is full when e3 arrives: e2 goes, and e1's
    // success on A is still there when B rejects it (split evidence with one client).
    let mut cfg = DetectConfig {
        split_min_clients: 1,
        ..Default::default()
    };
    cfg.limits.max_clients = 2;
    for (history, split) in [("ok then other", true), ("other only", false)] {
        let first = if split {
            ok(1.0, 1, A, "")
        } else {
            other(1.0, 1, A)
        };
        let mut s = Script::new(cfg.clone());
        s.run(
            history,
            vec![
                first,
                other(2.0, 1, A),
                other(3.0, 2, A),
                ok(4.0, 3, C, ""),
                sealed(5.0, 1, B, BY_CLIENT),
            ],
        );
        let names: Vec<&str> = s.out.iter().map(|e| e.name()).collect();
        let want: &[&str] = if split { &["ca_divergence"] } else { &[] };
        assert_eq!(names, want, "{history}");
        // Without its history e1 went, and its rejection by B then evicted another.
        let evicted = if split { 1 } else { 2 };
        assert_eq!(s.d.stats().clients_evicted, evicted, "{history}");
    }
}

#[test]
fn events_are_counted_and_the_latest_kept() {
    let steps = || {
        vec![
            ok(1.0, 1, A, "X"),
            ok(2.0, 2, B, "Y"),
            sealed(3.0, 3, A, BY_CLIENT),
            sealed(4.0, 4, A, BY_CLIENT),
            sealed(5.0, 5, A, BY_CLIENT),
            ok(6.0, 3, A, ""),
            tick(21.0),
        ]
    };
    // divergence, collapse: two exit-worthy events, then a recovery (after the hold) that is not.
    for (max_recent, kept) in [(0usize, 0usize), (2, 2), (256, 3)] {
        let mut cfg = keys_at_once();
        cfg.limits.max_recent_events = max_recent;
        let mut s = Script::new(cfg);
        assert!(!s.d.exit_worthy_seen());
        s.run("events", steps());
        let names: Vec<&str> = s.out.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            ["ca_divergence", "trust_collapse", "trust_recovered"]
        );
        assert!(exit_worthy(&s.out[0]) && exit_worthy(&s.out[1]) && !exit_worthy(&s.out[2]));
        assert!(s.d.exit_worthy_seen(), "{max_recent}");
        assert_eq!(s.d.stats().events, 3);
        let recent = s.d.snapshot().recent_events;
        assert_eq!(recent, s.out[3 - kept..], "{max_recent}");
    }
    // Counted connections: judged, ignored (incomplete), excluded.
    let mut s = Script::new(keys_at_once());
    let mut incomplete = conn(1.0, edge(1), A, Outcome::Incomplete, vec![], "");
    incomplete.evidence = "capture ended".into();
    s.run(
        "counted",
        vec![Step::Conn(Box::new(incomplete)), ok(2.0, 2, A, "")],
    );
    let st = s.d.stats();
    assert_eq!(
        (st.connections, st.connections_ignored, st.events),
        (2, 1, 0)
    );
    assert!(!s.d.exit_worthy_seen());
    assert!(s.d.snapshot().ca_consistent());
    assert!(s.d.reference().is_empty());
}

#[test]
fn snapshot_consistency_follows_divergence() {
    let mut s = Script::new(keys_at_once());
    s.run("one key", vec![ok(1.0, 1, A, "X"), ok(2.0, 2, B, "X")]);
    let snap = s.d.snapshot();
    assert!(!snap.inconsistent && snap.ca_consistent());
    s.run("two keys", vec![ok(3.0, 3, B, "Y")]);
    let snap = s.d.snapshot();
    assert!(!snap.inconsistent, "no reference");
    assert!(!snap.ca_consistent(), "replicas diverge");
}
