//! PKI fixtures: CAs and certificates made with rcgen, with their ground truth.
//!
//! Consumes nothing; produces [`Ca`]s and [`Leaf`]s whose [`CertTruth`] holds what trustwatch must
//! report (fingerprints, serial, SKI/AKI, validity). Key identifiers are computed here, independently
//! of any X.509 parser, the way Go's crypto/x509 (and so KubeEdge) does: SHA-1 of the
//! subjectPublicKey bits (RFC 5280 §4.2.1.2 method 1). Leaf chains and keys are written as PEM
//! files into the [`Pki`]'s temporary directory for OpenSSL and Go; CA private keys never leave
//! memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::Result;

/// What trustwatch must report about one certificate. Hex is lower-case.
#[derive(Clone, Debug)]
pub struct CertTruth {
    pub der: Vec<u8>,
    pub pem: String,
    pub sha256: String,
    pub sha1: String,
    /// Serial, lower-case hex without leading zeros.
    pub serial: String,
    pub subject_cn: String,
    pub issuer_cn: String,
    /// Subject Key Identifier (SHA-1 of the subjectPublicKey bits); rcgen writes it for CAs only.
    pub ski: Option<String>,
    /// Authority Key Identifier keyIdentifier: the issuer's SKI (`None` for self-signed roots).
    pub aki: Option<String>,
    /// SHA-256 of the SubjectPublicKeyInfo DER.
    pub spki_sha256: String,
    pub is_ca: bool,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl CertTruth {
    pub fn sha256_upper(&self) -> String {
        self.sha256.to_uppercase()
    }
    pub fn sha1_upper(&self) -> String {
        self.sha1.to_uppercase()
    }
}

/// A certificate authority: its certificate and (in memory only) its signing key.
pub struct Ca {
    pub cert: CertTruth,
    /// PEM file with this CA's certificate (a trust anchor for peers).
    pub cert_path: PathBuf,
    /// Certificates between this CA and its root, nearest first (empty for a root).
    pub parents: Vec<CertTruth>,
    pub root: CertTruth,
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    /// The CA's key identifier: what trustwatch reports as `ca_key_id` for the leaves it signs.
    pub fn key_id(&self) -> &str {
        self.cert.ski.as_deref().unwrap_or_default()
    }
}

/// An end-entity certificate with its key and the chain a peer sends.
pub struct Leaf {
    pub cert: CertTruth,
    /// What the peer sends, in wire order: the leaf, then the intermediates (never the root).
    pub chain: Vec<CertTruth>,
    /// PEM file with `chain` (leaf first).
    pub chain_path: PathBuf,
    /// PEM file with the leaf only (OpenSSL's `-cert`).
    pub cert_path: PathBuf,
    /// PEM file with the intermediates only (OpenSSL's `-cert_chain`); `None` without any.
    pub intermediates_path: Option<PathBuf>,
    /// PKCS#8 PEM file with the leaf's private key.
    pub key_path: PathBuf,
    pub key_der: Vec<u8>,
    /// The root that anchors this chain.
    pub root: CertTruth,
}

impl Leaf {
    /// DER of the chain, wire order.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        self.chain.iter().map(|c| c.der.clone()).collect()
    }
}

/// Options of a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub cn: String,
    /// DNS names or IP addresses.
    pub sans: Vec<String>,
    pub server: bool,
    pub client: bool,
    /// Seconds relative to now; `(-3600, 365 days)` by default.
    pub not_before: i64,
    pub not_after: i64,
    /// Bytes of an opaque non-critical extension, to make the certificate big.
    pub padding: usize,
}

impl LeafSpec {
    /// CloudCore's server certificate: SAN 127.0.0.1 and localhost, serverAuth.
    pub fn cloudcore() -> Self {
        LeafSpec {
            cn: "CloudCore".into(),
            sans: vec!["127.0.0.1".into(), "localhost".into()],
            server: true,
            client: false,
            not_before: -3600,
            not_after: 365 * 86400,
            padding: 0,
        }
    }
    /// An EdgeCore client certificate (`CN=node-xx`), clientAuth.
    pub fn edge(node: &str) -> Self {
        LeafSpec {
            cn: node.into(),
            sans: Vec::new(),
            server: false,
            client: true,
            not_before: -3600,
            not_after: 365 * 86400,
            padding: 0,
        }
    }
    /// An edge certificate that expired yesterday.
    pub fn expired_edge(node: &str) -> Self {
        LeafSpec {
            not_before: -3 * 86400,
            not_after: -86400,
            ..LeafSpec::edge(node)
        }
    }
}

/// A directory of PEM files plus a factory of certificates.
pub struct Pki {
    dir: tempfile::TempDir,
    seq: AtomicU64,
}

static SERIAL_SEQ: AtomicU64 = AtomicU64::new(1);

fn hex_sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}
fn hex_sha1(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}

