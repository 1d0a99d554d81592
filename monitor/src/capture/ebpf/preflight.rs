//! Can the eBPF source run here? Checked before anything is loaded, so `--source auto` can fall
//! back to libpcap with the reason and `--source ebpf` can fail with it.
//!
//! Consumes the process's effective capabilities (`capget(2)`), the kernel release
//! (`uname(2)`) and `/sys/kernel/btf/vmlinux`; produces `Ok` or one sentence naming what is
//! missing.

use std::path::Path;

/// The oldest kernel the source supports: ring buffers and CAP_BPF appeared in 5.8.
pub const MIN_KERNEL: (u32, u32) = (5, 8);
/// TCX (multi-program TC links, attached first in the chain) appeared in 6.6; older kernels use
/// a clsact qdisc.
pub const TCX_KERNEL: (u32, u32) = (6, 6);

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The process's effective capability set (bit N = capability N); `None` when unreadable.
fn effective_caps() -> Option<u64> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a v3 header and room for the two 32-bit words v3 writes.
    let r = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    (r == 0).then(|| u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

/// The capabilities the source lacks, named (empty when it has them all). CAP_SYS_ADMIN stands
/// in for CAP_BPF and CAP_PERFMON, as in the kernel.
pub fn missing_capabilities(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !admin {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !admin {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// `major.minor` of a kernel release string (`6.18.44-fc-v1045` → (6, 18)).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain bytes; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable utsname.
    if unsafe { libc::uname(&raw mut u) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8(bytes).ok()
}

/// The running kernel's (major, minor), if it can be read.
pub fn kernel_version() -> Option<(u32, u32)> {
    kernel_release().as_deref().and_then(parse_release)
}

/// Whether the kernel describes its own types (BTF). The program needs no CO-RE relocations,
/// so this only qualifies a load error.
pub fn has_kernel_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// Ok when the source can be tried; else why not, as one sentence.
pub fn check() -> Result<(), String> {
    if let Some(caps) = effective_caps() {
        let missing = missing_capabilities(caps);
        if !missing.is_empty() {
            return Err(format!("missing {}", missing.join(", ")));
        }
    }
    match (kernel_release(), kernel_version()) {
        (Some(release), Some(v)) if v < MIN_KERNEL => Err(format!(
            "kernel {release} too old (the eBPF source needs {}.{} or later)",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        let all = (1 << CAP_BPF) | (1 << CAP_NET_ADMIN) | (1 << CAP_PERFMON);
        assert!(missing_capabilities(all).is_empty());
        assert_eq!(
            missing_capabilities(1 << CAP_NET_ADMIN),
            ["CAP_BPF", "CAP_PERFMON"]
        );
        assert_eq!(
            missing_capabilities((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)),
            Vec::<&str>::new()
        );
        assert_eq!(
            missing_capabilities(0),
            ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]
        );
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("6.6"), Some((6, 6)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
        assert!(parse_release("6.6.1").unwrap() >= TCX_KERNEL);
    }
}
