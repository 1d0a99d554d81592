//! The one-shot certificate-consistency verdict of `trustwatch check` (CloudCore's readiness
//! probe): is the CA a replica serves the stored one?
//!
//! Consumes the [`ProbeResult`]s of one replica — its `/ca.crt` and optionally the chain it
//! presents on cloudhub — and a [`TrustedReference`]; produces a [`Verdict`] with one line that
//! says why. The CA's key id and the sha256 of its DER are compared with every reference source
//! (the Secret's `cadata`, `--trusted-ca`, a `--ca-hash` or join-token hash); the chain's issuer
//! must also be the CA `/ca.crt` names.

use super::probe::{ProbeKind, ProbeResult};
use super::{PresentedCa, TrustedReference};
use crate::base::KeyId;

/// What `trustwatch check` concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every comparable source agrees with what the replica presents.
    Consistent,
    /// The replica presents another CA than the reference (or than itself elsewhere).
    Inconsistent,
    /// The replica could not be reached or read, or nothing was comparable.
    Unknown,
}

impl Outcome {
    /// The documented exit code: 0 consistent, 1 inconsistent, 2 could not check.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Consistent => 0,
            Outcome::Inconsistent => 1,
            Outcome::Unknown => 2,
        }
    }
}

/// The outcome and its one-line explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub line: String,
}

impl Verdict {
    fn new(outcome: Outcome, why: String) -> Verdict {
        let word = match outcome {
            Outcome::Consistent => "consistent",
            Outcome::Inconsistent => "inconsistent",
            Outcome::Unknown => "could not check",
        };
        Verdict {
            outcome,
            line: format!("{word}: {why}"),
        }
    }
}

fn what(r: &ProbeResult) -> String {
    let at = r
        .addr
        .map_or_else(|| r.target.authority(), |a| a.to_string());
    match r.target.kind {
        ProbeKind::CaEndpoint => format!("{at} /ca.crt"),
        ProbeKind::Chain => format!("{at} chain"),
    }
}

/// Judges the probes of one replica (or of several addresses of one name) against `reference`.
pub fn judge(reference: &TrustedReference, results: &[ProbeResult]) -> Verdict {
    if results.is_empty() {
        return Verdict::new(Outcome::Unknown, "nothing was probed".into());
    }
    let mut seen: Vec<String> = Vec::new();
    let mut presented_keys: Vec<(String, Vec<KeyId>)> = Vec::new();
    for r in results {
        let finding = match &r.outcome {
            Ok(f) => f,
            Err(e) => return Verdict::new(Outcome::Unknown, format!("{}: {e}", what(r))),
        };
        let Some(p) = finding.presented() else {
            return Verdict::new(
                Outcome::Unknown,
                format!("{}: no CA key id in what the server presented", what(r)),
            );
        };
        let shown = describe(&p);
        if reference.comparable(&p) == 0 {
            return Verdict::new(
                Outcome::Unknown,
                format!(
                    "{} presents {shown}, which no reference source can compare (a hash needs the CA certificate: probe /ca.crt)",
                    what(r)
                ),
            );
        }
        let disagreements = reference.check(&p);
        if let Some(d) = disagreements.first() {
            return Verdict::new(
                Outcome::Inconsistent,
                format!(
                    "{} presents {shown}; {} holds {}",
                    what(r),
                    d.source,
                    d.expected.join(", ")
                ),
            );
        }
        presented_keys.push((what(r), p.key_ids.clone()));
        seen.push(format!("{} {shown}", what(r)));
    }
    // Every probe of the replica must name the same CA key (/ca.crt vs the chain's issuer).
    if let Some((first, keys)) = presented_keys.first() {
        for (other, k) in presented_keys.iter().skip(1) {
            if !k.iter().any(|id| keys.contains(id)) {
                return Verdict::new(
                    Outcome::Inconsistent,
                    format!(
                        "{first} names CA key {} but {other} names {}",
                        keys.first().map_or("?", KeyId::as_str),
                        k.first().map_or("?", KeyId::as_str)
                    ),
                );
            }
        }
    }
    Verdict::new(
        Outcome::Consistent,
        format!("{} = {}", seen.join("; "), reference.describe().join(", ")),
    )
}

