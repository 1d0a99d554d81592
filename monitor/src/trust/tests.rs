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

// ---------------------------------------------------------------------------------------------
// The reference's rules, table by table.

#[test]
fn rule_ca_identity_key_ids() {
    let ca = TestCa::kubeedge();
    let der = ca.der();
    let info = crate::cert::parse(&der).info().cloned().expect("parsed");
    let (ski, sha1) = (
        info.ski.clone().expect("rcgen sets a SKI"),
        info.key_sha1.clone(),
    );
    assert_ne!(ski, sha1, "rcgen's SKI is not the key's SHA-1");
    let with = |ski: Option<KeyId>| {
        let mut i = info.clone();
        i.ski = ski;
        CaIdentity::from_info(&i)
    };
    let rows = [
        (
            "SKI and SHA-1 differ: both",
            Some(ski.clone()),
            ski.clone(),
            vec![ski.clone(), sha1.clone()],
        ),
        (
            "SKI is the SHA-1 (RFC 5280 method 1): once",
            Some(sha1.clone()),
            sha1.clone(),
            vec![sha1.clone()],
        ),
        ("no SKI: the SHA-1", None, sha1.clone(), vec![sha1.clone()]),
    ];
    for (what, s, key_id, key_ids) in rows {
        let id = with(s);
        assert_eq!(
            (id.key_id.clone(), id.key_ids.clone()),
            (key_id, key_ids),
            "{what}"
        );
        assert_eq!(id.sha256, info.sha256, "{what}");
        assert!(id.has_key_id(&sha1), "{what}");
        assert!(!id.has_key_id(&KeyId::parse("01").unwrap()), "{what}");
    }
    assert_eq!(CaIdentity::from_der(&der), Some(ca.identity()));
    assert_eq!(CaIdentity::from_der(b"\x30\x03\x02\x01\x01"), None);
}

#[test]
fn rule_ca_hash_forms() {
    let hex = "3f1c2a0b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
    let colons: String = hex
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let ok = [
        hex.to_string(),
        hex.to_uppercase(),
        format!("  sha256:{hex}\n"),
        colons.clone(),
        format!("sha256:{colons}"),
    ];
    for s in &ok {
        assert_eq!(
            CaHash::from_hex(s).map(|h| h.hex()).ok(),
            Some(hex.into()),
            "{s}"
        );
    }
    for s in [&hex[..62], &format!("{hex}00"), "", "sha256:"] {
        assert!(CaHash::from_hex(s).is_err(), "{s}");
    }
    assert_eq!(
        CaHash::from_join_token(&format!(" {hex}.abc.def "))
            .unwrap()
            .hex(),
        hex
    );
    assert_eq!(CaHash::from_join_token(hex).unwrap().hex(), hex);
    let der = b"some certificate";
    assert_eq!(CaHash::of_der(der).hex(), hex::encode(Sha256::digest(der)));
    let h = CaHash::from_hex(hex).unwrap();
    assert_eq!(format!("{h:?}"), format!("CaHash({hex})"));
    assert_eq!(h.to_string(), hex);
    assert_eq!(serde_json::to_string(&h).unwrap(), format!("\"{hex}\""));
}

/// Every kind of source at once: a file with two CAs, the Secret, a hash and a token hash.
struct AllSources {
    _dir: TempDir,
    file: PathBuf,
    secret_dir: PathBuf,
    cas: [TestCa; 4],
    reference: TrustedReference,
}

