//! The collapse rule, the trust state machine and the window it reads: events in, state and
//! events out. A deliberate rule change is a row edit.

use super::script::*;
use crate::detect::{DetectConfig, TrustState};
use crate::flow::Side::{Client as BY_CLIENT, Server as BY_SERVER};

use TrustState::{Collapsed, Degraded, Healthy, Recovered};

fn state(s: TrustState) -> Step {
    Step::State(Some(s))
}

/// Edge `n` fails on certificate grounds (TLS 1.3, the client aborts) at each time of `times`.
fn failing(n: u8, times: impl IntoIterator<Item = f64>) -> Vec<Step> {
    times
        .into_iter()
        .map(|t| sealed(t, n, A, BY_CLIENT))
        .collect()
}

#[test]
fn rule_collapse_k_distinct_clients_and_share_r() {
    let cfg = DetectConfig::default();
    let rows: Vec<(&str, Vec<Step>, &[&str])> = vec![
        (
            "a failing share of exactly R collapses",
            vec![
                ok(1.0, 1, A, ""),
                ok(2.0, 2, A, ""),
                ok(3.0, 3, A, ""),
                sealed(10.0, 4, A, BY_SERVER),
                sealed(11.0, 5, A, BY_SERVER),
                state(Degraded),
                sealed(12.0, 6, A, BY_SERVER),
                state(Collapsed),
            ],
            &[
                "@12 cloudhub trust_collapse scope=total prev=- cur=- side=server failing=3 ok=3 share=0.50 \
               clients=[e4,e5,e6] handshakes=6 cert_failures=3 first=10 latency=2 servers=[A]",
            ],
        ),
        (
            "K failing clients at a share from P to R are a partial collapse; the scope turns \
             total at R without a second event",
            vec![
                ok(1.0, 1, A, ""),
                ok(2.0, 2, A, ""),
                ok(3.0, 3, A, ""),
                ok(4.0, 4, A, ""),
                sealed(10.0, 5, A, BY_SERVER),
                sealed(11.0, 6, A, BY_SERVER),
                state(Degraded),
                Step::Flags("scope=- rotation=false saturated=false"),
                sealed(12.0, 7, A, BY_SERVER),
                state(Collapsed),
                Step::Flags("scope=partial rotation=false saturated=false"),
                sealed(13.0, 8, A, BY_SERVER),
                Step::Flags("scope=total rotation=false saturated=false"),
            ],
            &[
                "@12 cloudhub trust_collapse scope=partial prev=- cur=- side=server failing=3 ok=4 \
                 share=0.43 clients=[e5,e6,e7] handshakes=7 cert_failures=3 first=10 latency=2 \
                 servers=[A]",
            ],
        ),
        (
            "a failing share of exactly P is a partial collapse",
            {
                let mut v: Vec<Step> = (1..=12).map(|n| ok(f64::from(n) * 0.1, n, A, "")).collect();
                v.extend((13..=15).map(|n| sealed(f64::from(n) - 3.0, n, A, BY_SERVER)));
                v
            },
            &[
                "@12 cloudhub trust_collapse scope=partial prev=- cur=- side=server failing=3 \
                 ok=12 share=0.20 clients=[e13,e14,e15] handshakes=15 cert_failures=3 first=10 \
                 latency=2 servers=[A]",
            ],
        ),
        (
            "K failing clients below P stay degraded",
            {
                let mut v: Vec<Step> = (1..=13).map(|n| ok(f64::from(n) * 0.1, n, A, "")).collect();
                v.extend((14..=16).map(|n| sealed(f64::from(n) - 4.0, n, A, BY_SERVER)));
                v.push(tick(30.0));
                v.push(state(Degraded));
                v
            },
            &[],
        ),
        (
            "a client that succeeds again no longer counts as failing",
            vec![
                sealed(1.0, 1, A, BY_CLIENT),
                sealed(2.0, 2, A, BY_CLIENT),
                ok(3.0, 1, A, ""),
                sealed(4.0, 3, A, BY_CLIENT),
                state(Degraded),
                sealed(5.0, 4, A, BY_CLIENT),
            ],
            &[
                "@5 cloudhub trust_collapse scope=total prev=- cur=- side=client failing=3 ok=1 share=0.75 \
               clients=[e2,e3,e4] handshakes=5 cert_failures=4 first=2 latency=3 servers=[A]",
            ],
        ),
        (
            "the collapse names the CA of the last success and the key now presented; handshakes \
             that hide them change neither",
            vec![
                ok(1.0, 1, A, "X"),
                ok(2.0, 2, B, ""),
                refuses(3.0, 3, A, "Y"),
                sealed(4.0, 4, B, BY_CLIENT),
                sealed(5.0, 5, B, BY_CLIENT),
            ],
            &[
                "@3 cloudhub ca_changed server=A X->Y source=passive",
                "@5 cloudhub trust_collapse scope=total prev=X cur=Y side=client failing=3 ok=2 share=0.60 \
                 clients=[e3,e4,e5] handshakes=5 cert_failures=3 first=3 latency=2 servers=[A,B]",
            ],
        ),
        (
            "rejections from both sides, on two servers",
            vec![
                ok(1.0, 1, B, ""),
                refuses(2.0, 2, A, ""),
                refused(3.0, 3, C, ""),
                refused(4.0, 4, C, ""),
            ],
            &[
                "@4 cloudhub trust_collapse scope=total prev=- cur=- side=both failing=3 ok=1 share=0.75 \
               clients=[e2,e3,e4] handshakes=4 cert_failures=3 first=2 latency=2 servers=[A,C]",
            ],
        ),
    ];
    for (rule, steps, want) in rows {
        Script::check(rule, &cfg, steps, want);
    }
    // The clients named: earliest failure first, at most `max_listed_clients`.
    let mut cfg = DetectConfig::default();
    cfg.limits.max_listed_clients = 2;
    Script::check(
        "listed clients are bounded",
        &cfg,
        vec![
            sealed(1.0, 5, A, BY_CLIENT),
            sealed(2.0, 3, A, BY_CLIENT),
            sealed(3.0, 4, A, BY_CLIENT),
        ],
        &[
            "@3 cloudhub trust_collapse scope=total prev=- cur=- side=client failing=3 ok=0 share=1.00 \
           clients=[e5,e3] handshakes=3 cert_failures=3 first=1 latency=2 servers=[A]",
        ],
    );
}

