//! RecordStream, hello and fingerprint tests on the first flights of public captures
//! (`tls/testdata/*.hex`, extracted with `tshark -z follow,tcp,raw`) against the JA3/JA4 values the
//! source projects' own test suites assert (see /work/shared/validation/expected), plus synthetic
//! streams for fragmentation, limits, gaps and encryption state.

use super::*;
use crate::tls::fingerprint;
use crate::tls::{ClientHello, ServerHello};

macro_rules! testdata {
    ($name:literal) => {
        hex::decode(include_str!(concat!("../testdata/", $name, ".hex")).trim()).unwrap()
    };
}

/// Owned copy of an event, for comparisons.
#[derive(Debug, PartialEq)]
enum Ev {
    Record(ContentType, u16, u16),
    ClientHello(Box<ClientHello>),
    ServerHello(Box<ServerHello>),
    Certificate(Vec<Vec<u8>>, bool),
    Alert(u8, u8),
    Opaque(ContentType, u16),
    Other(String),
}

fn own(e: TlsEvent<'_>) -> Ev {
    match e {
        TlsEvent::Record {
            content_type,
            version,
            len,
        } => Ev::Record(content_type, version.0, len),
        TlsEvent::ClientHello(c) => Ev::ClientHello(c),
        TlsEvent::ServerHello(s) => Ev::ServerHello(s),
        TlsEvent::Certificate { certs, tls13 } => {
            Ev::Certificate(certs.iter().map(|c| c.to_vec()).collect(), tls13)
        }
        TlsEvent::Alert { level, code } => Ev::Alert(level, code),
        TlsEvent::Opaque { content_type, len } => Ev::Opaque(content_type, len),
        other => Ev::Other(format!("{other:?}")),
    }
}

fn feed_all(s: &mut RecordStream, bytes: &[u8], chunk: usize, stats: &mut Stats) -> Vec<Ev> {
    let mut out = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        s.feed(c, stats, &mut |e| out.push(own(e)));
    }
    out
}

fn run(bytes: &[u8], chunk: usize) -> (Vec<Ev>, Stats) {
    let mut stats = Stats::default();
    let window = crate::config::Limits::default().handshake_window;
    let ev = feed_all(&mut RecordStream::new(window), bytes, chunk, &mut stats);
    (ev, stats)
}

