//! Trusted-CA reference: what the operator says the CA is, to compare presented CAs against.
//!
//! Consumes `--trusted-ca FILE` (PEM or DER, bundles allowed), `--kubeedge-secret-dir DIR` (a mounted
//! `kubeedge/casecret`: only the file `cadata` is read, never `cakeydata`), `--ca-hash HEX` and
//! `--join-token TOKEN` (only the hash before the first '.' is kept). Produces a [`TrustedReference`]
//! that answers "is this presented CA the stored one?" ([`TrustedReference::check`]) and notices when
//! the Secret changes ([`TrustedReference::refresh`]). CA identity is the key (SKI, else the SHA-1 of
//! the public key), plus sha256 of the DER for the hash sources.

pub mod consistency;
pub mod probe;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::base::KeyId;
use crate::cert::CertInfo;
use crate::error::Error;

/// The one file of a `casecret` mount that is read. `cakeydata` (the CA key) is never opened.
pub const SECRET_CA_FILE: &str = "cadata";

/// Upper bound on a CA file read from disk (a bundle of many CAs is still far below it).
const MAX_CA_FILE: u64 = 4 * 1024 * 1024;

/// Who a CA is: its key ids and the hash of its DER.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaIdentity {
    /// The id reported everywhere: Subject Key Identifier, else SHA-1 of the public key.
    pub key_id: KeyId,
    /// Every id this key is known by (SKI and SHA-1 of the public key; one when they agree).
    pub key_ids: Vec<KeyId>,
    /// sha256 of the certificate DER (what a join token's hash covers).
    pub sha256: String,
    pub subject: String,
    /// The issuer's name (the CA's own for a root).
    pub issuer: String,
    /// Serial, lower-case hex (shown only: KubeEdge's competing CAs share serial 1024).
    pub serial: String,
    /// End of validity, RFC 3339, and as Unix seconds.
    pub not_after: String,
    pub not_after_unix: i64,
    /// The certificate (signature checks of presented chains need its key).
    #[serde(skip)]
    pub der: std::sync::Arc<[u8]>,
}

impl CaIdentity {
    /// Parses one certificate (as the certificate stage does); `None` when it is not valid DER.
    pub fn from_der(der: &[u8]) -> Option<CaIdentity> {
        crate::cert::parse(der).info().map(CaIdentity::from_info)
    }

    /// The identity of a parsed certificate.
    pub fn from_info(info: &CertInfo) -> CaIdentity {
        let key_id = info.ski.clone().unwrap_or_else(|| info.key_sha1.clone());
        let mut key_ids = vec![key_id.clone()];
        if info.key_sha1 != key_id {
            key_ids.push(info.key_sha1.clone());
        }
        CaIdentity {
            key_id,
            key_ids,
            sha256: info.sha256.clone(),
            subject: info.subject.clone(),
            issuer: info.issuer.clone(),
            serial: info.serial.clone(),
            not_after: info.not_after.clone(),
            not_after_unix: info.not_after_unix,
            der: info.der.clone(),
        }
    }

    /// Whether `id` names this CA's key.
    pub fn has_key_id(&self, id: &KeyId) -> bool {
        self.key_ids.contains(id)
    }
}

/// A sha256 of a CA certificate's DER, from `--ca-hash` or the part of a join token before the dot.
///
/// Holds only the 32 bytes: a join token's JWT part is dropped while parsing and never stored, so
/// neither `Debug`, `Display` nor serialization can reveal it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaHash([u8; 32]);

impl CaHash {
    /// Parses 64 hex digits (case-insensitive, `:` separators allowed, optional `sha256:` prefix).
    pub fn from_hex(s: &str) -> Result<CaHash, Error> {
        let s = s.trim();
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        Self::decode(s).ok_or_else(|| {
            Error::Usage(format!(
                "--ca-hash: '{s}' is not a sha256 (64 hex digits) of the CA certificate"
            ))
        })
    }

    /// Takes the CA hash from a KubeEdge join token `hex(sha256(CA DER)).JWT`. The JWT part is
    /// neither kept nor echoed in the error.
    pub fn from_join_token(token: &str) -> Result<CaHash, Error> {
        let hash = token.trim().split('.').next().unwrap_or_default();
        Self::decode(hash).ok_or_else(|| {
            Error::Usage(
                "--join-token: the token must start with the CA hash (64 hex digits) before the first '.'"
                    .into(),
            )
        })
    }

    fn decode(s: &str) -> Option<CaHash> {
        let s: String = s.chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(CaHash(out))
    }

    pub fn of_der(der: &[u8]) -> CaHash {
        CaHash(Sha256::digest(der).into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for CaHash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CaHash::from_hex(s)
    }
}

impl fmt::Debug for CaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaHash({})", self.hex())
    }
}

impl fmt::Display for CaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for CaHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

/// Where a hash came from (for the event's evidence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOrigin {
    CaHash,
    JoinToken,
}

