//! Certificate parsing, cache and CA identity: certificates generated with rcgen (checked against
//! what rcgen was asked to put in them) and certificates from public captures (checked against the
//! values Suricata and nDPI assert for them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    PublicKeyData, SanType, SerialNumber,
};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::*;
use crate::stats::Stats;
use crate::tls::{RecordStream, TlsEvent};

fn params(cn: &str, serial: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2034, 1, 1);
    p
}

/// A KubeEdge-style CA (ECDSA P-256, CN=KubeEdge, serial 1024) and its params/key.
fn kubeedge_ca() -> (Vec<u8>, CertificateParams, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = params("KubeEdge", 1024);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let der = p.self_signed(&key).unwrap().der().to_vec();
    (der, p, key)
}

fn leaf(ca: &CertificateParams, ca_key: &KeyPair, cn: &str, aki: bool) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut p = params(cn, 7);
    p.subject_alt_names = vec![
        SanType::DnsName(cn.try_into().unwrap()),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    p.use_authority_key_identifier_extension = aki;
    let issuer = Issuer::from_params(ca, ca_key);
    (p.signed_by(&key, &issuer).unwrap().der().to_vec(), key)
}

fn info(p: Presented) -> Arc<CertInfo> {
    match p {
        Presented::Parsed(i) => i,
        Presented::Malformed { .. } => panic!("malformed"),
    }
}

#[test]
fn kubeedge_ca_fields() {
    let (der, p, key) = kubeedge_ca();
    let ca = info(parse(&der));
    assert_eq!(ca.subject, "CN=KubeEdge");
    assert_eq!(ca.issuer, "CN=KubeEdge");
    assert_eq!(ca.subject_cn.as_deref(), Some("KubeEdge"));
    assert_eq!(ca.serial, "400");
    assert!(ca.is_ca);
    assert!(ca.self_signed);
    assert_eq!((ca.key_type.as_str(), ca.key_bits), ("EC", Some(256)));
    assert_eq!(
        ca.ski.as_deref(),
        Some(hex::encode(p.key_identifier(&key)).as_str())
    );
    assert_eq!(ca.aki, None); // rcgen writes no AKI unless asked
    assert_eq!(
        ca.spki_sha256,
        hex::encode(Sha256::digest(key.subject_public_key_info()))
    );
    assert_eq!(
        ca.key_sha1,
        hex::encode(Sha1::digest(key.der_bytes_public()))
    );
    assert_eq!(ca.sha256, hex::encode(Sha256::digest(&der)));
    assert_eq!(ca.sha1, hex::encode(Sha1::digest(&der)));
    assert_eq!(ca.not_before, "2024-01-01T00:00:00Z");
    assert_eq!(ca.not_after, "2034-01-01T00:00:00Z");
    assert_eq!(ca.not_before_unix, 1_704_067_200);
    assert_eq!(ca.not_after_unix, 2_019_686_400);
    assert!(ca.sans.is_empty());
}

trait PublicRaw {
    fn der_bytes_public(&self) -> &[u8];
}
impl PublicRaw for KeyPair {
    fn der_bytes_public(&self) -> &[u8] {
        self.public_key_raw()
    }
}

#[test]
fn leaf_fields_and_ca_key_id() {
    let (ca_der, ca_p, ca_key) = kubeedge_ca();
    let (leaf_der, leaf_key) = leaf(&ca_p, &ca_key, "edge-node-1", true);
    let l = info(parse(&leaf_der));
    assert_eq!(l.subject, "CN=edge-node-1");
    assert_eq!(l.issuer, "CN=KubeEdge");
    assert_eq!(l.serial, "7");
    assert!(!l.is_ca);
    assert!(!l.self_signed);
    assert_eq!((l.key_type.as_str(), l.key_bits), ("EC", Some(384)));
    assert_eq!(l.sans, ["edge-node-1", "10.0.0.7", "::1"]);
    let ca_ski = hex::encode(ca_p.key_identifier(&ca_key));
    assert_eq!(l.aki.as_deref(), Some(ca_ski.as_str()));
    assert_eq!(
        l.spki_sha256,
        hex::encode(Sha256::digest(leaf_key.subject_public_key_info()))
    );

    let chain = [parse(&leaf_der), parse(&ca_der)];
    assert_eq!(ca_key_id(&chain).as_deref(), Some(ca_ski.as_str()));
    // Leaf alone: its AKI is enough.
    assert_eq!(ca_key_id(&chain[..1]).as_deref(), Some(ca_ski.as_str()));
    // The CA presented alone is its own CA.
    assert_eq!(ca_key_id(&chain[1..]).as_deref(), Some(ca_ski.as_str()));
    assert_eq!(ca_key_id(&[]), None);
}