fn all_sources() -> AllSources {
    let cas = [
        TestCa::kubeedge(),
        TestCa::kubeedge(),
        TestCa::kubeedge(),
        TestCa::kubeedge(),
    ];
    let dir = TempDir::new("all");
    let file = dir.path().join("bundle.pem");
    std::fs::write(&file, format!("{}{}", cas[0].pem(), cas[1].pem())).unwrap();
    let secret_dir = dir.path().join("casecret");
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("cadata"), cas[2].der()).unwrap();
    let reference = TrustedReference::load(&TrustOptions {
        trusted_ca: vec![file.clone()],
        kubeedge_secret_dir: Some(secret_dir.clone()),
        ca_hash: Some(CaHash::of_der(&cas[3].der())),
        join_token_hash: Some(CaHash::of_der(&cas[0].der())),
    })
    .unwrap();
    AllSources {
        _dir: dir,
        file,
        secret_dir,
        cas,
        reference,
    }
}

#[test]
fn rule_reference_sources_described_and_listed() {
    let a = all_sources();
    let r = &a.reference;
    assert!(!r.is_empty());
    assert!(TrustedReference::default().is_empty());
    assert_eq!(
        r.describe(),
        vec![
            format!("trusted-ca {}", a.file.display()),
            format!("casecret {}", a.secret_dir.join("cadata").display()),
            "ca-hash".to_string(),
            "join-token ca hash".to_string(),
        ]
    );
    let ids: Vec<KeyId> = r.cas().iter().map(|c| c.key_id.clone()).collect();
    assert_eq!(ids, [0, 1, 2].map(|i| a.cas[i].key_id()));
    assert_eq!(r.secret_ca(), Some(&a.cas[2].identity()));
    assert_eq!(TrustedReference::default().secret_ca(), None);
}

