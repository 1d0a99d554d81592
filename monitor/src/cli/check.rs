//! `trustwatch check`: one-shot certificate-consistency check of a CloudCore replica, for a
//! readiness probe (deploy/components/cloudcore-readiness) or a person.
//!
//! Fetches the replica's `/ca.crt` (like `keadm join`) and optionally the chain it presents on
//! cloudhub, compares the CA key id and sha256 with the reference (the Secret's `cadata`,
//! `--trusted-ca`, `--ca-hash`, `--join-token`), prints one line on stdout and exits 0 consistent,
//! 1 inconsistent, 2 could not check (unreachable, unreadable, bad flags). A host name that
//! resolves to several addresses (a headless Service) checks every replica behind it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::detect::{JoinTokenParser, ca_hash};
use crate::error::Error;
use crate::trust::consistency::{self, Outcome, Verdict};
use crate::trust::probe::{self, ProbeLimits, ProbeResult, ProbeTarget};
use crate::trust::{CaHash, TrustOptions, TrustedReference};

/// Addresses checked at most behind one name.
const MAX_ADDRESSES: usize = 16;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The replica's certificate service, `https://HOST[:PORT]` (GET /ca.crt).
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:10002")]
    pub ca_url: String,
    /// Also check the issuer of the chain presented on HOST:PORT (cloudhub, 10000); CloudCore
    /// logs the probe's missing client certificate.
    #[arg(long, value_name = "HOST:PORT")]
    pub chain: Option<String>,
    /// A mounted kubeedge/casecret: only its `cadata` file is read (never `cakeydata`).
    #[arg(long, value_name = "DIR")]
    pub kubeedge_secret_dir: Option<PathBuf>,
    /// Trusted CA certificate(s), PEM or DER (repeatable).
    #[arg(long, value_name = "FILE")]
    pub trusted_ca: Vec<PathBuf>,
    /// sha256 of the CA certificate DER.
    #[arg(long, value_name = "HEX", value_parser = ca_hash)]
    pub ca_hash: Option<CaHash>,
    /// A KubeEdge join token: only the CA hash before the first '.' is used.
    #[arg(long, value_name = "TOKEN", value_parser = JoinTokenParser)]
    pub join_token: Option<CaHash>,
    /// Seconds for the whole check: resolution, connection, handshake and response.
    #[arg(long, value_name = "SECS", default_value_t = 4)]
    pub timeout: u64,
}

pub fn run(args: &CheckArgs) -> Result<i32, Error> {
    if args.timeout == 0 {
        return Err(Error::Usage("--timeout must be at least 1".into()));
    }
    let mut targets = vec![ProbeTarget::parse_ca_url(&args.ca_url)?];
    if let Some(c) = &args.chain {
        targets.push(ProbeTarget::parse_chain(c)?);
    }
    let reference = TrustedReference::load(&TrustOptions {
        trusted_ca: args.trusted_ca.clone(),
        kubeedge_secret_dir: args.kubeedge_secret_dir.clone(),
        ca_hash: args.ca_hash,
        join_token_hash: args.join_token,
    })?;
    if reference.is_empty() {
        return Err(Error::Usage(
            "check: nothing to compare with: give --kubeedge-secret-dir, --trusted-ca, --ca-hash or --join-token".into(),
        ));
    }
    let total = Duration::from_secs(args.timeout);
    let limits = ProbeLimits {
        connect_timeout: total.min(Duration::from_secs(3)),
        io_timeout: total.min(Duration::from_secs(3)),
        deadline: total,
        resolve_timeout: total.min(Duration::from_secs(2)),
        ..ProbeLimits::default()
    };
    let verdict = check(&reference, &targets, &limits);
    {
        use std::io::Write as _;
        // The exit code carries the verdict even when nobody reads the line.
        let _ = writeln!(std::io::stdout().lock(), "{}", verdict.line);
    }
    Ok(verdict.outcome.exit_code())
}

/// Probes every address of every target; the first inconsistency or failure decides.
fn check(reference: &TrustedReference, targets: &[ProbeTarget], limits: &ProbeLimits) -> Verdict {
    let mut results: Vec<ProbeResult> = Vec::new();
    let mut verdicts = Vec::new();
    for t in targets {
        let addrs = match probe::resolve_all(&t.host, t.port, limits.resolve_timeout, MAX_ADDRESSES)
        {
            Ok(a) => a,
            Err(e) => {
                return Verdict {
                    outcome: Outcome::Unknown,
                    line: format!("could not check: {e}"),
                };
            }
        };
        for a in addrs {
            let pinned = if t.is_name() { t.at(a) } else { t.clone() };
            results.push(probe::run(&pinned, limits, &mut |_| {}));
        }
    }
    // One replica per address: judge the probes of each address together.
    let mut addrs: Vec<_> = results
        .iter()
        .filter_map(|r| r.addr.map(|a| a.ip()))
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.len() <= 1 {
        return consistency::judge(reference, &results);
    }
    for ip in addrs {
        let of: Vec<ProbeResult> = results
            .iter()
            .filter(|r| r.addr.map(|a| a.ip()) == Some(ip))
            .cloned()
            .collect();
        verdicts.push(consistency::judge(reference, &of));
    }
    let worst = verdicts
        .iter()
        .find(|v| v.outcome == Outcome::Inconsistent)
        .or_else(|| verdicts.iter().find(|v| v.outcome == Outcome::Unknown));
    match worst {
        Some(v) => v.clone(),
        None => Verdict {
            outcome: Outcome::Consistent,
            line: format!(
                "consistent: {} replicas; {}",
                verdicts.len(),
                verdicts
                    .iter()
                    .map(|v| v.line.trim_start_matches("consistent: "))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        },
    }
}
