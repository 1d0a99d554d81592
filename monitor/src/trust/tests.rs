//! Reference loading: files, the Secret mount, hashes and join tokens.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use super::testpki::TestCa;
use super::*;
use crate::base::KeyId;

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "trustwatch-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Overwrites `path` and moves its mtime forward, so the change is seen even on coarse clocks.
pub(crate) fn rewrite(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    f.set_modified(SystemTime::now() + Duration::from_secs(5))
        .expect("set mtime");
}

const JWT: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2VjcmV0LXNpZ25hdHVyZQ";

#[test]
fn join_token_keeps_only_the_hash() {
    let hash = "3f1c2a0b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
    let token = format!("{hash}.{JWT}");
    let h = CaHash::from_join_token(&token).unwrap();
    assert_eq!(h.hex(), hash);
    let shown = [
        format!("{h:?}"),
        format!("{h}"),
        serde_json::to_string(&h).unwrap(),
        format!(
            "{:?}",
            TrustOptions {
                join_token_hash: Some(h),
                ..Default::default()
            }
        ),
    ];
    for s in &shown {
        assert!(s.contains(hash), "{s}");
        for part in JWT.split('.') {
            assert!(!s.contains(part), "JWT part leaked in {s}");
        }
    }
    let r = TrustedReference::load(&TrustOptions {
        join_token_hash: Some(h),
        ..Default::default()
    })
    .unwrap();
    assert!(!format!("{r:?}").contains("eyJ"));
    assert_eq!(r.describe(), vec!["join-token ca hash".to_string()]);
    // A CA with that hash agrees; another does not.
    let ok = PresentedCa {
        key_ids: vec![KeyId::parse("01").unwrap()],
        der_sha256: Some(hash.into()),
    };
    assert!(r.check(&ok).is_empty());
    let bad = PresentedCa {
        key_ids: vec![KeyId::parse("01").unwrap()],
        der_sha256: Some("00".repeat(32)),
    };
    assert_eq!(r.check(&bad).len(), 1);
    // Key ids alone cannot be compared with a hash: no verdict.
    assert!(
        r.check(&PresentedCa::from_key_id(KeyId::parse("01").unwrap()))
            .is_empty()
    );
}

#[test]
fn malformed_tokens_and_hashes_are_usage_errors_without_echoing_the_token() {
    for bad in [
        format!("nothex.{JWT}"),
        format!("abcd.{JWT}"),
        String::new(),
        JWT.to_string(),
    ] {
        let e = CaHash::from_join_token(&bad).unwrap_err();
        assert!(matches!(e, Error::Usage(_)));
        let msg = e.to_string();
        assert!(msg.starts_with("--join-token"), "{msg}");
        for part in JWT.split('.') {
            assert!(!msg.contains(part), "{msg}");
        }
    }
    let e = CaHash::from_hex("xyz").unwrap_err();
    assert!(e.to_string().starts_with("--ca-hash"), "{e}");
    let upper = "AB".repeat(32);
    assert_eq!(
        CaHash::from_hex(&format!("sha256:{upper}")).unwrap().hex(),
        "ab".repeat(32)
    );
    assert_eq!(upper.parse::<CaHash>().unwrap().hex(), "ab".repeat(32));
}

#[test]
fn trusted_ca_pem_bundle_and_der() {
    let (ca1, ca2) = (TestCa::kubeedge(), TestCa::kubeedge());
    let dir = TempDir::new("bundle");
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, format!("# comment\n{}\n{}", ca1.pem(), ca2.pem())).unwrap();
    let der = dir.path().join("ca.der");
    std::fs::write(&der, ca1.der()).unwrap();
    let r = TrustedReference::load(&TrustOptions {
        trusted_ca: vec![bundle, der],
        ..Default::default()
    })
    .unwrap();
    let ids: Vec<&str> = r.cas().iter().map(|c| c.key_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            ca1.key_id().as_str(),
            ca2.key_id().as_str(),
            ca1.key_id().as_str()
        ]
    );
    // Same subject and serial, different keys: the key tells them apart.
    let (i1, i2) = (ca1.identity(), ca2.identity());
    assert_eq!(
        (i1.subject.as_str(), i1.serial.as_str()),
        ("CN=KubeEdge", "400")
    );
    assert_eq!(
        (i1.subject.clone(), i1.serial.clone()),
        (i2.subject.clone(), i2.serial.clone())
    );
    assert_ne!(i1.key_id, i2.key_id);
    // rcgen's SKI is a truncated SHA-256 of the key, so the key SHA-1 is an alias.
    assert_eq!(i1.key_ids.len(), 2);
    assert!(i1.has_key_id(&KeyId::parse(&i1.key_ids[1].to_uppercase()).unwrap()));
    assert_eq!(i1.sha256, hex::encode(Sha256::digest(ca1.der())));
    // ca2 is only in the bundle, so the DER-only file disagrees with it.
    let d = r.check(&PresentedCa::from_identity(&i2));
    assert_eq!(d.len(), 1);
    assert!(d[0].source.ends_with("ca.der"), "{d:?}");
    assert!(
        r.check(&PresentedCa::from_key_id(i1.key_id.clone()))
            .is_empty()
    );
    let stranger = TestCa::kubeedge();
    assert_eq!(
        r.check(&PresentedCa::from_key_id(stranger.key_id())).len(),
        2
    );
}

