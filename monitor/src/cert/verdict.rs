//! Certificate verdicts at handshake time: is the leaf valid when it was presented, is the chain
//! in order and linked, and — when trusted CAs are given — does it verify against one of them by
//! signature.
//!
//! Consumes a presented chain ([`Presented`] certificates: parsed, with their DER), the handshake
//! time and the trusted CAs; produces a [`ChainVerdict`]. The signature check turns "the issuer
//! name matches" into "an edge holding that CA would accept this chain": KubeEdge's competing CAs
//! share name and serial, only the key differs. It is exact where the whole chain is on the wire (TLS 1.2, probes);
//! TLS 1.3 encrypts it. Signature checks are remembered per chain (bounded), so a fleet presenting
//! the same chain costs one check.

use std::collections::HashMap;

use hashlink::DefaultHashBuilder;
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CertInfo, Presented};
use crate::base::{Side, Timestamp};

/// Chains whose signature verdict is remembered; the memory is cleared when full.
const REMEMBERED_CHAINS: usize = 1024;

/// The leaf's validity at handshake time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    Valid,
    /// Its notAfter had passed.
    Expired,
    /// Its notBefore had not come yet.
    NotYetValid,
}

/// Order and linkage of the presented chain (RFC 8446 §4.4.2: each certificate certifies the one
/// before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainOrder {
    /// Each certificate is issued by the next (by AKI/SKI, else by name); a single certificate too.
    Ordered,
    /// Every certificate is on the leaf's issuer path, but not in that order.
    Misordered,
    /// Some certificate is not on the leaf's issuer path (unrelated, or a link is missing).
    Unlinked,
}

/// The chain against the trusted CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// The chain's signatures verify up to a trusted CA.
    Verified,
    /// A trusted CA carries the issuer's name, but no signature verifies: another CA of the same
    /// name (KubeEdge's competing CAs), or a broken link inside the chain.
    BadSignature,
    /// No trusted CA carries the name of the top certificate's issuer.
    UnknownIssuer,
}

/// What is known of one presented chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChainVerdict {
    /// `None`: no parseable leaf.
    pub validity: Option<Validity>,
    pub order: Option<ChainOrder>,
    /// `None`: no trusted CA given, or no parseable leaf.
    pub anchor: Option<Anchor>,
}

impl ChainVerdict {
    /// Machine-readable codes of what is wrong (none when nothing is), prefixed with the side
    /// that presented the chain.
    pub fn problems(&self, side: Side) -> impl Iterator<Item = &'static str> {
        let code = |server, client| match side {
            Side::Server => server,
            Side::Client => client,
        };
        let validity = match self.validity {
            Some(Validity::Expired) => Some(code(
                "server_certificate_expired",
                "client_certificate_expired",
            )),
            Some(Validity::NotYetValid) => Some(code(
                "server_certificate_not_yet_valid",
                "client_certificate_not_yet_valid",
            )),
            _ => None,
        };
        let order = match self.order {
            Some(ChainOrder::Misordered) => {
                Some(code("server_chain_misordered", "client_chain_misordered"))
            }
            Some(ChainOrder::Unlinked) => {
                Some(code("server_chain_unlinked", "client_chain_unlinked"))
            }
            _ => None,
        };
        let anchor = match self.anchor {
            Some(Anchor::BadSignature) => Some(code(
                "server_chain_bad_signature",
                "client_chain_bad_signature",
            )),
            Some(Anchor::UnknownIssuer) => Some(code(
                "server_chain_unknown_issuer",
                "client_chain_unknown_issuer",
            )),
            _ => None,
        };
        [validity, order, anchor].into_iter().flatten()
    }
}

/// A trusted CA certificate, as the verdicts need it.
#[derive(Clone, Debug)]
pub struct TrustedCa {
    pub subject: String,
    pub sha256: String,
    pub der: std::sync::Arc<[u8]>,
}

/// Judges chains; remembers signature verdicts per chain and trusted set.
#[derive(Debug, Default)]
pub struct Judge {
    /// The trusted set the remembered verdicts were made under (their sha256s).
    set: Vec<String>,
    /// Verdicts by issuer path: its certificates' sha256s (64 hex digits each), concatenated.
    /// Hashed with foldhash, seeded per process, as the certificate cache is: the keys are
    /// presented bytes' digests.
    remembered: HashMap<String, Anchor, DefaultHashBuilder>,
    /// The key being looked up, built in place: a remembered chain costs no allocation.
    key: String,
}

