//! Project tasks: `cargo xtask <task>`.
//!
//! - `setup`: installs what the build and tests need on a fresh Debian 12 machine (apt packages,
//!   Go for the test peers, the deployment tests' Python tools, the nightly's `rust-src` and a
//!   bpf-linker for the eBPF program); idempotent and quiet when everything is present.
//!   `setup --build`: only what the release build needs (libpcap headers and the eBPF toolchain).
//! - `dist`: the release binary as the image ships it, in `target/dist/trustwatch` (the image's
//!   builder stage runs exactly this; `--print` shows the cargo command).
//! - `test`: setup, then `cargo fmt --check`, clippy and rustdoc with `-D warnings`, and every
//!   test.
//! - `demo`: setup, build, and run the incident demo.
//! - `mutants`: mutation testing of the decision code with cargo-mutants (see `mutants.rs`):
//!   every decision file, `--file F` for one, `--in-diff [BASE]` for the lines a branch changed.
//! - `bench`: the throughput/memory benchmarks (figures go in the README), then the live ones
//!   (detection latency, CPU at 1,000 handshakes/s, eBPF vs libpcap); `--live`: only those,
//!   `--no-live`: without.
//! - `fuzz [--secs N] [--jobs J] [TARGET...]`: the cargo-fuzz targets, each for a bounded time
//!   (seed corpora built first; see `fuzz.rs`). `test` runs each for 20 s after the tests.
//! - `soak [--minutes N] [--rate R]`: `trustwatch live` under a steady mix for N minutes, sampling
//!   RSS, CPU, descriptors and series (a benchmark; figures in the README).

mod bench;
mod demo;
mod fuzz;
mod mutants;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <setup [--build]|dist [--print]|test|demo|bench|fuzz [--secs N] [TARGET...]|soak [--minutes N]|mutants> [args]"
    );
    ExitCode::from(2)
}

/// Runs a command inheriting stdio; Err names it when it fails.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{shown} failed ({s})")),
        Err(e) => Err(format!("{shown} could not start: {e}")),
    }
}

/// The workspace root (xtask's parent folder).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Cargo's target folder.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The release build the image ships (deploy/image/Dockerfile runs `cargo xtask dist`).
const DIST_BUILD: [&str; 8] = [
    "build",
    "--release",
    "--locked",
    "-p",
    "trustwatch",
    "--bin",
    "trustwatch",
    "--quiet",
];

/// `cargo xtask dist`: builds [`DIST_BUILD`] and copies the binary, without debug info, to
/// `target/dist/trustwatch`.
fn dist(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--print") {
        println!("cargo {}", DIST_BUILD.join(" "));
        return Ok(());
    }
    if let Some(a) = args.first() {
        return Err(format!("unknown argument {a}"));
    }
    run(cargo().current_dir(workspace()).args(DIST_BUILD))?;
    let built = target_dir().join("release/trustwatch");
    let out_dir = target_dir().join("dist");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = out_dir.join("trustwatch");
    std::fs::copy(&built, &out).map_err(|e| format!("{}: {e}", built.display()))?;
    // Line tables are for debugging here; the image needs none (a panic prints one line).
    if Command::new("strip")
        .arg("--strip-debug")
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("xtask dist: {}", out.display());
    } else {
        eprintln!("xtask dist: {} (not stripped: no `strip`)", out.display());
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<(), String> {
    setup::ensure()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The docs build without a warning: a broken or ambiguous link fails here.
    run(cargo().env("RUSTDOCFLAGS", "-D warnings").args([
        "doc",
        "--no-deps",
        "-p",
        "trustwatch",
        "-p",
        "xtask",
        "-p",
        "trustwatch-testkit",
    ]))?;
    // Every test binary runs even after a failure, so one run reports every failing test.
    run(cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra))?;
    // A short fuzzing run per target: a regression of the parsers on hostile bytes fails here.
    let targets: Vec<String> = fuzz::TARGETS.iter().map(|t| t.to_string()).collect();
    fuzz::run_all(&targets, fuzz::TEST_SECS, 1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        return usage();
    };
    let result = match task.as_str() {
        "setup" if rest.iter().any(|a| a == "--build") => setup::ensure_build(),
        "setup" => setup::ensure(),
        "dist" => dist(rest),
        "test" => test(rest),
        "demo" => demo::demo(rest),
        "bench" => demo::bench(rest),
        "fuzz" => fuzz::fuzz(rest),
        "soak" => demo::soak(rest),
        "mutants" => mutants::mutants(rest),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}