#[test]
fn ca_key_id_without_aki_uses_the_issuer_in_the_chain() {
    let (ca_der, ca_p, ca_key) = kubeedge_ca();
    let (leaf_der, _) = leaf(&ca_p, &ca_key, "edge-node-2", false);
    let l = info(parse(&leaf_der));
    assert_eq!(l.aki, None);
    let ca_ski = hex::encode(ca_p.key_identifier(&ca_key));
    assert_eq!(
        ca_key_id(&[parse(&leaf_der), parse(&ca_der)]).as_deref(),
        Some(ca_ski.as_str())
    );
    assert_eq!(ca_key_id(&[parse(&leaf_der)]), None);
    let garbage = parse(b"junk");
    assert_eq!(ca_key_id(&[garbage.clone(), parse(&ca_der)]), None);
    assert_eq!(
        ca_key_id(&[parse(&leaf_der), garbage, parse(&ca_der)]).as_deref(),
        Some(ca_ski.as_str())
    );
}

#[test]
fn same_name_and_serial_different_keys_are_different_cas() {
    let (ca1_der, ca1_p, ca1_key) = kubeedge_ca();
    let (ca2_der, ca2_p, ca2_key) = kubeedge_ca();
    let (c1, c2) = (info(parse(&ca1_der)), info(parse(&ca2_der)));
    assert_eq!((&c1.subject, &c1.serial), (&c2.subject, &c2.serial));
    let (l1, _) = leaf(&ca1_p, &ca1_key, "edge", true);
    let (l2, _) = leaf(&ca2_p, &ca2_key, "edge", true);
    let id1 = ca_key_id(&[parse(&l1), parse(&ca1_der)]).unwrap();
    let id2 = ca_key_id(&[parse(&l2), parse(&ca2_der)]).unwrap();
    assert_ne!(id1, id2);
    assert_eq!(Some(id1), c1.ski.clone());
    assert_eq!(Some(id2), c2.ski.clone());
    assert_ne!(c1.key_sha1, c2.key_sha1);
}

#[test]
fn cache_hits_share_the_parse_and_evict_lru() {
    let (ca_der, ca_p, ca_key) = kubeedge_ca();
    let (l1, _) = leaf(&ca_p, &ca_key, "a", true);
    let (l2, _) = leaf(&ca_p, &ca_key, "b", true);
    let mut cache = CertCache::new(2, usize::MAX);
    let first = info(cache.get(&ca_der));
    let again = info(cache.get(&ca_der));
    assert!(Arc::ptr_eq(&first, &again));
    cache.get(&l1);
    cache.get(&ca_der); // ca is now most recently used
    cache.get(&l2); // evicts l1
    assert_eq!(cache.len(), 2);
    assert!(Arc::ptr_eq(&first, &info(cache.get(&ca_der))));
    // Malformed DER is cached too, and counted at every presentation.
    cache.get(b"not der");
    cache.get(b"not der");
    assert_eq!(
        cache.counters(),
        CertCounters {
            certificates: 8,
            malformed: 2,
            hits: 4
        }
    );
    let mut stats = Stats::default();
    cache.take_counters(&mut stats);
    assert_eq!(
        (
            stats.certificates,
            stats.malformed_certificates,
            stats.cert_cache_hits
        ),
        (8, 2, 4)
    );
    assert_eq!(cache.counters(), CertCounters::default());
    cache.get_counted(&l1, &mut stats); // evicted earlier: parsed again
    assert_eq!((stats.certificates, stats.cert_cache_hits), (9, 4));
}