fn describe(p: &PresentedCa) -> String {
    let key = p.key_ids.first().map_or("unknown", KeyId::as_str);
    match &p.der_sha256 {
        Some(sha) => format!("CA key {key} (sha256 {sha})"),
        None => format!("CA key {key}"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::trust::probe::{ProbeFinding, ProbeTarget};
    use crate::trust::testpki::TestCa;
    use crate::trust::tests::TempDir;
    use crate::trust::{CaHash, CaIdentity, TrustOptions};

    fn ca_result(ca: &TestCa) -> ProbeResult {
        ProbeResult {
            target: ProbeTarget::parse_ca_url("https://127.0.0.1:10002").unwrap(),
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 10002))),
            local: None,
            elapsed_ms: 1,
            outcome: Ok(ProbeFinding {
                ca: CaIdentity::from_der(&ca.der()),
                issuer_key_id: None,
                leaf: None,
                chain_len: 0,
                note: None,
            }),
        }
    }

    fn chain_result(issuer_key_id: &str) -> ProbeResult {
        ProbeResult {
            target: ProbeTarget::parse_chain("127.0.0.1:10000").unwrap(),
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 10000))),
            local: None,
            elapsed_ms: 1,
            outcome: Ok(ProbeFinding {
                ca: None,
                issuer_key_id: KeyId::parse(issuer_key_id),
                leaf: None,
                chain_len: 1,
                note: None,
            }),
        }
    }

    fn secret(ca: &TestCa) -> (TempDir, TrustedReference) {
        let dir = TempDir::new("check");
        std::fs::write(dir.path().join("cadata"), ca.der()).unwrap();
        let r = TrustedReference::load(&TrustOptions {
            kubeedge_secret_dir: Some(dir.path().to_path_buf()),
            ..TrustOptions::default()
        })
        .unwrap();
        (dir, r)
    }

    #[test]
    fn same_ca_is_consistent_other_key_is_not() {
        let (a, b) = (TestCa::kubeedge(), TestCa::kubeedge());
        let (_d, reference) = secret(&a);
        let v = judge(
            &reference,
            &[ca_result(&a), chain_result(a.key_id().as_str())],
        );
        assert_eq!(v.outcome, Outcome::Consistent, "{}", v.line);
        assert!(
            v.line
                .starts_with("consistent: 127.0.0.1:10002 /ca.crt CA key ")
        );
        assert!(
            v.line.contains(a.key_id().as_str()) && v.line.contains("casecret"),
            "{}",
            v.line
        );

        let v = judge(&reference, &[ca_result(&b)]);
        assert_eq!(v.outcome, Outcome::Inconsistent);
        assert!(
            v.line.contains(b.key_id().as_str()) && v.line.contains(a.key_id().as_str()),
            "{}",
            v.line
        );
        assert_eq!(v.outcome.exit_code(), 1);

        // /ca.crt right, but cloudhub serves a leaf of the other CA.
        let v = judge(
            &reference,
            &[ca_result(&a), chain_result(b.key_id().as_str())],
        );
        assert_eq!(v.outcome, Outcome::Inconsistent, "{}", v.line);
        assert!(v.line.contains("chain"), "{}", v.line);
    }

    #[test]
    fn hashes_compare_the_der_and_unreachable_is_unknown() {
        let (a, b) = (TestCa::kubeedge(), TestCa::kubeedge());
        let reference = TrustedReference::load(&TrustOptions {
            join_token_hash: Some(CaHash::of_der(&a.der())),
            ..TrustOptions::default()
        })
        .unwrap();
        assert_eq!(
            judge(&reference, &[ca_result(&a)]).outcome,
            Outcome::Consistent
        );
        assert_eq!(
            judge(&reference, &[ca_result(&b)]).outcome,
            Outcome::Inconsistent
        );
        let v = judge(&reference, &[chain_result(a.key_id().as_str())]);
        assert_eq!(
            v.outcome,
            Outcome::Unknown,
            "a key id cannot be hashed: {}",
            v.line
        );

        let mut down = ca_result(&a);
        down.outcome = Err("connect 127.0.0.1:10002: Connection refused".into());
        let v = judge(&reference, &[down]);
        assert_eq!((v.outcome, v.outcome.exit_code()), (Outcome::Unknown, 2));
        assert_eq!(
            v.line,
            "could not check: 127.0.0.1:10002 /ca.crt: connect 127.0.0.1:10002: Connection refused"
        );
    }
}
