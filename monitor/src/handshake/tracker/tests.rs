//! The facts the tracker collects from both directions' records, and the record it reports:
//! synthetic TLS records in, a `Connection` out.

use super::*;
use crate::base::PerSide;
use crate::flow::CloseReason;
use crate::trust::testpki::TestCa;

const C: Side = Side::Client;
const S: Side = Side::Server;

fn record(ct: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![ct, 3, 3];
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn hs(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    v.extend_from_slice(body);
    v
}

/// A ClientHello record offering TLS 1.3 and 1.2 with session id `sid`.
fn client_hello(sid: &[u8]) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&[7; 32]);
    b.push(sid.len() as u8);
    b.extend_from_slice(sid);
    b.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2b]);
    b.extend_from_slice(&[1, 0]);
    let ext = [0, 43, 0, 5, 4, 3, 4, 3, 3];
    b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    b.extend_from_slice(&ext);
    record(22, &hs(1, &b))
}

/// A ServerHello message: TLS 1.3 (supported_versions, maybe a PSK) or 1.2 echoing `sid`.
fn server_hello_msg(tls13: bool, sid: &[u8], psk: bool) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&[9; 32]);
    b.push(sid.len() as u8);
    b.extend_from_slice(sid);
    b.extend_from_slice(if tls13 { &[0x13, 0x01] } else { &[0xc0, 0x2b] });
    b.push(0);
    let mut ext = Vec::new();
    if tls13 {
        ext.extend_from_slice(&[0, 43, 0, 2, 3, 4]);
    }
    if psk {
        ext.extend_from_slice(&[0, 41, 0, 2, 0, 0]);
    }
    b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    b.extend_from_slice(&ext);
    hs(2, &b)
}

fn certificate_msg(ders: &[Vec<u8>]) -> Vec<u8> {
    let mut list = Vec::new();
    for d in ders {
        list.extend_from_slice(&(d.len() as u32).to_be_bytes()[1..]);
        list.extend_from_slice(d);
    }
    let mut body = (list.len() as u32).to_be_bytes()[1..].to_vec();
    body.extend_from_slice(&list);
    hs(11, &body)
}

/// The server's TLS 1.2 flight: ServerHello (echoing `sid`), Certificate, and
/// CertificateRequest when `client_auth`, ServerHelloDone.
fn server_flight_12(sid: &[u8], ders: &[Vec<u8>], client_auth: bool) -> Vec<u8> {
    let mut m = server_hello_msg(false, sid, false);
    m.extend(certificate_msg(ders));
    if client_auth {
        m.extend(hs(13, &[1, 64, 0, 0, 0, 0]));
    }
    m.extend(hs(14, &[]));
    record(22, &m)
}

fn ccs() -> Vec<u8> {
    record(20, &[1])
}

/// An encrypted handshake record after ChangeCipherSpec (a TLS 1.2 Finished).
fn sealed_finished() -> Vec<u8> {
    record(22, &[0x5a; 40])
}

