//! Replicas that disagree: presented keys, alternation on one address, the outcome split, and
//! which services are replica sets. Events in, state and events out.

use super::script::*;
use crate::detect::DetectConfig;
use crate::flow::Side::Client as BY_CLIENT;

/// A connection of a service found by content (`--any-port`): port 8443, not configured.
fn any_port(t: f64, n: u8, server_ip: u8, ca: &str) -> Step {
    let server = format!("10.0.0.{server_ip}:8443");
    let mut c = conn(
        t,
        edge(n),
        &server,
        crate::handshake::Outcome::Established,
        vec![],
        ca,
    );
    c.service = "tcp/8443".into();
    Step::Conn(Box::new(c))
}

/// `n` successes on `server` with key `ca`, one per edge `first..first+n`, one second apart
/// from `t`.
fn oks(t: f64, first: u8, n: u8, server: &str, ca: &str) -> Vec<Step> {
    (0..n)
        .map(|i| ok(t + f64::from(i), first + i, server, ca))
        .collect()
}

fn check(cfg: &DetectConfig, rows: Vec<(&str, Vec<Step>, &[&str])>) {
    for (rule, steps, want) in rows {
        Script::check(rule, cfg, steps, want);
    }
}

#[test]
fn rule_divergence_by_presented_keys() {
    let mut agree_again = vec![
        ok(1.0, 1, A, "X"),
        ok(2.0, 2, B, "Y"),
        Step::Divergent(&["X", "Y"]),
        ok(3.0, 3, B, "X"),
        Step::Divergent(&["X", "Y"]),
    ];
    agree_again.extend([
        ok(30.0, 1, A, "X"),
        ok(31.0, 3, B, "X"),
        ok(55.0, 1, A, "X"),
        ok(56.0, 3, B, "X"),
        tick(62.0),
        Step::Divergent(&["X", "Y"]),
        tick(62.000001),
        Step::Divergent(&[]),
        ok(70.0, 2, B, "Y"),
        Step::Divergent(&["X", "Y"]),
    ]);
    check(
        &keys_at_once(),
        vec![
            (
                "cleared once the replicas agree and the replaced key left the window; reported \
                 again when they differ again",
                agree_again,
                &[
                    "@2 cloudhub ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                     replicas=[A:X/passive hs=1/0 clients=1/0,B:Y/passive hs=1/0 clients=1/0]",
                    "@3 cloudhub ca_changed server=B Y->X source=passive",
                    "@70 cloudhub ca_changed server=B X->Y source=passive",
                    "@70 cloudhub ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                     replicas=[A:X/passive hs=2/0 clients=1/0,B:Y/passive hs=3/0 clients=2/0]",
                ],
            ),
            (
                "the same CA by certificate or by key is not a divergence",
                vec![
                    probe_ca(1.0, A, "X", "s1"),
                    ok(2.0, 1, B, "X"),
                    probe_ca(3.0, C, "Y", "s1"),
                    Step::Divergent(&[]),
                    probe_ca(4.0, C, "Z", "s3"),
                ],
                &[
                    "@4 cloudhub ca_changed server=C Y->Z source=probe_ca",
                    "@4 cloudhub ca_divergence basis=presented_keys keys=[X,Z] split=0 \
                     replicas=[A:X/probe_ca hs=0/0 clients=0/0,B:X/passive hs=1/0 clients=1/0,\
                     C:Z/probe_ca hs=0/0 clients=0/0]",
                ],
            ),
            (
                "the replicas' clients: distinct ones with a success / a rejection in the window",
                vec![
                    ok(1.0, 2, A, ""),
                    ok(1.5, 1, B, ""),
                    sealed(10.0, 1, B, BY_CLIENT),
                    ok(20.0, 1, A, ""),
                    ok(30.0, 2, A, ""),
                    sealed(40.0, 3, B, BY_CLIENT),
                    ok(41.0, 3, B, ""),
                    tick(62.0),
                    probe_chain(62.0, A, "X"),
                    probe_chain(63.0, B, "Y"),
                ],
                &[
                    "@63 cloudhub ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                   replicas=[A:X/probe_chain hs=2/0 clients=2/0,B:Y/probe_chain hs=1/2 \
                   clients=1/2]",
                ],
            ),
            (
                "a stale key is not compared",
                vec![ok(1.0, 1, A, "X"), ok(61.000001, 2, B, "Y")],
                &[],
            ),
            (
                "a key seen exactly one window ago is",
                vec![ok(1.0, 1, A, "X"), ok(61.0, 2, B, "Y")],
                &[
                    "@61 cloudhub ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                   replicas=[A:X/passive hs=1/0 clients=1/0,B:Y/passive hs=1/0 clients=1/0]",
                ],
            ),
        ],
    );
}