fn at(offset: i64) -> Result<OffsetDateTime> {
    Ok(OffsetDateTime::from_unix_timestamp(now_unix() + offset)?.replace_nanosecond(0)?)
}

/// A positive serial unique in this process; hex without leading zeros.
fn fresh_serial() -> (SerialNumber, String) {
    let n = SERIAL_SEQ.fetch_add(1, Ordering::Relaxed);
    let mix = (now_unix() as u64) << 20 ^ (std::process::id() as u64) << 8 ^ n;
    let v = (mix & 0x3fff_ffff_ffff_ffff) | 0x1000_0000_0000_0000;
    (SerialNumber::from_slice(&v.to_be_bytes()), format!("{v:x}"))
}

fn ski_of(key: &KeyPair) -> Vec<u8> {
    Sha1::digest(key.public_key_raw()).to_vec()
}

fn padding_ext(bytes: usize) -> CustomExtension {
    // Private arc; content is an OCTET STRING of filler. Non-critical: every stack ignores it.
    let mut content = Vec::with_capacity(bytes + 4);
    content.push(0x04);
    if bytes < 128 {
        content.push(bytes as u8);
    } else if bytes < 256 {
        content.extend_from_slice(&[0x81, bytes as u8]);
    } else {
        content.extend_from_slice(&[0x82, (bytes >> 8) as u8, bytes as u8]);
    }
    content.extend((0..bytes).map(|i| b'a' + (i % 26) as u8));
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 99, 1], content)
}

