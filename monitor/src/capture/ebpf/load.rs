//! Loading the TC program.
//!
//! Consumes the [`EbpfOptions`], the watched ports and the link kind of the
//! interfaces; produces an [`aya::Ebpf`] whose program is loaded (verified) but not attached,
//! with its configuration global set (budget, buffer kind, link kind, up to 16 watched ports, the
//! ring's wakeup threshold), its maps sized and `PORTS` filled (used beyond 16 ports). The object is the one
//! `build.rs` compiled from `monitor-ebpf`, embedded in the binary.

use aya::maps::{Array, MapData};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use trustwatch_ebpf::{BUFFER_PERF, BUFFER_RING, Config, MAX_LISTED_PORTS, names};

use super::{BufferKind, EbpfOptions};
use crate::config::Services;

/// The TC program, built by `build.rs` (aya-build) from `monitor-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trustwatch-ebpf"));

/// The program wakes the ring buffer's reader each time the bytes waiting reach a multiple of
/// this fraction of the ring, and the kernel a perf buffer's once more than this fraction of it
/// waits (the reader also polls every [`RING_POLL`](super::buffers::RING_POLL)).
pub const RING_WAKEUP_FRACTION: usize = 16;

/// Bytes waiting in a buffer of `buffer` bytes (the ring, or one CPU's perf buffer) that wake
/// its reader: [`RING_WAKEUP_FRACTION`] of it.
pub fn wakeup_bytes(buffer: usize) -> u32 {
    u32::try_from(buffer / RING_WAKEUP_FRACTION).unwrap_or(u32::MAX)
}

/// The system page size (buffer sizes are multiples of it).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// The largest power of two not above `n` (at least 1).
fn floor_pow2(n: usize) -> usize {
    if n <= 1 {
        1
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// Ring buffer bytes: `--ebpf-ring-size` rounded down to a power-of-two number of pages.
pub fn ring_bytes(requested: usize) -> usize {
    let page = page_size();
    floor_pow2((requested / page).max(1)) * page
}

/// Pages per CPU of the perf buffers: `--ebpf-ring-size` split over the CPUs, rounded down to a
/// power of two (perf's requirement).
pub fn perf_pages_per_cpu(requested: usize, cpus: usize) -> usize {
    floor_pow2((requested / page_size() / cpus.max(1)).max(1))
}

/// Loads the program with its configuration. `link` is a `LINK_*` value.
pub fn load(opts: &EbpfOptions, services: &Services, link: u32) -> Result<Ebpf, String> {
    let ring = match opts.buffer {
        // The ring map exists either way; unused, it takes one page.
        BufferKind::Perf => page_size(),
        BufferKind::Ring => ring_bytes(opts.buffer_size),
    };
    let watched: Vec<u16> = services.ports().map(|(p, _)| p).collect();
    let mut ports = [0u16; MAX_LISTED_PORTS];
    for (slot, p) in ports.iter_mut().zip(&watched) {
        *slot = *p;
    }
    let config = Config {
        budget: u32::try_from(opts.budget).unwrap_or(u32::MAX),
        buffer: match opts.buffer {
            BufferKind::Perf => BUFFER_PERF,
            BufferKind::Ring => BUFFER_RING,
        },
        link,
        any_port: u32::from(services.any_port),
        wakeup_bytes: wakeup_bytes(ring),
        copy_headers: u32::from(opts.copy_headers),
        nports: u32::try_from(watched.len()).unwrap_or(u32::MAX),
        ports,
    };
    let ring = u32::try_from(ring).map_err(|_| "--ebpf-ring-size too large".to_string())?;
    let max_conns = opts.max_connections;
    let mut ebpf = EbpfLoader::new()
        .override_global(names::CONFIG, &config, true)
        .map_max_entries(names::RING, ring)
        .map_max_entries(names::CONNS, max_conns)
        .load(OBJECT)
        .map_err(|e| format!("loading the eBPF object: {e}"))?;
    let program: &mut SchedClassifier = ebpf
        .program_mut(names::PROGRAM)
        .ok_or("the eBPF object has no TC program")?
        .try_into()
        .map_err(|e| format!("the eBPF program is not a TC classifier: {e}"))?;
    program.load().map_err(|e| verifier_error(&e))?;
    let mut ports: Array<&mut MapData, u8> = Array::try_from(
        ebpf.map_mut(names::PORTS)
            .ok_or("the eBPF object has no PORTS map")?,
    )
    .map_err(|e| e.to_string())?;
    for (port, _) in services.ports() {
        ports
            .set(u32::from(port), 1, 0)
            .map_err(|e| format!("setting watched port {port}: {e}"))?;
    }
    Ok(ebpf)
}

/// A load failure, with the verifier's last lines when it rejected the program.
fn verifier_error(e: &aya::programs::ProgramError) -> String {
    use aya::programs::ProgramError;
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            let mut msg = format!("the kernel refused the eBPF program: {io_error}");
            if !tail.is_empty() {
                msg.push_str(" (verifier: ");
                msg.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join(" / "));
                msg.push(')');
            }
            if !super::preflight::has_kernel_btf() {
                msg.push_str("; this kernel has no BTF (/sys/kernel/btf/vmlinux)");
            }
            msg
        }
        other => format!("loading the eBPF program: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_sizes_are_powers_of_two_pages() {
        let page = page_size();
        assert_eq!(ring_bytes(8 << 20), 8 << 20);
        assert_eq!(ring_bytes((8 << 20) + 5), 8 << 20);
        assert_eq!(ring_bytes(3 * page), 2 * page);
        assert_eq!(ring_bytes(1), page);
        assert_eq!(perf_pages_per_cpu(8 << 20, 2), (4 << 20) / page);
        assert_eq!(perf_pages_per_cpu(3 * page, 1), 2);
        assert_eq!(perf_pages_per_cpu(1, 64), 1);
    }
}
