//! Attaching the loaded program to interfaces, and what kind of link layer each one has.
//!
//! Consumes a loaded [`aya::Ebpf`] and interface names; produces attachments owned by the
//! program (aya detaches them when the `Ebpf` is dropped: on exit, on a stop, and when a panic
//! unwinds the capture thread). Kernel ≥ 6.6: TCX links placed first in the interface's chain,
//! so no other program can end the chain before ours sees the packet (a TCX link is also
//! released by the kernel if the process dies without unwinding). Older kernels, or
//! `--ebpf-attach clsact`: a direct-action filter on a clsact qdisc, which is added when missing
//! and never deleted (other programs — a CNI's, a second trustwatch's — may use it); only our
//! filter is removed. `lo` is attached on ingress only: every loopback packet passes both hooks.

use aya::Ebpf;
use aya::programs::tc::{NlOptions, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use trustwatch_ebpf::{LINK_ETHERNET, LINK_RAW_IP, names};

use super::AttachMode;
use super::preflight::{TCX_KERNEL, kernel_version};

/// How the program was attached to one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Tcx,
    Clsact,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Tcx => "TCX",
            Hook::Clsact => "clsact",
        }
    }
}

/// The ARPHRD type of `iface` (`SIOCGIFHWADDR` on a socket of the calling thread's network
/// namespace; sysfs would show the namespace that mounted it).
fn arphrd(iface: &str) -> Result<u16, String> {
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(format!("{iface}: not an interface name"));
    }
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name and writes ifr_hwaddr of a valid ifreq.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &raw mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(format!("{iface}: {err}"));
    }
    // SAFETY: the kernel filled the hwaddr member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

const ARPHRD_LOOPBACK: u16 = 772;

/// The `LINK_*` kind of an interface from its ARPHRD type, or why it cannot be captured.
pub fn link_kind(iface: &str) -> Result<u32, String> {
    match arphrd(iface)? {
        // Ethernet, and loopback (a zeroed Ethernet header).
        1 | ARPHRD_LOOPBACK => Ok(LINK_ETHERNET),
        // No link header: tun/WireGuard (NONE), IPIP, IP6IP6, SIT, GRE.
        65534 | 768 | 769 | 776 | 778 | 823 => Ok(LINK_RAW_IP),
        other => Err(format!(
            "{iface}: link type {other} is not supported by the eBPF source (Ethernet, loopback \
             and raw-IP tunnels are)"
        )),
    }
}

/// Whether `iface` is a loopback device.
pub fn is_loopback(iface: &str) -> bool {
    arphrd(iface).is_ok_and(|t| t == ARPHRD_LOOPBACK)
}

/// Interface names of this network namespace (`if_nameindex`), with their index.
pub fn interfaces() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// The index of `iface`, if it exists.
pub fn ifindex(iface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(iface).ok()?;
    // SAFETY: a valid NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (i != 0).then_some(i)
}

fn tcx_available() -> bool {
    kernel_version().is_some_and(|v| v >= TCX_KERNEL)
}

/// Attaches the program to `iface` (ingress and egress; `lo`: ingress only).
pub fn attach(ebpf: &mut Ebpf, iface: &str, mode: AttachMode) -> Result<Hook, String> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(names::PROGRAM)
        .ok_or("the eBPF object has no TC program")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    let directions: &[TcAttachType] = if is_loopback(iface) {
        &[TcAttachType::Ingress]
    } else {
        &[TcAttachType::Ingress, TcAttachType::Egress]
    };
    let use_tcx = match mode {
        AttachMode::Tcx => true,
        AttachMode::Clsact => false,
        AttachMode::Auto => tcx_available(),
    };
    if use_tcx {
        let mut tcx = Ok(());
        let mut ids = Vec::new();
        for &dir in directions {
            match program.attach_with_options(
                iface,
                dir,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            ) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    tcx = Err(format!("attaching to {iface} {} (TCX): {e}", dir_name(dir)));
                    break;
                }
            }
        }
        match tcx {
            Ok(()) => return Ok(Hook::Tcx),
            // A half attachment is undone before trying clsact (or failing).
            Err(e) => {
                for id in ids {
                    let _ = program.detach(id);
                }
                if mode == AttachMode::Tcx {
                    return Err(e);
                }
            }
        }
    }
    add_clsact(iface)?;
    let mut ids = Vec::new();
    for &dir in directions {
        match program.attach_with_options(
            iface,
            dir,
            TcAttachOptions::Netlink(NlOptions::default()),
        ) {
            Ok(id) => ids.push(id),
            Err(e) => {
                for id in ids {
                    let _ = program.detach(id);
                }
                return Err(format!(
                    "attaching to {iface} {} (clsact): {e}",
                    dir_name(dir)
                ));
            }
        }
    }
    Ok(Hook::Clsact)
}

/// Adds a clsact qdisc unless the interface has one.
fn add_clsact(iface: &str) -> Result<(), String> {
    match aya::programs::tc::qdisc_add_clsact(iface) {
        Ok(()) => Ok(()),
        Err(e) => {
            // EEXIST: someone (a CNI, another trustwatch, `tc`) added it already.
            let text = format!("{e:?} {e}");
            if text.contains("File exists") || text.contains("os error 17") {
                Ok(())
            } else {
                Err(format!("adding a clsact qdisc to {iface}: {e}"))
            }
        }
    }
}

fn dir_name(dir: TcAttachType) -> &'static str {
    match dir {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom",
    }
}

/// Ids of the TCX programs on `iface`'s hook, in the order they run (for tests and diagnosis).
pub fn tcx_programs(iface: &str, egress: bool) -> Result<Vec<u32>, String> {
    let dir = if egress {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    };
    SchedClassifier::query_tcx(iface, dir)
        .map(|(_, progs)| progs.iter().map(aya::programs::ProgramInfo::id).collect())
        .map_err(|e| format!("querying TCX programs on {iface}: {e}"))
}