fn app(len: usize) -> Vec<u8> {
    record(23, &vec![0x17; len])
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

struct T {
    tracker: Tracker,
    ctx: TrackerCtx,
}

impl T {
    fn new() -> T {
        T::with(&Limits::default())
    }
    fn with(limits: &Limits) -> T {
        let endpoints = Endpoints {
            client: "192.168.1.7:40000".parse().unwrap(),
            server: "10.0.0.1:10000".parse().unwrap(),
        };
        T {
            tracker: Tracker::new(
                endpoints,
                Arc::from("cloudhub"),
                Timestamp(10),
                Some(7),
                limits,
            ),
            ctx: TrackerCtx {
                certs: CertCache::new(16, usize::MAX),
                stats: Stats::default(),
            },
        }
    }
    fn data(&mut self, side: Side, t: i64, bytes: &[u8]) -> &mut T {
        self.tracker
            .on_data(&mut self.ctx, side, Timestamp(t), bytes);
        self
    }
    fn close(&mut self, side: Side, t: i64, rst: bool) -> &mut T {
        self.tracker
            .on_close_from(&mut self.ctx, side, Timestamp(t), rst);
        self
    }
    fn decided(&mut self) -> Option<Connection> {
        self.tracker.take_decided()
    }
}

fn outcome_of(c: &Connection) -> (Outcome, &str) {
    (c.outcome, c.evidence.as_str())
}

#[test]
fn tls12_full_handshake_is_reported_once_at_the_servers_finished() {
    let leaf = TestCa::kubeedge().leaf(&["cloudcore"]).der;
    let mut t = T::new();
    t.data(C, 11, &client_hello(&[]))
        .data(
            S,
            12,
            &server_flight_12(&[], std::slice::from_ref(&leaf), true),
        )
        .data(
            C,
            13,
            &cat(&[record(22, &hs(16, &[0; 33])), ccs(), sealed_finished()]),
        );
    assert!(t.decided().is_none(), "the server has not finished");
    assert!(t.tracker.wants_data());
    t.data(S, 14, &cat(&[ccs(), sealed_finished()]));
    let c = t.decided().expect("decided at the server's Finished");
    assert_eq!(
        outcome_of(&c),
        (
            Outcome::Established,
            "ChangeCipherSpec and encrypted Finished from both sides"
        )
    );
    assert_eq!((c.start, c.end), (Timestamp(10), Timestamp(14)));
    assert_eq!(c.version, Some(Version::TLS12));
    assert_eq!((c.vlan, &*c.service), (Some(7), "cloudhub"));
    assert!(c.client_auth_requested, "CertificateRequest seen");
    assert!(!c.resumed);
    assert_eq!(c.server_chain.len(), 1);
    assert!(c.client_chain.is_empty());
    assert!(c.client_hello.is_some() && c.server_hello.is_some());
    assert!(!t.tracker.wants_data(), "nothing more to read");
    assert!(t.decided().is_none(), "reported once");
    assert!(t.tracker.finish(CloseReason::Fin, Timestamp(20)).is_none());
}

#[test]
fn tls12_resumption_is_an_echoed_session_id_or_a_ccs_without_certificate() {
    let leaf = TestCa::kubeedge().leaf(&["cloudcore"]).der;
    let sid = [5u8; 32];
    // (what, client session id, server flight, resumed)
    let rows: Vec<(&str, Vec<u8>, Vec<u8>, bool)> = vec![
        (
            "the server echoes the offered session id",
            sid.to_vec(),
            cat(&[
                record(22, &server_hello_msg(false, &sid, false)),
                ccs(),
                sealed_finished(),
            ]),
            true,
        ),
        (
            "another session id: a full handshake",
            sid.to_vec(),
            cat(&[
                server_flight_12(&[6; 32], std::slice::from_ref(&leaf), false),
                ccs(),
                sealed_finished(),
            ]),
            false,
        ),
        (
            "empty session ids are not an echo",
            vec![],
            cat(&[
                server_flight_12(&[], std::slice::from_ref(&leaf), false),
                ccs(),
                sealed_finished(),
            ]),
            false,
        ),
        (
            "a ticket: ChangeCipherSpec straight after the ServerHello",
            vec![],
            cat(&[
                record(22, &server_hello_msg(false, &[], false)),
                ccs(),
                sealed_finished(),
            ]),
            true,
        ),
    ];
    for (what, client_sid, flight, resumed) in rows {
        let mut t = T::new();
        t.data(C, 1, &client_hello(&client_sid)).data(S, 2, &flight);
        let c = t.tracker.finish(CloseReason::Fin, Timestamp(3)).unwrap();
        assert_eq!(c.resumed, resumed, "{what}");
    }
    // The server's Certificate lost to a gap: the client's own Certificate (sent only when a
    // full handshake asked for it) still rules out a resumption.
    for (client_cert, resumed) in [(true, false), (false, true)] {
        let mut t = T::new();
        t.data(C, 1, &client_hello(&[]));
        t.data(S, 2, &record(22, &server_hello_msg(false, &[], false)));
        t.tracker.on_gap(&mut t.ctx, S, 1200);
        if client_cert {
            t.data(
                C,
                3,
                &record(22, &certificate_msg(std::slice::from_ref(&leaf))),
            );
        }
        t.data(C, 4, &cat(&[ccs(), sealed_finished()]));
        t.data(S, 5, &cat(&[ccs(), sealed_finished()]));
        let c = t.tracker.finish(CloseReason::Fin, Timestamp(6)).unwrap();
        assert_eq!(c.resumed, resumed, "client certificate: {client_cert}");
    }
}

#[test]
fn tls12_facts_after_change_cipher_spec() {
    let leaf = TestCa::kubeedge().leaf(&["cloudcore"]).der;
    let flight = || server_flight_12(&[], std::slice::from_ref(&leaf), false);
    // A sealed alert from the client after its ChangeCipherSpec rejects the server.
    let mut t = T::new();
    t.data(C, 1, &client_hello(&[])).data(S, 2, &flight()).data(
        C,
        3,
        &cat(&[ccs(), record(21, &[0x33; 26])]),
    );
    let c = t.decided().expect("decided");
    assert_eq!(c.outcome, Outcome::RejectedByClient);
    assert_eq!(
        c.alerts,
        vec![Alert::Encrypted {
            from: C,
            ts: Timestamp(3)
        }]
    );
    // The same record before ChangeCipherSpec is a malformed plaintext alert, not a rejection.
    let mut t = T::new();
    t.data(C, 1, &client_hello(&[]))
        .data(S, 2, &flight())
        .data(C, 3, &record(21, &[0x33; 26]));
    assert!(t.decided().is_none());
    // A ChangeCipherSpec before the ServerHello does not start a side's encrypted handshake
    // (a TLS 1.3 client's compatibility CCS, then the server picks 1.2): the client's later
    // ClientKeyExchange is not its Finished.
    let mut t = T::new();
    t.data(C, 1, &cat(&[client_hello(&[]), ccs()]))
        .data(S, 2, &flight())
        .data(C, 3, &record(22, &hs(16, &[0; 33])))
        .data(S, 4, &cat(&[ccs(), sealed_finished()]))
        .close(S, 5, false);
    let c = t.decided().expect("decided by the close");
    assert_eq!(
        outcome_of(&c),
        (
            Outcome::Failed,
            "connection closed before the handshake completed (FIN from server)"
        )
    );
    // Application data both ways (the Finished lost in a gap) is a completed handshake.
    let mut t = T::new();
    t.data(C, 1, &client_hello(&[]))
        .data(S, 2, &flight())
        .data(C, 3, &app(30))
        .data(C, 4, &app(30));
    assert!(t.decided().is_none());
    t.data(S, 5, &app(40));
    let c = t.decided().expect("decided");
    assert_eq!(
        outcome_of(&c),
        (Outcome::Established, "application data in both directions")
    );
    assert_eq!(
        c.app_records,
        PerSide::from_fn(|s| if s == C { 2 } else { 1 })
    );
}

/// A TLS 1.3 exchange: the ServerHello, then `records` sealed records (side, length).
fn tls13(t: &mut T, psk: bool, records: &[(Side, usize)]) {
    t.data(C, 1, &client_hello(&[]));
    t.data(
        S,
        2,
        &cat(&[record(22, &server_hello_msg(true, &[], psk)), ccs()]),
    );
    t.data(C, 3, &ccs());
    for (i, &(side, len)) in records.iter().enumerate() {
        t.data(side, 4 + i as i64, &app(len));
    }
}

type FactRow = (&'static str, bool, Vec<(Side, usize)>, Outcome, bool, bool);

#[test]
fn tls13_sealed_records_and_inferred_client_auth() {
    // (what, psk, records, outcome, client_auth_requested, resumed)
    let rows: Vec<FactRow> = vec![
        (
            "client Certificate, CertificateVerify, Finished: asked for a certificate",
            false,
            vec![(S, 600), (S, 53), (C, 700), (C, 97), (C, 53), (S, 200)],
            Outcome::Established,
            true,
            false,
        ),
        (
            "only the Finished: not asked",
            false,
            vec![(S, 600), (S, 53), (C, 53), (S, 200)],
            Outcome::Established,
            false,
            false,
        ),
        (
            "a client that aborted sent no flight to infer from",
            false,
            vec![(S, 600), (S, 53), (C, 19)],
            Outcome::RejectedByClient,
            false,
            false,
        ),
        (
            "a PSK handshake is resumed; the compatibility CCS is no sign of resumption",
            true,
            vec![(S, 60), (S, 53), (C, 53), (S, 200)],
            Outcome::Established,
            false,
            true,
        ),
    ];
    for (what, psk, records, outcome, auth, resumed) in rows {
        let mut t = T::new();
        tls13(&mut t, psk, &records);
        let c = t.decided().unwrap_or_else(|| panic!("{what}: undecided"));
        assert_eq!(c.outcome, outcome, "{what}: {}", c.evidence);
        assert_eq!(c.version, Some(Version::TLS13), "{what}");
        assert_eq!(c.client_auth_requested, auth, "{what}");
        assert_eq!(c.resumed, resumed, "{what}");
    }
    // Sealed records are remembered up to a bound (64): a server that sends 70 records before
    // the client answers.
    let mut t = T::new();
    let many: Vec<(Side, usize)> = (0..70).map(|_| (S, 100)).collect();
    tls13(&mut t, false, &many);
    assert!(t.decided().is_none());
    t.close(C, 100, false);
    let c = t.decided().expect("decided by the close");
    assert_eq!(
        outcome_of(&c),
        (
            Outcome::RejectedByClient,
            "TLS 1.3: connection closed (FIN from client) after 64 server records, without any \
             client record"
        )
    );
}

#[test]
fn alerts_and_chains_are_bounded_and_counted() {
    let ca = TestCa::kubeedge();
    let ders: Vec<Vec<u8>> = (0..3).map(|i| ca.leaf(&[&format!("n{i}")]).der).collect();
    let limits = Limits {
        max_chain_len: 2,
        ..Limits::default()
    };
    let mut t = T::with(&limits);
    // Twenty warnings: the first sixteen are kept.
    let warnings: Vec<Vec<u8>> = (0..20).map(|_| record(21, &[1, 112])).collect();
    t.data(C, 1, &client_hello(&[]))
        .data(S, 2, &server_flight_12(&[], &ders, false))
        .data(S, 3, &cat(&warnings));
    assert_eq!(t.ctx.stats.alerts_dropped, 4);
    assert_eq!(t.ctx.stats.chain_certs_dropped, 1);
    // An empty Certificate does not replace the chain already seen.
    t.data(S, 4, &record(22, &certificate_msg(&[])));
    let c = t
        .tracker
        .finish(CloseReason::CaptureEnd, Timestamp(5))
        .unwrap();
    assert_eq!(c.alerts.len(), 16);
    assert_eq!(c.server_chain.len(), 2);
    assert_eq!(c.outcome, Outcome::Incomplete);
    assert_eq!(c.evidence, "capture ended before the handshake completed");
}

#[test]
fn finish_names_why_an_undecided_flow_ended() {
    let rows = [
        (CloseReason::Evicted, " [flow evicted]"),
        (CloseReason::IdleTimeout, " [flow idle timeout]"),
        (CloseReason::CaptureEnd, ""),
        (CloseReason::Fin, ""),
    ];
    for (reason, suffix) in rows {
        let mut t = T::new();
        t.data(C, 11, &client_hello(&[]));
        let c = t.tracker.finish(reason, Timestamp(30)).unwrap();
        assert_eq!(c.outcome, Outcome::Incomplete);
        assert_eq!(
            c.evidence,
            format!("no ServerHello before the connection ended (capture end){suffix}"),
            "{reason:?}"
        );
        assert_eq!(
            c.end,
            Timestamp(30),
            "the later of the last packet and the end"
        );
    }
    // The end is never before the last packet.
    let mut t = T::new();
    t.data(C, 11, &client_hello(&[]));
    assert_eq!(
        t.tracker
            .finish(CloseReason::Fin, Timestamp(5))
            .unwrap()
            .end,
        Timestamp(11)
    );
    // A flow without a hello has nothing to report.
    let mut t = T::new();
    t.data(C, 11, b"GET / HTTP/1.1\r\n\r\n").close(C, 12, false);
    assert!(t.decided().is_none());
    assert!(t.tracker.finish(CloseReason::Fin, Timestamp(13)).is_none());
}

#[test]
fn closes_gaps_and_payload_before_the_hello() {
    // The first close of a side counts; a decision follows the close.
    let mut t = T::new();
    t.data(C, 1, &client_hello(&[]))
        .close(C, 5, true)
        .close(C, 6, false);
    let c = t.decided().expect("decided by the close");
    assert_eq!(
        outcome_of(&c),
        (
            Outcome::Incomplete,
            "no ServerHello before the connection ended (RST from client)"
        )
    );
    assert_eq!(c.end, Timestamp(6));
    // Gap bytes add up per side.
    let mut t = T::new();
    t.data(C, 1, &client_hello(&[]));
    t.tracker.on_gap(&mut t.ctx, C, 100);
    t.tracker.on_gap(&mut t.ctx, C, 20);
    t.tracker.on_gap(&mut t.ctx, S, 7);
    let c = t.tracker.finish(CloseReason::Fin, Timestamp(2)).unwrap();
    assert_eq!(
        c.gap_bytes,
        PerSide::from_fn(|s| if s == C { 120 } else { 7 })
    );
    // Before any hello, payload is read up to the handshake window, then given up on.
    let limits = Limits {
        handshake_window: 100,
        ..Limits::default()
    };
    let mut t = T::with(&limits);
    t.data(C, 1, &[b'x'; 100]);
    assert!(t.tracker.wants_data(), "exactly the window");
    t.data(C, 2, b"y");
    assert!(!t.tracker.wants_data(), "past the window");
    // With the default (larger) window, a flow that is not TLS is given up on after 64 KiB
    // without a hello; a protocol that upgrades to TLS within that still gets its handshake read.
    let mut t = T::new();
    t.data(C, 1, &[b'x'; 60 * 1024]);
    assert!(t.tracker.wants_data(), "60 KiB of plaintext: still looking");
    t.data(C, 2, &client_hello(&[]));
    let c = t.tracker.finish(CloseReason::Fin, Timestamp(3));
    assert!(
        c.is_some_and(|c| c.client_hello.is_some()),
        "the late hello"
    );
    let mut t = T::new();
    t.data(C, 1, &[b'x'; 64 * 1024]);
    assert!(t.tracker.wants_data(), "exactly 64 KiB");
    t.data(C, 2, b"y");
    assert!(!t.tracker.wants_data(), "past 64 KiB: not TLS");
}

/// A ClientHello record offering TLS 1.2 with server name `sni`: two cipher suites, two groups and
/// two signature schemes.
fn client_hello_sni(sni: &str) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&[7; 32]);
    b.push(0);
    b.extend_from_slice(&[0, 4, 0xc0, 0x2b, 0xc0, 0x2f]);
    b.extend_from_slice(&[1, 0]);
    let name = sni.as_bytes();
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(name.len() as u16 + 5).to_be_bytes());
    ext.extend_from_slice(&(name.len() as u16 + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    // supported_groups (x25519, secp256r1, secp384r1) and signature_algorithms (two schemes):
    // lists of different lengths, so a sum of their sizes is not also their product.
    ext.extend_from_slice(&[0, 10, 0, 8, 0, 6, 0, 0x1d, 0, 0x17, 0, 0x18]);
    ext.extend_from_slice(&[0, 13, 0, 6, 0, 4, 4, 3, 8, 4]);
    b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    b.extend_from_slice(&ext);
    record(22, &hs(1, &b))
}

#[test]
fn a_probe_is_known_by_its_server_name_alone() {
    for (sni, probe) in [
        (crate::config::PROBE_SNI, true),
        ("cloudcore.kubeedge.example", false),
        ("trustwatch-probe.invalid.example", false),
    ] {
        let mut t = T::new();
        t.data(C, 1, &client_hello_sni(sni));
        let c = t.tracker.finish(CloseReason::Fin, Timestamp(2)).unwrap();
        assert_eq!(c.client_hello.and_then(|h| h.sni).as_deref(), Some(sni));
        assert_eq!(c.probe, probe, "{sni}");
    }
    // No server name: not a probe.
    let mut t = T::new();
    t.data(C, 1, &client_hello(&[]));
    let c = t.tracker.finish(CloseReason::Fin, Timestamp(2)).unwrap();
    assert!(!c.probe);
}

#[test]
fn each_fact_is_taken_from_its_own_direction() {
    let ca = TestCa::kubeedge();
    let (first, second) = (ca.leaf(&["first"]).der, ca.leaf(&["second"]).der);
    let mut t = T::new();
    // A ClientHello from the server side and a ServerHello or CertificateRequest from the
    // client side are not the handshake's.
    t.data(S, 1, &client_hello(&[1; 32]))
        .data(C, 2, &client_hello(&[2; 32]))
        .data(C, 3, &record(22, &server_hello_msg(true, &[], false)))
        .data(C, 4, &record(22, &hs(13, &[1, 64, 0, 0, 0, 0])));
    assert!(t.decided().is_none());
    // The server's flight: a second non-empty Certificate replaces the first.
    t.data(
        S,
        5,
        &server_flight_12(&[], std::slice::from_ref(&first), false),
    )
    .data(
        S,
        6,
        &record(22, &certificate_msg(std::slice::from_ref(&second))),
    );
    let c = t
        .tracker
        .finish(CloseReason::CaptureEnd, Timestamp(7))
        .unwrap();
    assert_eq!(
        c.client_hello.as_ref().map(|h| h.session_id.clone()),
        Some(vec![2; 32])
    );
    assert_eq!(c.version, Some(Version::TLS12), "the server's ServerHello");
    assert!(
        !c.client_auth_requested,
        "a CertificateRequest only counts from the server"
    );
    let sha = |der: &[u8]| crate::cert::parse(der).info().map(|i| i.sha256.clone());
    assert_eq!(
        c.server_chain
            .iter()
            .map(|p| p.info().map(|i| i.sha256.clone()))
            .collect::<Vec<_>>(),
        vec![sha(&second)]
    );
}

#[test]
fn a_server_hello_only_the_client_sent_negotiates_nothing() {
    // A client echoing a ServerHello (a reflector, a confused peer) does not choose a version.
    let mut t = T::new();
    t.data(C, 1, &client_hello(&[2; 32])).data(
        C,
        2,
        &record(22, &server_hello_msg(true, &[], true)),
    );
    let c = t
        .tracker
        .finish(CloseReason::CaptureEnd, Timestamp(3))
        .unwrap();
    assert_eq!(c.version, None);
    assert!(c.server_hello.is_none());
    assert!(!c.resumed);
}

#[test]
fn a_decision_is_made_once() {
    // TLS 1.3: the server's alert-sized record and its close decide; the client's close that
    // follows does not decide (nor infer an alert) again.
    let mut t = T::new();
    tls13(&mut t, false, &[(S, 600), (S, 53), (C, 53), (S, 19)]);
    t.close(S, 20, false).close(C, 21, false);
    let c = t.decided().expect("decided at the server's close");
    assert_eq!(c.outcome, Outcome::RejectedByServer);
    assert_eq!(
        c.alerts,
        vec![Alert::Encrypted {
            from: S,
            ts: Timestamp(7)
        }]
    );
    assert_eq!(c.end, Timestamp(21));
    // Counters the flow table adds through the tracker's context are the shared ones.
    t.ctx.as_mut().flows_opened += 2;
    assert_eq!(t.ctx.stats.flows_opened, 2);
}

/// ALPS (Chrome): the client's EncryptedExtensions before Finished is not a certificate.
fn sealed(from: Side, lens: &[u16]) -> Vec<SealedRecord> {
    lens.iter()
        .map(|&len| SealedRecord {
            from,
            len,
            ts: Timestamp(0),
        })
        .collect()
}

#[test]
fn alps_encrypted_extensions_are_not_a_client_certificate() {
    let server = sealed(Side::Server, &[23, 600, 95, 53]);
    let with = |client: &[u16]| [server.clone(), sealed(Side::Client, client)].concat();
    // Chrome with ALPS, no certificate asked: EncryptedExtensions, then Finished.
    assert!(!tls13_client_auth(&with(&[40, 53]), true));
    // Without ALPS offered the same record would be an (empty) certificate.
    assert!(tls13_client_auth(&with(&[25, 53]), false));
    // mTLS: Certificate and CertificateVerify before Finished, with and without ALPS.
    assert!(tls13_client_auth(&with(&[700, 95, 53]), false));
    assert!(tls13_client_auth(&with(&[40, 700, 95, 53]), true));
    // An ALPS client asked for a certificate that has none: EE and an empty Certificate.
    assert!(tls13_client_auth(&with(&[40, 25, 53]), true));
    // No certificate asked, no ALPS: straight to Finished.
    assert!(!tls13_client_auth(&with(&[53]), false));
}

/// What the flow table charges for a tracker, computed here from the parts it holds.
fn charged_parts(t: &Tracker) -> [usize; 7] {
    let hello = t.client_hello.as_deref().map_or(0, |h| {
        std::mem::size_of::<ClientHello>()
            + 2 * (h.ciphers.capacity()
                + h.extensions.capacity()
                + h.groups.capacity()
                + h.signature_algorithms.capacity())
            + h.fingerprints.as_deref().map_or(0, |f| {
                std::mem::size_of_val(f)
                    + f.ja3.capacity()
                    + f.ja3_md5.capacity()
                    + f.ja4.capacity()
            })
            + h.sni.as_ref().map_or(0, String::capacity)
    });
    let presented = std::mem::size_of::<crate::cert::Presented>();
    [
        t.streams.client.heap_bytes(),
        t.streams.server.heap_bytes(),
        hello,
        t.server_hello
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<ServerHello>()),
        t.alerts.capacity() * std::mem::size_of::<Alert>(),
        t.sealed.capacity() * std::mem::size_of::<SealedRecord>(),
        (t.sides.client.chain.capacity() + t.sides.server.chain.capacity()) * presented,
    ]
}