/// The reference options, as the CLI parsed them.
#[derive(Clone, Debug, Default)]
pub struct TrustOptions {
    pub trusted_ca: Vec<PathBuf>,
    pub kubeedge_secret_dir: Option<PathBuf>,
    pub ca_hash: Option<CaHash>,
    /// Hash from `--join-token` (parse with [`CaHash::from_join_token`]; the token itself is not kept).
    pub join_token_hash: Option<CaHash>,
}

/// A `casecret` mount, re-read when `cadata` changes.
#[derive(Clone, Debug)]
struct SecretDir {
    dir: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    ca: CaIdentity,
}

/// One source of truth about the CA.
#[derive(Clone, Debug)]
enum Source {
    File { path: PathBuf, cas: Vec<CaIdentity> },
    Secret(SecretDir),
    Hash { hash: CaHash, origin: HashOrigin },
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::File { path, .. } => format!("trusted-ca {}", path.display()),
            Source::Secret(s) => format!("casecret {}", s.dir.join(SECRET_CA_FILE).display()),
            Source::Hash {
                origin: HashOrigin::CaHash,
                ..
            } => "ca-hash".into(),
            Source::Hash {
                origin: HashOrigin::JoinToken,
                ..
            } => "join-token ca hash".into(),
        }
    }

    /// `Some(true)` agrees, `Some(false)` disagrees, `None` cannot tell (nothing comparable).
    fn agrees(&self, p: &PresentedCa) -> Option<bool> {
        let by_cas = |cas: &[CaIdentity]| -> Option<bool> {
            if let Some(sha) = &p.der_sha256 {
                return Some(cas.iter().any(|c| c.sha256 == *sha));
            }
            if p.key_ids.is_empty() {
                return None;
            }
            Some(
                cas.iter()
                    .any(|c| p.key_ids.iter().any(|k| c.has_key_id(k))),
            )
        };
        match self {
            Source::File { cas, .. } => by_cas(cas),
            Source::Secret(s) => by_cas(std::slice::from_ref(&s.ca)),
            Source::Hash { hash, .. } => p.der_sha256.as_ref().map(|sha| *sha == hash.hex()),
        }
    }

    fn expected(&self) -> Vec<String> {
        match self {
            Source::File { cas, .. } => cas.iter().map(|c| c.key_id.to_string()).collect(),
            Source::Secret(s) => vec![s.ca.key_id.to_string()],
            Source::Hash { hash, .. } => vec![format!("sha256:{}", hash.hex())],
        }
    }
}

/// A CA as seen on the wire or by a probe: key ids always when known, DER hash when the CA
/// certificate itself was seen (probe of `/ca.crt`, or a chain that carried the CA).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PresentedCa {
    pub key_ids: Vec<KeyId>,
    pub der_sha256: Option<String>,
}

impl PresentedCa {
    pub fn from_key_id(id: KeyId) -> PresentedCa {
        PresentedCa {
            key_ids: vec![id],
            der_sha256: None,
        }
    }
    pub fn from_identity(ca: &CaIdentity) -> PresentedCa {
        PresentedCa {
            key_ids: ca.key_ids.clone(),
            der_sha256: Some(ca.sha256.clone()),
        }
    }
}

/// One reference source that disagrees with a presented CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    pub source: String,
    /// What that source holds: CA key ids, or `sha256:<hex>` for a hash.
    pub expected: Vec<String>,
}

/// The stored CA change seen by [`TrustedReference::refresh`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretChange {
    pub file: PathBuf,
    pub previous: CaIdentity,
    pub current: CaIdentity,
}

/// Every configured source of truth; empty when none was given (then nothing is ever inconsistent).
#[derive(Clone, Debug, Default)]
pub struct TrustedReference {
    sources: Vec<Source>,
    /// Failed re-reads of the Secret (file briefly missing during an update, unparseable content);
    /// the previous CA is kept.
    pub reload_errors: u64,
}

