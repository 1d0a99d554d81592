//! The window's own rules, one table per rule: the outcome split of one client, a client that
//! trusts several CA keys, and the bound on the keys remembered per client.

use std::net::{IpAddr, SocketAddr};

use super::*;

const WINDOW_US: i64 = 10_000_000;
const LIMITS: WindowLimits = WindowLimits {
    window_us: WINDOW_US,
    max_clients: 1024,
    max_entries: 1024,
};

fn ts(s: f64) -> Timestamp {
    Timestamp::from_micros((s * 1e6).round() as i64)
}

fn client(n: u8) -> IpAddr {
    IpAddr::from([192, 168, 7, n])
}

fn server(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, 0, 0, n]), 10000)
}

fn key(n: u8) -> KeyId {
    KeyId::parse(&format!("{n:02x}aa")).expect("key id")
}

/// What one client did: (seconds, server, class, CA key).
type Step = (f64, u8, Class, Option<u8>);

/// (what, the client's steps, when we ask, the answer).
type SplitCase = (&'static str, &'static [Step], f64, bool);
/// (what, successes as (seconds, key), the keys asked about, when, the answer).
type TrustCase = (&'static str, &'static [(f64, u8)], &'static [u8], f64, bool);

const OK: Class = Class::Success;
const REJECTED: Class = Class::CertFailure(RejectingSide::Server);

fn window(steps: &[Step]) -> Window {
    let mut w = Window::default();
    let mut servers = Servers::default();
    let mut stats = DetectStats::default();
    for &(t, srv, class, ca) in steps {
        let obs = Obs {
            t: ts(t),
            client: client(1),
            server: server(srv),
            class,
            ca: ca.map(key),
        };
        w.add(&obs, &mut servers, LIMITS, &mut stats);
    }
    w
}

#[test]
fn split_needs_a_fresh_success_and_a_fresh_rejection_on_another_server() {
    let cases: &[SplitCase] = &[
        (
            "ok on A, rejected by B",
            &[(0.0, 1, OK, None), (1.0, 2, REJECTED, None)],
            2.0,
            true,
        ),
        (
            "rejected by B, then ok on A",
            &[(0.0, 2, REJECTED, None), (1.0, 1, OK, None)],
            2.0,
            true,
        ),
        (
            "ok and rejected on A only",
            &[(0.0, 1, OK, None), (1.0, 1, REJECTED, None)],
            2.0,
            false,
        ),
        (
            "ok on A and B, no rejection",
            &[(0.0, 1, OK, None), (1.0, 2, OK, None)],
            2.0,
            false,
        ),
        (
            "rejected by A and B, no success",
            &[(0.0, 1, REJECTED, None), (1.0, 2, REJECTED, None)],
            2.0,
            false,
        ),
        // The success left the window; the rejection is still in it.
        (
            "stale success",
            &[(0.0, 1, OK, None), (5.0, 2, REJECTED, None)],
            10.5,
            false,
        ),
        // The rejection left the window; the success is still in it.
        (
            "stale rejection",
            &[(0.0, 2, REJECTED, None), (5.0, 1, OK, None)],
            10.5,
            false,
        ),
        (
            "both exactly one window old",
            &[(0.0, 1, OK, None), (0.0, 2, REJECTED, None)],
            10.0,
            true,
        ),
    ];
    for (what, steps, now, want) in cases {
        let w = window(steps);
        assert_eq!(
            w.client_is_split(client(1), ts(*now), WINDOW_US),
            *want,
            "{what}"
        );
    }
}

#[test]
fn split_of_an_unknown_client_is_false() {
    let w = window(&[(0.0, 1, OK, None), (1.0, 2, REJECTED, None)]);
    assert!(w.client_is_split(client(1), ts(2.0), WINDOW_US));
    assert!(!w.client_is_split(client(2), ts(2.0), WINDOW_US));
}

#[test]
fn trusts_several_counts_fresh_successes_under_the_keys_asked_about() {
    let cases: &[TrustCase] = &[
        (
            "ok under 1 and 2",
            &[(0.0, 1), (1.0, 2)],
            &[1, 2],
            2.0,
            true,
        ),
        (
            "ok under 1 twice",
            &[(0.0, 1), (1.0, 1)],
            &[1, 2],
            2.0,
            false,
        ),
        // Key 3 is fresh but not one of those asked about.
        (
            "ok under 1 and 3, asked 1 and 2",
            &[(0.0, 1), (1.0, 3)],
            &[1, 2],
            2.0,
            false,
        ),
        // Key 1's success left the window.
        (
            "ok under 1 long ago, then 2",
            &[(0.0, 1), (5.0, 2)],
            &[1, 2],
            10.5,
            false,
        ),
        (
            "ok under 1, 2 and 3, asked 2 and 3",
            &[(0.0, 1), (1.0, 2), (2.0, 3)],
            &[2, 3],
            3.0,
            true,
        ),
    ];
    for (what, oks, asked, now, want) in cases {
        let steps: Vec<Step> = oks.iter().map(|&(t, k)| (t, 1, OK, Some(k))).collect();
        let w = window(&steps);
        let keys: Vec<KeyId> = asked.iter().map(|&k| key(k)).collect();
        assert_eq!(
            w.a_client_trusts_several(&keys, ts(*now), WINDOW_US),
            *want,
            "{what}"
        );
    }
}

#[test]
fn a_client_remembers_at_most_four_keys_and_keeps_refreshing_those() {
    let steps: Vec<Step> = (1..=6).map(|k| (f64::from(k), 1, OK, Some(k))).collect();
    let w = window(&steps);
    let c = w.clients.get(&client(1)).expect("client");
    let kept: Vec<KeyId> = c.ok_keys.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(kept, (1..=4).map(key).collect::<Vec<_>>());
    // The latest success is still the CA it trusts now, remembered or not.
    assert_eq!(c.ok_ca, Some(key(6)));

    // A known key's time moves forward (and never back).
    let mut steps = steps;
    steps.push((9.0, 1, OK, Some(2)));
    steps.push((8.0, 1, OK, Some(2)));
    let w = window(&steps);
    let c = w.clients.get(&client(1)).expect("client");
    assert_eq!(c.ok_keys.get(1), Some(&(key(2), ts(9.0))));
    assert_eq!(c.ok_keys.len(), 4);
}