#[test]
fn rule_only_replica_sets_diverge() {
    check(
        &keys_at_once(),
        vec![
            (
                "servers of a service found by content are unrelated",
                vec![any_port(1.0, 1, 1, "X"), any_port(2.0, 2, 2, "Y")],
                &[],
            ),
            (
                "probed targets are replicas, whatever their port",
                vec![
                    probe_chain(1.0, "10.0.0.1:8443", "X"),
                    probe_chain(2.0, "10.0.0.2:8443", "Y"),
                ],
                &[
                    "@2 tcp/8443 ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                   replicas=[10.0.0.1:8443:X/probe_chain hs=0/0 clients=0/0,\
                   10.0.0.2:8443:Y/probe_chain hs=0/0 clients=0/0]",
                ],
            ),
        ],
    );
}

#[test]
fn rule_alternation_on_one_address_is_divergence_a_sequence_of_keys_is_not() {
    let keys = |ks: &[&str]| -> Vec<Step> {
        ks.iter()
            .zip(1u8..)
            .map(|(k, i)| ok(f64::from(i), i, A, k))
            .collect()
    };
    check(
        &keys_at_once(),
        vec![
            (
                "A→B→A within the window: alternation, reported once per key pair",
                keys(&["X", "Y", "X", "Y", "X"]),
                &[
                    "@2 cloudhub ca_changed server=A X->Y source=passive",
                    "@3 cloudhub ca_divergence basis=alternating keys=[X,Y] split=0 \
                     replicas=[A:X/passive hs=3/0 clients=3/0]",
                ],
            ),
            (
                "after an alternation, a third key, then the second again: alternation again",
                keys(&["X", "Y", "X", "Z", "Y"]),
                &[
                    "@2 cloudhub ca_changed server=A X->Y source=passive",
                    "@3 cloudhub ca_divergence basis=alternating keys=[X,Y] split=0 \
                     replicas=[A:X/passive hs=3/0 clients=3/0]",
                    "@4 cloudhub ca_changed server=A X->Z source=passive",
                    "@5 cloudhub ca_divergence basis=alternating keys=[Y,Z] split=0 \
                     replicas=[A:Y/passive hs=5/0 clients=5/0]",
                ],
            ),
            (
                "A→B→C: two changes",
                keys(&["X", "Y", "Z"]),
                &[
                    "@2 cloudhub ca_changed server=A X->Y source=passive",
                    "@3 cloudhub ca_changed server=A Y->Z source=passive",
                ],
            ),
            (
                "back to a key last seen exactly one window ago: alternation",
                vec![
                    ok(10.0, 1, A, "X"),
                    ok(20.0, 2, A, "Y"),
                    ok(70.0, 3, A, "X"),
                ],
                &[
                    "@20 cloudhub ca_changed server=A X->Y source=passive",
                    "@70 cloudhub ca_divergence basis=alternating keys=[X,Y] split=0 \
                     replicas=[A:X/passive hs=3/0 clients=3/0]",
                ],
            ),
            (
                "back to a key last seen longer ago: a change",
                vec![
                    ok(10.0, 1, A, "X"),
                    ok(20.0, 2, A, "Y"),
                    ok(70.000001, 3, A, "X"),
                ],
                &[
                    "@20 cloudhub ca_changed server=A X->Y source=passive",
                    "@70.000001 cloudhub ca_changed server=A Y->X source=passive",
                ],
            ),
            (
                "four replaced keys are remembered",
                keys(&["X", "Y", "Z", "W", "V", "X"]),
                &[
                    "@2 cloudhub ca_changed server=A X->Y source=passive",
                    "@3 cloudhub ca_changed server=A Y->Z source=passive",
                    "@4 cloudhub ca_changed server=A Z->W source=passive",
                    "@5 cloudhub ca_changed server=A W->V source=passive",
                    "@6 cloudhub ca_divergence basis=alternating keys=[X,V] split=0 \
                     replicas=[A:X/passive hs=6/0 clients=6/0]",
                ],
            ),
            (
                "not five",
                keys(&["X", "Y", "Z", "W", "V", "U", "X"]),
                &[
                    "@2 cloudhub ca_changed server=A X->Y source=passive",
                    "@3 cloudhub ca_changed server=A Y->Z source=passive",
                    "@4 cloudhub ca_changed server=A Z->W source=passive",
                    "@5 cloudhub ca_changed server=A W->V source=passive",
                    "@6 cloudhub ca_changed server=A V->U source=passive",
                    "@7 cloudhub ca_changed server=A U->X source=passive",
                ],
            ),
        ],
    );
}

