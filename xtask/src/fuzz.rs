//! `cargo xtask fuzz [--secs N] [--jobs J] [TARGET...]`: the cargo-fuzz targets of `monitor/fuzz/`,
//! each for a bounded time (default 30 s), on libFuzzer with nightly Rust.
//!
//! First it makes sure cargo-fuzz is installed and writes the seed corpora
//! (`monitor/fuzz/seeds/<target>`, from the generated fixtures and `../shared/validation`; not
//! committed) with the testkit's `fuzz_seeds` example. Each target runs on its growing corpus
//! (`monitor/fuzz/corpus/<target>`) plus the seeds, without a sanitizer (the code fuzzed is safe
//! Rust; libpcap is a system library ASan would not instrument) and with debug assertions and
//! overflow checks on. A crash, a leak-free out-of-memory (`-rss_limit_mb`) or a unit slower than
//! `-timeout` fails the task and leaves the input in `monitor/fuzz/artifacts/<target>/`; copy it
//! to `monitor/fuzz/regressions/<target>/` (a unit test runs every file there) with the fix.
//!
//! Prints per target the executions, the coverage (`cov:` edges and `ft:` features, libFuzzer's
//! figures) and the slowest unit.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{cargo, run, workspace};

pub const TARGETS: [&str; 5] = [
    "pipeline",
    "tls_stream",
    "certs",
    "file_reader",
    "ebpf_records",
];

/// The time each target gets in `cargo xtask test`.
pub const TEST_SECS: u64 = 20;

fn fuzz_dir() -> PathBuf {
    workspace().join("monitor/fuzz")
}

fn have_cargo_fuzz() -> bool {
    cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn have_nightly() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// cargo-fuzz and a nightly toolchain (also part of `cargo xtask setup`).
pub fn ensure_tools() -> Result<(), String> {
    if !have_nightly() {
        eprintln!("xtask: installing the nightly toolchain (cargo-fuzz needs it)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    if !have_cargo_fuzz() {
        eprintln!("xtask: installing cargo-fuzz (crates.io)");
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Writes the seed corpora (idempotent: the files are rewritten).
pub fn seeds() -> Result<PathBuf, String> {
    let out = fuzz_dir().join("seeds");
    let mut cmd = cargo();
    cmd.current_dir(workspace()).args([
        "run",
        "--quiet",
        "-p",
        "trustwatch-testkit",
        "--example",
        "fuzz_seeds",
        "--",
    ]);
    cmd.arg(&out);
    let validation = workspace().join("../shared/validation/pcaps");
    if validation.is_dir() {
        cmd.arg(validation);
    }
    run(&mut cmd)?;
    Ok(out)
}

/// What one target's run reported.
#[derive(Debug, Default)]
struct Figures {
    execs: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    slowest_s: u64,
    peak_rss_mb: u64,
    /// The slowest corpus input, measured after the run (milliseconds, file).
    slowest_input: Option<(u64, String)>,
}

/// libFuzzer's status lines (`#N ... cov: C ft: F corp: K/...`) and final stats.
fn parse(log: &str) -> Figures {
    let mut f = Figures::default();
    let num = |s: &str| -> u64 {
        s.trim_start_matches('#')
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .split('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first().is_some_and(|w| w.starts_with('#')) {
            f.execs = f.execs.max(num(words[0]));
            for pair in words.windows(2) {
                match pair[0] {
                    "cov:" => f.cov = f.cov.max(num(pair[1])),
                    "ft:" => f.ft = f.ft.max(num(pair[1])),
                    "corp:" => f.corpus = num(pair[1]),
                    _ => {}
                }
            }
        }
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            f.execs = f.execs.max(num(v.trim()));
        }
        if let Some(v) = line.strip_prefix("stat::slowest_unit_time_sec:") {
            f.slowest_s = num(v.trim());
        }
        if let Some(v) = line.strip_prefix("stat::peak_rss_mb:") {
            f.peak_rss_mb = num(v.trim());
        }
    }
    f
}

/// The slowest input of `target`'s corpus in milliseconds (libFuzzer's own figure is in whole
/// seconds): the fuzz binary run on every corpus file, which prints `Executed F in N ms` for each.
fn slowest_ms(target: &str) -> Option<(u64, String)> {
    let dir = fuzz_dir();
    let bin = dir
        .join("target")
        .join(std::env::consts::ARCH.to_string() + "-unknown-linux-gnu")
        .join("release")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("corpus").join(target))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut slowest: Option<(u64, String)> = None;
    for chunk in files.chunks(500) {
        let out = Command::new(&bin).args(chunk).output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("Executed ") else {
                continue;
            };
            let Some((file, ms)) = rest.rsplit_once(" in ") else {
                continue;
            };
            let Ok(ms) = ms.trim_end_matches(" ms").parse::<u64>() else {
                continue;
            };
            if slowest.as_ref().is_none_or(|(m, _)| ms > *m) {
                slowest = Some((ms, file.to_string()));
            }
        }
    }
    slowest
}

/// Runs `target` for `secs` seconds; Err when libFuzzer found something.
fn run_target(target: &str, secs: u64, jobs: u64) -> Result<Figures, String> {
    let dir = fuzz_dir();
    let corpus = dir.join("corpus").join(target);
    let seeds = dir.join("seeds").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let mut cmd = Command::new("rustup");
    // Not the stable toolchain `cargo xtask` runs under.
    for var in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(&dir)
        .args(["run", "nightly", "cargo", "fuzz", "run"])
        .args(["--sanitizer", "none", "--debug-assertions", target])
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--").args([
        format!("-max_total_time={secs}"),
        "-timeout=2".into(),
        "-rss_limit_mb=2048".into(),
        "-max_len=65536".into(),
        "-print_final_stats=1".into(),
    ]);
    if jobs > 1 {
        cmd.args([format!("-fork={jobs}"), "-ignore_crashes=0".into()]);
    }
    let log_path = dir.join(format!("fuzz-{target}.log"));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    eprintln!(
        "xtask fuzz: {target} for {secs} s (log: {})",
        log_path.display()
    );
    let status = cmd
        .stdout(log)
        .stderr(err)
        .status()
        .map_err(|e| format!("cargo fuzz: {e}"))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut figures = parse(&text);
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "{target}: libFuzzer stopped ({status}); input in {}\n{}",
            dir.join("artifacts").join(target).display(),
            tail.join("\n")
        ));
    }
    figures.slowest_input = slowest_ms(target);
    Ok(figures)
}

