//! Project tasks: `cargo xtask <task>`.
//!
//! - `setup`: installs what the build and tests need on a fresh Debian 12 machine (apt packages,
//!   Go for the test peers); idempotent and quiet when everything is present.
//! - `test`: setup, then `cargo fmt --check`, clippy with `-D warnings`, and every test.
//! - `demo`: setup, build, and run the incident demo.
//! - `mutants`: mutation testing of the decision code with cargo-mutants (see `mutants.rs`):
//!   every decision file, `--file F` for one, `--in-diff [BASE]` for the lines a branch changed.
//! - `bench`: the throughput/memory benchmarks (figures go in the README), then the live ones
//!   (detection latency, CPU at 1,000 handshakes/s); `--live`: only those, `--no-live`: without.

mod bench;
mod demo;
mod mutants;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn usage() -> ExitCode {
    eprintln!("usage: cargo xtask <setup|test|demo|bench|mutants> [args]");
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

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
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
    run(cargo().args(["test", "--workspace"]).args(extra))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        return usage();
    };
    let result = match task.as_str() {
        "setup" => setup::ensure(),
        "test" => test(rest),
        "demo" => demo::demo(rest),
        "bench" => demo::bench(rest),
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