#[test]
fn rule_collapse_is_dated_by_failure_runs_within_one_window() {
    let cfg = DetectConfig::default();
    // A client failing for longer than one window (misconfigured) does not date the collapse.
    let mut long = failing(9, [0.0, 20.0, 40.0, 60.0, 80.0]);
    long.extend(failing(1, [95.0]));
    long.extend(failing(2, [97.0]));
    // A run that began exactly one window before the detection still dates it.
    let mut edge = failing(9, [37.0, 57.0, 77.0]);
    edge.extend(failing(1, [95.0]));
    edge.extend(failing(2, [97.0]));
    // Every run began more than a window ago (the share reached P only when the successes
    // expired: 3 failing of 16 is below it): the earliest dates it.
    let mut old: Vec<Step> = Vec::new();
    for k in 0..4 {
        let t = 20.0 * f64::from(k);
        old.extend((4..=16).map(|n| ok(t + 0.01 * f64::from(n), n, A, "")));
    }
    for n in 1..=3u8 {
        old.extend(failing(
            n,
            (0..7).map(|k| f64::from(n) + 20.0 * f64::from(k)),
        ));
    }
    old.sort_by(|a, b| time_of(a).total_cmp(&time_of(b)));
    let rows: Vec<(&str, Vec<Step>, &[&str])> = vec![
        (
            "a client failing for longer than one window",
            long,
            &[
                "@97 cloudhub trust_collapse scope=total prev=- cur=- side=client failing=3 ok=0 share=1.00 \
               clients=[e9,e1,e2] handshakes=5 cert_failures=5 first=95 latency=2 servers=[A]",
            ],
        ),
        (
            "a run that began exactly one window before",
            edge,
            &[
                "@97 cloudhub trust_collapse scope=total prev=- cur=- side=client failing=3 ok=0 share=1.00 \
               clients=[e9,e1,e2] handshakes=5 cert_failures=5 first=37 latency=60 servers=[A]",
            ],
        ),
        (
            "every run older than one window",
            old,
            &[
                "@121 cloudhub trust_collapse scope=total prev=- cur=- side=client failing=3 ok=0 share=1.00 \
               clients=[e1,e2,e3] handshakes=10 cert_failures=10 first=1 latency=120 servers=[A]",
            ],
        ),
    ];
    for (rule, steps, want) in rows {
        Script::check(rule, &cfg, steps, want);
    }
}

