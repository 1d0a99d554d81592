//! What one connection says about trust: facts in, class out.

use super::script::conn;
use crate::detect::{Class, RejectingSide, classify};
use crate::flow::Side::{self, Client as C, Server as S};
use crate::handshake::{Alert, Outcome};

fn plain(from: Side, level: u8, code: u8) -> Alert {
    Alert::Plain {
        from,
        level,
        code,
        ts: crate::base::Timestamp(1),
    }
}

fn enc(from: Side) -> Alert {
    Alert::Encrypted {
        from,
        ts: crate::base::Timestamp(1),
    }
}

fn class_of(outcome: Outcome, alerts: Vec<Alert>) -> Option<Class> {
    let c = conn(
        1.0,
        super::script::edge(1),
        super::script::A,
        outcome,
        alerts,
        "",
    );
    classify(&c)
}

#[test]
fn rule_classify_connection() {
    use Class::{CertFailure, OtherFailure, Success};
    use Outcome::{Established, Failed, Incomplete, RejectedByClient, RejectedByServer};
    let rows: Vec<(&str, Outcome, Vec<Alert>, Option<Class>)> = vec![
        ("established", Established, vec![], Some(Success)),
        (
            "established despite a warning",
            Established,
            vec![plain(S, 1, 112)],
            Some(Success),
        ),
        ("incomplete says nothing", Incomplete, vec![], None),
        (
            "client refuses the chain",
            RejectedByClient,
            vec![plain(C, 2, 42)],
            Some(CertFailure(RejectingSide::Client)),
        ),
        (
            "rustls: decrypt_error for a same-name CA",
            RejectedByServer,
            vec![plain(S, 2, 51)],
            Some(CertFailure(RejectingSide::Server)),
        ),
        (
            "handshake_failure is not about trust",
            RejectedByServer,
            vec![plain(S, 2, 40)],
            Some(OtherFailure),
        ),
        (
            "a client hanging up without an alert",
            RejectedByClient,
            vec![],
            Some(OtherFailure),
        ),
        ("a close without alert", Failed, vec![], Some(OtherFailure)),
        (
            "TLS 1.3 inferred alert from the server",
            RejectedByServer,
            vec![enc(S)],
            Some(CertFailure(RejectingSide::Server)),
        ),
        (
            "side unknown: the inferred alert's sender",
            Failed,
            vec![enc(C)],
            Some(CertFailure(RejectingSide::Client)),
        ),
        (
            "side unknown: the deciding plaintext alert's sender",
            Failed,
            vec![plain(S, 1, 48)],
            Some(CertFailure(RejectingSide::Server)),
        ),
        (
            "the outcome names the side, whoever sent the deciding alert (alerts past the \
             per-connection limit are dropped, the inferred one with them)",
            RejectedByServer,
            vec![plain(C, 1, 42)],
            Some(CertFailure(RejectingSide::Server)),
        ),
        (
            "the same for the client",
            RejectedByClient,
            vec![plain(S, 1, 46)],
            Some(CertFailure(RejectingSide::Client)),
        ),
        (
            "the first fatal alert decides, not the last",
            RejectedByServer,
            vec![plain(S, 2, 48), plain(S, 2, 40)],
            Some(CertFailure(RejectingSide::Server)),
        ),
    ];
    for (what, outcome, alerts, want) in rows {
        assert_eq!(class_of(outcome, alerts), want, "{what}");
    }
    // Exactly the certificate alerts and decrypt_error are trust rejections.
    for code in 0..=255u8 {
        let trust = matches!(code, 42..=46 | 48 | 51 | 116);
        let want = if trust {
            CertFailure(RejectingSide::Client)
        } else {
            OtherFailure
        };
        assert_eq!(
            class_of(RejectedByClient, vec![plain(C, 2, code)]),
            Some(want),
            "{code}"
        );
    }
}

#[test]
fn rejecting_side_names() {
    let rows = [
        (RejectingSide::Client, "client"),
        (RejectingSide::Server, "server"),
        (RejectingSide::Both, "both"),
        (RejectingSide::Unknown, "unknown"),
    ];
    for (side, name) in rows {
        assert_eq!(side.as_str(), name);
    }
}
