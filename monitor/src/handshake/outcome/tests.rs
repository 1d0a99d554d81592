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

// ---------------------------------------------------------------------------------------------
// The rules, one table each: facts in, verdict out. A deliberate rule change is a row edit.

/// The facts of one row, built up from a version and the records seen.
#[derive(Clone, Debug)]
struct F {
    server_hello: bool,
    version: Option<Version>,
    alerts: Vec<Alert>,
    client: SideFacts,
    server: SideFacts,
    sealed: Vec<SealedRecord>,
    ended: bool,
}

impl F {
    fn new(version: Version) -> F {
        F {
            server_hello: true,
            version: Some(version),
            alerts: Vec::new(),
            client: SideFacts::default(),
            server: SideFacts::default(),
            sealed: Vec::new(),
            ended: false,
        }
    }
    fn facts(&self) -> Facts<'_> {
        Facts {
            server_hello: self.server_hello,
            version: self.version,
            alerts: &self.alerts,
            client: self.client,
            server: self.server,
            sealed: &self.sealed,
            ended: self.ended,
        }
    }
    fn side(&mut self, side: Side) -> &mut SideFacts {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }
    fn no_server_hello(mut self) -> F {
        self.server_hello = false;
        self
    }
    /// `side` sent FIN at `t`.
    fn fin(mut self, side: Side, t: i64) -> F {
        self.side(side).close = Some(Close {
            rst: false,
            ts: Timestamp(t),
        });
        self
    }
    /// `side` sent RST at `t`.
    fn rst(mut self, side: Side, t: i64) -> F {
        self.side(side).close = Some(Close {
            rst: true,
            ts: Timestamp(t),
        });
        self
    }
    fn ended(mut self) -> F {
        self.ended = true;
        self
    }
    fn alert(mut self, from: Side, level: u8, code: u8, t: i64) -> F {
        self.alerts.push(Alert::Plain {
            from,
            level,
            code,
            ts: Timestamp(t),
        });
        self
    }
    /// TLS ≤ 1.2: `side` sent ChangeCipherSpec and its encrypted Finished.
    fn finished(mut self, side: Side) -> F {
        let s = self.side(side);
        s.ccs = true;
        s.finished = true;
        self
    }
    /// TLS ≤ 1.2: `side` sent ChangeCipherSpec, then an encrypted alert at `t`.
    fn sealed_alert(mut self, side: Side, t: i64) -> F {
        let s = self.side(side);
        s.ccs = true;
        s.sealed_alert = Some(Timestamp(t));
        self
    }
    /// TLS ≤ 1.2: `n` application data records from `side`.
    fn app(mut self, side: Side, n: u32) -> F {
        self.side(side).app_records = n;
        self
    }
}

/// TLS 1.2 facts after the hellos.
fn t12() -> F {
    F::new(Version::TLS12)
}

/// TLS 1.3 facts with these encrypted records (their timestamps are their positions, from 1).
fn t13(records: &[(Side, u16)]) -> F {
    let mut f = F::new(Version::TLS13);
    f.sealed = records
        .iter()
        .zip(1..)
        .map(|(&(from, len), t)| rec(from, len, t))
        .collect();
    f
}

/// A Go server's TLS 1.3 flight (EncryptedExtensions, CertificateRequest, Certificate,
/// CertificateVerify, Finished): five records.
const GO_SERVER_FLIGHT: [(Side, u16); 5] = [(S, 23), (S, 60), (S, 600), (S, 95), (S, 53)];

/// The Go server's flight followed by `rest`.
fn go13(rest: &[(Side, u16)]) -> F {
    let mut all = GO_SERVER_FLIGHT.to_vec();
    all.extend_from_slice(rest);
    t13(&all)
}

fn is(outcome: Outcome, evidence: &str) -> Verdict {
    Verdict::Decided {
        outcome,
        code: "",
        evidence: evidence.to_string(),
        inferred: None,
    }
}

/// Decided, with an encrypted alert inferred from `from`'s record at `t`.
fn inferred(outcome: Outcome, evidence: &str, from: Side, t: i64) -> Verdict {
    Verdict::Decided {
        outcome,
        code: "",
        evidence: evidence.to_string(),
        inferred: Some(Alert::Encrypted {
            from,
            ts: Timestamp(t),
        }),
    }
}

use Outcome::{Established, Failed, Incomplete, RejectedByClient, RejectedByServer};

/// Every row's facts give exactly its verdict.
fn check(rows: Vec<(&str, F, Verdict)>) {
    for (what, f, want) in rows {
        // The evidence text names the rule; the code beside it is checked by the JSON tests.
        let got = match decide(&f.facts()) {
            Verdict::Decided {
                outcome,
                evidence,
                inferred,
                ..
            } => Verdict::Decided {
                outcome,
                code: "",
                evidence,
                inferred,
            },
            v => v,
        };
        assert_eq!(got, want, "{what}: {f:?}");
    }
}

