//! Per-CPU perf buffers, opened here rather than through aya, so that the kernel wakes the
//! reader by the byte, not by the record.
//!
//! aya 0.14 opens each CPU's `BPF_OUTPUT` perf event with `wakeup_events = 1`: every record
//! queues an interrupt to wake the reader, inside the program's run (measured in the reconnect
//! storm of `demo bench`: 6,149–6,817 ns per packet against 532–578 ns with the ring buffer).
//! These are opened with a watermark instead — the kernel wakes the reader once
//! [`RING_WAKEUP_FRACTION`](super::load::RING_WAKEUP_FRACTION) of a buffer waits — and the
//! reader looks every [`RING_POLL`](super::buffers::RING_POLL) for the rest, as it does for the
//! ring buffer.
//!
//! Consumes the program's perf event array map and a CPU number; produces that CPU's buffer,
//! mapped, in the map's slot for the CPU, whose samples [`PerfBuffer::drain`] hands over in one
//! or two pieces (the buffer wraps). The reading follows the kernel's protocol
//! (`perf_event_mmap_page`: load `data_head`, then a read barrier; a full barrier, then store
//! `data_tail`), as aya's own reader does.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{Ordering, fence};

use aya_obj::generated::{
    PERF_EVENT_IOC_ENABLE, PERF_FLAG_FD_CLOEXEC, bpf_attr, bpf_cmd, perf_event_attr,
    perf_event_header, perf_event_mmap_page, perf_event_sample_format, perf_event_type,
    perf_sw_ids, perf_type_id,
};

/// One CPU's perf buffer: a header page the kernel and the reader share, then `size` bytes of
/// records.
pub struct PerfBuffer {
    fd: OwnedFd,
    map: NonNull<u8>,
    page: usize,
    size: usize,
}

// SAFETY: the mapping belongs to this value alone; it is read through `&self` (the kernel's
// `data_head`) and advanced through `&mut self`.
unsafe impl Send for PerfBuffer {}