fn time_of(s: &Step) -> f64 {
    match s {
        Step::Conn(c) => c.end.secs_f64(),
        Step::Tick(t) | Step::Probe(_, t) | Step::ExcludeProbe(_, t) => *t,
        _ => 0.0,
    }
}

#[test]
fn rule_probe_key_credits_tls13_handshakes_within_one_window() {
    let cfg = DetectConfig::default();
    let rows: Vec<(&str, Vec<Step>, &[&str])> = vec![
        (
            "a success exactly one window after the probe is credited to its key",
            vec![
                probe_chain(0.0, A, "X"),
                ok(60.0, 1, A, ""),
                probe_chain(61.0, A, "Y"),
                sealed(62.0, 2, A, BY_CLIENT),
                sealed(63.0, 3, A, BY_CLIENT),
                sealed(64.0, 4, A, BY_CLIENT),
                Step::Window(
                    "hs 4=1/3/0 clients failing=3 ok=1 keys=[X:1/0,Y:0/3] servers=[A:4=1/3/0:Y] \
                     failing=[e2@00:01:02.000000,e3@00:01:03.000000,e4@00:01:04.000000]",
                ),
            ],
            &[
                "@61 cloudhub ca_changed server=A X->Y source=probe_chain",
                "@64 cloudhub trust_collapse scope=total prev=X cur=Y side=client failing=3 ok=1 share=0.75 \
                 clients=[e2,e3,e4] handshakes=4 cert_failures=3 first=62 latency=2 servers=[A]",
            ],
        ),
        (
            "later, the probe's key is stale: not credited",
            vec![
                probe_chain(0.0, A, "X"),
                ok(60.000001, 1, A, ""),
                Step::Window(
                    "hs 1=1/0/0 clients failing=0 ok=1 keys=[] servers=[A:1=1/0/0:X] failing=[]",
                ),
            ],
            &[],
        ),
        (
            "a stale probe still names the key the failing server presents",
            vec![
                probe_chain(0.0, A, "Y"),
                sealed(100.0, 1, A, BY_CLIENT),
                sealed(101.0, 2, A, BY_CLIENT),
                sealed(102.0, 3, A, BY_CLIENT),
                Step::Window(
                    "hs 3=0/3/0 clients failing=3 ok=0 keys=[] servers=[A:3=0/3/0:Y] \
                     failing=[e1@00:01:40.000000,e2@00:01:41.000000,e3@00:01:42.000000]",
                ),
            ],
            &[
                "@102 cloudhub trust_collapse scope=total prev=- cur=Y side=client failing=3 ok=0 share=1.00 \
               clients=[e1,e2,e3] handshakes=3 cert_failures=3 first=100 latency=2 servers=[A]",
            ],
        ),
    ];
    for (rule, steps, want) in rows {
        Script::check(rule, &cfg, steps, want);
    }
}

/// e1, e2, e3 fail at 1, 2, 3 s (TLS 1.3, the server rejects): a total collapse at 3 s.
fn collapse_at_3() -> Vec<Step> {
    vec![
        sealed(1.0, 1, A, BY_SERVER),
        sealed(2.0, 2, A, BY_SERVER),
        sealed(3.0, 3, A, BY_SERVER),
        state(Collapsed),
    ]
}

const COLLAPSE_AT_3: &str = "@3 cloudhub trust_collapse scope=total prev=- cur=- side=server \
    failing=3 ok=0 share=1.00 clients=[e1,e2,e3] handshakes=3 cert_failures=3 first=1 latency=2 \
    servers=[A]";