fn client_hellos(bytes: &[u8]) -> Vec<ClientHello> {
    let (ev, stats) = run(bytes, usize::MAX);
    assert_eq!(
        stats.malformed_records + stats.malformed_handshakes,
        0,
        "{stats:?}"
    );
    ev.into_iter()
        .filter_map(|e| match e {
            Ev::ClientHello(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn client_hello(bytes: &[u8]) -> ClientHello {
    let mut v = client_hellos(bytes);
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn server_hello(bytes: &[u8]) -> ServerHello {
    let (ev, _) = run(bytes, usize::MAX);
    ev.into_iter()
        .find_map(|e| match e {
            Ev::ServerHello(s) => Some(*s),
            _ => None,
        })
        .unwrap()
}

/// (JA3 MD5, JA4) as asserted by nDPI, Suricata and Arkime.
#[test]
fn ja3_ja4_match_other_tools() {
    let cases: [(&str, Vec<u8>, Option<&str>, &str); 14] = [
        // nDPI prints "ht" for ALPN "http/1.1" (first two characters); the JA4 spec takes the
        // first and last character: "h1".
        (
            "ndpi http_ipv6",
            testdata!("ndpi-http_ipv6.client"),
            Some("d3e627f423a33ea41841c19b8af79293"),
            "t12d1612h1_94fc43e2fc61_c9eaec7dbab4",
        ),
        (
            "ndpi tls_alert",
            testdata!("ndpi-tls_alert.client"),
            Some("d78489b860c8bf7838a6ff0b4d131541"),
            "t10d0909h2_61c4dbd01224_cc731f12afbb",
        ),
        (
            "ndpi malicious_sha1",
            testdata!("ndpi-tls_malicious_sha1.client"),
            Some("00bcd759cb8ad485fdbf1e7a0c5b94b4"),
            "t12d2808h2_d943125447b4_dd0a478c1db3",
        ),
        // nDPI prints "d" although the hello has no server_name extension (tshark: no SNI; nDPI
        // itself flags "Missing SNI TLS Extn"): the spec's "i".
        (
            "ndpi whois",
            testdata!("ndpi-whois.client"),
            Some("5f48063f9f3a827056ccdabadcc3886a"),
            "t12i1908h2_d83cc789557e_16bbda4055b2",
        ),
        // Suricata hashes "extensions_" when there are no signature algorithms (its
        // ce66f3b797c1, checked below); the spec and Arkime (mysql case) hash without the "_".
        (
            "sv bug-5713",
            testdata!("sv-bug-5713-01-TLSv1-Extracted-MaliciousC2.client"),
            None,
            "t10i070600_c50f5591e341_c39ab67fec8e",
        ),
        (
            "sv ja4-tls-quic",
            testdata!("sv-ja4-tls-quic.client"),
            None,
            "t13d1516h2_8daaf6152771_e5627efa2ab1",
        ),
        (
            "sv ja4-tls",
            testdata!("sv-ja4-tls.client"),
            None,
            "t12i1810s1_27d4652c4487_06a4338d0495",
        ),
        (
            "arkime badcurveball",
            testdata!("arkime-badcurveball.client"),
            Some("66918128f1b9b03303d77c6f2eefd128"),
            "t13d1615H2_46e7e9700bed_45f260be83e2",
        ),
        (
            "arkime curl tls13",
            testdata!("arkime-curl-enabled-tls13.client"),
            Some("eeadfd2f446a45ded96f804720a0c75b"),
            "t13d0413h2_16476d049b0b_ffceb19bae65",
        ),
        (
            "arkime mysql",
            testdata!("arkime-mysql-tls.client"),
            Some("3509fd9d38bde48d8abc69cd321c0ba0"),
            "t11i220200_fd01a07dbaa1_33a13ba74d1c",
        ),
        (
            "arkime ssl3",
            testdata!("arkime-openssl-ssl3.client"),
            Some("f917ae2520ef9784557b0a3c02489c2c"),
            "ts3i460000_234845559c90_000000000000",
        ),
        (
            "arkime tls1_2",
            testdata!("arkime-openssl-tls1_2.client"),
            Some("c1a36e1a870786cc75edddc0009eaf3a"),
            "t12i740500_c43983326036_3eafcbe19126",
        ),
        (
            "arkime alpn-h2",
            testdata!("arkime-tls-alpn-h2.client"),
            Some("3faa4ad39f690c4ef1c3160caa375465"),
            "t12d4605h2_85626a9a5f7f_aaf95bb78ec9",
        ),
        (
            "arkime split hello",
            testdata!("arkime-tls-split-client-hello.client"),
            Some("35708a08e7be9f7aa5bce7f2d5c1cecb"),
            "t13d1516h2_8daaf6152771_02713d6af862",
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes, ja3, ja4) in &cases {
        let ch = client_hello(bytes);
        if let Some(ja3) = ja3
            && ch.ja3_md5() != *ja3
        {
            failures.push(format!(
                "{name}: ja3 {} != {ja3} ({})",
                ch.ja3_md5(),
                ch.ja3()
            ));
        }
        if ch.ja4() != *ja4 {
            failures.push(format!("{name}: ja4 {} != {ja4}", ch.ja4()));
        }
        assert_eq!(
            fingerprint::ja4(&ch),
            ch.ja4(),
            "{name}: ja4 from the struct"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // The Suricata bug-5713 difference is exactly the trailing underscore.
    let ch = client_hello(&testdata!(
        "sv-bug-5713-01-TLSv1-Extracted-MaliciousC2.client"
    ));
    assert!(ch.signature_algorithms.is_empty());
    let mut exts: Vec<u16> = ch.extensions.clone();
    exts.sort_unstable();
    let list: Vec<String> = exts.iter().map(|e| format!("{e:04x}")).collect();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!(
        "{}_",
        list.join(",")
    )));
    assert_eq!(&digest[..12], "ce66f3b797c1");
}

#[test]
fn ja3_strings_match_suricata_and_arkime() {
    let draft28 = "771,4866-4867-4865-4868-49196-52393-49325-49162-49195-49324-49161-49200-52392-49172-49199-49171-157-49309-53-156-49308-47-159-52394-49311-57-158-49310-51,5-10-11-13-22-23-35-51-43-65281-0-45";
    let ch0 = client_hello(&testdata!("sv-tls13-draft28.client"));
    let ch1 = client_hellos(&testdata!("sv-tls13-draft28.1.client"));
    let mut seen = vec![(ch0.ja3().to_string(), ch0.ja3_md5().to_string())];
    seen.extend(
        ch1.iter()
            .map(|c| (c.ja3().to_string(), c.ja3_md5().to_string())),
    );
    assert!(
        seen.contains(&(
            format!("{draft28},23,0"),
            "43202faa1c8c1760d6f7f4bd9adde4ab".into()
        )),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(
            format!("{draft28}-41,23,0"),
            "d00857e0c8e7a7f35e446508c6233460".into()
        )),
        "{seen:?}"
    );
    assert_eq!(ch0.sni.as_deref(), Some("localhost"));
    assert!(ch0.supported_versions.contains(&Version(0x7f1c)));

    let ssl3 = client_hello(&testdata!("arkime-openssl-ssl3.client"));
    assert!(ssl3.ja3().starts_with("768,49172-49162-57-56-"));
    assert!(ssl3.ja3().ends_with("-255,,,"));

    // Suricata tls-duplicate-hello: the client sends its ClientHello twice; JA3 of the first.
    let dup = client_hellos(&testdata!("sv-tls-duplicate-hello.client"));
    assert_eq!(dup.len(), 2);
    assert_eq!(dup[0].ja3(), format!("{draft28},23,0"));
}

#[test]
fn client_hello_fields() {
    // Suricata ja4-cl-handshake: ciphers, extensions and signature algorithms in wire order.
    let ch = client_hello(&testdata!("sv-ja4-sv-handshake.client"));
    assert_eq!(ch.legacy_version, Version::TLS12);
    assert_eq!(
        ch.ciphers,
        [
            49196, 49200, 159, 52393, 52392, 52394, 49195, 49199, 158, 49188, 49192, 107, 49187,
            49191, 103, 49162, 49172, 57, 49161, 49171, 51, 157, 156, 61, 60, 53, 47, 255
        ]
    );
    assert_eq!(ch.extensions, [0, 11, 10, 35, 22, 23, 13]);
    assert_eq!(
        ch.signature_algorithms,
        [
            1027, 1283, 1539, 2055, 2056, 2057, 2058, 2059, 2052, 2053, 2054, 1025, 1281, 1537,
            771, 515, 769, 513, 770, 514, 1026, 1282, 1538
        ]
    );
    // nDPI: SNI and advertised ALPNs.
    let ch = client_hello(&testdata!("ndpi-http_ipv6.client"));
    assert_eq!(ch.sni.as_deref(), Some("www.ntop.org"));
    assert_eq!(ch.alpn, ["http/1.1", "spdy/3.1", "h2-14", "h2"]);
    let ch = client_hello(&testdata!("ndpi-tls_alert.client"));
    assert_eq!(ch.sni.as_deref(), Some("www.google-analytics.com"));
    assert_eq!(
        ch.alpn,
        [
            "h2", "h2-16", "h2-15", "h2-14", "spdy/3.1", "spdy/3", "http/1.1"
        ]
    );
    assert_eq!(ch.legacy_version, Version::TLS10);
    // Chrome-style hello: GREASE removed everywhere.
    let ch = client_hello(&testdata!("arkime-tls-split-client-hello.client"));
    for list in [
        &ch.ciphers,
        &ch.extensions,
        &ch.groups,
        &ch.signature_algorithms,
    ] {
        assert!(
            list.iter().all(|&v| !crate::tls::hello::is_grease(v)),
            "{list:?}"
        );
    }
    assert!(ch.supported_versions.contains(&Version::TLS13));
    assert_eq!(ch.groups, [4588, 29, 23, 24]);
    assert_eq!(ch.ec_point_formats, [0]);
}

#[test]
fn every_chunking_gives_the_same_events() {
    for bytes in [
        testdata!("sv-tls-certs-alert.server"),
        testdata!("sv-tls-store-02-tls-client-auth.client"),
        testdata!("arkime-tls-split-client-hello.client"),
        testdata!("sv-sslv2-tls-upgrade-01-ssl-v2-s1.client"),
    ] {
        let (whole, stats) = run(&bytes, usize::MAX);
        assert_eq!(stats.malformed_records + stats.malformed_handshakes, 0);
        for chunk in [1, 2, 3, 5, 7, 100, 1460] {
            let (ev, s) = run(&bytes, chunk);
            assert_eq!(ev, whole, "chunk {chunk}");
            assert_eq!(s, stats, "chunk {chunk}");
        }
    }
}

#[test]
fn server_flight_events_in_order() {
    // Suricata tls-certs-alert: ServerHello, 3-cert chain, SKE, SHD; JA3S asserted.
    let (ev, stats) = run(&testdata!("sv-tls-certs-alert.server"), 1000);
    let kinds: Vec<String> = ev
        .iter()
        .filter(|e| !matches!(e, Ev::Record(..)))
        .map(|e| match e {
            Ev::ServerHello(_) => "SH".into(),
            Ev::Certificate(c, false) => format!("Cert{}", c.len()),
            Ev::Other(s) => s.clone(),
            e => format!("{e:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "SH",
            "Cert3",
            "ServerKeyExchange",
            "ServerHelloDone",
            "ChangeCipherSpec"
        ]
    );
    assert_eq!(
        stats.tls_records,
        ev.iter().filter(|e| matches!(e, Ev::Record(..))).count() as u64
    );
    let sh = server_hello(&testdata!("sv-tls-certs-alert.server"));
    assert_eq!(
        fingerprint::ja3s(&sh),
        (
            "771,49199,65281-0-11-16-23".into(),
            "5d79edf64e03689ff559a54e9d9487bc".into()
        )
    );
    // Suricata ja4-sv-handshake.
    let sh = server_hello(&testdata!("sv-ja4-sv-handshake.server"));
    assert_eq!((sh.selected_version, sh.cipher), (Version::TLS12, 49200));
    assert_eq!(sh.extensions, [65281, 11, 35, 23]);
    assert!(!sh.hello_retry);
    // nDPI JA3S.
    let sh = server_hello(&testdata!("ndpi-tls_malicious_sha1.server"));
    assert_eq!(fingerprint::ja3s(&sh).1, "e2bc06b738d7e5d2b0cec5d2196b1d80");
    let sh = server_hello(&testdata!("ndpi-whois.server"));
    assert_eq!(fingerprint::ja3s(&sh).1, "649d6810e8392f63dc311eecb6b7098b");
}

#[test]
fn tls13_server_hellos() {
    // zeek hrr: the first server flight is a HelloRetryRequest.
    let sh = server_hello(&testdata!("zeek-hrr.server"));
    assert!(sh.hello_retry);
    assert_eq!(sh.selected_version, Version::TLS13);
    // Suricata ja4-tls-quic TCP session: TLS 1.3, h2; then CCS and encrypted records.
    let (ev, _) = run(&testdata!("sv-ja4-tls-quic.server"), usize::MAX);
    let Some(Ev::ServerHello(sh)) = ev.iter().find(|e| matches!(e, Ev::ServerHello(_))) else {
        panic!()
    };
    assert_eq!(sh.selected_version, Version::TLS13);
    assert!(!sh.hello_retry);
    // draft-28 and the pre-22 draft layout (zeek tls13draft16: version 0x7f10, no session id).
    assert_eq!(
        server_hello(&testdata!("sv-tls13-draft28.server")).selected_version,
        Version(0x7f1c)
    );
    let sh = server_hello(&testdata!("zeek-tls13draft16-ff52.a01.server"));
    assert_eq!(sh.selected_version, Version(0x7f10));
    assert_eq!(sh.cipher.to_be_bytes(), [0x13, 0x03]); // zeek: TLS_CHACHA20_POLY1305_SHA256
}

#[test]
fn sslv2_client_hello() {
    let bytes = testdata!("sv-sslv2-tls-upgrade-01-ssl-v2-s1.client");
    assert!(looks_like_tls_start(&bytes));
    assert!(looks_like_client_hello(&bytes));
    let (ev, stats) = run(&bytes, usize::MAX);
    assert_eq!(stats.malformed_records + stats.malformed_handshakes, 0);
    assert!(matches!(
        ev.first(),
        Some(Ev::Record(ContentType::Handshake, 0x0200, _))
    ));
    let Some(Ev::ClientHello(ch)) = ev.get(1) else {
        panic!("{ev:?}")
    };
    assert!(ch.sslv2);
    assert_eq!(ch.legacy_version, Version::TLS10);
    assert!(!ch.ciphers.is_empty());
    assert!(ch.extensions.is_empty());
    // The SSLv2 hello's cipher specs: every kept one is a TLS id (first byte 0 on the wire).
    let specs_len = usize::from(u16::from_be_bytes([bytes[5], bytes[6]]));
    let tls_ids: Vec<u16> = bytes[11..11 + specs_len]
        .chunks(3)
        .filter(|s| s[0] == 0)
        .map(|s| u16::from_be_bytes([s[1], s[2]]))
        .collect();
    assert_eq!(ch.ciphers, tls_ids);
    assert!(
        tls_ids.len() < specs_len / 3,
        "the capture also offers SSLv2-only specs"
    );
}

#[test]
fn plaintext_alerts() {
    // Suricata tls-extra-alert: fatal handshake_failure; nDPI tls_alert ("TLS Fatal Alert"):
    // fatal protocol_version (tshark).
    for (bytes, code) in [
        (testdata!("sv-tls-extra-alert.server"), 40),
        (testdata!("ndpi-tls_alert.server"), 70),
    ] {
        let (ev, _) = run(&bytes, usize::MAX);
        assert_eq!(
            ev,
            [
                Ev::Record(ContentType::Alert, 0x0301, 2),
                Ev::Alert(2, code)
            ]
        );
    }
}

fn record(ct: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![ct, 3, 3];
    r.extend((payload.len() as u16).to_be_bytes());
    r.extend(payload);
    r
}

fn handshake(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty];
    m.extend(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend(body);
    m
}

fn u24(n: usize) -> [u8; 3] {
    let b = (n as u32).to_be_bytes();
    [b[1], b[2], b[3]]
}

fn tls12_certificate(certs: &[Vec<u8>]) -> Vec<u8> {
    let mut list = Vec::new();
    for c in certs {
        list.extend(u24(c.len()));
        list.extend(c);
    }
    let mut body = u24(list.len()).to_vec();
    body.extend(list);
    handshake(11, &body)
}

/// Splits handshake bytes into records of at most 16384 bytes.
fn records(ct: u8, bytes: &[u8]) -> Vec<u8> {
    bytes.chunks(16384).flat_map(|c| record(ct, c)).collect()
}

#[test]
fn large_certificate_spans_many_records_and_chunks() {
    // ~300 KB chain, like zeek's tls-fragmented-handshake.
    let certs: Vec<Vec<u8>> = (0..3u8)
        .map(|i| (0..100_000u32).map(|j| (j as u8) ^ i).collect())
        .collect();
    let mut msgs = tls12_certificate(&certs);
    msgs.extend(handshake(14, &[]));
    let stream = records(22, &msgs);
    for chunk in [1460, 7, usize::MAX] {
        let (ev, stats) = run(&stream, chunk);
        let got: Vec<&Ev> = ev.iter().filter(|e| !matches!(e, Ev::Record(..))).collect();
        assert_eq!(got.len(), 2, "chunk {chunk}");
        assert_eq!(got[0], &Ev::Certificate(certs.clone(), false));
        assert_eq!(got[1], &Ev::Other("ServerHelloDone".into()));
        assert_eq!(stats.tls_records, msgs.len().div_ceil(16384) as u64);
    }
    // Above the handshake bound: skipped and counted, the next message still parsed.
    let mut stats = Stats::default();
    let mut s = RecordStream::new(64 * 1024).with_max_handshake(100_000);
    let ev = feed_all(&mut s, &stream, 1460, &mut stats);
    let got: Vec<&Ev> = ev.iter().filter(|e| !matches!(e, Ev::Record(..))).collect();
    assert_eq!(
        got,
        [
            &Ev::Other("Malformed".into()),
            &Ev::Other("ServerHelloDone".into())
        ]
    );
    assert_eq!(stats.malformed_handshakes, 1);
}

#[test]
fn tls13_certificate_layout() {
    let certs = vec![b"leaf-der".to_vec(), b"ca-der".to_vec()];
    let mut list = Vec::new();
    for c in &certs {
        list.extend(u24(c.len()));
        list.extend(c);
        list.extend([0, 0]); // no per-certificate extensions
    }
    let mut body = vec![0]; // empty request context
    body.extend(u24(list.len()));
    body.extend(list);
    let stream = record(22, &handshake(11, &body));
    let mut stats = Stats::default();
    let mut s = RecordStream::new(64 * 1024);
    s.set_tls13(true);
    let ev = feed_all(&mut s, &stream, usize::MAX, &mut stats);
    assert_eq!(ev[1], Ev::Certificate(certs.clone(), true));
    // Without the hint the layout is still recognised.
    let (ev, _) = run(&stream, usize::MAX);
    assert_eq!(ev[1], Ev::Certificate(certs, true));
}

#[test]
fn encrypted_handshake_after_change_cipher_spec() {
    let finished = [0x8cu8; 40];
    let mut stream = record(20, &[1]);
    stream.extend(record(22, &finished));
    stream.extend(record(21, &[0x55; 26])); // encrypted alert
    stream.extend(record(21, &[2, 40])); // a 2-byte alert cannot be encrypted
    stream.extend(record(23, &[0; 100]));
    let (ev, stats) = run(&stream, usize::MAX);
    let got: Vec<&Ev> = ev.iter().filter(|e| !matches!(e, Ev::Record(..))).collect();
    assert_eq!(
        got,
        [
            &Ev::Other("ChangeCipherSpec".into()),
            &Ev::Opaque(ContentType::Handshake, 40),
            &Ev::Opaque(ContentType::Alert, 26),
            &Ev::Alert(2, 40),
            &Ev::Opaque(ContentType::ApplicationData, 100),
        ]
    );
    assert_eq!(stats.malformed_handshakes, 0);

    // TLS 1.3 client after a HelloRetryRequest: compatibility CCS, then a plaintext ClientHello.
    let hello = testdata!("zeek-hrr.client");
    let mut stream = record(20, &[1]);
    stream.extend(&hello);
    let mut s = RecordStream::new(64 * 1024);
    s.set_tls13(true);
    let mut stats = Stats::default();
    let ev = feed_all(&mut s, &stream, usize::MAX, &mut stats);
    assert!(ev.iter().any(|e| matches!(e, Ev::ClientHello(_))));
    // Even without the hint, a record that is exactly one ClientHello is parsed.
    let (ev, _) = run(&stream, usize::MAX);
    assert!(ev.iter().any(|e| matches!(e, Ev::ClientHello(_))));
}

#[test]
fn several_alerts_in_one_record() {
    let (ev, _) = run(&record(21, &[1, 0, 2, 48]), usize::MAX);
    assert_eq!(ev[1..], [Ev::Alert(1, 0), Ev::Alert(2, 48)]);
}

#[test]
fn not_tls_is_reported_once() {
    let mut stats = Stats::default();
    let mut s = RecordStream::new(64 * 1024);
    let mut ev = feed_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 4, &mut stats);
    ev.extend(feed_all(
        &mut s,
        &record(22, &handshake(14, &[])),
        usize::MAX,
        &mut stats,
    ));
    assert_eq!(ev, [Ev::Other("NotTls".into())]);
    assert_eq!(s.state, State::NotTls);
}

#[test]
fn gap_drops_partial_data_and_resyncs_on_a_record_header() {
    let done = record(22, &handshake(14, &[]));
    let cert = record(22, &tls12_certificate(&[vec![7; 3000]]));
    let mut stats = Stats::default();
    let mut s = RecordStream::new(64 * 1024);
    let mut ev = feed_all(&mut s, &cert[..1000], usize::MAX, &mut stats);
    assert_eq!(ev.len(), 0);
    s.gap();
    ev.extend(feed_all(&mut s, &cert[1500..], usize::MAX, &mut stats)); // mid-record: dropped
    ev.extend(feed_all(&mut s, &[0x17, 0x03], usize::MAX, &mut stats)); // still not a header
    assert_eq!(ev.len(), 0);
    assert_eq!(stats.malformed_records, 2); // the cut record + the rejected data after the gap
    s.gap();
    ev.extend(feed_all(&mut s, &done, usize::MAX, &mut stats));
    assert_eq!(ev[1], Ev::Other("ServerHelloDone".into()));
}

#[test]
fn bad_header_mid_stream_is_malformed_until_a_gap() {
    let done = record(22, &handshake(14, &[]));
    let mut bad = done.clone();
    bad.extend([0x99, 3, 3, 0, 1, 0]);
    bad.extend(&done);
    let (ev, stats) = run(&bad, usize::MAX);
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[2], Ev::Other("Malformed".into()));
    assert_eq!(stats.malformed_records, 1);
    // A record bigger than the buffer bound cannot be buffered.
    let mut stats = Stats::default();
    let mut s = RecordStream::new(1000);
    let big = record(23, &[0; 5000]);
    let ev = feed_all(&mut s, &big, 100, &mut stats);
    assert_eq!(ev, [Ev::Other("Malformed".into())]);
}

#[test]
fn start_detection() {
    assert!(looks_like_tls_start(&record(22, &[1, 0, 0, 0])));
    assert!(looks_like_client_hello(&record(22, &[1, 0, 0, 0])));
    assert!(!looks_like_client_hello(&record(22, &[2, 0, 0, 0])));
    // Long enough to be an SSLv2 CLIENT-HELLO, but it is not one: a ServerHello, an HTTP request.
    assert!(!looks_like_client_hello(&record(
        22,
        &[2, 0, 0, 8, 3, 3, 0, 0, 0, 0, 0, 0]
    )));
    assert!(!looks_like_client_hello(b"GET / HTTP/1.1\r\n"));
    assert!(looks_like_tls_start(&record(23, &[0; 10])));
    assert!(!looks_like_tls_start(&record(24, &[0; 10])));
    assert!(!looks_like_tls_start(&record(22, &[])));
    assert!(!looks_like_tls_start(b"GET / HTTP/1.1"));
    assert!(!looks_like_tls_start(&[0x16, 0x03, 0x05, 0, 1]));
    assert!(!looks_like_tls_start(&[0x16, 0x03, 0x03, 0x48, 0x01]));
    assert!(!looks_like_tls_start(&[0x16, 0x03]));
    for name in [
        testdata!("sv-ja4-tls.client"),
        testdata!("ndpi-whois.client"),
    ] {
        assert!(looks_like_client_hello(&name));
    }
}

#[test]
fn a_tls13_stream_ignores_the_compatibility_change_cipher_spec() {
    // After the 1.3 middlebox-compatibility CCS, plaintext handshake records and multi-alert
    // records are still plaintext; after a TLS 1.2 CCS they are encrypted.
    let mut stream = record(20, &[1]);
    stream.extend(record(22, &handshake(14, &[])));
    stream.extend(record(21, &[1, 0, 2, 40]));
    for (tls13, want) in [
        (
            true,
            vec![
                Ev::Other("ChangeCipherSpec".into()),
                Ev::Other("ServerHelloDone".into()),
                Ev::Alert(1, 0),
                Ev::Alert(2, 40),
            ],
        ),
        (
            false,
            vec![
                Ev::Other("ChangeCipherSpec".into()),
                Ev::Opaque(ContentType::Handshake, 4),
                Ev::Opaque(ContentType::Alert, 4),
            ],
        ),
    ] {
        let mut s = RecordStream::new(64 * 1024);
        s.set_tls13(tls13);
        let ev = feed_all(&mut s, &stream, usize::MAX, &mut Stats::default());
        let got: Vec<Ev> = ev
            .into_iter()
            .filter(|e| !matches!(e, Ev::Record(..)))
            .collect();
        assert_eq!(got, want, "tls13: {tls13}");
    }
}

#[test]
fn buffers_are_charged_released_and_kept_only_when_small() {
    // A 40 KB handshake message over three records; the stream holds the first record's part in
    // the reassembly buffer and half of the second record in the cut-record buffer.
    let msg = tls12_certificate(&[vec![0x30; 40_000]]);
    let recs = records(22, &msg[..16384]);
    let second = record(22, &msg[16384..32768]);
    let third = record(22, &msg[32768..]);
    let mut s = RecordStream::new(1 << 20);
    let mut stats = Stats::default();
    let mut ev = feed_all(&mut s, &recs, usize::MAX, &mut stats);
    ev.extend(feed_all(&mut s, &second[..6000], usize::MAX, &mut stats));
    assert!(s.hs.len() == 16384 && s.partial.len() == 6000);
    assert_eq!(s.heap_bytes(), s.hs.capacity() + s.partial.capacity());
    assert!(s.heap_bytes() >= 16384 + 6000);
    // The message completes: a buffer under 64 KiB keeps its capacity for the next message.
    ev.extend(feed_all(&mut s, &second[6000..], usize::MAX, &mut stats));
    ev.extend(feed_all(&mut s, &third, usize::MAX, &mut stats));
    assert!(ev.iter().any(|e| matches!(e, Ev::Certificate(..))));
    assert!(s.hs.is_empty() && s.hs.capacity() >= 40_000, "kept");
    // Decided: `release` frees everything.
    s.release();
    assert_eq!(s.heap_bytes(), 0);

    // A message over 64 KiB: its buffer is freed once the message is parsed.
    let msg = tls12_certificate(&[vec![0x30; 100_000]]);
    let mut s = RecordStream::new(1 << 20);
    let ev = feed_all(&mut s, &records(22, &msg), 1460, &mut stats);
    assert!(ev.iter().any(|e| matches!(e, Ev::Certificate(..))));
    assert!(s.hs.is_empty());
    assert_eq!(s.hs.capacity(), 0, "a large reassembly buffer is not kept");
}

#[test]
fn a_gap_counts_the_handshake_message_it_cuts() {
    // (what, the stream's bytes before the gap, max handshake message, records lost, messages lost)
    let cert = records(22, &tls12_certificate(&[vec![7; 20_000]]));
    let first_record = &cert[..16384 + 5];
    let cases: [(&str, &[u8], usize, u64, u64); 4] = [
        (
            "nothing pending",
            &record(22, &handshake(14, &[])),
            1 << 20,
            0,
            0,
        ),
        ("a message spanning records", first_record, 1 << 20, 0, 1),
        (
            "an oversized message being skipped",
            first_record,
            1000,
            0,
            1,
        ),
        ("a cut record", &first_record[..3000], 1 << 20, 1, 0),
    ];
    for (what, before, max_handshake, records_lost, messages_lost) in cases {
        let mut s = RecordStream::new(1 << 20).with_max_handshake(max_handshake);
        let mut stats = Stats::default();
        feed_all(&mut s, before, usize::MAX, &mut stats);
        let (records_before, messages_before) =
            (stats.malformed_records, stats.malformed_handshakes);
        s.gap();
        // Counted when the stream is fed again.
        feed_all(
            &mut s,
            &record(22, &handshake(14, &[])),
            usize::MAX,
            &mut stats,
        );
        assert_eq!(
            (
                stats.malformed_records - records_before,
                stats.malformed_handshakes - messages_before
            ),
            (records_lost, messages_lost),
            "{what}"
        );
    }
}

#[test]
fn a_header_cut_by_the_boundary_still_bounds_the_record_buffered() {
    // The header arrives in two chunks; the record is then buffered only if it fits.
    for (payload, fits) in [(995, true), (996, false)] {
        let rec = record(23, &vec![0; payload]);
        let mut s = RecordStream::new(1000);
        let mut stats = Stats::default();
        let mut ev = feed_all(&mut s, &rec[..3], usize::MAX, &mut stats);
        ev.extend(feed_all(&mut s, &rec[3..500], usize::MAX, &mut stats));
        ev.extend(feed_all(&mut s, &rec[500..], usize::MAX, &mut stats));
        let want = if fits {
            vec![
                Ev::Record(ContentType::ApplicationData, 0x0303, payload as u16),
                Ev::Opaque(ContentType::ApplicationData, payload as u16),
            ]
        } else {
            vec![Ev::Other("Malformed".into())]
        };
        assert_eq!(ev, want, "{payload}-byte payload, 1000-byte buffer");
        assert_eq!(stats.malformed_records, u64::from(!fits));
    }
}

#[test]
fn a_long_sslv2_client_hello_is_framed_by_its_two_byte_length() {
    // 100 cipher specs: the record is 325 bytes, so its length needs the high byte (0x81 0x45).
    let specs: Vec<u8> = (1..=100u8).flat_map(|i| [0, 0, i]).collect();
    let len = 9 + specs.len() + 16;
    let mut hello = vec![0x80 | (len >> 8) as u8, len as u8, 1, 3, 1];
    hello.extend((specs.len() as u16).to_be_bytes());
    hello.extend(0u16.to_be_bytes());
    hello.extend(16u16.to_be_bytes());
    hello.extend(&specs);
    hello.extend([0xab; 16]);
    hello.extend(record(21, &[2, 40]));
    for chunk in [100, usize::MAX] {
        let (ev, stats) = run(&hello, chunk);
        assert_eq!(stats.malformed_records + stats.malformed_handshakes, 0);
        let Some(Ev::ClientHello(ch)) = ev.get(1) else {
            panic!("{ev:?}")
        };
        assert!(ch.sslv2);
        assert_eq!(
            ch.ciphers,
            (1..=100u16).collect::<Vec<_>>(),
            "chunk {chunk}"
        );
        // The next record starts right after it.
        assert_eq!(ev.last(), Some(&Ev::Alert(2, 40)), "chunk {chunk}");
    }
}

#[test]
fn a_record_header_needs_a_known_type_version_3_x_up_to_4_and_a_bounded_length() {
    let header = |ct: u8, major: u8, minor: u8, len: usize| {
        let mut r = vec![ct, major, minor];
        r.extend((len as u16).to_be_bytes());
        r.extend(vec![0; len]);
        r
    };
    // (what, the record after a valid one, framed)
    let cases = [
        ("application data, TLS 1.2", header(23, 3, 3, 10), true),
        ("record version 3.4", header(23, 3, 4, 10), true),
        ("record version 3.5", header(23, 3, 5, 10), false),
        ("record version 2.3", header(23, 2, 3, 10), false),
        ("content type 25", header(25, 3, 3, 10), false),
        ("content type 19", header(19, 3, 3, 10), false),
        (
            "the largest ciphertext",
            header(23, 3, 3, MAX_RECORD_LEN),
            true,
        ),
        ("one byte more", header(23, 3, 3, MAX_RECORD_LEN + 1), false),
    ];
    for (what, rec, framed) in cases {
        for chunk in [7, usize::MAX] {
            let mut stream = record(22, &handshake(14, &[]));
            stream.extend(&rec);
            let mut s = RecordStream::new(1 << 20);
            let mut stats = Stats::default();
            let ev = feed_all(&mut s, &stream, chunk, &mut stats);
            assert_eq!(
                ev.last() != Some(&Ev::Other("Malformed".into())),
                framed,
                "{what}, chunk {chunk}: {ev:?}"
            );
            assert_eq!(stats.malformed_records, u64::from(!framed), "{what}");
        }
    }
}

#[test]
fn only_a_record_that_must_be_buffered_is_bound_by_the_buffer() {
    let events = |payload: usize, chunks: &[usize]| {
        let rec = record(23, &vec![0; payload]);
        let mut s = RecordStream::new(1000);
        let mut stats = Stats::default();
        let mut ev = Vec::new();
        let mut at = 0;
        for &n in chunks {
            let end = (at + n).min(rec.len());
            ev.extend(feed_all(&mut s, &rec[at..end], usize::MAX, &mut stats));
            at = end;
        }
        (ev, s.partial.len())
    };
    let framed = |payload: usize| {
        vec![
            Ev::Record(ContentType::ApplicationData, 0x0303, payload as u16),
            Ev::Opaque(ContentType::ApplicationData, payload as u16),
        ]
    };
    let malformed = vec![Ev::Other("Malformed".into())];
    // Exactly the buffer, cut in pieces: buffered and framed.
    assert_eq!(events(995, &[300, 300, 300, 300]), (framed(995), 0));
    // Larger, but whole in one chunk: framed straight from the chunk.
    assert_eq!(events(5000, &[5005]), (framed(5000), 0));
    // Larger and cut: refused at once, nothing buffered.
    assert_eq!(events(5000, &[500]), (malformed, 0));
}

#[test]
fn an_alert_record_is_plaintext_only_when_it_is_whole_alerts() {
    // Before any ChangeCipherSpec: (payload, events after the record event)
    let cases: [(&[u8], Vec<Ev>); 4] = [
        (&[1, 0, 2, 48], vec![Ev::Alert(1, 0), Ev::Alert(2, 48)]),
        (&[2, 40], vec![Ev::Alert(2, 40)]),
        (&[3, 0, 2, 40], vec![Ev::Opaque(ContentType::Alert, 4)]),
        (&[2, 40, 1], vec![Ev::Opaque(ContentType::Alert, 3)]),
    ];
    for (payload, want) in cases {
        let (ev, _) = run(&record(21, payload), usize::MAX);
        assert_eq!(ev[1..], want, "{payload:?}");
    }
    // After a TLS 1.2 ChangeCipherSpec only a two-byte record can be a plaintext alert: four
    // bytes that look like two alerts are sealed.
    let mut stream = record(20, &[1]);
    stream.extend(record(21, &[1, 0, 2, 48]));
    stream.extend(record(21, &[2, 40]));
    let (ev, _) = run(&stream, usize::MAX);
    let got: Vec<&Ev> = ev.iter().filter(|e| !matches!(e, Ev::Record(..))).collect();
    assert_eq!(
        got,
        [
            &Ev::Other("ChangeCipherSpec".into()),
            &Ev::Opaque(ContentType::Alert, 4),
            &Ev::Alert(2, 40)
        ]
    );
}

/// Every handshake type the stream knows is reported as its event; the types with nothing to
/// report pass silently; any other type is malformed.
#[test]
fn each_handshake_type_gives_its_event() {
    let reported = [
        (4, "NewSessionTicket"),
        (8, "EncryptedExtensions"),
        (12, "ServerKeyExchange"),
        (13, "CertificateRequest"),
        (14, "ServerHelloDone"),
        (15, "CertificateVerify"),
        (16, "ClientKeyExchange"),
        (20, "Finished"),
        (22, "CertificateStatus"),
    ];
    for (ty, name) in reported {
        let (ev, stats) = run(&record(22, &handshake(ty, &[7; 4])), usize::MAX);
        assert_eq!(ev[1..], [Ev::Other(name.into())], "type {ty}");
        assert_eq!(stats.malformed_handshakes, 0, "type {ty}");
    }
    for ty in [0, 5, 21, 23, 24, 25, 67, 254] {
        let (ev, stats) = run(&record(22, &handshake(ty, &[7; 4])), usize::MAX);
        assert_eq!(ev.len(), 1, "type {ty}: only the record, {ev:?}");
        assert_eq!(stats.malformed_handshakes, 0, "type {ty}");
    }
    for ty in [3, 7, 9, 10, 17, 26, 66, 255] {
        let (ev, stats) = run(&record(22, &handshake(ty, &[7; 4])), usize::MAX);
        assert_eq!(ev[1..], [Ev::Other("Malformed".into())], "type {ty}");
        assert_eq!(stats.malformed_handshakes, 1, "type {ty}");
    }
}

/// A message of exactly the handshake bound is read; one byte longer is skipped and counted, and
/// the skip ends exactly where that message ends — whether it is whole in the record or cut by
/// the record's end, and whatever came before it.
#[test]
fn the_handshake_bound_is_inclusive_and_a_skip_ends_with_its_message() {
    let events = |stream: &[u8]| {
        let mut stats = Stats::default();
        let mut s = RecordStream::new(64 * 1024).with_max_handshake(100);
        let ev: Vec<Ev> = feed_all(&mut s, stream, usize::MAX, &mut stats)
            .into_iter()
            .filter(|e| !matches!(e, Ev::Record(..)))
            .collect();
        (ev, stats.malformed_handshakes)
    };
    let done = || Ev::Other("ServerHelloDone".into());
    let fin = || Ev::Other("Finished".into());
    let bad = || Ev::Other("Malformed".into());
    assert_eq!(
        events(&record(22, &handshake(20, &[1; 100]))),
        (vec![fin()], 0)
    );
    assert_eq!(
        events(&record(22, &handshake(20, &[1; 101]))),
        (vec![bad()], 1)
    );
    // Whole, between two messages of the same record.
    let mut msgs = handshake(14, &[]);
    msgs.extend(handshake(20, &[1; 101]));
    msgs.extend(handshake(14, &[]));
    assert_eq!(events(&record(22, &msgs)), (vec![done(), bad(), done()], 1));
    // Cut after 50 of its 101 body bytes; the rest, then a message, in the next record.
    let cut = 4 + 4 + 50;
    let mut stream = record(22, &msgs[..cut]);
    stream.extend(record(22, &msgs[cut..]));
    assert_eq!(events(&stream), (vec![done(), bad(), done()], 1));
}

/// A TLS 1.3 ServerHello (not only a HelloRetryRequest) switches the stream to TLS 1.3: the
/// compatibility ChangeCipherSpec after it does not make the next records encrypted.
#[test]
fn a_tls13_server_hello_keeps_the_records_after_the_ccs_plaintext() {
    let flight = testdata!("sv-ja4-tls-quic.server");
    let first = 5 + usize::from(u16::from_be_bytes([flight[3], flight[4]]));
    let mut stream = flight[..first].to_vec();
    stream.extend(record(20, &[1]));
    stream.extend(record(21, &[1, 0, 2, 40]));
    let (ev, _) = run(&stream, usize::MAX);
    let got: Vec<&Ev> = ev
        .iter()
        .filter(|e| !matches!(e, Ev::Record(..) | Ev::ServerHello(_)))
        .collect();
    assert_eq!(
        got,
        [
            &Ev::Other("ChangeCipherSpec".into()),
            &Ev::Alert(1, 0),
            &Ev::Alert(2, 40)
        ]
    );
}

/// The TLS 1.3 Certificate layout with a request context and per-certificate extensions (as in
/// post-handshake authentication): both are skipped by their own lengths.
#[test]
fn a_tls13_certificate_skips_its_context_and_extensions() {
    let certs = vec![b"leaf-der".to_vec(), b"ca-der".to_vec()];
    let mut list = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        list.extend(u24(c.len()));
        list.extend(c);
        // 5 and 0 bytes of extensions: the length's two bytes differ in the first.
        let ext: &[u8] = if i == 0 { &[0, 5, 0, 1, 0] } else { &[] };
        list.extend((ext.len() as u16).to_be_bytes());
        list.extend(ext);
    }
    let mut body = vec![3, 0xaa, 0xbb, 0xcc]; // a 3-byte request context
    body.extend(u24(list.len()));
    body.extend(list);
    let stream = record(22, &handshake(11, &body));
    let mut s = RecordStream::new(64 * 1024);
    s.set_tls13(true);
    let mut stats = Stats::default();
    let ev = feed_all(&mut s, &stream, usize::MAX, &mut stats);
    assert_eq!(ev[1..], [Ev::Certificate(certs, true)]);
    assert_eq!(stats.malformed_handshakes, 0);
}

/// An SSLv2 CLIENT-HELLO needs the length's high bit, message type 1, version 0.2 or 3.0–3.4 and
/// a length of at least 9; when its first 11 bytes are there, lengths that add up.
#[test]
fn an_sslv2_client_hello_needs_its_header_rules() {
    // (high byte flag, type, major, minor, length) → recognised
    let hello = |flag: u8, ty: u8, major: u8, minor: u8, len: usize| {
        let mut b = vec![flag | (len >> 8) as u8, len as u8, ty, major, minor];
        b.extend(3u16.to_be_bytes()); // one cipher spec
        b.extend(0u16.to_be_bytes());
        b.extend(16u16.to_be_bytes());
        b
    };
    let ok = 9 + 3 + 16;
    let cases = [
        ("SSL 2.0", hello(0x80, 1, 0, 2, ok), true),
        ("SSL 3.0", hello(0x80, 1, 3, 0, ok), true),
        ("TLS 1.3", hello(0x80, 1, 3, 4, ok), true),
        ("version 0.3", hello(0x80, 1, 0, 3, ok), false),
        ("version 1.2", hello(0x80, 1, 1, 2, ok), false),
        ("version 2.0", hello(0x80, 1, 2, 0, ok), false),
        ("version 3.5", hello(0x80, 1, 3, 5, ok), false),
        ("version 4.0", hello(0x80, 1, 4, 0, ok), false),
        ("no high bit", hello(0x00, 1, 3, 1, ok), false),
        ("type 2", hello(0x80, 2, 3, 1, ok), false),
        (
            "lengths that do not add up",
            hello(0x80, 1, 3, 1, ok + 1),
            false,
        ),
    ];
    for (what, bytes, want) in &cases {
        assert_eq!(
            sslv2_client_hello_len(bytes).is_some(),
            *want,
            "{what}: {bytes:?}"
        );
    }
    // Cipher specs: at least one, whole 3-byte specs; a 16–32 byte challenge; lengths that add
    // up to the record's.
    let lengths = |specs: usize, sid: usize, challenge: usize| {
        let len = 9 + specs + sid + challenge;
        let mut b = vec![0x80 | (len >> 8) as u8, len as u8, 1, 3, 1];
        for l in [specs, sid, challenge] {
            b.extend((l as u16).to_be_bytes());
        }
        b
    };
    let cases = [
        ("one spec, 16-byte challenge", lengths(3, 0, 16), true),
        (
            "two specs, session id, 32-byte challenge",
            lengths(6, 16, 32),
            true,
        ),
        ("no cipher spec", lengths(0, 0, 16), false),
        ("a partial spec", lengths(4, 0, 16), false),
        ("15-byte challenge", lengths(3, 0, 15), false),
        ("33-byte challenge", lengths(3, 0, 33), false),
    ];
    for (what, bytes, want) in &cases {
        assert_eq!(
            sslv2_client_hello_len(bytes).is_some(),
            *want,
            "{what}: {bytes:?}"
        );
    }
    // With only the first five bytes, the length alone: at least 9.
    let short = |len: usize| [0x80, len as u8, 1, 3, 1];
    assert_eq!(sslv2_client_hello_len(&short(9)), Some(11));
    assert_eq!(sslv2_client_hello_len(&short(8)), None);
}

/// A Certificate message body holding `certs`, in the TLS 1.2 or 1.3 layout (request context
/// and per-certificate extensions of the given sizes).
fn certificate_body(certs: &[Vec<u8>], tls13: Option<(usize, usize)>) -> Vec<u8> {
    let u24 = |n: usize| [(n >> 16) as u8, (n >> 8) as u8, n as u8];
    let mut entries = Vec::new();
    for c in certs {
        entries.extend(u24(c.len()));
        entries.extend(c);
        if let Some((_, ext)) = tls13 {
            entries.extend((ext as u16).to_be_bytes());
            entries.extend(std::iter::repeat_n(0xee, ext));
        }
    }
    let mut body = Vec::new();
    if let Some((context, _)) = tls13 {
        body.push(context as u8);
        body.extend(std::iter::repeat_n(0xcc, context));
    }
    body.extend(u24(entries.len()));
    body.extend(entries);
    body
}

#[test]
fn certificate_lists_read_in_place_exactly_or_not_at_all() {
    // splitmix64: reproducible.
    let mut state = 0x5eed_u64;
    let mut next = |n: usize| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    };
    for _ in 0..5_000 {
        let certs: Vec<Vec<u8>> = (0..next(6))
            .map(|_| (0..next(40)).map(|_| next(256) as u8).collect())
            .collect();
        let tls13 = (next(2) == 1).then(|| (next(4), next(6)));
        let body = certificate_body(&certs, tls13);
        let list = CertList::parse(&body, tls13.is_some()).expect("a well-formed list");
        assert_eq!(list.len(), certs.len());
        assert_eq!(list.is_empty(), certs.is_empty());
        assert_eq!(list.iter().collect::<Vec<_>>(), certs);
        // Cut anywhere, or one byte more: not a list (the length must cover it exactly).
        let cut = next(body.len());
        assert!(
            CertList::parse(&body[..cut], tls13.is_some()).is_none(),
            "cut at {cut}"
        );
        let mut longer = body.clone();
        longer.push(0);
        assert!(CertList::parse(&longer, tls13.is_some()).is_none());
    }
}
