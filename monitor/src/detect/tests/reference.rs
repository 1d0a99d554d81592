//! Presented CAs against the trusted reference: once per (server, CA), the bound on what is
//! remembered, the re-check after the Secret changes, hashes from chains and probes.

use std::time::Duration;

use super::script::*;
use crate::detect::{DetectConfig, Snapshot};
use crate::handshake::Outcome;
use crate::trust::testpki::TestCa;
use crate::trust::tests::{TempDir, rewrite};
use crate::trust::{CaHash, TrustOptions, TrustedReference};

/// Two KubeEdge CAs (same name and serial, other keys), named `K1`/`K2` (keys, in this order)
/// and `S1`/`S2` (DER hashes) in the event lines.
struct Cas {
    one: TestCa,
    two: TestCa,
}

impl Cas {
    fn new() -> Cas {
        let (a, b) = (TestCa::kubeedge(), TestCa::kubeedge());
        let (one, two) = if a.key_id() < b.key_id() {
            (a, b)
        } else {
            (b, a)
        };
        Cas { one, two }
    }
    fn script(&self, cfg: DetectConfig, reference: TrustedReference) -> Script {
        let (i1, i2) = (self.one.identity(), self.two.identity());
        let mut s = Script::with_reference(cfg, reference);
        for (i, n) in [(&i1, "1"), (&i2, "2")] {
            s = s.alias(&i.sha256, &format!("S{n}"));
            for (j, k) in i.key_ids.iter().enumerate() {
                let suffix = if j == 0 { "" } else { "'" };
                s = s.alias(k, &format!("K{n}{suffix}"));
            }
        }
        s
    }
}

/// A TLS 1.2 success on `server` whose chain was issued by `ca` (its key id only).
fn ok_ca(t: f64, n: u8, server: &str, ca: &TestCa) -> Step {
    Step::Conn(Box::new(conn(
        t,
        edge(n),
        server,
        Outcome::Established,
        vec![],
        &ca.key_id(),
    )))
}

/// `GET /ca.crt` on `server` returned `ca`.
fn probe_ca_of(t: f64, server: &str, ca: &TestCa) -> Step {
    let i = ca.identity();
    let mut step = probe_ca(t, server, "X", &i.sha256);
    if let Step::Probe(r, _) = &mut step
        && let Ok(f) = &mut r.outcome
    {
        f.ca = Some(i);
    }
    step
}