#[test]
fn rule_recovery_after_fewer_than_k_fail_for_the_recovery_hold() {
    let hold = DetectConfig::default().recovery_hold_us;
    assert_eq!(hold, 15_000_000, "the rows below count on a 15 s hold");
    let then = |mut steps: Vec<Step>| {
        let mut v = collapse_at_3();
        v.append(&mut steps);
        v
    };
    let rows: Vec<(&str, i64, Vec<Step>, Vec<&str>)> = vec![
        (
            "one success leaves 2 < K failing: recovered exactly one hold later, not before",
            hold,
            then(vec![
                ok(10.0, 1, A, "X"),
                tick(24.999_999),
                state(Collapsed),
                tick(25.0),
                state(Recovered),
                Step::Flags("scope=- rotation=false saturated=false"),
            ]),
            vec![
                COLLAPSE_AT_3,
                "@25 cloudhub trust_recovered collapsed_at=3 ca=X prev=- ok=1 failing=2",
            ],
        ),
        (
            "K failing again restart the hold",
            hold,
            then(vec![
                ok(10.0, 1, A, ""),
                sealed(20.0, 1, A, BY_SERVER),
                ok(21.0, 1, A, ""),
                tick(35.999_999),
                state(Collapsed),
                tick(36.0),
                state(Recovered),
            ]),
            vec![
                COLLAPSE_AT_3,
                "@36 cloudhub trust_recovered collapsed_at=3 ca=- prev=- ok=1 failing=2",
            ],
        ),
        (
            "K failing hold the collapse however many others succeed; its scope follows the share",
            hold,
            then(vec![
                ok(10.0, 4, A, ""),
                ok(11.0, 5, A, ""),
                ok(12.0, 6, A, ""),
                Step::Flags("scope=total rotation=false saturated=false"),
                ok(13.0, 7, A, ""),
                Step::Flags("scope=partial rotation=false saturated=false"),
                ok(14.0, 8, A, ""),
                ok(15.0, 9, A, ""),
                ok(16.0, 10, A, ""),
                ok(17.0, 11, A, ""),
                ok(18.0, 12, A, ""),
                ok(19.0, 13, A, ""),
                ok(19.5, 14, A, ""),
                ok(19.7, 15, A, ""),
                ok(19.9, 16, A, ""),
                tick(50.0),
                state(Collapsed),
                Step::Flags("scope=partial rotation=false saturated=false"),
            ]),
            vec![COLLAPSE_AT_3],
        ),
        (
            "silence recovers too: the failures age out of the window, then the hold",
            hold,
            then(vec![
                tick(61.0),
                state(Collapsed),
                tick(61.000_001),
                state(Collapsed),
                tick(76.000_000),
                state(Collapsed),
                tick(76.000_001),
                state(Recovered),
                sealed(80.0, 5, A, BY_SERVER),
                state(Degraded),
            ]),
            vec![
                COLLAPSE_AT_3,
                "@76.000001 cloudhub trust_recovered collapsed_at=3 ca=- prev=- ok=0 failing=0",
            ],
        ),
        (
            "the recovery names the CA before the collapse and the one that works now",
            hold,
            vec![
                ok(0.5, 9, A, "X"),
                refuses(1.0, 1, A, "Y"),
                refuses(2.0, 2, A, "Y"),
                refuses(3.0, 3, A, "Y"),
                ok(10.0, 1, A, "Z"),
                ok(11.0, 2, A, "Z"),
                tick(24.0),
                state(Collapsed),
                tick(25.0),
            ],
            vec![
                "@1 cloudhub ca_changed server=A X->Y source=passive",
                "@3 cloudhub trust_collapse scope=total prev=X cur=Y side=client failing=3 ok=1 \
                 share=0.75 clients=[e1,e2,e3] handshakes=4 cert_failures=3 first=1 latency=2 \
                 servers=[A]",
                "@10 cloudhub ca_changed server=A Y->Z source=passive",
                "@25 cloudhub trust_recovered collapsed_at=3 ca=Z prev=X ok=3 failing=1",
            ],
        ),
        (
            "with no hold, the first evaluation with fewer than K failing recovers; K failing \
             again are a new collapse at once",
            0,
            then(vec![
                ok(10.0, 1, A, ""),
                state(Recovered),
                sealed(11.0, 1, A, BY_SERVER),
                state(Collapsed),
            ]),
            vec![
                COLLAPSE_AT_3,
                "@10 cloudhub trust_recovered collapsed_at=3 ca=- prev=- ok=1 failing=2",
                "@11 cloudhub trust_collapse scope=total prev=- cur=- side=server failing=3 ok=0 \
                 share=1.00 clients=[e2,e3,e1] handshakes=5 cert_failures=4 first=2 latency=9 \
                 servers=[A]",
            ],
        ),
    ];
    for (rule, recovery_hold_us, steps, want) in rows {
        let cfg = DetectConfig {
            recovery_hold_us,
            ..Default::default()
        };
        Script::check(rule, &cfg, steps, &want);
    }
}