impl Pki {
    pub fn new() -> Result<Self> {
        Ok(Pki {
            dir: tempfile::Builder::new()
                .prefix("trustwatch-pki-")
                .tempdir()?,
            seq: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, stem: &str, ext: &str, text: &str) -> Result<PathBuf> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("{n:03}-{stem}.{ext}"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    #[allow(clippy::too_many_arguments)] // private: one call per kind of certificate
    fn truth(
        der: &[u8],
        pem: String,
        serial: String,
        cn: &str,
        issuer_cn: &str,
        key: &KeyPair,
        aki: Option<String>,
        is_ca: bool,
        params: &CertificateParams,
    ) -> CertTruth {
        CertTruth {
            der: der.to_vec(),
            pem,
            sha256: hex_sha256(der),
            sha1: hex_sha1(der),
            serial,
            subject_cn: cn.into(),
            issuer_cn: issuer_cn.into(),
            ski: is_ca.then(|| hex::encode(ski_of(key))),
            aki,
            spki_sha256: hex_sha256(&rcgen::PublicKeyData::subject_public_key_info(key)),
            is_ca,
            not_before_unix: params.not_before.unix_timestamp(),
            not_after_unix: params.not_after.unix_timestamp(),
        }
    }

    /// A CA like the one KubeEdge's CloudCore creates: ECDSA P-256, `CN=KubeEdge`, serial 1024,
    /// 100 years, with SKI. Two calls give CAs that differ only by key (and so SKI).
    pub fn kubeedge_ca(&self) -> Result<Ca> {
        self.root_ca("KubeEdge", Some(1024), 0)
    }

    /// A self-signed root CA. `serial` `None` → a fresh one. `padding` bytes of filler extension.
    pub fn root_ca(&self, cn: &str, serial: Option<u64>, padding: usize) -> Result<Ca> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let serial_hex = match serial {
            Some(s) => {
                let bytes = s.to_be_bytes();
                let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
                let mut v = bytes[first..].to_vec();
                if v.first().is_some_and(|b| b & 0x80 != 0) {
                    v.insert(0, 0);
                }
                params.serial_number = Some(SerialNumber::from_slice(&v));
                format!("{s:x}")
            }
            None => {
                let (s, h) = fresh_serial();
                params.serial_number = Some(s);
                h
            }
        };
        params.not_before = at(-3600)?;
        params.not_after = at(100 * 365 * 86400)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski_of(&key));
        if padding > 0 {
            params.custom_extensions.push(padding_ext(padding));
        }
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        let truth = Self::truth(
            cert.der(),
            pem.clone(),
            serial_hex,
            cn,
            cn,
            &key,
            None,
            true,
            &params,
        );
        let cert_path = self.write(&format!("ca-{cn}"), "crt", &pem)?;
        Ok(Ca {
            root: truth.clone(),
            cert: truth,
            cert_path,
            parents: Vec::new(),
            params,
            key,
        })
    }

    /// An intermediate CA signed by `parent`.
    pub fn intermediate(&self, parent: &Ca, cn: &str, padding: usize) -> Result<Ca> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let (serial, serial_hex) = fresh_serial();
        params.serial_number = Some(serial);
        params.not_before = at(-3600)?;
        params.not_after = at(10 * 365 * 86400)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski_of(&key));
        params.use_authority_key_identifier_extension = true;
        if padding > 0 {
            params.custom_extensions.push(padding_ext(padding));
        }
        let issuer = Issuer::from_params(&parent.params, &parent.key);
        let cert = params.signed_by(&key, &issuer)?;
        let pem = cert.pem();
        let truth = Self::truth(
            cert.der(),
            pem.clone(),
            serial_hex,
            cn,
            &parent.cert.subject_cn,
            &key,
            Some(parent.key_id().to_string()),
            true,
            &params,
        );
        let cert_path = self.write(&format!("ica-{cn}"), "crt", &pem)?;
        let mut parents = vec![parent.cert.clone()];
        parents.extend(parent.parents.iter().cloned());
        Ok(Ca {
            cert: truth,
            cert_path,
            parents,
            root: parent.root.clone(),
            params,
            key,
        })
    }

    /// A leaf signed by `ca` (ECDSA P-256), with AKI = the CA's SKI.
    pub fn leaf(&self, ca: &Ca, spec: &LeafSpec) -> Result<Leaf> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(spec.sans.clone())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.cn.as_str());
        let (serial, serial_hex) = fresh_serial();
        params.serial_number = Some(serial);
        params.not_before = at(spec.not_before)?;
        params.not_after = at(spec.not_after)?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski_of(&key));
        params.use_authority_key_identifier_extension = true;
        if spec.padding > 0 {
            params.custom_extensions.push(padding_ext(spec.padding));
        }
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        let cert = params.signed_by(&key, &issuer)?;
        let pem = cert.pem();
        let truth = Self::truth(
            cert.der(),
            pem.clone(),
            serial_hex,
            &spec.cn,
            &ca.cert.subject_cn,
            &key,
            Some(ca.key_id().to_string()),
            false,
            &params,
        );
        // Wire order: leaf, its issuer (if not a root), the issuer's parents except the root.
        let mut chain = vec![truth.clone()];
        if !ca.parents.is_empty() {
            chain.push(ca.cert.clone());
            let n = ca.parents.len().saturating_sub(1);
            chain.extend(ca.parents.iter().take(n).cloned());
        }
        let chain_pem: String = chain.iter().map(|c| c.pem.as_str()).collect();
        let chain_path = self.write(&format!("{}-chain", spec.cn), "pem", &chain_pem)?;
        let cert_path = self.write(&spec.cn, "crt", &pem)?;
        let intermediates_path = if chain.len() > 1 {
            let p: String = chain.iter().skip(1).map(|c| c.pem.as_str()).collect();
            Some(self.write(&format!("{}-intermediates", spec.cn), "pem", &p)?)
        } else {
            None
        };
        let key_path = self.write(&spec.cn, "key", &key.serialize_pem())?;
        Ok(Leaf {
            cert: truth,
            chain,
            chain_path,
            cert_path,
            intermediates_path,
            key_path,
            key_der: key.serialize_der(),
            root: ca.root.clone(),
        })
    }

    /// CloudCore's server leaf signed by `ca`.
    pub fn server_leaf(&self, ca: &Ca) -> Result<Leaf> {
        self.leaf(ca, &LeafSpec::cloudcore())
    }

    /// An edge node's client leaf (`CN=<node>`) signed by `ca`.
    pub fn client_leaf(&self, ca: &Ca, node: &str) -> Result<Leaf> {
        self.leaf(ca, &LeafSpec::edge(node))
    }

    /// An edge client leaf that expired a day ago.
    pub fn expired_client_leaf(&self, ca: &Ca, node: &str) -> Result<Leaf> {
        self.leaf(ca, &LeafSpec::expired_edge(node))
    }

    /// root → intermediate → leaf (server).
    pub fn intermediate_chain(&self) -> Result<(Ca, Ca, Leaf)> {
        let root = self.root_ca("Test Root CA", None, 0)?;
        let ica = self.intermediate(&root, "Test Intermediate CA", 0)?;
        let leaf = self.server_leaf(&ica)?;
        Ok((root, ica, leaf))
    }

    /// A server chain of 4 certificates (leaf + 3 intermediates, ~5 KB each) whose Certificate
    /// message spans several TLS records and, with a small MSS, many TCP segments.
    pub fn big_chain(&self) -> Result<(Ca, Leaf)> {
        let root = self.root_ca("Big Root CA", None, 0)?;
        let mut ca = self.intermediate(&root, "Big Intermediate 1", 5000)?;
        for i in 2..=3 {
            ca = self.intermediate(&ca, &format!("Big Intermediate {i}"), 5000)?;
        }
        let mut spec = LeafSpec::cloudcore();
        spec.sans.extend(
            (0..120).map(|i| format!("edge-node-{i:04}.cloudcore.kubeedge.example.internal")),
        );
        spec.padding = 1000;
        let leaf = self.leaf(&ca, &spec)?;
        Ok((root, leaf))
    }
}
