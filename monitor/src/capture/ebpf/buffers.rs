//! The buffer between the TC program and user space: one ring buffer, or one perf buffer per
//! CPU.
//!
//! The reader is woken only when 1/16 of a buffer is waiting — by the program for the ring
//! buffer, by the kernel's watermark for the perf buffers ([`perf`](super::perf)) — so it also
//! looks every [`RING_POLL`].
//!
//! Consumes the loaded program's buffer map; produces each record's header and frame bytes in
//! the order the packets passed the program. The ring buffer is one queue for all CPUs, in
//! reservation order (as libpcap's socket ring): records are handed over as they are, borrowed
//! from the mapping. Perf buffers are per CPU: the two directions of a connection, handled on
//! different CPUs, would come out grouped by CPU — and the TLS 1.3 inference depends on which
//! side spoke first — so perf records are copied out, held for [`PERF_HOLD_NS`] and handed over
//! sorted by their kernel timestamps (at most [`PERF_MAX_HELD`] records and
//! [`PERF_MAX_HELD_BYTES`] held; beyond, all are handed on).
//! [`Buffers::wait`] blocks in `poll(2)` on the buffers' descriptors for at most a timeout, so the
//! capture thread notices a stop promptly.

use std::ops::ControlFlow;
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::Ebpf;
use aya::maps::{Map, MapData, RingBuf};
use trustwatch_ebpf::{RECORD_HEADER_LEN, RecordHeader, names};

use super::BufferKind;
use super::load::{page_size, perf_pages_per_cpu, wakeup_bytes};
use super::perf::PerfBuffer;
use super::record::{self, BadRecord};

/// How often a buffer is looked at when nothing woke the reader (the program wakes it for the
/// ring, the kernel for a perf buffer, only once 1/16 of the buffer is waiting, to save a wakeup
/// per record): the most a record waits in the kernel.
pub const RING_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// How long perf records wait to be merged with the other CPUs' records, nanoseconds.
pub const PERF_HOLD_NS: u64 = 2_000_000;
/// Most perf records held for merging, and most bytes; beyond either, all are handed on.
pub const PERF_MAX_HELD: usize = 65_536;
pub const PERF_MAX_HELD_BYTES: usize = 32 << 20;

/// A perf record copied out of its buffer, waiting for the merge.
pub struct Held {
    hdr: RecordHeader,
    frame: Vec<u8>,
}

/// The user-space end of the program's buffer.
pub enum Buffers {
    Ring(RingBuf<MapData>),
    Perf {
        /// The program's perf event array, holding `bufs`.
        _array: MapData,
        bufs: Vec<PerfBuffer>,
        held: Vec<Held>,
        held_bytes: usize,
    },
}

/// Called with each record's header and frame pieces; `Break` stops the drain.
pub type OnRecord<'a> = dyn FnMut(&RecordHeader, [&[u8]; 2]) -> ControlFlow<()> + 'a;

/// What one drain saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drained {
    pub records: u64,
    pub bad: u64,
}

impl Buffers {
    /// Takes the buffer map out of `ebpf` and maps it (`size`: `--ebpf-ring-size`, split over
    /// the CPUs for perf buffers).
    pub fn open(ebpf: &mut Ebpf, kind: BufferKind, size: usize) -> Result<Buffers, String> {
        match kind {
            BufferKind::Ring => {
                let map = ebpf
                    .take_map(names::RING)
                    .ok_or("the eBPF object has no ring buffer map")?;
                Ok(Buffers::Ring(
                    RingBuf::try_from(map).map_err(|e| format!("ring buffer: {e}"))?,
                ))
            }
            BufferKind::Perf => {
                let Some(Map::PerfEventArray(array)) = ebpf.take_map(names::PERF) else {
                    return Err("the eBPF object has no perf event array".into());
                };
                let cpus = aya::util::online_cpus()
                    .map_err(|(what, e)| format!("online CPUs ({what}): {e}"))?;
                let pages = perf_pages_per_cpu(size, cpus.len());
                let wakeup = wakeup_bytes(pages * page_size());
                let mut bufs = Vec::with_capacity(cpus.len());
                for cpu in cpus {
                    bufs.push(
                        PerfBuffer::open(array.fd().as_fd(), cpu, pages, wakeup)
                            .map_err(|e| format!("perf buffer of CPU {cpu}: {e}"))?,
                    );
                }
                Ok(Buffers::Perf {
                    _array: array,
                    bufs,
                    held: Vec::new(),
                    held_bytes: 0,
                })
            }
        }
    }

    /// Waits until a buffer has data or `timeout_ms` passed (held perf records shorten it).
    pub fn wait(&self, timeout_ms: i32) {
        let ring_ms = i32::try_from(RING_POLL.as_millis()).unwrap_or(10);
        let (mut fds, timeout_ms): (Vec<libc::pollfd>, i32) = match self {
            Buffers::Ring(r) => (vec![pollfd(r.as_raw_fd())], timeout_ms.min(ring_ms)),
            Buffers::Perf { bufs, held, .. } => (
                bufs.iter().map(|b| pollfd(b.as_raw_fd())).collect(),
                if held.is_empty() {
                    timeout_ms.min(ring_ms)
                } else {
                    timeout_ms.min(1 + (PERF_HOLD_NS / 1_000_000) as i32)
                },
            ),
        };
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    }

