//! Certificates: what trustwatch reports about every presented X.509 certificate.
//!
//! Consumes DER bytes; produces shared [`CertInfo`]s. Each distinct DER is parsed once (cache keyed
//! by a fast hash of the bytes, confirmed by comparing them), bounded by `Limits::cert_cache`.

use std::sync::Arc;

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
    /// Subject Key Identifier, hex.
    pub ski: Option<String>,
    /// Authority Key Identifier (keyIdentifier), hex.
    pub aki: Option<String>,
    /// SHA-256 of the SubjectPublicKeyInfo DER.
    pub spki_sha256: String,
    /// SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280 §4.2.1.2 method 1).
    pub key_sha1: String,
    pub is_ca: bool,
    /// "RSA", "EC", "Ed25519", ...
    pub key_type: String,
    pub key_bits: Option<u32>,
    /// DNS names and IP addresses from subjectAltName.
    pub sans: Vec<String>,
    pub self_signed: bool,
}

/// A certificate as presented: parsed info, or the reason it could not be parsed.
#[derive(Clone, Debug)]
pub enum Presented {
    Parsed(Arc<CertInfo>),
    /// Unparseable DER; its hashes are still known.
    Malformed { sha256: String, sha1: String },
}