impl Judge {
    /// The verdict on `chain` presented at `at`, against `trusted` (no anchor verdict when empty).
    pub fn judge(
        &mut self,
        chain: &[Presented],
        at: Timestamp,
        trusted: &[TrustedCa],
    ) -> ChainVerdict {
        let Some(leaf) = chain.first().and_then(Presented::info) else {
            return ChainVerdict::default();
        };
        let mut infos: Vec<&CertInfo> = Vec::with_capacity(chain.len());
        infos.extend(chain.iter().filter_map(Presented::info));
        let path = issuer_path(&infos);
        ChainVerdict {
            validity: Some(validity(leaf, at)),
            order: Some(order(&infos, &path)),
            anchor: (!trusted.is_empty()).then(|| self.anchor(&infos, &path, trusted)),
        }
    }

    fn anchor(&mut self, infos: &[&CertInfo], path: &[usize], trusted: &[TrustedCa]) -> Anchor {
        let trusted_now = trusted.iter().map(|t| t.sha256.as_str());
        if !self.set.iter().map(String::as_str).eq(trusted_now) {
            self.set = trusted.iter().map(|t| t.sha256.clone()).collect();
            self.remembered.clear();
        }
        self.key.clear();
        for &i in path {
            self.key.push_str(&infos[i].sha256);
        }
        if let Some(a) = self.remembered.get(self.key.as_str()) {
            return *a;
        }
        let a = verify_path(infos, path, trusted);
        if self.remembered.len() >= REMEMBERED_CHAINS {
            self.remembered.clear();
        }
        self.remembered.insert(self.key.clone(), a);
        a
    }
}

fn validity(leaf: &CertInfo, at: Timestamp) -> Validity {
    // notAfter is the last valid instant (RFC 5280 §4.1.2.5): a handshake later within that
    // second is already past it.
    let us = |secs: i64| i128::from(secs) * 1_000_000;
    let at = i128::from(at.micros());
    if at > us(leaf.not_after_unix) {
        Validity::Expired
    } else if at < us(leaf.not_before_unix) {
        Validity::NotYetValid
    } else {
        Validity::Valid
    }
}

/// `child` names `parent` as its issuer: by key identifiers when both are present, else by name.
fn issued_by(child: &CertInfo, parent: &CertInfo) -> bool {
    match (&child.aki, &parent.ski) {
        (Some(aki), Some(ski)) => aki == ski,
        _ => child.issuer == parent.subject,
    }
}

/// Indexes into `infos` from the leaf up its issuers (each certificate once).
fn issuer_path(infos: &[&CertInfo]) -> Vec<usize> {
    let mut path = Vec::with_capacity(infos.len());
    path.push(0);
    let mut at = 0;
    while !infos[at].self_signed {
        let Some(next) =
            (0..infos.len()).find(|&j| !path.contains(&j) && issued_by(infos[at], infos[j]))
        else {
            break;
        };
        path.push(next);
        at = next;
    }
    path
}

fn order(infos: &[&CertInfo], path: &[usize]) -> ChainOrder {
    if path.len() < infos.len() {
        ChainOrder::Unlinked
    } else if path.iter().enumerate().all(|(i, &j)| i == j) {
        ChainOrder::Ordered
    } else {
        ChainOrder::Misordered
    }
}

fn parsed(der: &[u8]) -> Option<X509Certificate<'_>> {
    X509Certificate::from_der(der).ok().map(|(_, c)| c)
}

/// Every link of the path verifies by signature, and its top is a trusted CA or is signed by one.
fn verify_path(infos: &[&CertInfo], path: &[usize], trusted: &[TrustedCa]) -> Anchor {
    let certs: Vec<Option<X509Certificate<'_>>> =
        path.iter().map(|&i| parsed(&infos[i].der)).collect();
    let Some(certs) = certs.into_iter().collect::<Option<Vec<_>>>() else {
        return Anchor::BadSignature;
    };
    let links_ok = certs
        .windows(2)
        .all(|w| w[0].verify_signature(Some(w[1].public_key())).is_ok());
    let top_info = infos[*path.last().unwrap_or(&0)];
    // The top certificate is itself a trusted CA (a chain that includes its root).
    if trusted.iter().any(|t| t.sha256 == top_info.sha256) {
        return if links_ok {
            Anchor::Verified
        } else {
            Anchor::BadSignature
        };
    }
    let top = &certs[certs.len() - 1];
    let named: Vec<&TrustedCa> = trusted
        .iter()
        .filter(|t| t.subject == top_info.issuer)
        .collect();
    if named.is_empty() {
        return Anchor::UnknownIssuer;
    }
    let signed = named.iter().any(|t| {
        parsed(&t.der).is_some_and(|ca| top.verify_signature(Some(ca.public_key())).is_ok())
    });
    if signed && links_ok {
        Anchor::Verified
    } else {
        Anchor::BadSignature
    }
}

#[cfg(test)]
mod tests;