    /// Hands at most about `limit` records to `f` (header, frame pieces); returns how many
    /// there were. `f` returning `Break` stops early (the sink closed).
    pub fn drain(&mut self, limit: u64, f: &mut OnRecord<'_>) -> (Drained, ControlFlow<()>) {
        let mut d = Drained::default();
        match self {
            Buffers::Ring(ring) => {
                while d.records < limit {
                    let Some(item) = ring.next() else { break };
                    let rec: &[u8] = &item;
                    match record::header(rec).and_then(|h| record::frame(rec, &h).map(|f| (h, f))) {
                        Ok((hdr, frame)) => {
                            d.records += 1;
                            if f(&hdr, [frame, &[]]).is_break() {
                                return (d, ControlFlow::Break(()));
                            }
                        }
                        Err(BadRecord::Short) => d.bad += 1,
                    }
                }
            }
            Buffers::Perf {
                bufs,
                held,
                held_bytes,
                ..
            } => {
                // Taken before any buffer is read: a record released below was written before
                // the drain began, and so was anything it answered (its causal predecessors were
                // in their buffers before the packet reached the stack), so the sort puts them
                // first even if the reader is preempted while draining.
                let cutoff = super::clock::Clock::monotonic_now_ns().saturating_sub(PERF_HOLD_NS);
                for buf in bufs.iter_mut() {
                    if !buf.readable() {
                        continue;
                    }
                    let mut short = 0;
                    let broken = buf.drain(|head, tail| match sample(head, tail) {
                        Ok((hdr, [a, b])) => {
                            let mut frame = Vec::with_capacity(a.len() + b.len());
                            frame.extend_from_slice(a);
                            frame.extend_from_slice(b);
                            *held_bytes += frame.len();
                            held.push(Held { hdr, frame });
                        }
                        Err(BadRecord::Short) => short += 1,
                    });
                    d.bad += short + broken;
                }
                if held.is_empty() {
                    return (d, ControlFlow::Continue(()));
                }
                held.sort_by_key(|h| h.hdr.ts_ns);
                let cutoff = if held.len() > PERF_MAX_HELD || *held_bytes > PERF_MAX_HELD_BYTES {
                    u64::MAX
                } else {
                    cutoff
                };
                let ready = held
                    .iter()
                    .take_while(|h| h.hdr.ts_ns <= cutoff)
                    .count()
                    .min(usize::try_from(limit).unwrap_or(usize::MAX));
                let mut flow = ControlFlow::Continue(());
                let mut handed = 0;
                for h in &held[..ready] {
                    handed += 1;
                    d.records += 1;
                    if f(&h.hdr, [&h.frame, &[]]).is_break() {
                        flow = ControlFlow::Break(());
                        break;
                    }
                }
                *held_bytes -= held[..handed].iter().map(|h| h.frame.len()).sum::<usize>();
                held.drain(..handed);
                return (d, flow);
            }
        }
        (d, ControlFlow::Continue(()))
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Header and frame pieces of a perf sample given as `head` and (when it wrapped) `tail`: the
/// same as [`record::header`] and [`record::frame`] give for `head ++ tail`.
pub fn sample<'a>(
    head: &'a [u8],
    tail: &'a [u8],
) -> Result<(RecordHeader, [&'a [u8]; 2]), BadRecord> {
    let hdr = if head.len() >= RECORD_HEADER_LEN {
        record::header(head)?
    } else {
        let mut buf = [0u8; RECORD_HEADER_LEN];
        let from_tail = RECORD_HEADER_LEN - head.len();
        buf[..head.len()].copy_from_slice(head);
        buf[head.len()..].copy_from_slice(tail.get(..from_tail).ok_or(BadRecord::Short)?);
        record::header(&buf)?
    };
    let caplen = hdr.caplen as usize;
    // The frame starts RECORD_HEADER_LEN bytes into head ++ tail.
    let (first, rest) = if head.len() >= RECORD_HEADER_LEN {
        (&head[RECORD_HEADER_LEN..], tail)
    } else {
        (&[][..], &tail[RECORD_HEADER_LEN - head.len()..])
    };
    let a = first.len().min(caplen);
    let b = caplen - a;
    let second = rest.get(..b).ok_or(BadRecord::Short)?;
    Ok((hdr, [&first[..a], second]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(hdr: &RecordHeader) -> Vec<u8> {
        // SAFETY: RecordHeader is plain integers.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(hdr).cast::<u8>(), RECORD_HEADER_LEN)
        }
        .to_vec()
    }

    #[test]
    fn perf_samples_split_anywhere_give_the_same_record() {
        let hdr = RecordHeader {
            ts_ns: 7,
            caplen: 50,
            ..Default::default()
        };
        let mut rec = bytes_of(&hdr);
        let frame: Vec<u8> = (100..150).collect();
        rec.extend_from_slice(&frame);
        rec.extend_from_slice(&[0; 6]); // padding to 8 bytes
        for cut in 0..=rec.len() {
            let (h, pieces) = sample(&rec[..cut], &rec[cut..]).unwrap();
            assert_eq!(h, hdr, "cut {cut}");
            assert_eq!([pieces[0], pieces[1]].concat(), frame, "cut {cut}");
        }
        assert!(sample(&rec[..40], &[]).is_err());
        assert!(sample(&rec[..10], &rec[10..20]).is_err());
    }
}
