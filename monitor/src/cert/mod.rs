//! Certificates: what trustwatch reports about every presented X.509 certificate.
//!
//! Consumes DER bytes; produces shared [`CertInfo`]s. Each distinct DER is parsed once (cache keyed
//! by a fast hash of the bytes, confirmed by comparing them), bounded by `Limits::cert_cache`.
//! [`ca_key_id`] names the CA that issued a chain's leaf by its key, never by name or serial.

mod cache;
mod parse;
pub mod verdict;

use std::sync::{Arc, OnceLock};

use serde_json::value::RawValue;

pub use cache::{CertCache, CertCounters};
pub use parse::parse;

use crate::base::{KeyId, PerSide, Side};

/// One parsed certificate. Hex strings are lower-case unless noted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub sha256: String,
    pub sha1: String,
    /// RFC 4514 order as x509-parser prints it (`CN=KubeEdge, O=...`)
    pub subject: String,
    pub issuer: String,
    /// Subject common name, when present.
    pub subject_cn: Option<String>,
    /// Serial number, lower-case hex without separators or leading zeros (as Arkime prints it).
    pub serial: String,
    /// RFC 3339 UTC, e.g. `2024-01-01T00:00:00Z`.
    pub not_before: String,
    pub not_after: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Subject Key Identifier.
    pub ski: Option<KeyId>,
    /// Authority Key Identifier (keyIdentifier).
    pub aki: Option<KeyId>,
    /// SHA-256 of the SubjectPublicKeyInfo DER.
    pub spki_sha256: String,
    /// SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280 §4.2.1.2 method 1).
    pub key_sha1: KeyId,
    pub is_ca: bool,
    /// "RSA", "EC", "Ed25519", ...
    pub key_type: String,
    pub key_bits: Option<u32>,
    /// DNS names and IP addresses from subjectAltName.
    pub sans: Vec<String>,
    pub self_signed: bool,
    /// The DER itself (signature checks against a trusted CA need it).
    pub der: Arc<[u8]>,
    /// The exporter's JSON renderings, made on first use: one `CertInfo` is shared by every
    /// connection that presents the certificate, so a chain or a leaf that repeats is
    /// serialized once.
    pub rendered: Rendered,
}

/// Cache slots for a certificate's JSON renderings (not part of the certificate's value: two
/// `CertInfo`s compare equal whatever their slots hold). What each holds is the exporter's
/// business; here they are only bytes made once.
#[derive(Clone, Default)]
pub struct Rendered {
    /// The certificate as a chain entry.
    chain: OnceLock<Box<RawValue>>,
    /// The certificate as each side's leaf (ECS fields, without the enclosing braces).
    leaf: PerSide<OnceLock<Box<[u8]>>>,
}

impl Rendered {
    /// The chain-entry rendering, made by `render` the first time.
    pub fn chain_entry(&self, render: impl FnOnce() -> Box<RawValue>) -> &RawValue {
        self.chain.get_or_init(render)
    }

    /// The rendering as `side`'s leaf, made by `render` the first time.
    pub fn leaf(&self, side: Side, render: impl FnOnce() -> Box<[u8]>) -> &[u8] {
        self.leaf[side].get_or_init(render)
    }
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rendered {}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filled = [
            self.chain.get().is_some(),
            self.leaf.client.get().is_some(),
            self.leaf.server.get().is_some(),
        ];
        write!(
            f,
            "Rendered({} of 3 cached)",
            filled.iter().filter(|&&f| f).count()
        )
    }
}

/// A certificate as presented: parsed info, or the reason it could not be parsed.
#[derive(Clone, Debug)]
pub enum Presented {
    Parsed(Arc<CertInfo>),
    /// Unparseable DER; its hashes are still known.
    Malformed {
        sha256: String,
        sha1: String,
    },
}

impl Presented {
    /// The parsed certificate, unless its DER was malformed.
    pub fn info(&self) -> Option<&CertInfo> {
        match self {
            Presented::Parsed(info) => Some(info),
            Presented::Malformed { .. } => None,
        }
    }
    /// SHA-256 of the DER (lower-case hex), known even for malformed DER.
    pub fn sha256(&self) -> &str {
        match self {
            Presented::Parsed(info) => &info.sha256,
            Presented::Malformed { sha256, .. } => sha256,
        }
    }
}

/// The key identifier of the CA that issued the chain's leaf (`chain[0]`):
///
/// 1. the leaf's Authority Key Identifier;
/// 2. else the issuer certificate found in the chain (its subject equals the leaf's issuer; the
///    leaf itself when self-signed, since a self-signed certificate is its own CA): its Subject Key
///    Identifier, else the SHA-1 of its public key (RFC 5280 §4.2.1.2 method 1, the value a
///    conforming CA would have put in the SKI);
/// 3. else `None` (issuer not presented, leaf malformed or chain empty).
///
/// Two CAs with the same name and serial but different keys always get different ids.
pub fn ca_key_id(chain: &[Presented]) -> Option<KeyId> {
    let leaf = chain.first()?.info()?;
    if let Some(aki) = &leaf.aki {
        return Some(aki.clone());
    }
    let issuer = if leaf.self_signed {
        leaf
    } else {
        chain
            .iter()
            .skip(1)
            .filter_map(Presented::info)
            .find(|c| c.subject == leaf.issuer)?
    };
    Some(
        issuer
            .ski
            .clone()
            .unwrap_or_else(|| issuer.key_sha1.clone()),
    )
}

#[cfg(test)]
mod tests;
