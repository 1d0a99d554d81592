//! `demo`: the incident demo (`cargo xtask demo`) and the live benchmarks (`cargo xtask bench
//! --live`), run against a `trustwatch` binary (default: the release build in `target/`).
//!
//! ```text
//! demo [--quick | --forever] [--base-port N] [--http-port N] [--edges N] [--trustwatch PATH]
//! demo bench [--quick] [--runs N] [--rate R] [--secs S] [--no-latency] [--no-cpu] [--no-sources]
//!            [--bulk-mib N] [--storm N] [--base-port N] [--trustwatch PATH]
//! demo soak [--minutes N] [--rate R] [--every S] [--warmup S] [--base-port N] [--trustwatch PATH]
//! ```
//!
//! The benchmark has three parts: (a) detection latency in the incident scenario, (b) the
//! monitor's CPU at a steady handshake rate (with the backend `--source auto` picks), (c) eBPF
//! against libpcap on the same traffic: a bulk transfer and a reconnect storm (`demo::sources`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use trustwatch_testkit::demo::load::{self, LoadOptions};
use trustwatch_testkit::demo::proc::install_stop_handler;
use trustwatch_testkit::demo::scenario::{self, Options, Report};
use trustwatch_testkit::demo::soak::{self, SoakOptions};
use trustwatch_testkit::demo::sources::{self, Figures, SourcesOptions, SourcesReport};
use trustwatch_testkit::demo::{Ports, proc};

const USAGE: &str = "usage: demo [--quick | --forever] [--base-port N] [--http-port N] [--edges N] [--trustwatch PATH]\n       demo bench [--quick] [--runs N] [--rate R] [--secs S] [--no-latency] [--no-cpu] [--no-sources] [--bulk-mib N] [--storm N] [--base-port N] [--trustwatch PATH]\n       demo soak [--minutes N] [--rate R] [--every S] [--warmup S] [--base-port N] [--trustwatch PATH]";

/// Flags common to both modes.
#[derive(Default)]
struct Common {
    base_port: Option<u16>,
    http_port: Option<u16>,
    trustwatch: Option<PathBuf>,
}

impl Common {
    fn ports(&self) -> Result<Ports, String> {
        let mut p = match self.base_port {
            Some(b) => Ports::from_base(b).ok_or("--base-port too large")?,
            None => Ports::default(),
        };
        if let Some(h) = self.http_port {
            p.http = h;
        }
        Ok(p)
    }

    fn trustwatch(&self) -> Result<PathBuf, String> {
        let p = self
            .trustwatch
            .clone()
            .unwrap_or_else(|| trustwatch_testkit::target_dir().join("release/trustwatch"));
        if !p.exists() {
            return Err(format!(
                "{} not found: build it (cargo build --release -p trustwatch) or pass --trustwatch PATH",
                p.display()
            ));
        }
        Ok(p)
    }
}

fn value<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
    v.and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{flag} needs a valid value\n{USAGE}"))
}

fn demo(args: &[String]) -> Result<(), String> {
    let mut c = Common::default();
    let (mut quick, mut forever, mut edges) = (false, false, 12u8);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--forever" => forever = true,
            "--base-port" => c.base_port = Some(value(a, it.next())?),
            "--http-port" => c.http_port = Some(value(a, it.next())?),
            "--edges" => edges = value(a, it.next())?,
            "--trustwatch" => c.trustwatch = Some(value(a, it.next())?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let tw = c.trustwatch()?;
    let mut o = if quick {
        Options::quick(tw)
    } else {
        Options::standard(tw)
    };
    o.ports = c.ports()?;
    o.edges = edges;
    if forever {
        o.run_for = None;
    }
    println!(
        "trustwatch demo: a simulated KubeEdge loses trust in CloudCore, watched live by `trustwatch live --iface lo`"
    );
    let r = scenario::run(&o).map_err(|e| e.to_string())?;
    print!("{}", scenario::summary(&r));
    if r.switched_at.is_some() && r.collapse().is_none() && !r.interrupted {
        return Err("the trust collapse was not detected".into());
    }
    Ok(())
}

/// One latency figure of a run (ms).
type Measure = Box<dyn Fn(&Report) -> Option<f64>>;

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

fn fmt_ms(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |x| format!("{x:.0} ms"))
}