type CheckRow = (&'static str, PresentedCa, Vec<(String, Vec<String>)>);

#[test]
fn rule_reference_check_each_source_that_can_compare() {
    let a = all_sources();
    let r = &a.reference;
    let labels = r.describe();
    let key = |i: usize| a.cas[i].key_id().to_string();
    let sha = |i: usize| format!("sha256:{}", CaHash::of_der(&a.cas[i].der()));
    let file = (labels[0].clone(), vec![key(0), key(1)]);
    let secret = (labels[1].clone(), vec![key(2)]);
    let ca_hash = (labels[2].clone(), vec![sha(3)]);
    let token = (labels[3].clone(), vec![sha(0)]);
    let by_key = |i: usize| PresentedCa::from_key_id(a.cas[i].key_id());
    let by_cert = |i: usize| PresentedCa::from_identity(&a.cas[i].identity());
    let stranger = TestCa::kubeedge();
    let rows: Vec<CheckRow> = vec![
        (
            "a file CA by key: the Secret disagrees, hashes cannot tell",
            by_key(0),
            vec![secret.clone()],
        ),
        (
            "the Secret's CA by key: the file disagrees",
            by_key(2),
            vec![file.clone()],
        ),
        (
            "a file CA's certificate: Secret and --ca-hash disagree, the token agrees",
            by_cert(0),
            vec![secret.clone(), ca_hash.clone()],
        ),
        (
            "the --ca-hash CA's certificate: the others disagree",
            by_cert(3),
            vec![file.clone(), secret.clone(), token.clone()],
        ),
        (
            "a stranger's certificate: everyone disagrees",
            PresentedCa::from_identity(&stranger.identity()),
            vec![file.clone(), secret.clone(), ca_hash.clone(), token.clone()],
        ),
        (
            "a known key with another certificate: the certificate decides",
            PresentedCa {
                key_ids: vec![a.cas[0].key_id()],
                der_sha256: Some(CaHash::of_der(&stranger.der()).hex()),
            },
            vec![file.clone(), secret.clone(), ca_hash.clone(), token.clone()],
        ),
        (
            "a file CA by its second id (the key's SHA-1)",
            PresentedCa::from_key_id(a.cas[1].identity().key_ids[1].clone()),
            vec![secret.clone()],
        ),
        ("nothing to compare", PresentedCa::default(), vec![]),
    ];
    for (what, presented, want) in rows {
        let got: Vec<(String, Vec<String>)> = r
            .check(&presented)
            .into_iter()
            .map(|d| (d.source, d.expected))
            .collect();
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn rule_secret_refresh_reads_only_when_the_stamp_changes() {
    // Two CAs whose DER has the same length (ECDSA signatures vary by a byte or two). Drawn
    // until two lengths meet: a first CA of a rare length (a signature integer one byte short)
    // is not waited for. The lengths take a handful of values, so this ends within a few.
    let mut by_len = std::collections::HashMap::new();
    let (one, two) = loop {
        let c = TestCa::kubeedge();
        if let Some(first) = by_len.remove(&c.der().len()) {
            break (first, c);
        }
        by_len.insert(c.der().len(), c);
    };
    let dir = TempDir::new("stamp");
    let cadata = dir.path().join("cadata");
    std::fs::write(&cadata, one.der()).unwrap();
    let mut r = TrustedReference::load(&TrustOptions {
        kubeedge_secret_dir: Some(dir.path().into()),
        ..Default::default()
    })
    .unwrap();
    let mtime = std::fs::metadata(&cadata).unwrap().modified().unwrap();
    // Same size, same mtime: not read (one stat), so not seen.
    std::fs::write(&cadata, two.der()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&cadata)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(r.refresh(), None);
    assert_eq!(r.secret_ca().unwrap().key_id, one.key_id());
    // The mtime moves: read, and the change is reported once.
    rewrite(&cadata, &two.der());
    let ch = r.refresh().expect("change");
    assert_eq!(ch.file, cadata);
    assert_eq!((ch.previous, ch.current), (one.identity(), two.identity()));
    assert_eq!(r.refresh(), None);
    assert_eq!(r.reload_errors, 0);
}

#[test]
fn rule_ca_files_are_bounded_and_parsed_by_label() {
    let dir = TempDir::new("bounded");
    let load = |path: &Path| {
        TrustedReference::load(&TrustOptions {
            trusted_ca: vec![path.to_path_buf()],
            ..Default::default()
        })
        .map(|r| r.cas().len())
        .map_err(|e| e.to_string())
    };
    // 4 MiB is read (and is no certificate); one byte more is refused unread.
    let exact = dir.path().join("exact");
    std::fs::write(&exact, vec![b'x'; 4 * 1024 * 1024]).unwrap();
    let over = dir.path().join("over");
    std::fs::write(&over, vec![b'x'; 4 * 1024 * 1024 + 1]).unwrap();
    let e = load(&exact).unwrap_err();
    assert!(e.ends_with("no PEM or DER certificate in it"), "{e}");
    let e = load(&over).unwrap_err();
    assert!(e.ends_with("larger than 4194304 bytes"), "{e}");
    // PEM blocks: CERTIFICATE and X509 CERTIFICATE count, other labels do not.
    let (ca1, ca2) = (TestCa::kubeedge(), TestCa::kubeedge());
    let old_label = ca2
        .pem()
        .replace("BEGIN CERTIFICATE", "BEGIN X509 CERTIFICATE")
        .replace("END CERTIFICATE", "END X509 CERTIFICATE");
    let key_label = ca1
        .pem()
        .replace("BEGIN CERTIFICATE", "BEGIN PRIVATE KEY")
        .replace("END CERTIFICATE", "END PRIVATE KEY");
    let bundle = dir.path().join("labels.pem");
    std::fs::write(&bundle, format!("{}{old_label}{key_label}", ca1.pem())).unwrap();
    assert_eq!(load(&bundle), Ok(2));
    let ids: Vec<KeyId> = parse_certificates(&std::fs::read(&bundle).unwrap())
        .into_iter()
        .map(|c| c.key_id)
        .collect();
    assert_eq!(ids, vec![ca1.key_id(), ca2.key_id()]);
    // Without a PEM marker the whole file is one DER certificate.
    assert_eq!(parse_certificates(&ca1.der()).len(), 1);
    assert_eq!(parse_certificates(b"-----BEGIN").len(), 0);
}