/// Edges 6 to 9 fine on C (so no collapse); 1 and 2 rejected by A and B; 4 and 5 fine on both;
/// 10 and 11 ok and rejected on A; then edge 3 is the one split client (ok on A, rejected by B).
fn everywhere() -> Vec<Step> {
    let mut v = Vec::new();
    let mut t = 0.0;
    let mut next = || {
        t += 1.0;
        t
    };
    for n in 6..=9 {
        v.push(ok(next(), n, C, ""));
    }
    for n in [1, 2] {
        v.push(sealed(next(), n, A, BY_CLIENT));
        v.push(sealed(next(), n, B, BY_CLIENT));
    }
    for n in [4, 5] {
        v.push(ok(next(), n, A, ""));
        v.push(ok(next(), n, B, ""));
    }
    for n in [10, 11] {
        v.push(ok(next(), n, A, ""));
        v.push(sealed(next(), n, A, BY_CLIENT));
    }
    v.push(ok(next(), 3, A, ""));
    v.push(sealed(next(), 3, B, BY_CLIENT));
    v
}

#[test]
fn rule_outcome_split_pairs_clients_ok_on_one_replica_rejected_by_another() {
    let split_2 = |t: f64| {
        vec![
            ok(t, 1, A, ""),
            sealed(t + 1.0, 1, B, BY_CLIENT),
            sealed(t + 2.0, 2, B, BY_CLIENT),
            ok(t + 3.0, 2, A, ""),
        ]
    };
    let mut again = split_2(1.0);
    again.extend([
        sealed(5.0, 1, B, BY_CLIENT),
        tick(30.0),
        ok(31.0, 1, A, ""),
        tick(100.0),
    ]);
    again.extend(split_2(101.0));
    let mut more = oks(1.0, 1, 2, A, "");
    more.extend([
        ok(3.0, 1, C, ""),
        ok(4.0, 2, C, ""),
        sealed(5.0, 1, B, BY_CLIENT),
        sealed(6.0, 2, B, BY_CLIENT),
    ]);
    check(
        &keys_at_once(),
        vec![
            (
                "two clients split between A and B: divergence when the second one is",
                split_2(1.0),
                &[
                    "@4 cloudhub ca_divergence basis=outcome_split keys=[] split=2 \
                   replicas=[A:-/- hs=2/0 clients=2/0,B:-/- hs=0/2 clients=0/2]",
                ],
            ),
            (
                "reported once while the evidence holds, again after it expired",
                again,
                &[
                    "@4 cloudhub ca_divergence basis=outcome_split keys=[] split=2 \
                     replicas=[A:-/- hs=2/0 clients=2/0,B:-/- hs=0/2 clients=0/2]",
                    "@104 cloudhub ca_divergence basis=outcome_split keys=[] split=2 \
                     replicas=[A:-/- hs=2/0 clients=2/0,B:-/- hs=0/2 clients=0/2]",
                ],
            ),
            (
                "the pair with the most split clients is named, with every client it rejected",
                vec![
                    ok(1.0, 3, C, ""),
                    sealed(2.0, 3, B, BY_CLIENT),
                    ok(3.0, 1, A, ""),
                    sealed(4.0, 1, B, BY_CLIENT),
                    ok(5.0, 2, A, ""),
                    sealed(6.0, 2, B, BY_CLIENT),
                ],
                &[
                    "@6 cloudhub trust_collapse scope=total prev=- cur=- side=client failing=3 ok=0 \
                     share=1.00 clients=[e3,e1,e2] handshakes=6 cert_failures=3 first=2 latency=4 \
                     servers=[B]",
                    "@6 cloudhub ca_divergence basis=outcome_split keys=[] split=2 \
                     replicas=[A:-/- hs=2/0 clients=2/0,B:-/- hs=0/3 clients=0/3]",
                ],
            ),
            (
                "a tie goes to the lower address",
                more,
                &[
                    "@6 cloudhub ca_divergence basis=outcome_split keys=[] split=2 \
                   replicas=[A:-/- hs=2/0 clients=2/0,B:-/- hs=0/2 clients=0/2]",
                ],
            ),
            (
                "clients rejected everywhere, or fine everywhere, or ok and rejected on one \
                 server, are no split evidence (their failures are a partial collapse)",
                everywhere(),
                &[
                    "@14 cloudhub trust_collapse scope=partial prev=- cur=- side=client failing=3 \
                   ok=6 share=0.33 clients=[e1,e2,e10] handshakes=14 cert_failures=5 first=5 \
                   latency=9 servers=[A,B]",
                ],
            ),
            (
                "the replicas' keys, when probes saw them",
                {
                    let mut v = vec![probe_chain(0.5, A, "X"), probe_chain(0.6, B, "X")];
                    v.extend(split_2(1.0));
                    v
                },
                &[
                    "@4 cloudhub ca_divergence basis=outcome_split keys=[X] split=2 \
                   replicas=[A:X/probe_chain hs=2/0 clients=2/0,B:X/probe_chain hs=0/2 \
                   clients=0/2]",
                ],
            ),
            (
                "rejected by the server it succeeded on is not a split",
                vec![
                    ok(1.0, 1, A, ""),
                    sealed(2.0, 1, A, BY_CLIENT),
                    ok(3.0, 2, A, ""),
                    sealed(4.0, 2, A, BY_CLIENT),
                ],
                &[],
            ),
        ],
    );
    // One split client is enough when so configured.
    let cfg = DetectConfig {
        split_min_clients: 1,
        ..Default::default()
    };
    check(
        &cfg,
        vec![(
            "split_min_clients = 1",
            vec![ok(1.0, 1, A, ""), sealed(2.0, 1, B, BY_CLIENT)],
            &[
                "@2 cloudhub ca_divergence basis=outcome_split keys=[] split=1 \
               replicas=[A:-/- hs=1/0 clients=1/0,B:-/- hs=0/1 clients=0/1]",
            ],
        )],
    );
}

