//! `cargo xtask demo [--quick | --forever] [--base-port N] [--http-port N] [--edges N]`: installs
//! what is missing, builds `trustwatch` and the testkit's `demo` binary (release), and replaces
//! this process with the demo (so Ctrl-C reaches it directly and it stops its children in order).
//! The demo builds the Go peer itself (`go build`, cached in `target/go-peer/`).
//!
//! `cargo xtask bench` runs the offline benchmarks (`bench.rs`) and then the live ones;
//! `cargo xtask bench --live [--runs N] [--rate R] [--secs S] [--no-latency] [--no-cpu]
//! [--no-sources] [--bulk-mib N] [--storm N]` only the live ones, run by the same binary
//! (`demo bench`): detection latency in the incident scenario, the monitor's CPU at a steady
//! handshake rate, and eBPF against libpcap on the same traffic (a bulk transfer, a reconnect
//! storm, the TC program's run time); `--no-live` only the offline ones.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;

use crate::{cargo, run, target_dir, workspace};

fn release_dir() -> PathBuf {
    target_dir().join("release")
}

/// Setup, release build of the monitor and the demo; the paths of both.
fn build() -> Result<(PathBuf, PathBuf), String> {
    crate::setup::ensure()?;
    eprintln!("xtask: building trustwatch and the demo (release)");
    run(cargo().current_dir(workspace()).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "trustwatch",
        "--bin",
        "trustwatch",
        "-p",
        "trustwatch-testkit",
        "--bin",
        "demo",
    ]))?;
    let rel = release_dir();
    Ok((rel.join("trustwatch"), rel.join("demo")))
}

/// Runs `demo <args> --trustwatch <path>` in place of this process.
fn exec_demo(args: &[String]) -> Result<(), String> {
    let (tw, demo) = build()?;
    let mut cmd = Command::new(&demo);
    cmd.args(args).arg("--trustwatch").arg(&tw);
    // Only returns on failure.
    let e = cmd.exec();
    Err(format!("{} could not start: {e}", demo.display()))
}

/// The demo captures on `lo`: without root or CAP_NET_RAW it stops with the monitor's message.
pub fn demo(args: &[String]) -> Result<(), String> {
    exec_demo(args)
}

/// `cargo xtask bench`: the offline benchmarks (`bench.rs`), then the live ones. `--live [ARGS]`:
/// only the live ones, with ARGS for `demo bench`; `--no-live`: only the offline ones. `--quick`
/// also shortens the live part (one latency run, 10 s of load).
pub fn bench(args: &[String]) -> Result<(), String> {
    if let Some(i) = args.iter().position(|a| a == "--live") {
        let mut live: Vec<String> = args[..i].to_vec();
        live.extend_from_slice(&args[i + 1..]);
        return bench_live(&live);
    }
    let no_live = args.iter().any(|a| a == "--no-live");
    let offline: Vec<String> = args.iter().filter(|a| *a != "--no-live").cloned().collect();
    crate::bench::bench(&offline)?;
    if no_live {
        return Ok(());
    }
    let live: Vec<String> = if offline.iter().any(|a| a == "--quick") {
        vec!["--runs".into(), "1".into(), "--secs".into(), "10".into()]
    } else {
        Vec::new()
    };
    println!();
    bench_live(&live)
}

/// `cargo xtask soak [--minutes N] [--rate R] [--every S] [--warmup S]`: the soak benchmark
/// (`demo soak`), `trustwatch live` under a steady mix with RSS, CPU, descriptors and series
/// sampled; not a CI test.
pub fn soak(args: &[String]) -> Result<(), String> {
    let mut a = vec!["soak".to_string()];
    a.extend_from_slice(args);
    exec_demo(&a)
}

/// The live benchmarks (`demo bench ARGS`).
fn bench_live(args: &[String]) -> Result<(), String> {
    let (tw, demo) = build()?;
    run(Command::new(&demo)
        .arg("bench")
        .args(args)
        .arg("--trustwatch")
        .arg(&tw))
}