#[test]
fn rule_plaintext_fatal_alert_decides_exactly() {
    check(vec![
        (
            "TLS 1.2 client refuses the chain",
            t12().alert(C, 2, 42, 3),
            is(
                RejectedByClient,
                "client sent fatal alert bad_certificate(42) in plaintext",
            ),
        ),
        (
            "the first fatal alert decides, not the warning before it nor the fatal one after it",
            t12()
                .alert(C, 1, 90, 1)
                .alert(S, 2, 116, 2)
                .alert(C, 2, 48, 3),
            is(
                RejectedByServer,
                "server sent fatal alert certificate_required(116) in plaintext",
            ),
        ),
        (
            "OpenSSL rejects in plaintext even in TLS 1.3, whatever the sealed records say",
            go13(&[(C, 19)]).alert(C, 2, 48, 7),
            is(
                RejectedByClient,
                "client sent fatal alert unknown_ca(48) in plaintext",
            ),
        ),
        (
            "a fatal alert before any ServerHello decides too",
            t12().no_server_hello().alert(S, 2, 70, 1),
            is(
                RejectedByServer,
                "server sent fatal alert protocol_version(70) in plaintext",
            ),
        ),
        (
            "a warning alone decides nothing while the connection is open",
            t12().alert(S, 1, 112, 1),
            Verdict::Pending,
        ),
    ]);
}

#[test]
fn rule_no_server_hello_is_incomplete_once_the_connection_ends() {
    let open = t12().no_server_hello();
    check(vec![
        ("still open", open.clone(), Verdict::Pending),
        (
            "client FIN",
            open.clone().fin(C, 5),
            is(
                Incomplete,
                "no ServerHello before the connection ended (FIN from client)",
            ),
        ),
        (
            "server RST",
            open.clone().rst(S, 5),
            is(
                Incomplete,
                "no ServerHello before the connection ended (RST from server)",
            ),
        ),
        (
            "capture end",
            open.ended(),
            is(
                Incomplete,
                "no ServerHello before the connection ended (capture end)",
            ),
        ),
    ]);
}

#[test]
fn rule_tls12_finished_from_both_sides_is_established() {
    check(vec![
        (
            "both Finished",
            t12().finished(C).finished(S),
            is(
                Established,
                "ChangeCipherSpec and encrypted Finished from both sides",
            ),
        ),
        (
            "only the client's Finished: the server may still refuse",
            t12().finished(C),
            Verdict::Pending,
        ),
        (
            "only the server's Finished, then the client closes",
            t12().finished(S).fin(C, 9),
            is(
                Failed,
                "connection closed before the handshake completed (FIN from client)",
            ),
        ),
    ]);
}

#[test]
fn rule_tls12_application_data_in_both_directions_is_established() {
    check(vec![
        (
            "one record each way, Finished not seen (e.g. a gap)",
            t12().app(C, 1).app(S, 1),
            is(Established, "application data in both directions"),
        ),
        (
            "client data only, then the server closes",
            t12().app(C, 3).fin(S, 9),
            is(
                Failed,
                "connection closed before the handshake completed (FIN from server)",
            ),
        ),
        ("server data only, open", t12().app(S, 2), Verdict::Pending),
    ]);
}

#[test]
fn rule_tls12_encrypted_alert_after_change_cipher_spec_names_its_sender() {
    check(vec![
        (
            "client",
            t12().finished(S).sealed_alert(C, 7),
            inferred(
                RejectedByClient,
                "client sent an encrypted alert before the handshake completed",
                C,
                7,
            ),
        ),
        (
            "server, after the client's Finished",
            t12().finished(C).sealed_alert(S, 8),
            inferred(
                RejectedByServer,
                "server sent an encrypted alert before the handshake completed",
                S,
                8,
            ),
        ),
    ]);
}

#[test]
fn rule_tls12_close_before_finished_is_a_failure_not_incomplete() {
    check(vec![
        (
            "bare FIN from the client",
            t12().fin(C, 5),
            is(
                Failed,
                "connection closed before the handshake completed (FIN from client)",
            ),
        ),
        (
            "RST from the server",
            t12().rst(S, 5),
            is(
                Failed,
                "connection closed before the handshake completed (RST from server)",
            ),
        ),
        (
            "the first closer is named: the server's FIN came first",
            t12().fin(C, 6).fin(S, 5),
            is(
                Failed,
                "connection closed before the handshake completed (FIN from server)",
            ),
        ),
        (
            "closes at the same instant: the client is named",
            t12().fin(S, 5).rst(C, 5),
            is(
                Failed,
                "connection closed before the handshake completed (RST from client)",
            ),
        ),
        (
            "a warning alert, then the close: the warning's sender rejected",
            t12().alert(S, 1, 112, 4).fin(S, 5),
            is(
                RejectedByServer,
                "server sent warning alert unrecognized_name(112) in plaintext and the connection \
                 closed (FIN from server)",
            ),
        ),
        (
            "the last warning names the side",
            t12().alert(S, 1, 112, 3).alert(C, 1, 0, 4).fin(C, 5),
            is(
                RejectedByClient,
                "client sent warning alert close_notify(0) in plaintext and the connection \
                 closed (FIN from client)",
            ),
        ),
        (
            "capture ended with the connection open",
            t12().finished(C).ended(),
            is(Incomplete, "capture ended before the handshake completed"),
        ),
        ("still open", t12(), Verdict::Pending),
    ]);
}

