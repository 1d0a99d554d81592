//! `trustwatch live`: flags → [`Live`]; opens the capture sources and binds the HTTP address first
//! (so interface, permission and `--listen` problems are one-line errors with exit code 2 before
//! anything runs), then runs until SIGINT/SIGTERM and prints the totals.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{DetectArgs, LimitArgs, TrafficArgs, at_least_one};
use crate::capture::pcap::{PcapOptions, bpf_filter};
use crate::capture::{LiveOptions, Opened, SourceKind, open_live};
use crate::error::Error;
use crate::export::metrics::MetricsLimits;
use crate::runtime::live::{self, Live};
use crate::serve::{HttpLimits, Liveness, StatusPage};
use crate::trust::probe::ProbeTarget;

/// Read-only probes of the CloudCore replicas (live only).
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Probe `GET /ca.crt` on a replica: https://HOST:PORT (repeatable).
    #[arg(long, value_name = "URL")]
    pub probe_ca: Vec<String>,
    /// Probe the chain a TLS server presents: HOST:PORT (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub probe_chain: Vec<String>,
    /// Seconds between periodic probes (failures trigger one sooner).
    #[arg(long, value_name = "SECS", value_parser = at_least_one, default_value_t = 60)]
    pub probe_interval: usize,
}

impl ProbeArgs {
    fn targets(&self) -> Result<Vec<ProbeTarget>, Error> {
        let ca = self.probe_ca.iter().map(|s| ProbeTarget::parse_ca_url(s));
        let chain = self.probe_chain.iter().map(|s| ProbeTarget::parse_chain(s));
        ca.chain(chain).collect()
    }
}

#[derive(Args, Debug)]
pub struct LiveArgs {
    /// Interface to capture on (repeatable; `any` for all).
    #[arg(long, value_name = "IFACE", default_value = "any")]
    pub iface: Vec<String>,
    /// Capture backend: `auto` is eBPF when it can be loaded here, else libpcap (it says why).
    #[arg(long, value_enum, default_value_t = SourceKind::Auto)]
    pub source: SourceKind,
    /// HTTP address for /metrics, /healthz, /readyz, /api/state and the status page.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9877")]
    pub listen: SocketAddr,
    /// Write detector events as JSON Lines to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<PathBuf>,
    /// Write connection records and events as JSON Lines to FILE (`-` for stdout), as
    /// `analyze --json` does.
    #[arg(long, value_name = "FILE|-")]
    pub json: Option<PathBuf>,
    /// Bytes captured per packet.
    #[arg(long, value_name = "BYTES", default_value_t = 262_144)]
    pub snaplen: u32,
    /// Kernel capture buffer per interface, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub buffer_size: u32,
    /// Packets queued between the capture threads and the pipeline; beyond, packets are dropped
    /// and counted (reason="queue_full").
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = 65_536)]
    pub queue: usize,
    /// CA key ids kept as metric labels (the most recent ones; older series are removed).
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = 16)]
    pub max_ca_key_series: usize,
    /// /readyz also fails while a CA inconsistency or divergence is reported.
    #[arg(long)]
    pub ready_requires_consistent_ca: bool,
    /// Where the status page and /api/state are served (they list client addresses): `on` (with
    /// /metrics), `off`, or an address of their own such as 127.0.0.1:9878.
    #[arg(long, value_name = "on|off|ADDR", default_value = "on")]
    pub status_page: StatusPage,
    /// HTTP connections served at once (a small reserve beyond it still answers /healthz and
    /// /readyz; beyond that, connections are closed and counted).
    #[arg(long, value_name = "N", value_parser = at_least_one, default_value_t = HttpLimits::default().max_connections)]
    pub http_max_connections: usize,
    /// /healthz fails once a capture source has been down (failing and retrying) this long.
    #[arg(long, value_name = "SECS", value_parser = at_least_one, default_value_t = 60)]
    pub unhealthy_after: usize,
    /// No timeline on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub detect: DetectArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub ebpf: crate::capture::ebpf::EbpfArgs,
}

fn usage(msg: String) -> Error {
    Error::Usage(msg)
}

pub fn run(args: LiveArgs) -> Result<i32, Error> {
    let snaplen = i32::try_from(args.snaplen)
        .ok()
        .filter(|s| *s >= 64)
        .ok_or_else(|| usage("--snaplen must be in 64..=2147483647".into()))?;
    let buffer_size = i32::try_from(args.buffer_size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| usage("--buffer-size must be positive".into()))?;
    let services = args.traffic.services();
    let detector = args.detect.detector(services.clone())?;
    let probes = args.probes.targets()?;

    // Bind before capturing: a busy port is reported before anything starts.
    let listener = std::net::TcpListener::bind(args.listen).map_err(|e| {
        let why = if e.kind() == io::ErrorKind::AddrInUse {
            "address already in use".to_string()
        } else {
            e.to_string()
        };
        usage(format!("--listen {}: {why}", args.listen))
    })?;
    let status_listener = match args.status_page {
        StatusPage::At(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|e| usage(format!("--status-page {addr}: {e}")))?,
        ),
        _ => None,
    };
    let opts = LiveOptions {
        services: services.clone(),
        pcap: PcapOptions {
            snaplen,
            buffer_size,
            ..PcapOptions::default()
        },
        ebpf: args.ebpf.options(args.limits.handshake_window)?,
    };
    let Opened { sources, note } = open_live(args.source, &args.iface, &opts)?;
    let quiet = args.quiet;
    if let (Some(note), false) = (note, quiet) {
        crate::note!("trustwatch live: capture backend: {note}");
    }
    let filter = bpf_filter(&services);
    let ifaces = args.iface.join(", ");
    let live = Live {
        sources,
        queue: args.queue,
        listener,
        status: args.status_page,
        status_listener,
        http: HttpLimits {
            max_connections: args.http_max_connections,
            ..HttpLimits::default()
        },
        liveness: Liveness {
            source_down_after: Duration::from_secs(args.unhealthy_after as u64),
            ..Liveness::default()
        },
        services,
        limits: args.limits.limits(),
        detector,
        probes,
        probe_interval: Duration::from_secs(args.probes.probe_interval as u64),
        metrics: MetricsLimits {
            max_ca_keys: args.max_ca_key_series,
            ..MetricsLimits::default()
        },
        ready_requires_consistent_ca: args.ready_requires_consistent_ca,
        events: args.events,
        json: args.json,
        quiet,
    };
    let started = |addr: SocketAddr| {
        if !quiet {
            crate::note!(
                "trustwatch live: capturing on {ifaces} ({filter}); http://{addr}/ (/metrics, /api/state)"
            );
        }
    };
    match live::run(live, started)? {
        Some(t) if !quiet => {
            crate::note!(
                "trustwatch live: stopped after {:.1}s: {} packets, {} handshakes, {} events, {} packets dropped",
                t.seconds,
                t.packets,
                t.handshakes,
                t.events,
                t.dropped
            );
            for source in &t.sources {
                crate::note!("trustwatch live: capture {source}");
            }
        }
        Some(_) => {}
        None => crate::note!("trustwatch live: the pipeline did not finish in time; exiting"),
    }
    Ok(0)
}
