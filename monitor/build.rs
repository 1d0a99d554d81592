//! Builds the eBPF TC program (`monitor-ebpf`) for `bpfel-unknown-none` with the nightly
//! toolchain and bpf-linker (both installed by `cargo xtask setup`), into `OUT_DIR`, where
//! `capture/ebpf/load.rs` embeds it.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let kernel_crate = manifest.join("../monitor-ebpf");
    // bpf-linker as `cargo xtask setup` installs it: target/bpf-linker/bin (before PATH).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target"));
    let linker_dir = target.join("bpf-linker").join("bin");
    println!("cargo:rerun-if-changed={}", linker_dir.display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let mut path = vec![linker_dir.clone()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let have_linker = path.iter().any(|d| d.join("bpf-linker").is_file());
    if !have_linker {
        fail("bpf-linker not found (target/bpf-linker/bin or PATH): run `cargo xtask setup`");
    }
    let path = std::env::join_paths(path).unwrap_or_default();
    // SAFETY: the build script is single-threaded; the nested cargo inherits these.
    unsafe {
        std::env::set_var("PATH", path);
        // The workspace's release profile unwinds (for the monitor); the kernel has no unwinder.
        std::env::set_var("CARGO_PROFILE_RELEASE_PANIC", "abort");
        std::env::set_var("CARGO_PROFILE_RELEASE_DEBUG", "2");
        std::env::set_var("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
        // aya-build turns every line of the nested cargo's stderr into a warning: only real
        // problems should show.
        std::env::set_var("CARGO_TERM_QUIET", "true");
    }
    let root = kernel_crate.to_string_lossy().into_owned();
    let package = aya_build::Package {
        name: "trustwatch-ebpf",
        root_dir: &root,
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::default()) {
        fail(&format!(
            "building the eBPF program failed: {e:#} (run `cargo xtask setup` to install the \
             nightly's rust-src and bpf-linker)"
        ));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    println!("cargo:warning={msg}");
    std::process::exit(1);
}
