//! Command line: `trustwatch analyze FILE...` (offline) and `trustwatch live` (DaemonSet).
//!
//! Parses flags with clap, runs a command, maps errors to exit codes: 0 ok, 2 bad input
//! (one line on stderr, no backtrace), 3 `analyze` found a trust problem, 4 output failed, 5
//! `analyze` found no TLS connection on the watched ports.

mod analyze;
mod check;
mod detect;

pub use detect::DetectArgs;
mod live;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Limits, MemoryLimit, Services};

#[derive(Parser, Debug)]
#[command(
    name = "trustwatch",
    version,
    about = "Watches TLS handshakes on KubeEdge CloudCore ports and detects CA trust collapse"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Analyze pcap/pcapng files: one record per TLS connection, a summary and the trust timeline.
    Analyze(Box<AnalyzeArgs>),
    /// Capture live (libpcap), detect trust collapse, serve /metrics, /healthz, /readyz, /api/state and a status page.
    Live(Box<live::LiveArgs>),
    /// Check once that a CloudCore replica serves the stored CA (/ca.crt, optionally the cloudhub chain): exit 0 consistent, 1 inconsistent, 2 could not check.
    Check(check::CheckArgs),
}

/// Which traffic is analyzed.
#[derive(Args, Debug, Clone)]
pub struct TrafficArgs {
    /// Server ports to watch, with optional service names: `443,10000=cloudhub`.
    /// Default: CloudCore's 10000=cloudhub,10002=certsvc,10003=stream,10004=tunnel.
    #[arg(long, value_name = "LIST")]
    pub ports: Option<Services>,
    /// Also find TLS on any other port, by content (a TLS record or ClientHello at the start).
    #[arg(long)]
    pub any_port: bool,
}

impl TrafficArgs {
    pub fn services(&self) -> Services {
        let mut s = self.ports.clone().unwrap_or_default();
        s.any_port = self.any_port;
        s
    }
}

/// The one check of every count and size flag: a whole number, at least 1.
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("must be a whole number of at least 1".into()),
    }
}

/// Bounds on the packet path (every drop they cause is counted).
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Bytes buffered per direction until a handshake is decided.
    #[arg(long, value_name = "BYTES", value_parser = at_least_one, default_value_t = Limits::default().handshake_window)]
    pub handshake_window: usize,
    /// Concurrent flows tracked; beyond it the least recently active one is evicted.
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = Limits::default().max_flows)]
    pub max_flows: usize,
    /// Seconds without a packet after which a flow is closed.
    #[arg(long, value_name = "SECS", value_parser = at_least_one, default_value_t = 120)]
    pub idle_timeout: usize,
    /// Distinct certificates kept parsed.
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = Limits::default().cert_cache)]
    pub cert_cache: usize,
    /// Certificates kept per presented chain.
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = Limits::default().max_chain_len)]
    pub max_chain: usize,
    /// Memory for the state the packet path keeps (flows and buffers 5/8, certificates 1/8,
    /// detector 1/4); beyond it the least useful state is shed and counted.
    #[arg(long, value_name = "SIZE", default_value = "160MiB")]
    pub memory_limit: MemoryLimit,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            handshake_window: self.handshake_window,
            max_flows: self.max_flows,
            idle_timeout_us: i64::try_from(self.idle_timeout)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
            cert_cache: self.cert_cache,
            max_chain_len: self.max_chain,
            flow_memory: self.memory_limit.flows(),
            cert_memory: self.memory_limit.certificates(),
        }
    }
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng, gzip or zstd compressed too; `-` for standard input), merged
    /// by timestamp into one capture.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Write JSON Lines (one object per connection, ECS field names) to stdout; the summary goes
    /// to stderr.
    #[arg(long)]
    pub json: bool,
    /// No summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Write the incident report to FILE, its format by the extension: .html (self-contained
    /// page: timeline by CA key, replicas, affected clients, events), .md (tables for a ticket),
    /// .csv (the re-join list: failing clients, first/last failure, CA last succeeded under).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Analyse on N threads: the reading thread (which also judges and writes the records) and
    /// N−1 pipeline threads behind it that share out the connections (1: everything on the
    /// reading thread). The output is the same for every N unless a limit sheds state: each
    /// pipeline thread gets a share of --max-flows, --cert-cache and --memory-limit. Default: the
    /// cores this process may use (its CPU affinity and cgroup quota).
    #[arg(long, value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,
    #[command(flatten)]
    pub detect: DetectArgs,
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Narrowing the analysis (`analyze` only).
#[derive(Args, Debug)]
pub struct SelectArgs {
    /// Only packets from this time on: RFC 3339 (2026-11-26T17:49:30Z) or after the capture's
    /// first packet (+90s, +5m, +1h30m).
    #[arg(long, value_name = "TIME")]
    pub from: Option<crate::select::TimeSpec>,
    /// Only packets up to this time (same forms as --from; relative to the first packet too).
    #[arg(long, value_name = "TIME")]
    pub to: Option<crate::select::TimeSpec>,
    /// Only frames matching this BPF expression, compiled by libpcap (as `tcpdump -r FILE EXPR`).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Only connections from this client address or network (repeatable).
    #[arg(long, value_name = "ADDR[/PREFIX]")]
    pub client: Vec<crate::select::AddrPrefix>,
    /// Only connections to this server address or network (repeatable).
    #[arg(long, value_name = "ADDR[/PREFIX]")]
    pub server: Vec<crate::select::AddrPrefix>,
}

/// clap's message without its usage and help hints, on one line.
fn one_line(rendered: &str) -> String {
    let message = rendered.split("\n\n").next().unwrap_or_default();
    let message = message.strip_prefix("error: ").unwrap_or(message);
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    // A panic is a bug, never bad input: one line, no backtrace dump.
    std::panic::set_hook(Box::new(|info| {
        crate::note!("trustwatch: internal error: {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            crate::note!("trustwatch: {}", one_line(&e.render().to_string()));
            return 2;
        }
    };
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(*args),
        Command::Live(args) => live::run(*args),
        Command::Check(args) => check::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            if code != 0 {
                crate::note!("trustwatch: {e}");
            }
            code
        }
    }
}