#[test]
fn rule_outcome_split_only_between_replicas() {
    let mut split = Vec::new();
    for (t, n, ok_here) in [
        (1.0, 1, true),
        (2.0, 1, false),
        (3.0, 2, false),
        (4.0, 2, true),
    ] {
        let server = if ok_here {
            "10.0.0.1:8443"
        } else {
            "10.0.0.2:8443"
        };
        let (outcome, alerts) = if ok_here {
            (crate::handshake::Outcome::Established, vec![])
        } else {
            (
                crate::handshake::Outcome::RejectedByClient,
                vec![crate::handshake::Alert::Encrypted {
                    from: BY_CLIENT,
                    ts: ts(t),
                }],
            )
        };
        let mut c = conn(t, edge(n), server, outcome, alerts, "");
        c.service = "tcp/8443".into();
        split.push(Step::Conn(Box::new(c)));
    }
    check(
        &keys_at_once(),
        vec![("servers found by content", split, &[])],
    );
}

/// A TLS 1.2 success of edge `n` on the certificate service's replica `ip` (port 10002).
fn certsvc_ok(t: f64, n: u8, ip: u8, ca: &str) -> Step {
    let mut c = conn(
        t,
        edge(n),
        &format!("10.0.0.{ip}:10002"),
        crate::handshake::Outcome::Established,
        vec![],
        ca,
    );
    c.service = crate::config::CERT_SERVICE.into();
    Step::Conn(Box::new(c))
}

