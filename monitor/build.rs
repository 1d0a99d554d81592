//! Builds the eBPF TC program (`monitor-ebpf`) for `bpfel-unknown-none` with the nightly
//! toolchain and bpf-linker (both installed by `cargo xtask setup`) and copies the object into
//! `OUT_DIR`, where `capture/ebpf/load.rs` embeds it.
//!
//! The nested build is what aya-build does (`rustup run nightly cargo build -Z build-std=core
//! --target bpfel-unknown-none --release`, with the `bpf_target_arch` cfg, debug info and BTF),
//! but into one shared folder, `target/ebpf/`, instead of one per `OUT_DIR`: `cargo build`,
//! `clippy`, `test` and `--release` then reuse one build of `core` and of the program (each
//! `OUT_DIR` of its own costs about a minute on two cores).

use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGE: &str = "trustwatch-ebpf";
const TARGET: &str = "bpfel-unknown-none";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let kernel_crate = manifest.join("../monitor-ebpf");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target"));
    let target = if target.is_absolute() {
        target
    } else {
        manifest.join("..").join(target)
    };
    for path in [
        kernel_crate.join("src"),
        kernel_crate.join("Cargo.toml"),
        manifest.join("../Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    // bpf-linker as `cargo xtask setup` installs it: target/bpf-linker/bin, before PATH.
    let linker_dir = target.join("bpf-linker").join("bin");
    println!("cargo:rerun-if-changed={}", linker_dir.display());
    let mut path = vec![linker_dir];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    if !path.iter().any(|d| d.join("bpf-linker").is_file()) {
        fail("bpf-linker not found (target/bpf-linker/bin or PATH): run `cargo xtask setup`");
    }
    let path = std::env::join_paths(path).unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let build_dir = target.join("ebpf");

    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--quiet", "--release"])
        .args(["--package", PACKAGE, "--bin", PACKAGE, "--target", TARGET])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&build_dir)
        .current_dir(&kernel_crate)
        .env("PATH", path)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                format!("--cfg=bpf_target_arch=\"{arch}\""),
                "-Cdebuginfo=2".into(),
                "-Clink-arg=--btf".into(),
                // Header fields are read with one load each, not byte by byte (x86-64 and
                // arm64 kernels accept misaligned packet and map-value loads).
                "-Ctarget-feature=+allows-misaligned-mem-access".into(),
            ]
            .join("\x1f"),
        )
        // The workspace's release profile unwinds (for the monitor); the kernel has no unwinder.
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "2");
    // The outer cargo's settings must not leak into the nested build (its own toolchain, flags).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_PKG_")
            || [
                "RUSTC",
                "RUSTC_WRAPPER",
                "RUSTC_WORKSPACE_WRAPPER",
                "RUSTUP_TOOLCHAIN",
                "RUSTFLAGS",
                "CARGO_TARGET_DIR",
                "CARGO_BUILD_TARGET",
                "CARGO_MAKEFLAGS",
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
                "TARGET",
                "HOST",
                "PROFILE",
                "OPT_LEVEL",
                "DEBUG",
                "NUM_JOBS",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let out = cmd.output().unwrap_or_else(|e| {
        fail(&format!(
            "cannot run rustup for the eBPF build: {e} (run `cargo xtask setup`)"
        ))
    });
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines() {
            println!("cargo:warning={line}");
        }
        fail(&format!(
            "building the eBPF program failed ({}); run `cargo xtask setup` to install the \
             nightly's rust-src and bpf-linker",
            out.status
        ));
    }
    let object = build_dir.join(TARGET).join("release").join(PACKAGE);
    copy(&object, &out_dir.join(PACKAGE));
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        fail(&format!("{} → {}: {e}", from.display(), to.display()));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    println!("cargo:warning={msg}");
    std::process::exit(1);
}