/// `cargo xtask fuzz [--secs N] [--jobs J] [TARGET...]`.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let mut secs = 30;
    let mut jobs = 1;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => {
                secs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--secs needs a number of seconds")?
            }
            "--jobs" => {
                jobs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--jobs needs a number")?
            }
            t if TARGETS.contains(&t) => targets.push(t.to_string()),
            other => {
                return Err(format!(
                    "unknown target or argument {other} (targets: {TARGETS:?})"
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    run_all(&targets, secs, jobs)
}

/// Seeds, then every target in turn; a table of figures at the end.
pub fn run_all(targets: &[String], secs: u64, jobs: u64) -> Result<(), String> {
    ensure_tools()?;
    seeds()?;
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for t in targets {
        match run_target(t, secs, jobs) {
            Ok(f) => rows.push((t.clone(), f)),
            Err(e) => failures.push(e),
        }
    }
    eprintln!("xtask fuzz: {secs} s per target");
    eprintln!(
        "  {:<12} {:>12} {:>8} {:>8} {:>7} {:>9} {:>8}  slowest corpus input",
        "target", "executions", "cov", "ft", "corpus", "slowest", "rss MB"
    );
    for (t, f) in &rows {
        let input = f
            .slowest_input
            .as_ref()
            .map_or_else(|| "-".to_string(), |(ms, file)| format!("{ms} ms ({file})"));
        eprintln!(
            "  {:<12} {:>12} {:>8} {:>8} {:>7} {:>7} s {:>8}  {input}",
            t, f.execs, f.cov, f.ft, f.corpus, f.slowest_s, f.peak_rss_mb
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_status_and_final_stats() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 12 corp: 3/40b exec/s: 0 rss: 30Mb\n\
                   #1048576\tpulse  cov: 4521 ft: 19873 corp: 812/301Kb lim: 4096 exec/s: 34952 rss: 411Mb\n\
                   #1200000\tDONE   cov: 4530 ft: 19901 corp: 815/302Kb lim: 4096 exec/s: 35000 rss: 412Mb\n\
                   stat::number_of_executed_units: 1200003\nstat::slowest_unit_time_sec: 0\n\
                   stat::peak_rss_mb: 413\n";
        let f = parse(log);
        assert_eq!(
            (f.execs, f.cov, f.ft, f.corpus, f.slowest_s, f.peak_rss_mb),
            (1_200_003, 4530, 19901, 815, 0, 413)
        );
    }

    #[test]
    fn targets_match_the_fuzz_crate() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t}");
            assert!(fuzz_dir().join(format!("fuzz_targets/{t}.rs")).exists());
        }
    }
}
