//! Verdicts on generated chains: good, expired, not yet valid, misordered, unlinked, and a CA with
//! the same name and serial but another key (KubeEdge's competing CAs).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use super::*;
use crate::cert::parse;

const DAY: i64 = 86_400;
/// Handshake time of every test: 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_micros(secs * 1_000_000)
}

fn time(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(1024u64.into());
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = time(NOW - 365 * DAY);
    p.not_after = time(NOW + 3650 * DAY);
    p.use_authority_key_identifier_extension = true;
    p
}

/// CN=KubeEdge, serial 1024, a fresh key.
fn kubeedge() -> CertifiedIssuer<'static, KeyPair> {
    CertifiedIssuer::self_signed(ca_params("KubeEdge"), KeyPair::generate().unwrap()).unwrap()
}

fn intermediate(parent: &CertifiedIssuer<'static, KeyPair>) -> CertifiedIssuer<'static, KeyPair> {
    CertifiedIssuer::signed_by(
        ca_params("KubeEdge Intermediate"),
        KeyPair::generate().unwrap(),
        parent,
    )
    .unwrap()
}

fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, from: i64, to: i64) -> Vec<u8> {
    let mut p = CertificateParams::new(vec!["cloudcore".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "CloudCore");
    p.not_before = time(from);
    p.not_after = time(to);
    p.use_authority_key_identifier_extension = true;
    p.signed_by(&KeyPair::generate().unwrap(), ca)
        .unwrap()
        .der()
        .to_vec()
}

fn trusted(ca: &CertifiedIssuer<'static, KeyPair>) -> TrustedCa {
    let info = parse(ca.der()).info().cloned().unwrap();
    TrustedCa {
        subject: info.subject.clone(),
        sha256: info.sha256.clone(),
        der: info.der.clone(),
    }
}

fn chain(ders: &[&[u8]]) -> Vec<Presented> {
    ders.iter().map(|d| parse(d)).collect()
}

fn judge(ders: &[&[u8]], trusted: &[TrustedCa]) -> ChainVerdict {
    Judge::default().judge(&chain(ders), at(NOW), trusted)
}

#[test]
fn good_chain_verifies_against_its_ca() {
    let ca = kubeedge();
    let l = leaf(&ca, NOW - DAY, NOW + DAY);
    let v = judge(&[&l], &[trusted(&ca)]);
    assert_eq!(
        v,
        ChainVerdict {
            validity: Some(Validity::Valid),
            order: Some(ChainOrder::Ordered),
            anchor: Some(Anchor::Verified),
        }
    );
    assert_eq!(v.problems(Side::Server).count(), 0);
    // With the root on the wire too, and through an intermediate.
    let inter = intermediate(&ca);
    let l2 = leaf(&inter, NOW - DAY, NOW + DAY);
    let v = judge(&[&l2, inter.der(), ca.der()], &[trusted(&ca)]);
    assert_eq!(v.order, Some(ChainOrder::Ordered));
    assert_eq!(v.anchor, Some(Anchor::Verified));
    // No trusted CA given: no anchor verdict.
    assert_eq!(judge(&[&l], &[]).anchor, None);
}

#[test]
fn expired_and_not_yet_valid_at_handshake_time() {
    let ca = kubeedge();
    let expired = leaf(&ca, NOW - 10 * DAY, NOW - 1);
    let v = judge(&[&expired], &[trusted(&ca)]);
    assert_eq!(v.validity, Some(Validity::Expired));
    // Still signed by the CA: expiry and signature are separate verdicts.
    assert_eq!(v.anchor, Some(Anchor::Verified));
    assert_eq!(
        v.problems(Side::Server).collect::<Vec<_>>(),
        ["server_certificate_expired"]
    );
    let future = leaf(&ca, NOW + 1, NOW + 10 * DAY);
    let v = judge(&[&future], &[]);
    assert_eq!(v.validity, Some(Validity::NotYetValid));
    assert_eq!(
        v.problems(Side::Client).collect::<Vec<_>>(),
        ["client_certificate_not_yet_valid"]
    );
    // The same leaf judged inside its validity (the verdict is at handshake time, not now).
    let mut j = Judge::default();
    assert_eq!(
        j.judge(&chain(&[&expired]), at(NOW - DAY), &[]).validity,
        Some(Validity::Valid)
    );
}

#[test]
fn same_name_and_serial_other_key_fails_by_signature() {
    let (a, b) = (kubeedge(), kubeedge());
    let ta = trusted(&a);
    let tb = trusted(&b);
    // The two CAs look the same by name and serial.
    let (ia, ib) = (parse(a.der()), parse(b.der()));
    let (ia, ib) = (ia.info().unwrap(), ib.info().unwrap());
    assert_eq!((&ia.subject, &ia.serial), (&ib.subject, &ib.serial));
    let from_b = leaf(&b, NOW - DAY, NOW + DAY);
    let v = judge(&[&from_b], std::slice::from_ref(&ta));
    assert_eq!(v.anchor, Some(Anchor::BadSignature));
    assert_eq!(
        v.problems(Side::Server).collect::<Vec<_>>(),
        ["server_chain_bad_signature"]
    );
    // Trusting both: verified (by B).
    assert_eq!(judge(&[&from_b], &[ta, tb]).anchor, Some(Anchor::Verified));
    // A CA of another name: the issuer is unknown.
    let other =
        CertifiedIssuer::self_signed(ca_params("Other"), KeyPair::generate().unwrap()).unwrap();
    assert_eq!(
        judge(&[&from_b], &[trusted(&other)]).anchor,
        Some(Anchor::UnknownIssuer)
    );
}

#[test]
fn chain_order_and_linkage() {
    let ca = kubeedge();
    let inter = intermediate(&ca);
    let l = leaf(&inter, NOW - DAY, NOW + DAY);
    let v = judge(&[&l, ca.der(), inter.der()], &[trusted(&ca)]);
    assert_eq!(v.order, Some(ChainOrder::Misordered));
    // Misordered but complete: still verifies (clients reorder).
    assert_eq!(v.anchor, Some(Anchor::Verified));
    let stranger = kubeedge();
    let v = judge(&[&l, inter.der(), stranger.der()], &[]);
    assert_eq!(v.order, Some(ChainOrder::Unlinked));
    // The intermediate missing: the leaf's issuer is not a trusted CA's name.
    assert_eq!(
        judge(&[&l], &[trusted(&ca)]).anchor,
        Some(Anchor::UnknownIssuer)
    );
    // Remembered per chain: the same chain judged again gives the same verdict.
    let mut j = Judge::default();
    let c = chain(&[&l, inter.der()]);
    let first = j.judge(&c, at(NOW), &[trusted(&ca)]);
    assert_eq!(first.anchor, Some(Anchor::Verified));
    assert_eq!(j.judge(&c, at(NOW), &[trusted(&ca)]), first);
    assert_eq!(j.remembered.len(), 1);
}

#[test]
fn one_judge_follows_the_trusted_set_as_it_changes() {
    // One judge for a whole run, as the monitor keeps: the Secret's CA switches from A to B and
    // back, and every remembered verdict must follow it.
    let (a, b) = (kubeedge(), kubeedge());
    let (ta, tb) = (trusted(&a), trusted(&b));
    let (from_a, from_b) = (
        chain(&[&leaf(&a, NOW - DAY, NOW + DAY)]),
        chain(&[&leaf(&b, NOW - DAY, NOW + DAY)]),
    );
    let mut j = Judge::default();
    let mut anchor = |c: &[Presented], t: &TrustedCa| {
        j.judge(c, at(NOW), std::slice::from_ref(t)).anchor.unwrap()
    };
    for _ in 0..2 {
        assert_eq!(anchor(&from_a, &ta), Anchor::Verified);
        assert_eq!(anchor(&from_b, &ta), Anchor::BadSignature);
        assert_eq!(anchor(&from_a, &ta), Anchor::Verified, "remembered");
        assert_eq!(anchor(&from_b, &tb), Anchor::Verified, "B trusted now");
        assert_eq!(anchor(&from_a, &tb), Anchor::BadSignature);
        assert_eq!(anchor(&from_b, &tb), Anchor::Verified, "remembered");
    }
    // Two chains remembered under the last set, one entry each.
    assert_eq!(j.remembered.len(), 2);
    assert_eq!(j.set, std::slice::from_ref(&tb.sha256));
}

#[test]
fn problem_codes_are_the_side_and_the_verdicts_json_names() {
    // Every combination, both sides: the code is `{side}_certificate_{validity}` or
    // `{side}_chain_{order or anchor}`, in the verdict's JSON names, for what is wrong.
    fn name<T: serde::Serialize>(v: &T) -> String {
        serde_json::to_value(v)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }
    let validities = [
        None,
        Some(Validity::Valid),
        Some(Validity::Expired),
        Some(Validity::NotYetValid),
    ];
    let orders = [
        None,
        Some(ChainOrder::Ordered),
        Some(ChainOrder::Misordered),
        Some(ChainOrder::Unlinked),
    ];
    let anchors = [
        None,
        Some(Anchor::Verified),
        Some(Anchor::BadSignature),
        Some(Anchor::UnknownIssuer),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for side in [Side::Server, Side::Client] {
        for validity in validities {
            for order in orders {
                for anchor in anchors {
                    let v = ChainVerdict {
                        validity,
                        order,
                        anchor,
                    };
                    let s = side.as_str();
                    let mut want = Vec::new();
                    if let Some(x) = validity.filter(|x| *x != Validity::Valid) {
                        want.push(format!("{s}_certificate_{}", name(&x)));
                    }
                    if let Some(x) = order.filter(|x| *x != ChainOrder::Ordered) {
                        want.push(format!("{s}_chain_{}", name(&x)));
                    }
                    if let Some(x) = anchor.filter(|x| *x != Anchor::Verified) {
                        want.push(format!("{s}_chain_{}", name(&x)));
                    }
                    let got: Vec<&str> = v.problems(side).collect();
                    assert_eq!(got, want, "{v:?} {s}");
                    seen.extend(got);
                }
            }
        }
    }
    assert_eq!(seen.len(), 12);
}