fn bench(args: &[String]) -> Result<(), String> {
    let mut c = Common::default();
    let (mut runs, mut rate, mut secs) = (3usize, 1000u32, 20u64);
    let (mut latency, mut cpu, mut compare) = (true, true, true);
    let (mut bulk_mib, mut storm) = (1024u64, 5000u32);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => (runs, secs) = (1, 10),
            "--runs" => runs = value(a, it.next())?,
            "--rate" => rate = value(a, it.next())?,
            "--secs" => secs = value(a, it.next())?,
            "--no-latency" => latency = false,
            "--no-cpu" => cpu = false,
            "--no-sources" => compare = false,
            "--bulk-mib" => bulk_mib = value(a, it.next())?,
            "--storm" => storm = value(a, it.next())?,
            "--base-port" => c.base_port = Some(value(a, it.next())?),
            "--http-port" => c.http_port = Some(value(a, it.next())?),
            "--trustwatch" => c.trustwatch = Some(value(a, it.next())?),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let tw = c.trustwatch()?;
    let ports = c.ports()?;
    let mut missed = Vec::new();
    let mut table: Vec<(String, String, String, String)> = Vec::new();
    if latency {
        let mut runs_out: Vec<Report> = Vec::new();
        for i in 0..runs.max(1) {
            eprintln!(
                "demo bench: detection latency, run {}/{} (incident scenario, switch after 5 s)",
                i + 1,
                runs
            );
            let o = Options {
                ports,
                narrate: false,
                run_for: Some(Duration::from_secs(30)),
                end_after_detection: Some(Duration::from_secs(1)),
                ..Options::quick(tw.clone())
            };
            let r = scenario::run(&o).map_err(|e| e.to_string())?;
            if proc::stop_requested() {
                return Err("interrupted".into());
            }
            let c = r.collapse().ok_or("run {i}: no trust_collapse event")?;
            let k = r.collapse_clients;
            let fired = usize::try_from(
                c.json["trustwatch"]["failing_clients"]
                    .as_u64()
                    .unwrap_or(0),
            )
            .unwrap_or(0);
            println!(
                "  run {}: first failure → event {}, → /metrics {}; after failing edge #{k}: event {}, /metrics {}; \
                 rule fired at {fired} failing edges (+{} after #{fired}); trustwatch (capture time) {:.0} ms",
                i + 1,
                fmt_ms(ms(r.after_nth(1, Some(c.at)))),
                fmt_ms(ms(r.after_nth(1, r.metrics_collapsed_at))),
                fmt_ms(ms(r.after_nth(k, Some(c.at)))),
                fmt_ms(ms(r.after_nth(k, r.metrics_collapsed_at))),
                fmt_ms(ms(r.after_nth(fired, Some(c.at)))),
                c.json["trustwatch"]["detection_latency_us"]
                    .as_f64()
                    .unwrap_or(0.0)
                    / 1000.0,
            );
            runs_out.push(r);
        }
        let col = |f: &dyn Fn(&Report) -> Option<f64>| -> (Option<f64>, Option<f64>) {
            let v: Vec<f64> = runs_out.iter().filter_map(f).collect();
            (median(v.clone()), v.into_iter().reduce(f64::max))
        };
        let k = runs_out.first().map_or(3, |r| r.collapse_clients);
        let rows: [(&str, Measure, bool); 4] = [
            (
                "first failing handshake → collapse event (stdout)",
                Box::new(|r: &Report| ms(r.after_nth(1, r.collapse().map(|c| c.at)))),
                false,
            ),
            (
                "first failing handshake → trust_state 2 (/metrics, 50 ms poll)",
                Box::new(|r: &Report| ms(r.after_nth(1, r.metrics_collapsed_at))),
                false,
            ),
            (
                "failing edge #K → collapse event (stdout)",
                Box::new(move |r: &Report| ms(r.after_nth(k, r.collapse().map(|c| c.at)))),
                true,
            ),
            (
                "failing edge #K → trust_state 2 (/metrics)",
                Box::new(move |r: &Report| ms(r.after_nth(k, r.metrics_collapsed_at))),
                true,
            ),
        ];
        for (what, f, targeted) in rows {
            let (med, max) = col(&*f);
            let target = if targeted {
                let ok = max.is_some_and(|m| m <= 1000.0);
                if !ok {
                    missed.push(what.replace('K', &k.to_string()));
                }
                format!("≤ 1000 ms: {}", if ok { "ok" } else { "MISSED" })
            } else {
                String::new()
            };
            table.push((
                format!("(a) {}", what.replace('K', &k.to_string())),
                fmt_ms(med),
                fmt_ms(max),
                target,
            ));
        }
    }
    if cpu {
        eprintln!(
            "demo bench: CPU of trustwatch live at {rate} handshakes/s for {secs} s (after 3 s warm-up)"
        );
        let o = LoadOptions {
            ports,
            rate,
            measure: Duration::from_secs(secs),
            ..LoadOptions::new(tw.clone())
        };
        let r = load::run(&o).map_err(|e| e.to_string())?;
        println!(
            "  load: {:.0} handshakes/s completed by the clients ({} failed), monitor counted {:.0} ({:.0}/s); \
             monitor user {:.2} s + system {:.2} s over {:.1} s; peak RSS {:.1} MiB; {:.0} packets analyzed, dropped: {}; machine busy {:.0}%",
            r.rate(),
            r.failed,
            r.monitor_handshakes,
            r.monitor_handshakes / r.window.as_secs_f64(),
            r.monitor_user_s,
            r.monitor_system_s,
            r.window.as_secs_f64(),
            r.max_rss_kib as f64 / 1024.0,
            r.packets,
            if r.dropped.iter().all(|d| d.1 == 0.0) {
                "none".to_string()
            } else {
                r.dropped
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            r.machine_busy * 100.0
        );
        let share = r.cpu_share() * 100.0;
        let ok = share <= 25.0;
        if !ok {
            missed.push("CPU ≤ 25%".into());
        }
        table.push((
            format!(
                "(b) CPU of trustwatch live at {:.0} handshakes/s (user+sys, one core)",
                r.rate()
            ),
            format!("{share:.1}%"),
            format!(
                "user {:.1}%",
                r.monitor_user_s / r.window.as_secs_f64() * 100.0
            ),
            format!("≤ 25%: {}", if ok { "ok" } else { "MISSED" }),
        ));
    }
    let compared = if compare {
        eprintln!(
            "demo bench: eBPF vs libpcap on the same traffic: {bulk_mib} MiB bulk, then a storm of {storm} edges"
        );
        let o = SourcesOptions {
            bulk_bytes: bulk_mib << 20,
            storm_edges: storm,
            ..SourcesOptions::new(tw.clone(), ports.cloudhub)
        };
        Some(sources::run(&o).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let w = table
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(10);
    println!("\ntrustwatch live benchmark");
    println!(
        "{:<w$}  {:>9}  {:>10}  target",
        "measure", "median", "max/other"
    );
    for (a, b, c2, d) in &table {
        println!("{a:<w$}  {b:>9}  {c2:>10}  {d}");
    }
    if let Some(r) = &compared {
        print_comparison(r, bulk_mib, storm, &mut missed);
    }
    if missed.is_empty() {
        Ok(())
    } else {
        println!("targets missed: {}", missed.join("; "));
        Ok(())
    }
}

/// The eBPF-vs-libpcap table (monitors in `sources::MONITORS` order: libpcap first).
fn print_comparison(r: &SourcesReport, bulk_mib: u64, storm: u32, missed: &mut Vec<String>) {
    for (phase, p) in [("bulk", &r.bulk), ("storm", &r.storm)] {
        println!(
            "\n  {phase}: {:.1} s, client side {} ok / {} failed",
            p.secs, p.ok, p.failed
        );
        for f in &p.monitors {
            println!(
                "    {}: user {:.2} s + system {:.2} s; {}",
                f.label, f.user_s, f.system_s, f.line
            );
        }
    }
    let (b, s) = (&r.bulk.monitors, &r.storm.monitors);
    let mut rows: Vec<(String, Vec<String>, String)> = Vec::new();
    // (c) bulk CPU and bytes
    let pcap_cpu = b[0].cpu_s();
    let cpu_ok = b[1..].iter().all(|f| f.cpu_s() * 10.0 <= pcap_cpu);
    rows.push((
        format!("(c) bulk {bulk_mib} MiB after a handshake: trustwatch CPU user+sys"),
        b.iter().map(|f| format!("{:.2} s", f.cpu_s())).collect(),
        format!(
            "≥ 10× less: {} ({:.0}×)",
            if cpu_ok { "ok" } else { "MISSED" },
            pcap_cpu
                / b[1..]
                    .iter()
                    .map(Figures::cpu_s)
                    .fold(f64::MIN, f64::max)
                    .max(0.005)
        ),
    ));
    let pcap_bytes = b[0].bytes.max(1.0);
    let bytes_ok = b[1..].iter().all(|f| f.bytes <= pcap_bytes * 0.001);
    rows.push((
        "(c) bulk: bytes handed to user space".into(),
        b.iter().map(|f| format!("{:.0}", f.bytes)).collect(),
        format!(
            "≥ 99.9% fewer: {} ({:.4}% fewer)",
            if bytes_ok { "ok" } else { "MISSED" },
            100.0 * (1.0 - b[1..].iter().map(|f| f.bytes).fold(0.0, f64::max) / pcap_bytes)
        ),
    ));
    rows.push((
        "(c) bulk: handshakes recorded (established)".into(),
        b.iter()
            .map(|f| format!("{:.0}/{:.0}", f.outcome("established"), f.handshakes()))
            .collect(),
        String::new(),
    ));
    // (d) storm
    let lost_ok = s[1..].iter().all(|f| f.dropped == 0.0);
    rows.push((
        format!(
            "(d) storm: {storm} edges in {:.1} s ({:.0}/s): packets lost",
            r.storm.secs,
            f64::from(storm) / r.storm.secs
        ),
        s.iter().map(|f| format!("{:.0}", f.dropped)).collect(),
        format!("eBPF 0: {}", if lost_ok { "ok" } else { "MISSED" }),
    ));
    let alone = &r.storm_alone;
    rows.push((
        format!(
            "(d) the same storm with nothing attached: {storm} edges in {:.1} s ({:.0}/s; {} ok, {} failed)",
            alone.secs,
            f64::from(storm) / alone.secs,
            alone.ok,
            alone.failed
        ),
        s.iter().map(|_| "—".to_string()).collect(),
        format!(
            "what the load generator reaches on this machine alone: {}",
            if alone.secs <= 5.0 {
                "within 5 s"
            } else {
                "not within 5 s"
            }
        ),
    ));
    let right = |f: &Figures| {
        f.outcome("established") == r.storm.ok as f64 && f.handshakes() == r.storm.ok as f64
    };
    rows.push((
        format!(
            "(d) storm: handshakes recorded established (clients: {} ok, {} failed)",
            r.storm.ok, r.storm.failed
        ),
        s.iter()
            .map(|f| {
                format!(
                    "{:.0}{}",
                    f.outcome("established"),
                    if right(f) { " ✓" } else { " ✗" }
                )
            })
            .collect(),
        format!(
            "every one right: {}",
            if s[1..].iter().all(right) {
                "ok"
            } else {
                "MISSED"
            }
        ),
    ));
    rows.push((
        "(d) storm: trustwatch CPU user+sys".into(),
        s.iter().map(|f| format!("{:.2} s", f.cpu_s())).collect(),
        String::new(),
    ));
    rows.push((
        "(d) storm: packets / bytes handed to user space".into(),
        s.iter()
            .map(|f| format!("{:.0} / {:.0}", f.packets, f.bytes))
            .collect(),
        String::new(),
    ));
    // (e) TC program run time
    for (phase, p, floor) in [("bulk", b, r.bulk.floor_ns), ("storm", s, r.storm.floor_ns)] {
        let ok = p[1..].iter().all(|f| f.run_ns.is_some_and(|n| n <= 150.0));
        rows.push((
            format!(
                "(e) TC program mean run time per packet, {phase} (BPF stats; a 2-instruction program: {})",
                floor.map_or_else(|| "—".into(), |n| format!("{n:.0} ns"))
            ),
            p.iter()
                .map(|f| {
                    f.run_ns
                        .map_or_else(|| "—".into(), |n| format!("{n:.0} ns"))
                })
                .collect(),
            format!("≤ 150 ns: {}", if ok { "ok" } else { "MISSED" }),
        ));
        if !ok {
            missed.push(format!("TC run time ({phase})"));
        }
    }
    if !cpu_ok {
        missed.push("bulk CPU ≥ 10× less".into());
    }
    if !bytes_ok {
        missed.push("bulk bytes ≥ 99.9% fewer".into());
    }
    if !lost_ok {
        missed.push("storm: eBPF lost packets".into());
    }
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(10);
    println!("\neBPF vs libpcap on the same traffic (three monitors at once on lo)");
    print!("{:<w$}", "measure");
    for (label, _) in sources::MONITORS {
        print!("  {label:>14}");
    }
    println!("  target");
    for (what, cells, target) in rows {
        print!("{what:<w$}");
        for c in cells {
            print!("  {c:>14}");
        }
        println!("  {target}");
    }
}

/// `demo soak`: `trustwatch live` under a steady mix, sampled; growth after the warm-up.
fn soak(args: &[String]) -> Result<(), String> {
    let mut c = Common::default();
    let (mut minutes, mut rate, mut every, mut warmup) = (40u64, 200u32, 5u64, soak::WARMUP_SECS);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => minutes = value(a, it.next())?,
            "--rate" => rate = value(a, it.next())?,
            "--every" => every = value(a, it.next())?,
            "--warmup" => warmup = value(a, it.next())?,
            "--base-port" => c.base_port = Some(value(a, it.next())?),
            "--trustwatch" => c.trustwatch = Some(value(a, it.next())?),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut o = SoakOptions::new(c.trustwatch()?, minutes);
    o.ports = c.ports()?;
    o.rate = rate;
    o.every = Duration::from_secs(every.max(1));
    o.warmup = Duration::from_secs(warmup);
    eprintln!(
        "demo soak: {minutes} min, {rate} handshakes/s (5% failing), bulk on {}, a scanner on {}; samples every {every} s, warm-up {warmup} s",
        o.ports.certsvc, o.ports.http
    );
    println!(
        "  {:>6} {:>9} {:>9} {:>9} {:>11} {:>6} {:>5} {:>7} {:>11}",
        "t (s)",
        "RSS KiB",
        "anon KiB",
        "file KiB",
        "charged KiB",
        "CPU",
        "fds",
        "series",
        "handshakes"
    );
    let r = soak::run(&o, &mut |s| {
        println!(
            "  {:>6} {:>9} {:>9} {:>9} {:>11} {:>5.1}% {:>5} {:>7} {:>11}",
            s.at.as_secs(),
            s.rss_kib,
            s.rss_anon_kib,
            s.rss_file_kib,
            s.charged_kib,
            s.cpu * 100.0,
            s.fds,
            s.series,
            s.handshakes
        );
    })
    .map_err(|e| e.to_string())?;
    let Some((a, b)) = r.ends() else {
        return Err("no samples".into());
    };
    println!(
        "soak: {} min; edges ok {} failed {} ({:.1}%); bulk {:.0} MiB; scanner requests {}",
        (b.at.as_secs() + 30) / 60,
        r.ok,
        r.failed,
        100.0 * r.failed as f64 / (r.ok + r.failed).max(1) as f64,
        r.bulk_bytes as f64 / 1048576.0,
        r.scans
    );
    let (first, last) = r.growth_windows();
    println!(
        "after warm-up ({} s → {} s): RSS {} → {} KiB; means of the first and last {} min {:.0} → {:.0} KiB ({:+.2}%), peak {} KiB; fds {} → {}; series {} → {}; mean CPU {:.1}% of a core",
        a.at.as_secs(),
        b.at.as_secs(),
        a.rss_kib,
        b.rss_kib,
        soak::GROWTH_WINDOW.as_secs() / 60,
        first,
        last,
        100.0 * r.rss_growth(),
        r.peak_rss_kib,
        a.fds,
        b.fds,
        a.series,
        b.series,
        100.0 * r.mean_cpu()
    );
    println!(
        "trend after warm-up (least squares): RSS {:+.1} KiB/min (anon {:+.1}, file {:+.1}); charged {:+.1} KiB/min ({} → {} KiB)",
        r.trend_kib_per_min(|s| s.rss_kib),
        r.trend_kib_per_min(|s| s.rss_anon_kib),
        r.trend_kib_per_min(|s| s.rss_file_kib),
        r.trend_kib_per_min(|s| s.charged_kib),
        a.charged_kib,
        b.charged_kib
    );
    Ok(())
}

fn main() -> ExitCode {
    install_stop_handler();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("bench") => bench(&args[1..]),
        Some("soak") => soak(&args[1..]),
        _ => demo(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
