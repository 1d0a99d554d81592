//! The floor of a TC program's run time on this machine: a two-instruction program (`return
//! TCX_NEXT`) attached to an interface's ingress with TCX while the benchmark's traffic flows, its
//! mean run time read from the kernel's BPF statistics. Whatever trustwatch's program costs beyond
//! it is its own work; the floor is the kernel's bookkeeping, the statistics' clock reads, and
//! the cache and TLB misses of running between other work.
//!
//! Consumes an interface name; produces a [`Floor`] (attached until dropped). Raw `bpf(2)` calls:
//! the testkit does not depend on aya.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use crate::Result;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zero-padded union bpf_attr of `attr.len()` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// A loaded, attached two-instruction program.
pub struct Floor {
    prog: OwnedFd,
    _link: OwnedFd,
}

impl Floor {
    /// Loads the program and attaches it to `iface`'s ingress (TCX).
    pub fn attach(iface: &str) -> Result<Floor> {
        // r0 = -1 (TCX_NEXT); exit
        let insns: [u64; 2] = [
            u64::from_le_bytes([0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
        ];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_SCHED_CLS);
        put_u32(&mut attr, 4, 2);
        put_u64(&mut attr, 8, insns.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        attr[48..48 + 8].copy_from_slice(b"tw_floor");
        put_u32(&mut attr, 68, BPF_TCX_INGRESS);
        let fd =
            bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| format!("loading the floor program: {e}"))?;
        // SAFETY: a new descriptor the kernel returned.
        let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let name = std::ffi::CString::new(iface)?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(format!("{iface}: no such interface").into());
        }
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
        put_u32(&mut attr, 4, ifindex);
        put_u32(&mut attr, 8, BPF_TCX_INGRESS);
        let fd = bpf(BPF_LINK_CREATE, &mut attr)
            .map_err(|e| format!("attaching the floor program: {e}"))?;
        // SAFETY: as above.
        let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Floor { prog, _link: link })
    }

    /// (run time ns, runs) so far (zero while BPF statistics are off).
    pub fn stats(&self) -> Result<(u64, u64)> {
        let mut info = [0u8; 256];
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, self.prog.as_raw_fd() as u32);
        put_u32(&mut attr, 4, info.len() as u32);
        put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|e| format!("program info: {e}"))?;
        let at = |o: usize| u64::from_ne_bytes(info[o..o + 8].try_into().unwrap_or([0; 8]));
        Ok((at(192), at(200)))
    }

    /// Mean run time per packet so far, ns.
    pub fn mean_ns(&self) -> Option<f64> {
        let (ns, runs) = self.stats().ok()?;
        (runs > 0).then(|| ns as f64 / runs as f64)
    }
}