#[test]
fn rule_collapse_hold_and_probe_grace() {
    // e1..e4 succeed; e1, e2, e3 fail at 5, 5.2, 5.4 (3 of 4: total from 5.4 on).
    let failures = |take_request: bool| {
        let mut v: Vec<Step> = (1..=4).map(|n| ok(f64::from(n) * 0.5, n, A, "X")).collect();
        v.push(sealed(5.0, 1, A, BY_CLIENT));
        if take_request {
            v.push(Step::TakeProbeRequest(true));
            v.push(Step::TakeProbeRequest(false));
        }
        v.push(sealed(5.2, 2, A, BY_CLIENT));
        v.push(sealed(5.4, 3, A, BY_CLIENT));
        v
    };
    let then = |take_request: bool, mut steps: Vec<Step>| {
        let mut v = failures(take_request);
        v.append(&mut steps);
        v
    };
    let probe_started = |t: f64, elapsed_ms: u64| {
        let mut p = probe_chain(t, A, "Y");
        if let Step::Probe(r, _) = &mut p {
            r.elapsed_ms = elapsed_ms;
        }
        p
    };
    // Collapsed at `at`, `latency` after the first failure (5 s), naming `cur`.
    let collapse = |at: &str, cur: &str, latency: &str| {
        format!(
            "@{at} cloudhub trust_collapse scope=total prev=X cur={cur} side=client failing=3 \
             ok=1 share=0.75 clients=[e1,e2,e3] handshakes=7 cert_failures=3 first=5 \
             latency={latency} servers=[A]"
        )
    };
    let hold = 2_000_000;
    let rows: Vec<(&str, i64, Vec<Step>, Vec<String>)> = vec![
        (
            "no probe request taken, no hold: at once",
            0,
            failures(false),
            vec![collapse("5.4", "X", "0.4")],
        ),
        (
            "the request taken: the collapse waits one probe grace for the answer, then goes \
             ahead without it",
            0,
            then(
                true,
                vec![
                    tick(5.999_999),
                    state(Degraded),
                    tick(6.0),
                    state(Collapsed),
                ],
            ),
            vec![collapse("6", "X", "1")],
        ),
        (
            "a probe that started after the request answers: no more waiting, and the collapse \
             names the key it saw",
            0,
            then(
                true,
                vec![probe_started(5.5, 3), state(Degraded), tick(5.6)],
            ),
            vec![
                "@5.5 cloudhub ca_changed server=A X->Y source=probe_chain".into(),
                collapse("5.6", "Y", "0.6"),
            ],
        ),
        (
            "a probe that started exactly at the request answers it",
            0,
            then(true, vec![probe_started(5.5, 500), tick(5.6)]),
            vec![
                "@5.5 cloudhub ca_changed server=A X->Y source=probe_chain".into(),
                collapse("5.6", "Y", "0.6"),
            ],
        ),
        (
            "a probe that started before the request does not",
            0,
            then(
                true,
                vec![
                    probe_started(5.5, 501),
                    tick(5.6),
                    state(Degraded),
                    tick(6.0),
                ],
            ),
            vec![
                "@5.5 cloudhub ca_changed server=A X->Y source=probe_chain".into(),
                collapse("6", "Y", "1"),
            ],
        ),
        (
            "with --collapse-hold the condition must hold that long first",
            hold,
            then(
                false,
                vec![
                    tick(7.399_999),
                    state(Degraded),
                    tick(7.4),
                    state(Collapsed),
                ],
            ),
            vec![collapse("7.4", "X", "2.4")],
        ),
        (
            "a condition that lapses restarts the hold",
            hold,
            then(
                false,
                vec![
                    ok(6.0, 1, A, "X"),
                    sealed(7.0, 1, A, BY_CLIENT),
                    tick(8.999_999),
                    state(Degraded),
                    tick(9.0),
                ],
            ),
            vec![
                "@9 cloudhub trust_collapse scope=total prev=X cur=X side=client failing=3 ok=1 \
                 share=0.75 clients=[e2,e3,e1] handshakes=9 cert_failures=4 first=5.2 \
                 latency=3.8 servers=[A]"
                    .into(),
            ],
        ),
    ];
    for (rule, collapse_hold_us, steps, want) in rows {
        let cfg = DetectConfig {
            collapse_hold_us,
            ..Default::default()
        };
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        Script::check(rule, &cfg, steps, &want);
    }
}