#[test]
fn rule_tls13_without_any_client_record() {
    let flight = t13(&[(S, 600), (S, 53)]);
    check(vec![
        ("open", flight.clone(), Verdict::Pending),
        (
            "capture ended",
            flight.clone().ended(),
            is(
                Incomplete,
                "TLS 1.3: capture ended before the client's Finished",
            ),
        ),
        (
            "the client hangs up after the server's flight: it aborted",
            flight.clone().fin(C, 5).ended(),
            is(
                RejectedByClient,
                "TLS 1.3: connection closed (FIN from client) after 2 server records, without \
                 any client record",
            ),
        ),
        (
            "the client hangs up before any sealed record: nothing to blame",
            t13(&[]).fin(C, 5),
            is(
                Failed,
                "TLS 1.3: connection closed (FIN from client) after 0 server records, without any \
                 client record",
            ),
        ),
        (
            "the server hangs up after its flight",
            flight.fin(S, 5).fin(C, 6),
            is(
                Failed,
                "TLS 1.3: connection closed (FIN from server) after 2 server records, without \
                 any client record",
            ),
        ),
    ]);
}

#[test]
fn rule_tls13_client_record_of_alert_size_after_the_server_flight_is_a_client_rejection() {
    check(vec![
        (
            "Go/rustls: a 19-byte alert",
            go13(&[(C, 19)]),
            inferred(
                RejectedByClient,
                "TLS 1.3: after the server's flight (5 records) the client sent one 19-byte \
                 encrypted record (an alert) and no Finished",
                C,
                6,
            ),
        ),
        (
            "a padded alert up to 24 bytes",
            t13(&[(S, 600), (C, 24)]),
            inferred(
                RejectedByClient,
                "TLS 1.3: after the server's flight (1 record) the client sent one 24-byte \
                 encrypted record (an alert) and no Finished",
                C,
                2,
            ),
        ),
        (
            "25 bytes is an empty Certificate, not an alert",
            t13(&[(S, 600), (C, 25), (C, 53), (S, 200)]),
            is(
                Established,
                "TLS 1.3: the client's flight (2 records) was answered by a 200-byte server \
                 record (session ticket or application data)",
            ),
        ),
    ]);
}

#[test]
fn rule_tls13_server_answer_to_the_client_flight() {
    let flight = [(C, 700), (C, 97), (C, 53)];
    let with = |server: &[(Side, u16)]| {
        let mut all = flight.to_vec();
        all.extend_from_slice(server);
        go13(&all)
    };
    check(vec![
        (
            "a session ticket",
            with(&[(S, 200)]),
            is(
                Established,
                "TLS 1.3: the client's flight (3 records) was answered by a 200-byte server \
                 record (session ticket or application data)",
            ),
        ),
        (
            "two short records",
            with(&[(S, 22), (S, 19)]),
            is(
                Established,
                "TLS 1.3: several server records after the client's flight",
            ),
        ),
        (
            "three short records",
            with(&[(S, 22), (S, 22), (S, 19)]),
            is(
                Established,
                "TLS 1.3: several server records after the client's flight",
            ),
        ),
        (
            "one alert-sized record, open: could be a KeyUpdate",
            with(&[(S, 19)]),
            Verdict::Pending,
        ),
        (
            "one 19-byte record, then the server closes",
            with(&[(S, 19)]).fin(S, 20),
            inferred(
                RejectedByServer,
                "TLS 1.3: the server answered the client's flight with one 19-byte encrypted \
                 record (an alert) and the connection closed (FIN from server)",
                S,
                9,
            ),
        ),
        (
            "a 19-byte record is an alert even when the client closes first",
            with(&[(S, 19)]).fin(C, 20),
            inferred(
                RejectedByServer,
                "TLS 1.3: the server answered the client's flight with one 19-byte encrypted \
                 record (an alert) and the connection closed (FIN from client)",
                S,
                9,
            ),
        ),
        (
            "a 22-byte reply, then the client hangs up: a small answer",
            with(&[(S, 22)]).fin(C, 20).fin(S, 21),
            is(
                Established,
                "TLS 1.3: the server answered the client's flight with a 22-byte record and the \
                 client closed first (FIN from client)",
            ),
        ),
        (
            "a 22-byte record, then the server hangs up first: an alert",
            with(&[(S, 22)]).fin(S, 20).fin(C, 21),
            inferred(
                RejectedByServer,
                "TLS 1.3: the server answered the client's flight with one 22-byte encrypted \
                 record (an alert) and the connection closed (FIN from server)",
                S,
                9,
            ),
        ),
        ("a 22-byte record, open", with(&[(S, 22)]), Verdict::Pending),
        (
            "one short record, capture ended without a close",
            with(&[(S, 22)]).ended(),
            is(
                Established,
                "TLS 1.3: client flight done; one short server record, no close seen",
            ),
        ),
    ]);
}

