use super::*;

const C: Side = Side::Client;
const S: Side = Side::Server;

fn rec(from: Side, len: u16, t: i64) -> SealedRecord {
    SealedRecord {
        from,
        len,
        ts: Timestamp(t),
    }
}

fn closed(t: i64) -> SideFacts {
    SideFacts {
        close: Some(Close {
            rst: false,
            ts: Timestamp(t),
        }),
        ..Default::default()
    }
}

fn tls13<'a>(sealed: &'a [SealedRecord], client: SideFacts, server: SideFacts) -> Facts<'a> {
    Facts {
        server_hello: true,
        version: Some(Version::TLS13),
        alerts: &[],
        client,
        server,
        sealed,
        ended: false,
    }
}

fn outcome(v: &Verdict) -> Option<Outcome> {
    match v {
        Verdict::Decided { outcome, .. } => Some(*outcome),
        Verdict::Pending => None,
    }
}

// Go server flight (EE, CR, Cert, CV, Fin) then Go client's alert for an unknown CA.
#[test]
fn tls13_client_rejects_server_chain() {
    let sealed = [
        rec(S, 23, 1),
        rec(S, 60, 1),
        rec(S, 600, 1),
        rec(S, 95, 1),
        rec(S, 53, 1),
        rec(C, 19, 2),
    ];
    let v = decide(&tls13(&sealed, SideFacts::default(), SideFacts::default()));
    match v {
        Verdict::Decided {
            outcome, inferred, ..
        } => {
            assert_eq!(outcome, Outcome::RejectedByClient);
            assert_eq!(
                inferred,
                Some(Alert::Encrypted {
                    from: C,
                    ts: Timestamp(2)
                })
            );
        }
        Verdict::Pending => panic!("must decide at the client's alert record"),
    }
}

// Client sends Certificate, CertificateVerify, Finished; server answers with an alert and closes.
#[test]
fn tls13_server_rejects_client_certificate_only_after_close() {
    let sealed = [
        rec(S, 600, 1),
        rec(S, 53, 1),
        rec(C, 700, 2),
        rec(C, 97, 2),
        rec(C, 53, 2),
        rec(S, 19, 3),
    ];
    let open = decide(&tls13(&sealed, SideFacts::default(), SideFacts::default()));
    assert_eq!(
        open,
        Verdict::Pending,
        "a short record alone could be a KeyUpdate"
    );
    let v = decide(&tls13(&sealed, SideFacts::default(), closed(4)));
    assert_eq!(outcome(&v), Some(Outcome::RejectedByServer));
    assert!(matches!(
        v,
        Verdict::Decided {
            inferred: Some(Alert::Encrypted { from: S, .. }),
            ..
        }
    ));
}

// Go server without session tickets answering "pong\n" (a 22-byte record); the client closes.
#[test]
fn tls13_short_reply_then_client_close_is_established() {
    let sealed = [
        rec(S, 600, 1),
        rec(S, 53, 1),
        rec(C, 53, 2),
        rec(C, 30, 2),
        rec(S, 22, 3),
    ];
    assert_eq!(
        outcome(&decide(&tls13(&sealed, closed(4), SideFacts::default()))),
        Some(Outcome::Established)
    );
    // A 19-byte record is an alert even when the client, which had sent data, closes first.
    let alert = [
        rec(S, 600, 1),
        rec(S, 53, 1),
        rec(C, 53, 2),
        rec(C, 22, 2),
        rec(S, 19, 3),
    ];
    assert_eq!(
        outcome(&decide(&tls13(&alert, closed(4), SideFacts::default()))),
        Some(Outcome::RejectedByServer)
    );
    // The same record followed by the server's own close is an alert.
    assert_eq!(
        outcome(&decide(&tls13(&sealed, closed(5), closed(4)))),
        Some(Outcome::RejectedByServer)
    );
}

#[test]
fn tls13_established_by_session_ticket_after_client_finished() {
    let sealed = [
        rec(S, 600, 1),
        rec(S, 53, 1),
        rec(C, 25, 2),
        rec(C, 53, 2),
        rec(S, 200, 3),
    ];
    assert_eq!(
        outcome(&decide(&tls13(
            &sealed,
            SideFacts::default(),
            SideFacts::default()
        ))),
        Some(Outcome::Established)
    );
}

#[test]
fn tls13_pending_until_something_decides() {
    let sealed = [rec(S, 600, 1), rec(S, 53, 1)];
    assert_eq!(
        decide(&tls13(&sealed, SideFacts::default(), SideFacts::default())),
        Verdict::Pending
    );
    let mut f = tls13(&sealed, SideFacts::default(), SideFacts::default());
    f.ended = true;
    assert_eq!(outcome(&decide(&f)), Some(Outcome::Incomplete));
    // A client that just closes after the server's flight aborted the handshake.
    assert_eq!(
        outcome(&decide(&tls13(&sealed, closed(5), SideFacts::default()))),
        Some(Outcome::RejectedByClient)
    );
}

#[test]
fn plaintext_fatal_alert_decides_exactly() {
    let alerts = [Alert::Plain {
        from: C,
        level: 2,
        code: 42,
        ts: Timestamp(1),
    }];
    let mut f = tls13(&[], SideFacts::default(), SideFacts::default());
    f.version = Some(Version::TLS12);
    f.alerts = &alerts;
    let v = decide(&f);
    assert_eq!(outcome(&v), Some(Outcome::RejectedByClient));
    assert!(
        matches!(&v, Verdict::Decided { evidence, .. } if evidence.contains("bad_certificate(42)"))
    );
    // A warning does not decide.
    let warn = [Alert::Plain {
        from: S,
        level: 1,
        code: 112,
        ts: Timestamp(1),
    }];
    f.alerts = &warn;
    assert_eq!(decide(&f), Verdict::Pending);
}

#[test]
fn tls12_established_and_incomplete() {
    let done = SideFacts {
        ccs: true,
        finished: true,
        ..Default::default()
    };
    let mut f = tls13(&[], done, done);
    f.version = Some(Version::TLS12);
    assert_eq!(outcome(&decide(&f)), Some(Outcome::Established));
    let mut f = tls13(&[], SideFacts::default(), SideFacts::default());
    f.server_hello = false;
    assert_eq!(decide(&f), Verdict::Pending);
    f.ended = true;
    assert_eq!(outcome(&decide(&f)), Some(Outcome::Incomplete));
}