#[test]
fn rule_window_latest_verdict_per_client_and_exact_tallies() {
    let cfg = DetectConfig::default();
    let rows: Vec<(&str, Vec<Step>, &[&str])> = vec![
        (
            "a client's latest handshake by time decides, not the order records arrive in",
            vec![
                ok(10.0, 1, A, ""),
                refuses(5.0, 1, A, ""),
                state(Healthy),
                Step::Window(
                    "hs 2=1/1/0 clients failing=0 ok=1 keys=[] servers=[A:2=1/1/0:-] failing=[]",
                ),
            ],
            &[],
        ),
        (
            "a failure run starts at the first failure after a success",
            vec![
                sealed(1.0, 1, A, BY_CLIENT),
                sealed(2.0, 1, A, BY_CLIENT),
                Step::Window(
                    "hs 2=0/2/0 clients failing=1 ok=0 keys=[] servers=[A:2=0/2/0:-] \
                     failing=[e1@00:00:01.000000]",
                ),
                ok(3.0, 1, A, ""),
                sealed(4.0, 1, A, BY_CLIENT),
                sealed(5.0, 1, A, BY_CLIENT),
                Step::Window(
                    "hs 5=1/4/0 clients failing=1 ok=0 keys=[] servers=[A:5=1/4/0:-] \
                     failing=[e1@00:00:04.000000]",
                ),
            ],
            &[],
        ),
        (
            "expiry keeps every tally exact; an entry exactly one window old is still in",
            vec![
                ok(1.0, 1, A, "X"),
                ok(2.0, 1, B, "X"),
                sealed(3.0, 2, A, BY_CLIENT),
                other(4.0, 3, B),
                Step::Window(
                    "hs 4=2/1/1 clients failing=1 ok=1 keys=[X:2/1] \
                     servers=[A:2=1/1/0:X,B:2=1/0/1:X] failing=[e2@00:00:03.000000]",
                ),
                tick(61.0),
                state(Degraded),
                Step::Window(
                    "hs 4=2/1/1 clients failing=1 ok=1 keys=[X:2/1] \
                     servers=[A:2=1/1/0:X,B:2=1/0/1:X] failing=[e2@00:00:03.000000]",
                ),
                tick(61.5),
                Step::Window(
                    "hs 3=1/1/1 clients failing=1 ok=1 keys=[X:1/1] \
                     servers=[A:1=0/1/0:X,B:2=1/0/1:X] failing=[e2@00:00:03.000000]",
                ),
                tick(62.5),
                Step::Window(
                    "hs 2=0/1/1 clients failing=1 ok=0 keys=[X:0/1] \
                     servers=[A:1=0/1/0:X,B:1=0/0/1:X] failing=[e2@00:00:03.000000]",
                ),
                tick(63.5),
                state(Healthy),
                tick(100.0),
                Step::Window(
                    "hs 0=0/0/0 clients failing=0 ok=0 keys=[] \
                     servers=[A:0=0/0/0:X,B:0=0/0/0:X] failing=[]",
                ),
            ],
            &[],
        ),
    ];
    for (rule, steps, want) in rows {
        Script::check(rule, &cfg, steps, want);
    }
}

#[test]
fn rule_probe_request_once_per_failure_episode() {
    let mut s = Script::new(DetectConfig::default());
    assert!(!s.d.take_probe_request(), "nothing failed yet");
    s.run("healthy", vec![ok(1.0, 1, A, ""), other(2.0, 2, A)]);
    assert!(!s.d.take_probe_request(), "not a certificate failure");
    s.run("first failure", vec![sealed(3.0, 1, A, BY_CLIENT)]);
    assert!(s.d.take_probe_request(), "failures started: probe");
    assert!(!s.d.take_probe_request(), "once");
    s.run("still degraded", vec![sealed(4.0, 2, A, BY_CLIENT)]);
    assert!(!s.d.take_probe_request(), "same episode");
    // Another service starts failing while cloudhub is quiet.
    let mut c = conn(
        5.0,
        edge(7),
        "10.0.0.9:10002",
        crate::handshake::Outcome::Failed,
        vec![],
        "",
    );
    c.service = "certsvc".into();
    c.alerts = vec![crate::handshake::Alert::Encrypted {
        from: BY_SERVER,
        ts: ts(5.0),
    }];
    s.run("certsvc", vec![Step::Conn(Box::new(c))]);
    assert!(s.d.take_probe_request(), "any service");
    assert!(!s.d.take_probe_request());
    // Back to healthy, then a new episode.
    s.run(
        "new episode",
        vec![tick(70.0), state(Healthy), sealed(71.0, 3, A, BY_CLIENT)],
    );
    assert!(s.d.take_probe_request(), "a new episode probes again");
}