#[test]
fn rule_rotation_needs_a_client_trusting_both_keys_and_no_failure() {
    let rotation_xy = "@2 cloudhub ca_rotation keys=[X,Y] replicas=[A:X/passive hs=1/0 \
                       clients=1/0,B:Y/passive hs=1/0 clients=1/0]";
    check(
        &keys_at_once(),
        vec![
            (
                "a client that succeeds under both keys: a rotation, reported once, not a \
                 divergence",
                vec![
                    ok(1.0, 1, A, "X"),
                    ok(2.0, 1, B, "Y"),
                    Step::Flags("scope=- rotation=true saturated=false"),
                    Step::Divergent(&[]),
                    ok(3.0, 2, A, "X"),
                    ok(4.0, 2, B, "Y"),
                    tick(5.0),
                ],
                &[rotation_xy],
            ),
            (
                "a certificate failure during the rotation makes it the divergence it was",
                vec![
                    ok(1.0, 1, A, "X"),
                    ok(2.0, 1, B, "Y"),
                    sealed(3.0, 2, B, BY_CLIENT),
                    Step::Flags("scope=- rotation=true saturated=false"),
                    tick(4.0),
                    Step::Flags("scope=- rotation=false saturated=false"),
                    Step::Divergent(&["X", "Y"]),
                ],
                &[
                    rotation_xy,
                    "@4 cloudhub ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                     replicas=[A:X/passive hs=1/0 clients=1/0,B:Y/passive hs=1/1 clients=1/1]",
                ],
            ),
            (
                "a certificate failure still counted in the window, its client fine since: no \
                 rotation",
                vec![
                    sealed(0.5, 3, A, BY_CLIENT),
                    ok(0.6, 3, A, ""),
                    ok(1.0, 1, A, "X"),
                    ok(2.0, 1, B, "Y"),
                ],
                &[
                    "@2 cloudhub ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                   replicas=[A:X/passive hs=2/1 clients=2/1,B:Y/passive hs=1/0 clients=1/0]",
                ],
            ),
            (
                "different clients under each key: a divergence (the leading indicator)",
                vec![ok(1.0, 1, A, "X"), ok(2.0, 2, B, "Y")],
                &[
                    "@2 cloudhub ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                   replicas=[A:X/passive hs=1/0 clients=1/0,B:Y/passive hs=1/0 clients=1/0]",
                ],
            ),
            (
                "its success under the first key exactly one window before still counts",
                vec![ok(1.0, 1, A, "X"), ok(60.0, 2, A, "X"), ok(61.0, 1, B, "Y")],
                &[
                    "@61 cloudhub ca_rotation keys=[X,Y] replicas=[A:X/passive hs=2/0 \
                   clients=2/0,B:Y/passive hs=1/0 clients=1/0]",
                ],
            ),
            (
                "one longer ago does not",
                vec![
                    ok(1.0, 1, A, "X"),
                    ok(60.0, 2, A, "X"),
                    ok(61.000_001, 1, B, "Y"),
                ],
                &[
                    "@61.000001 cloudhub ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                   replicas=[A:X/passive hs=1/0 clients=1/0,B:Y/passive hs=1/0 clients=1/0]",
                ],
            ),
            (
                "one address alternating under a client that trusts both: a rotation",
                vec![ok(1.0, 1, A, "X"), ok(2.0, 1, A, "Y"), ok(3.0, 1, A, "X")],
                &[
                    "@2 cloudhub ca_changed server=A X->Y source=passive",
                    "@3 cloudhub ca_rotation keys=[X,Y] replicas=[A:X/passive hs=3/0 \
                     clients=1/0]",
                ],
            ),
            (
                "on the certificate service clients do not verify the server: always a \
                 divergence",
                vec![certsvc_ok(1.0, 1, 1, "X"), certsvc_ok(2.0, 1, 2, "Y")],
                &[
                    "@2 certsvc ca_divergence basis=presented_keys keys=[X,Y] split=0 \
                   replicas=[10.0.0.1:10002:X/passive hs=1/0 clients=1/0,\
                   10.0.0.2:10002:Y/passive hs=1/0 clients=1/0]",
                ],
            ),
        ],
    );
}