#[test]
fn rule_tls13_no_server_record_after_the_client_flight() {
    let flight = go13(&[(C, 700), (C, 97), (C, 53)]);
    let with_data = go13(&[(C, 700), (C, 97), (C, 53), (C, 30)]);
    check(vec![
        (
            "the connection closes after the client's flight: failed",
            flight.clone().fin(C, 20),
            is(
                Failed,
                "TLS 1.3: connection closed (FIN from client) after the client's flight with no \
                 server record",
            ),
        ),
        ("open", flight.clone(), Verdict::Pending),
        (
            "capture ended",
            flight.ended(),
            is(
                Established,
                "TLS 1.3: client flight seen; the capture ended before any server reply",
            ),
        ),
        (
            "the client sent data after its Finished, the server closed without an alert",
            with_data.clone().fin(S, 20),
            is(
                Established,
                "TLS 1.3: the client sent application data after its Finished and the server \
                 sent no alert (FIN from server)",
            ),
        ),
        (
            "client data after its Finished, capture ended",
            with_data.clone().ended(),
            is(
                Established,
                "TLS 1.3: the client sent application data after its Finished and the server \
                 sent no alert (capture end)",
            ),
        ),
        (
            "client data after its Finished, open",
            with_data,
            Verdict::Pending,
        ),
    ]);
}

#[test]
fn rule_tls13_client_finished_recognised_by_its_size() {
    check(vec![
        (
            // Finished-sized record (CCM_8 SHA-256: 45) ends the flight; what follows is data.
            "a 45-byte Finished, then data, then a close",
            t13(&[(S, 600), (S, 45), (C, 45), (C, 30)]).rst(C, 9),
            is(
                Established,
                "TLS 1.3: the client sent application data after its Finished and the server \
                 sent no alert (RST from client)",
            ),
        ),
        (
            "a 61-byte Finished (CCM_8, SHA-384) without data is the whole flight",
            t13(&[(S, 600), (S, 61), (C, 61)]).fin(C, 9),
            is(
                Failed,
                "TLS 1.3: connection closed (FIN from client) after the client's flight with no \
                 server record",
            ),
        ),
        (
            "a 69-byte Finished after a Certificate: both in the flight",
            t13(&[(S, 600), (S, 69), (C, 500), (C, 69), (S, 300)]),
            is(
                Established,
                "TLS 1.3: the client's flight (2 records) was answered by a 300-byte server \
                 record (session ticket or application data)",
            ),
        ),
        (
            "no Finished-sized record: the flight ends at the first server record",
            t13(&[(S, 600), (S, 80), (C, 700), (C, 97), (C, 80), (S, 200)]),
            is(
                Established,
                "TLS 1.3: the client's flight (3 records) was answered by a 200-byte server \
                 record (session ticket or application data)",
            ),
        ),
        (
            "no Finished-sized record and no server record: everything is the flight",
            t13(&[(S, 600), (S, 80), (C, 700), (C, 80)]).fin(S, 9),
            is(
                Failed,
                "TLS 1.3: connection closed (FIN from server) after the client's flight with no \
                 server record",
            ),
        ),
        (
            "no Finished-sized record, open: the flight may go on",
            t13(&[(S, 600), (S, 80), (C, 700), (C, 80)]),
            Verdict::Pending,
        ),
    ]);
}

#[test]
fn outcome_names_and_rejecting_side() {
    let rows = [
        (Established, "established", None),
        (RejectedByClient, "rejected_by_client", Some(C)),
        (RejectedByServer, "rejected_by_server", Some(S)),
        (Failed, "failed", None),
        (Incomplete, "incomplete", None),
    ];
    assert_eq!(Outcome::ALL.len(), rows.len());
    for ((o, name, side), all) in rows.into_iter().zip(Outcome::ALL) {
        assert_eq!(o, all);
        assert_eq!(o.as_str(), name);
        assert_eq!(o.rejecting_side(), side, "{name}");
    }
}