/// A certificate answered from the cache's recent slots is the map's own entry: an eviction
/// frees it (no slot keeps it alive, so the cache's memory bound holds), and one presented again
/// after its eviction is parsed again.
#[test]
fn recent_slots_hold_only_cached_certificates() {
    let (ca_der, ca_p, ca_key) = kubeedge_ca();
    let (l1, _) = leaf(&ca_p, &ca_key, "a", true);
    let mut cache = CertCache::new(1, usize::MAX);
    let first = info(cache.get(&ca_der));
    assert!(Arc::ptr_eq(&first, &info(cache.get(&ca_der))));
    assert_eq!(cache.counters().hits, 1);
    // The map, its slot and the test hold it.
    assert_eq!(Arc::strong_count(&first), 3);
    cache.get(&l1); // evicts the CA
    assert_eq!(Arc::strong_count(&first), 1);
    let again = info(cache.get(&ca_der));
    assert!(!Arc::ptr_eq(&first, &again));
    assert_eq!(cache.counters().hits, 1);
}

/// The cache's byte budget: what fits exactly is kept, what does not evicts the least recently
/// used until it fits, and a certificate dearer than the whole budget, or DER above
/// `MAX_CACHED_DER`, is parsed at every presentation and never kept.
#[test]
fn cache_keeps_within_its_byte_budget() {
    let (ca_der, ca_p, ca_key) = kubeedge_ca();
    let (l1, _) = leaf(&ca_p, &ca_key, "a", true);
    let (l2, _) = leaf(&ca_p, &ca_key, "b", true);
    let cost = |der: &[u8]| {
        let mut c = CertCache::new(10, usize::MAX);
        c.get(der);
        c.heap_bytes()
    };
    let (c_ca, c_l1, c_l2) = (cost(&ca_der), cost(&l1), cost(&l2));

    // Exactly full: both kept.
    let mut cache = CertCache::new(10, c_ca + c_l1);
    cache.get(&ca_der);
    cache.get(&l1);
    assert_eq!((cache.len(), cache.heap_bytes()), (2, c_ca + c_l1));
    // Room for the two leaves: the third certificate evicts the least recently used (the CA),
    // and only it.
    let mut cache = CertCache::new(10, c_l1 + c_l2);
    cache.get(&l1);
    cache.get(&ca_der);
    cache.get(&l1);
    cache.get(&l2);
    assert_eq!((cache.len(), cache.heap_bytes()), (2, c_l1 + c_l2));
    assert_eq!(cache.counters().hits, 1);
    cache.get(&ca_der);
    assert_eq!(cache.counters().hits, 1, "the CA was evicted");

    // Dearer than the whole budget: parsed each time, never kept.
    let mut cache = CertCache::new(10, c_ca - 1);
    cache.get(&ca_der);
    cache.get(&ca_der);
    assert_eq!(
        (cache.len(), cache.heap_bytes(), cache.counters().hits),
        (0, 0, 0)
    );
    // DER above the size bound, whatever the budget.
    let big = vec![0x30; cache::MAX_CACHED_DER + 1];
    let mut cache = CertCache::new(10, usize::MAX);
    cache.get(&big);
    cache.get(&big);
    assert_eq!((cache.len(), cache.counters().hits), (0, 0));
}

macro_rules! testdata {
    ($name:literal) => {
        hex::decode(include_str!(concat!("../tls/testdata/", $name, ".hex")).trim()).unwrap()
    };
}

/// The certificate chains in a captured flight, parsed through the cache.
fn chains(bytes: &[u8]) -> Vec<Vec<Presented>> {
    let mut stats = Stats::default();
    let mut cache = CertCache::new(100, usize::MAX);
    let mut out = Vec::new();
    RecordStream::new(64 * 1024).feed(bytes, &mut stats, &mut |e| {
        if let TlsEvent::Certificate { certs, .. } = e {
            out.push(certs.iter().map(|d| cache.get(d)).collect());
        }
    });
    out
}

fn leaf_of(bytes: &[u8]) -> (Arc<CertInfo>, Vec<Presented>) {
    let chain = chains(bytes).remove(0);
    (info(chain[0].clone()), chain)
}