impl TrustedReference {
    /// Loads every source; bad input is a one-line [`Error::Usage`] naming it.
    pub fn load(opts: &TrustOptions) -> Result<TrustedReference, Error> {
        let mut r = TrustedReference::default();
        for path in &opts.trusted_ca {
            let cas = load_ca_file(path)?;
            r.sources.push(Source::File {
                path: path.clone(),
                cas,
            });
        }
        if let Some(dir) = &opts.kubeedge_secret_dir {
            r.sources.push(Source::Secret(load_secret(dir)?));
        }
        if let Some(hash) = opts.ca_hash {
            r.sources.push(Source::Hash {
                hash,
                origin: HashOrigin::CaHash,
            });
        }
        if let Some(hash) = opts.join_token_hash {
            r.sources.push(Source::Hash {
                hash,
                origin: HashOrigin::JoinToken,
            });
        }
        Ok(r)
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Every CA known from files and the Secret (hash sources have no certificate).
    pub fn cas(&self) -> Vec<&CaIdentity> {
        let mut out = Vec::new();
        for s in &self.sources {
            match s {
                Source::File { cas, .. } => out.extend(cas.iter()),
                Source::Secret(d) => out.push(&d.ca),
                Source::Hash { .. } => {}
            }
        }
        out
    }

    /// The CA in the mounted Secret, when one is configured.
    pub fn secret_ca(&self) -> Option<&CaIdentity> {
        self.sources.iter().find_map(|s| match s {
            Source::Secret(d) => Some(&d.ca),
            _ => None,
        })
    }

    /// Short description of the sources (for the report header and logs; never a token).
    pub fn describe(&self) -> Vec<String> {
        self.sources.iter().map(Source::label).collect()
    }

    /// Some source disagrees with `presented` ([`Self::check`] is not empty).
    pub fn disagrees(&self, presented: &PresentedCa) -> bool {
        self.sources
            .iter()
            .any(|s| s.agrees(presented) == Some(false))
    }

    /// Sources that disagree with `presented`; empty when all comparable ones agree (or none is).
    pub fn check(&self, presented: &PresentedCa) -> Vec<Disagreement> {
        self.sources
            .iter()
            .filter(|s| s.agrees(presented) == Some(false))
            .map(|s| Disagreement {
                source: s.label(),
                expected: s.expected(),
            })
            .collect()
    }

    /// How many sources can compare `presented` at all (a hash source cannot compare a CA known
    /// only by its key id).
    pub fn comparable(&self, presented: &PresentedCa) -> usize {
        self.sources
            .iter()
            .filter(|s| s.agrees(presented).is_some())
            .count()
    }

    /// Re-reads the Secret's `cadata` when its mtime or size changed. Returns the change when the
    /// CA itself differs. Cheap when nothing changed (one `stat`).
    pub fn refresh(&mut self) -> Option<SecretChange> {
        let mut change = None;
        for s in &mut self.sources {
            let Source::Secret(d) = s else { continue };
            let file = d.dir.join(SECRET_CA_FILE);
            let stamp = std::fs::metadata(&file)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            if stamp.is_none() {
                self.reload_errors += 1;
                continue;
            }
            if stamp == d.stamp {
                continue;
            }
            match read_secret_ca(&file) {
                Ok(ca) => {
                    d.stamp = stamp;
                    if ca != d.ca {
                        let previous = std::mem::replace(&mut d.ca, ca.clone());
                        change = Some(SecretChange {
                            file,
                            previous,
                            current: ca,
                        });
                    }
                }
                Err(_) => self.reload_errors += 1,
            }
        }
        change
    }
}

/// Reads certificates from a PEM bundle or a single DER certificate.
fn load_ca_file(path: &Path) -> Result<Vec<CaIdentity>, Error> {
    let bytes = read_bounded(path).map_err(|e| usage("--trusted-ca", path, &e))?;
    let cas = parse_certificates(&bytes);
    if cas.is_empty() {
        return Err(usage(
            "--trusted-ca",
            path,
            &"no PEM or DER certificate in it",
        ));
    }
    Ok(cas)
}

/// Every certificate in `bytes`: PEM blocks labelled CERTIFICATE, else the whole input as DER.
pub fn parse_certificates(bytes: &[u8]) -> Vec<CaIdentity> {
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        x509_parser::pem::Pem::iter_from_buffer(bytes)
            .map_while(Result::ok)
            .filter(|p| p.label == "CERTIFICATE" || p.label == "X509 CERTIFICATE")
            .filter_map(|p| CaIdentity::from_der(&p.contents))
            .collect()
    } else {
        CaIdentity::from_der(bytes).into_iter().collect()
    }
}

fn load_secret(dir: &Path) -> Result<SecretDir, Error> {
    let file = dir.join(SECRET_CA_FILE);
    let stamp = std::fs::metadata(&file)
        .and_then(|m| Ok((m.modified()?, m.len())))
        .map_err(|e| {
            usage(
                "--kubeedge-secret-dir",
                dir,
                &format!("no readable '{SECRET_CA_FILE}': {e}"),
            )
        })?;
    let ca = read_secret_ca(&file).map_err(|e| usage("--kubeedge-secret-dir", &file, &e))?;
    Ok(SecretDir {
        dir: dir.to_path_buf(),
        stamp: Some(stamp),
        ca,
    })
}

fn read_secret_ca(file: &Path) -> Result<CaIdentity, String> {
    let bytes = read_bounded(file)?;
    // `cadata` is DER; a PEM copy is accepted too. One certificate: the first.
    parse_certificates(&bytes)
        .into_iter()
        .next()
        .ok_or_else(|| "not a DER or PEM certificate".to_string())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(MAX_CA_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_CA_FILE {
        return Err(format!("larger than {MAX_CA_FILE} bytes"));
    }
    Ok(buf)
}

fn usage(flag: &str, path: &Path, reason: &dyn fmt::Display) -> Error {
    Error::Usage(format!("{flag} {}: {reason}", path.display()))
}

#[cfg(test)]
pub(crate) mod testpki;
#[cfg(test)]
pub(crate) mod tests;