fn trusted_file(dir: &TempDir, ca: &TestCa) -> TrustedReference {
    let path = dir.path().join("trusted.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    TrustedReference::load(&TrustOptions {
        trusted_ca: vec![path],
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn rule_inconsistent_once_per_server_and_ca() {
    let cas = Cas::new();
    let dir = TempDir::new("ref-once");
    let mut s = cas.script(keys_at_once(), trusted_file(&dir, &cas.one));
    // The detector judges against the reference it was given (the live loop exports its CAs).
    let judged: Vec<_> =
        s.d.reference()
            .cas()
            .iter()
            .map(|c| c.key_ids.clone())
            .collect();
    assert_eq!(judged, vec![cas.one.identity().key_ids]);
    s.run(
        "once per (server, CA), again when the CA's certificate itself is seen",
        vec![
            ok_ca(1.0, 1, A, &cas.one),
            ok_ca(2.0, 2, B, &cas.two),
            ok_ca(3.0, 3, B, &cas.two),
            probe_ca_of(4.0, B, &cas.two),
            probe_ca_of(5.0, B, &cas.two),
            probe_ca_of(6.0, A, &cas.one),
        ],
    );
    s.expect(
        "once per (server, CA)",
        &[
            "@2 cloudhub ca_inconsistent server=B presented=[K2] sha=- source=passive \
             expected=[trusted-ca:K1]",
            "@2 cloudhub ca_divergence basis=presented_keys keys=[K1,K2] split=0 \
             replicas=[A:K1/passive hs=1/0 clients=1/0,B:K2/passive hs=1/0 clients=1/0]",
            "@4 cloudhub ca_inconsistent server=B presented=[K2,K2'] sha=S2 source=probe_ca \
             expected=[trusted-ca:K1]",
        ],
    );
    let snap: Snapshot = s.d.snapshot();
    assert!(snap.inconsistent);
    assert!(!snap.ca_consistent());
    assert_eq!(snap.reference.len(), 1);
    assert!(
        snap.reference[0].starts_with("trusted-ca "),
        "{:?}",
        snap.reference
    );
    assert_eq!(
        snap.reference_cas,
        vec![crate::detect::ReferenceCa {
            source: "trusted_ca",
            ca: cas.one.identity()
        }]
    );
}

#[test]
fn rule_inconsistencies_remembered_are_bounded_and_counted() {
    let dir = TempDir::new("ref-bound");
    let cas = Cas::new();
    let mut cfg = keys_at_once();
    cfg.limits.max_servers = 1;
    cfg.limits.max_ca_keys = 2;
    let mut s = cas.script(cfg, trusted_file(&dir, &cas.one));
    s.run(
        "bound = max_servers × max_ca_keys",
        vec![ok(1.0, 1, A, "X"), ok(2.0, 2, A, "Y"), ok(3.0, 3, A, "Z")],
    );
    s.expect(
        "the third inconsistent key is counted, not reported",
        &[
            "@1 cloudhub ca_inconsistent server=A presented=[X] sha=- source=passive \
             expected=[trusted-ca:K1]",
            "@2 cloudhub ca_inconsistent server=A presented=[Y] sha=- source=passive \
             expected=[trusted-ca:K1]",
            "@2 cloudhub ca_changed server=A X->Y source=passive",
            "@3 cloudhub ca_changed server=A Y->Z source=passive",
        ],
    );
    assert_eq!(s.d.stats().inconsistencies_unreported, 1);
}

#[test]
fn rule_secret_change_rechecks_every_presented_ca() {
    let cas = Cas::new();
    let dir = TempDir::new("ref-secret");
    let cadata = dir.path().join("cadata");
    std::fs::write(&cadata, cas.one.der()).unwrap();
    let reference = TrustedReference::load(&TrustOptions {
        kubeedge_secret_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let cfg = DetectConfig {
        secret_check_interval: Duration::ZERO,
        ..keys_at_once()
    };
    let mut s = cas.script(cfg, reference);
    s.run(
        "before",
        vec![
            ok_ca(1.0, 1, A, &cas.one),
            ok_ca(2.0, 2, B, &cas.two),
            tick(3.0),
        ],
    );
    // The other replica overwrites the Secret: A, unchanged, is now the inconsistent one —
    // reported at once, without waiting for A's next handshake; B now agrees.
    rewrite(&cadata, &cas.two.der());
    s.run("after the first change", vec![tick(4.0)]);
    // And back: B is reported again.
    rewrite(&cadata, &cas.one.der());
    s.run("after the second change", vec![tick(5.0), tick(6.0)]);
    s.expect(
        "re-check after the Secret changes",
        &[
            "@2 cloudhub ca_inconsistent server=B presented=[K2] sha=- source=passive \
             expected=[casecret:K1]",
            "@2 cloudhub ca_divergence basis=presented_keys keys=[K1,K2] split=0 \
             replicas=[A:K1/passive hs=1/0 clients=1/0,B:K2/passive hs=1/0 clients=1/0]",
            "@4 kubeedge/casecret ca_changed server=- K1->K2 source=secret",
            "@4 cloudhub ca_inconsistent server=A presented=[K1] sha=- source=passive \
             expected=[casecret:K2]",
            "@5 kubeedge/casecret ca_changed server=- K2->K1 source=secret",
            "@5 cloudhub ca_inconsistent server=B presented=[K2] sha=- source=passive \
             expected=[casecret:K1]",
        ],
    );
    assert_eq!(s.d.stats().secret_reloads, 2);
    assert_eq!(s.d.stats().secret_reload_errors, 0);
}

#[test]
fn rule_secret_is_reread_at_most_once_per_interval_and_errors_are_counted() {
    let cas = Cas::new();
    let dir = TempDir::new("ref-interval");
    let cadata = dir.path().join("cadata");
    std::fs::write(&cadata, cas.one.der()).unwrap();
    let load = || {
        TrustedReference::load(&TrustOptions {
            kubeedge_secret_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap()
    };
    // A long interval: the first tick stats the file, the change after it waits.
    let cfg = DetectConfig {
        secret_check_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let mut s = cas.script(cfg, load());
    s.run("first", vec![tick(1.0)]);
    rewrite(&cadata, &cas.two.der());
    s.run("within the interval", vec![tick(2.0)]);
    s.expect("not yet", &[]);
    assert_eq!(s.d.stats().secret_reloads, 0);

    // Every tick with a zero interval: a missing file is an error (the CA is kept), then the
    // new content is a change.
    std::fs::write(&cadata, cas.one.der()).unwrap();
    let cfg = DetectConfig {
        secret_check_interval: Duration::ZERO,
        ..Default::default()
    };
    let mut s = cas.script(cfg, load());
    std::fs::remove_file(&cadata).unwrap();
    s.run("missing", vec![tick(1.0), tick(2.0)]);
    assert_eq!(s.d.stats().secret_reload_errors, 2);
    rewrite(&cadata, &cas.two.der());
    s.run("back", vec![tick(3.0)]);
    s.expect(
        "a change after errors",
        &["@3 kubeedge/casecret ca_changed server=- K1->K2 source=secret"],
    );
    assert_eq!(s.d.stats().secret_reloads, 1);
    assert_eq!(s.d.stats().secret_reload_errors, 2);
    assert_eq!(s.d.stats().events, 1);

    // Without a Secret, ticks read nothing.
    let mut s = cas.script(
        DetectConfig {
            secret_check_interval: Duration::ZERO,
            ..Default::default()
        },
        TrustedReference::default(),
    );
    s.run("no secret", vec![tick(1.0)]);
    assert_eq!(s.d.stats().secret_reload_errors, 0);
}

#[test]
fn rule_hash_references_compare_the_ca_certificate_when_it_is_seen() {
    let cas = Cas::new();
    let hash = TrustedReference::load(&TrustOptions {
        ca_hash: Some(CaHash::of_der(&cas.one.der())),
        ..Default::default()
    })
    .unwrap();
    let leaf = cas.two.leaf(&["cloudcore"]);
    let chain = |ca: &TestCa| vec![crate::cert::parse(&leaf.der), crate::cert::parse(&ca.der())];
    // A chain that carries its CA: the hash of the CA's DER is known, by SKI or by the key's
    // SHA-1 (the two ids of one key).
    let (i1, i2) = (cas.one.identity(), cas.two.identity());
    let mut by_ski = conn(1.0, edge(1), A, Outcome::Established, vec![], "");
    by_ski.ca_key_id = Some(i2.key_ids[0].clone());
    by_ski.server_chain = chain(&cas.two);
    let mut by_sha1 = conn(6.0, edge(2), B, Outcome::Established, vec![], "");
    by_sha1.ca_key_id = Some(i2.key_ids[1].clone());
    by_sha1.server_chain = chain(&cas.two);
    // A chain whose second certificate is not the issuer (a third CA): no hash, nothing to
    // compare.
    let mut unrelated = conn(3.0, edge(3), C, Outcome::Established, vec![], "");
    unrelated.ca_key_id = Some(i2.key_ids[0].clone());
    unrelated.server_chain = chain(&TestCa::kubeedge());
    // The issuer without the CA in the chain: no hash either.
    let mut bare = conn(4.0, edge(4), C, Outcome::Established, vec![], "");
    bare.ca_key_id = Some(i2.key_ids[0].clone());
    bare.server_chain = vec![crate::cert::parse(&leaf.der)];
    assert_ne!(i1.sha256, i2.sha256);
    let mut s = cas.script(keys_at_once(), hash);
    s.run(
        "hashes",
        vec![
            Step::Conn(Box::new(by_ski)),
            Step::Conn(Box::new(unrelated)),
            Step::Conn(Box::new(bare)),
            probe_ca_of(5.0, "10.0.0.9:10002", &cas.one),
            Step::Conn(Box::new(by_sha1)),
        ],
    );
    s.expect(
        "the CA's hash against --ca-hash",
        &[
            "@1 cloudhub ca_inconsistent server=A presented=[K2] sha=S2 source=passive \
             expected=[ca-hash:S1]",
            "@6 cloudhub ca_inconsistent server=B presented=[K2'] sha=S2 source=passive \
             expected=[ca-hash:S1]",
        ],
    );
    // Only key ids are compared in the snapshot; a hash reference cannot judge them.
    assert!(!s.d.snapshot().inconsistent);
}
