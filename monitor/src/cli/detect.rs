//! Detector flags shared by `analyze` and `live`: the trusted-CA reference and the collapse rule.

use std::ffi::OsStr;
use std::path::PathBuf;

use clap::Args;
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

use super::at_least_one;
use crate::config::Services;
use crate::detect::{DetectConfig, DetectLimits, Detector};
use crate::error::Error;
use crate::trust::{CaHash, TrustOptions, TrustedReference};

/// `--join-token`: keeps only the CA hash; the JWT part never reaches the parsed arguments, and an
/// error never echoes the value (clap's default message would print the whole token).
#[derive(Clone, Copy, Debug)]
pub(super) struct JoinTokenParser;

impl TypedValueParser for JoinTokenParser {
    type Value = CaHash;

    fn parse_ref(
        &self,
        _: &clap::Command,
        _: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<CaHash, clap::Error> {
        let token = value.to_str().ok_or_else(|| {
            clap::Error::raw(ErrorKind::InvalidUtf8, "--join-token is not UTF-8\n")
        })?;
        CaHash::from_join_token(token)
            .map_err(|e| clap::Error::raw(ErrorKind::ValueValidation, format!("{e}\n")))
    }
}

pub(super) fn ca_hash(s: &str) -> Result<CaHash, String> {
    CaHash::from_hex(s).map_err(|e| e.to_string())
}

/// What the presented CAs are compared with, and when a trust collapse is declared.
#[derive(Args, Debug, Clone)]
pub struct DetectArgs {
    /// Trusted CA certificate(s), PEM or DER, bundles allowed (repeatable).
    #[arg(long, value_name = "FILE")]
    pub trusted_ca: Vec<PathBuf>,
    /// A mounted kubeedge/casecret: only its `cadata` file is read (never `cakeydata`), again
    /// whenever it changes.
    #[arg(long, value_name = "DIR")]
    pub kubeedge_secret_dir: Option<PathBuf>,
    /// sha256 of the CA certificate DER (the first part of a join token).
    #[arg(long, value_name = "HEX", value_parser = ca_hash)]
    pub ca_hash: Option<CaHash>,
    /// A KubeEdge join token: only the CA hash before the first '.' is used and kept.
    #[arg(long, value_name = "TOKEN", value_parser = JoinTokenParser)]
    pub join_token: Option<CaHash>,
    /// Sliding window of the collapse rule, seconds of packet time.
    #[arg(long, value_name = "SECS", value_parser = at_least_one, default_value_t = 60)]
    pub trust_window: usize,
    /// K: distinct clients failing on certificate grounds in the window.
    #[arg(long, value_name = "K", value_parser = at_least_one, default_value_t = DetectConfig::default().min_failing_clients)]
    pub collapse_clients: usize,
    /// R: share of failing clients among the active ones for a total collapse.
    #[arg(long, value_name = "R", default_value_t = DetectConfig::default().min_failure_share)]
    pub collapse_share: f64,
    /// P: share from which K failing clients are a partial collapse (one replica, a share of the
    /// edges).
    #[arg(long, value_name = "P", default_value_t = DetectConfig::default().partial_share)]
    pub partial_share: f64,
    /// Seconds the collapse condition must hold before a collapse is declared.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub collapse_hold: u64,
    /// Seconds with fewer than K failing clients before a collapse is declared recovered.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub recovery_hold: u64,
    /// Milliseconds a collapse waits for the probes that failures started (live), so that it
    /// names the CA the replicas present now.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub probe_grace: u64,
    /// Seconds replicas may present different CA keys, with no certificate failure and no client
    /// seen under two of them yet, before it is a divergence (evidence for a rotation may come).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub rotation_grace: u64,
    /// Distinct client addresses tracked per service in the window (beyond, dropped and counted).
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = DetectLimits::default().max_clients)]
    pub max_tracked_clients: usize,
    /// Handshakes kept per service in the window (beyond, dropped and counted).
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = DetectLimits::default().max_window_entries)]
    pub max_window_handshakes: usize,
    /// Server addresses (replicas) tracked per service.
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = DetectLimits::default().max_servers)]
    pub max_replicas: usize,
    /// CA key ids tracked per service.
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = DetectLimits::default().max_ca_keys)]
    pub max_ca_keys: usize,
}

fn secs_to_us(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}

impl DetectArgs {
    /// The detector for `services`, with its reference loaded (bad files are errors, exit 2).
    pub fn detector(&self, services: Services) -> Result<Detector, Error> {
        let cfg = DetectConfig {
            window_us: secs_to_us(self.trust_window as u64),
            min_failing_clients: self.collapse_clients,
            min_failure_share: self.collapse_share,
            partial_share: self.partial_share,
            collapse_hold_us: secs_to_us(self.collapse_hold),
            recovery_hold_us: secs_to_us(self.recovery_hold),
            rotation_grace_us: secs_to_us(self.rotation_grace),
            probe_grace_us: i64::try_from(self.probe_grace)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000),
            services,
            limits: DetectLimits {
                max_clients: self.max_tracked_clients,
                max_window_entries: self.max_window_handshakes,
                max_servers: self.max_replicas,
                max_ca_keys: self.max_ca_keys,
                ..DetectLimits::default()
            },
            ..DetectConfig::default()
        };
        cfg.validate()?;
        let opts = TrustOptions {
            trusted_ca: self.trusted_ca.clone(),
            kubeedge_secret_dir: self.kubeedge_secret_dir.clone(),
            ca_hash: self.ca_hash,
            join_token_hash: self.join_token,
        };
        Ok(Detector::new(cfg, TrustedReference::load(&opts)?))
    }
}