#[test]
fn memory_charged_is_every_buffer_hello_alert_record_and_chain_held() {
    let leaf = TestCa::kubeedge().leaf(&["cloudcore"]).der;
    // TLS 1.2, undecided: hellos, the server's chain, a warning alert and half a record from
    // each side buffered.
    let mut t = T::new();
    assert_eq!(t.tracker.heap_bytes(), 0, "nothing held yet");
    t.data(C, 1, &client_hello_sni("cloudcore.kubeedge.example"));
    let hello_only = t.tracker.heap_bytes();
    t.data(
        S,
        2,
        &server_flight_12(&[], std::slice::from_ref(&leaf), true),
    );
    t.data(S, 3, &record(21, &[1, 90]));
    t.data(
        C,
        4,
        &record(22, &certificate_msg(std::slice::from_ref(&leaf))),
    );
    let half = |len: usize| record(22, &vec![0x0b; len])[..len / 2].to_vec();
    t.data(C, 5, &half(3000));
    t.data(S, 6, &half(2000));
    assert!(t.decided().is_none());
    let parts = charged_parts(&t.tracker);
    let hello = t.tracker.client_hello.as_deref().expect("hello");
    assert!(
        [
            hello.ciphers.len(),
            hello.extensions.len(),
            hello.groups.len(),
            hello.signature_algorithms.len()
        ]
        .iter()
        .all(|&n| n >= 2),
        "every list of the hello is charged: {hello:?}"
    );
    let sealed = 5;
    assert!(
        (0..parts.len()).all(|i| i == sealed || parts[i] > 1),
        "every part but the TLS 1.3 records held: {parts:?}"
    );
    assert!(parts[0] >= 1500 && parts[1] >= 1000, "{parts:?}");
    assert_eq!(t.tracker.heap_bytes(), parts.iter().sum::<usize>());
    assert!(hello_only < t.tracker.heap_bytes());

    // TLS 1.3: the sealed records.
    let mut t = T::new();
    tls13(&mut t, false, &[(S, 100), (S, 900), (S, 300)]);
    let parts = charged_parts(&t.tracker);
    assert!(parts[5] > 1, "the sealed records held: {parts:?}");
    assert_eq!(t.tracker.heap_bytes(), parts.iter().sum::<usize>());
}