impl PerfBuffer {
    /// Opens CPU `cpu`'s `BPF_OUTPUT` event with `pages` pages of records (a power of two) that
    /// wakes its reader once `wakeup_bytes` wait, maps it, and puts it in `array`'s slot `cpu`.
    pub fn open(
        array: BorrowedFd<'_>,
        cpu: u32,
        pages: usize,
        wakeup_bytes: u32,
    ) -> io::Result<PerfBuffer> {
        if !pages.is_power_of_two() {
            return Err(io::Error::other(format!(
                "{pages} pages: perf buffers take a power of two"
            )));
        }
        // SAFETY: perf_event_attr is plain integers and unions of them; zero is its default.
        let mut attr: perf_event_attr = unsafe { zeroed() };
        attr.type_ = perf_type_id::PERF_TYPE_SOFTWARE as u32;
        attr.size = size_of::<perf_event_attr>() as u32;
        attr.config = perf_sw_ids::PERF_COUNT_SW_BPF_OUTPUT as u64;
        attr.sample_type = perf_event_sample_format::PERF_SAMPLE_RAW as u64;
        attr.__bindgen_anon_1.sample_period = 1;
        attr.set_watermark(1);
        attr.__bindgen_anon_2.wakeup_watermark = wakeup_bytes.max(1);
        let (any_process, no_group) = (-1, -1);
        // SAFETY: `attr` is a valid perf_event_attr of the size it states.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &raw const attr,
                any_process,
                cpu as libc::c_int,
                no_group,
                PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let page = super::load::page_size();
        let size = pages * page;
        // SAFETY: maps the event's header page and data pages, as perf_event_open(2) describes.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                page + size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let buffer = PerfBuffer {
            fd,
            map: NonNull::new(map.cast()).ok_or_else(io::Error::last_os_error)?,
            page,
            size,
        };
        // SAFETY: an ioctl without an argument on our perf descriptor.
        if unsafe { libc::ioctl(buffer.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        put_in_array(array, cpu, buffer.fd.as_fd())?;
        Ok(buffer)
    }

    fn header(&self) -> *mut perf_event_mmap_page {
        self.map.as_ptr().cast()
    }

    /// The kernel's write position, read before any record it covers.
    fn data_head(&self) -> u64 {
        // SAFETY: the header page is mapped for the life of `self`; the kernel writes the field
        // concurrently, so it is read as a volatile.
        let head = unsafe { ptr::read_volatile(&raw const (*self.header()).data_head) };
        fence(Ordering::Acquire);
        head
    }

    fn data_tail(&self) -> u64 {
        // SAFETY: as `data_head`; only the reader writes this field.
        unsafe { ptr::read_volatile(&raw const (*self.header()).data_tail) }
    }

    /// Whether records wait.
    pub fn readable(&self) -> bool {
        self.data_head() != self.data_tail()
    }

    /// Hands every waiting sample to `f` in one or two pieces (the second when it wraps, else
    /// empty; both with the kernel's padding to 8 bytes after the sample), then gives their
    /// space back to the kernel. Lost-record notices are skipped (the program counts its failed
    /// writes). A header the kernel cannot have written ends the drain with everything waiting
    /// given back; it returns how many such headers it met (0 or 1).
    pub fn drain(&mut self, mut f: impl FnMut(&[u8], &[u8])) -> u64 {
        let data = self.data_head();
        let mut tail = self.data_tail();
        let base = self.map.as_ptr().wrapping_add(self.page);
        let size = self.size;
        let mut bad = 0;
        let header_len = size_of::<perf_event_header>();
        while tail != data {
            let at = (tail % size as u64) as usize;
            // SAFETY: records start 8-byte aligned within the page-aligned data area, so the
            // 8-byte header lies before the wrap; the kernel wrote it before `data_head`.
            let h: perf_event_header = unsafe { ptr::read(base.add(at).cast()) };
            let len = usize::from(h.size);
            if len < header_len || len > size || len as u64 > data.wrapping_sub(tail) {
                bad = 1;
                tail = data;
                break;
            }
            tail = tail.wrapping_add(len as u64);
            if h.type_ != perf_event_type::PERF_RECORD_SAMPLE as u32 {
                continue;
            }
            // A sample: the header, a u32 size, the bytes (in `len`, with the padding).
            let body = (at + header_len) % size;
            // SAFETY: the size follows the header at an 8-aligned offset, before the wrap.
            let n = unsafe { ptr::read(base.add(body).cast::<u32>()) } as usize;
            let start = (body + size_of::<u32>()) % size;
            if n + header_len + size_of::<u32>() > len {
                bad = 1;
                tail = data;
                break;
            }
            let first = n.min(size - start);
            // SAFETY: both pieces lie in the data area, inside this record (checked against
            // `len` above), which the kernel does not write until `data_tail` passes it.
            let (a, b) = unsafe {
                (
                    std::slice::from_raw_parts(base.add(start), first),
                    std::slice::from_raw_parts(base, n - first),
                )
            };
            f(a, b);
        }
        fence(Ordering::SeqCst);
        // SAFETY: the header page is mapped; the reader is the only writer of `data_tail`.
        unsafe { ptr::write_volatile(&raw mut (*self.header()).data_tail, tail) };
        bad
    }
}

impl AsRawFd for PerfBuffer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for PerfBuffer {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `open` mapped; nothing borrows it past `self`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.page + self.size) };
    }
}

/// `array[cpu] = event` (`BPF_MAP_UPDATE_ELEM`): the program's output on CPU `cpu` goes to
/// that event.
fn put_in_array(array: BorrowedFd<'_>, cpu: u32, event: BorrowedFd<'_>) -> io::Result<()> {
    let value: u32 = event.as_raw_fd() as u32;
    // SAFETY: bpf_attr is plain integers and unions of them; zero is its default.
    let mut attr: bpf_attr = unsafe { zeroed() };
    // SAFETY: writing the map-element member of the union.
    unsafe {
        let u = &mut attr.__bindgen_anon_2;
        u.map_fd = array.as_raw_fd() as u32;
        u.key = ptr::from_ref(&cpu) as u64;
        u.__bindgen_anon_1.value = ptr::from_ref(&value) as u64;
        u.flags = 0;
    }
    // SAFETY: `attr` is valid for the call and points at `cpu` and `value`, which outlive it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_MAP_UPDATE_ELEM as libc::c_int,
            &raw mut attr,
            size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