#[test]
fn suricata_selks_certificate() {
    // suricata-verify bug-7286-tls-metadata on the ja4-tls capture.
    let (c, chain) = leaf_of(&testdata!("sv-ja4-tls.server"));
    assert_eq!(chain.len(), 1);
    assert_eq!(c.subject, "C=FR, ST=IDF, L=Paris, O=Stamus, CN=SELKS");
    assert_eq!(c.issuer, "C=FR, ST=IDF, L=Paris, O=Stamus, CN=SELKS");
    assert_eq!(c.serial, "97e647098eeac9b4"); // Suricata: 00:97:E6:47:09:8E:EA:C9:B4
    assert_eq!(c.sha1, "3a0b3b23152c445c27ac6a0c41d6fa74afb4095b");
    assert_eq!(c.not_before, "2015-02-12T18:07:27Z");
    assert_eq!(c.not_after, "2025-02-09T18:07:27Z");
    assert!(c.self_signed && c.is_ca);
    assert_eq!((c.key_type.as_str(), c.key_bits), ("RSA", Some(2048)));
    // Self-signed with SKI == AKI: its own key identifier.
    assert_eq!(ca_key_id(&chain), c.ski.clone());
    assert_eq!(
        c.ski.as_deref(),
        Some("6acee6879acf3897fd81a8e279958f1adeab2222")
    );
}

#[test]
fn suricata_pre_1970_certificate() {
    let (c, _) = leaf_of(&testdata!("sv-tls-pre-1970.server"));
    assert_eq!(c.sha1, "71cdfe087f3d2a18326938fabd647bc6cfcc448e");
    assert_eq!(c.subject, "OU=vd, CN=fkp.samsungcloudsolution.com");
    assert_eq!(
        c.issuer,
        "C=KR, ST=Kyunggido, L=Suwon, O=Samsung Electronics, OU=SW2 SISC, CN=ROOT CA SISC FKP2_PLUS"
    );
    assert_eq!(c.serial, "32");
    assert_eq!(c.not_before, "1969-12-31T00:00:00Z");
    assert_eq!(c.not_before_unix, -86_400);
    assert_eq!(c.not_after, "2038-12-31T00:10:03Z");
}

#[test]
fn nul_bytes_are_escaped() {
    // suricata-verify tls-subject-zero: "O=Microsoft Corporat|00|on".
    let (c, _) = leaf_of(&testdata!("sv-tls-subject-zero.server"));
    assert_eq!(
        c.subject,
        "C=US, ST=WA, L=Redmond, O=Microsoft Corporat\\00on, OU=Microsoft Corporation, CN=go.microsoft.com"
    );
    // tls-altname-zero: a NUL injected into a subjectAltName.
    let (c, _) = leaf_of(&testdata!("sv-tls-altname-zero.server"));
    assert_eq!(c.sha1, "8d974b41043f5537d05890a4133b7b85c64681cb");
    assert_eq!(c.subject, "CN=xn--j1ahhq.xn--p1ai");
    assert_eq!(c.issuer, "C=US, O=Let's Encrypt, CN=R3");
    assert_eq!(c.serial, "3de23897e97fb868e7cc55309feaed0ae20");
    assert!(c.sans.iter().all(|s| !s.contains('\0')));
    assert!(c.sans.iter().any(|s| s.contains("\\00")), "{:?}", c.sans);
}

#[test]
fn real_chain_aki_matches_issuer_ski() {
    // nDPI tls_malicious_sha1: leaf + GTS CA 1D4.
    let (c, chain) = leaf_of(&testdata!("ndpi-tls_malicious_sha1.server"));
    assert_eq!(c.sha1, "0ddb34f875632c7e1ec09d75827f82d2336dfeb6");
    assert_eq!(c.subject, "CN=www.prbtest.dev");
    assert_eq!(c.issuer, "C=US, O=Google Trust Services LLC, CN=GTS CA 1D4");
    let issuer = info(chain[1].clone());
    assert_eq!(issuer.subject, c.issuer);
    assert_eq!(c.aki, issuer.ski);
    assert_eq!(ca_key_id(&chain), issuer.ski);
    assert!(issuer.is_ca && !c.is_ca);
    assert!(c.sans.contains(&"www.prbtest.dev".to_string()));
}

#[test]
fn client_certificate_chain_in_mutual_tls() {
    // suricata-verify tls-store-02: the client presents a certificate too.
    let client = chains(&testdata!("sv-tls-store-02-tls-client-auth.client"));
    let server = chains(&testdata!("sv-tls-store-02-tls-client-auth.server"));
    assert_eq!((server.len(), client.len()), (1, 1));
    assert_eq!(server[0].len(), 2);
    assert_eq!(client[0].len(), 1);
    assert!(client[0][0].info().is_some());
}