#[test]
fn bad_reference_inputs_are_one_line_usage_errors() {
    let dir = TempDir::new("bad");
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    for (path, needle) in [
        (&junk, "no PEM or DER certificate"),
        (&missing, "No such file"),
    ] {
        let e = TrustedReference::load(&TrustOptions {
            trusted_ca: vec![path.clone()],
            ..Default::default()
        })
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Usage(_)));
        assert!(
            msg.starts_with("--trusted-ca ")
                && msg.contains(&path.display().to_string())
                && msg.contains(needle),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }
    // A Secret mount without cadata (only the key, which is never read).
    std::fs::write(dir.path().join("cakeydata"), "PRIVATE KEY MATERIAL").unwrap();
    let e = TrustedReference::load(&TrustOptions {
        kubeedge_secret_dir: Some(dir.path().into()),
        ..Default::default()
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("--kubeedge-secret-dir ") && msg.contains("cadata"),
        "{msg}"
    );
    assert!(!msg.contains("PRIVATE"));
}

#[test]
fn secret_dir_reads_cadata_and_rereads_on_change() {
    let (ca1, ca2) = (TestCa::kubeedge(), TestCa::kubeedge());
    let dir = TempDir::new("secret");
    let cadata = dir.path().join("cadata");
    std::fs::write(&cadata, ca1.der()).unwrap();
    // A Kubernetes mount also has cakeydata; make it unreadable-as-certificate garbage.
    std::fs::write(dir.path().join("cakeydata"), b"\x30\x00never-read").unwrap();
    let mut r = TrustedReference::load(&TrustOptions {
        kubeedge_secret_dir: Some(dir.path().into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.secret_ca().unwrap().key_id, ca1.key_id());
    assert_eq!(r.refresh(), None, "unchanged");
    rewrite(&cadata, &ca2.der());
    let ch = r.refresh().expect("change");
    assert_eq!(
        (ch.previous.key_id, ch.current.key_id),
        (ca1.key_id(), ca2.key_id())
    );
    assert_eq!(r.secret_ca().unwrap().key_id, ca2.key_id());
    assert_eq!(r.refresh(), None);
    // Rewritten with the same CA: re-read, no change.
    rewrite(&cadata, &ca2.der());
    assert_eq!(r.refresh(), None);
    // Briefly missing (atomic swap of a Secret mount) or garbage: the old CA stays, errors counted.
    std::fs::remove_file(&cadata).unwrap();
    assert_eq!(r.refresh(), None);
    rewrite(&cadata, b"garbage");
    assert_eq!(r.refresh(), None);
    assert_eq!(r.reload_errors, 2);
    assert_eq!(r.secret_ca().unwrap().key_id, ca2.key_id());
    // The Secret and a hash: a presented CA is checked against both.
    let r = TrustedReference::load(&TrustOptions {
        kubeedge_secret_dir: None,
        trusted_ca: vec![],
        ca_hash: Some(CaHash::of_der(&ca1.der())),
        join_token_hash: None,
    })
    .unwrap();
    assert!(
        r.check(&PresentedCa::from_identity(&ca1.identity()))
            .is_empty()
    );
    assert_eq!(
        r.check(&PresentedCa::from_identity(&ca2.identity()))[0].expected,
        vec![format!("sha256:{}", CaHash::of_der(&ca1.der()))]
    );
}
