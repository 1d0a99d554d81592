//! The buffer between the TC program and user space: one ring buffer, or one perf buffer per
//! CPU.
//!
//! Consumes the loaded program's buffer map; produces each record's header and frame bytes
//! (borrowed from the mapped buffer for the duration of a callback; a perf sample that wraps
//! around its buffer's end comes in two pieces). [`Buffers::wait`] blocks in `poll(2)` on the
//! buffers' descriptors for at most a timeout, so the capture thread notices a stop promptly.

use std::ops::ControlFlow;
use std::os::fd::AsRawFd as _;

use aya::Ebpf;
use aya::maps::perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer};
use aya::maps::{MapData, RingBuf};
use trustwatch_ebpf::{RECORD_HEADER_LEN, RecordHeader, names};

use super::BufferKind;
use super::load::perf_pages_per_cpu;
use super::record::{self, BadRecord};

/// The user-space end of the program's buffer.
pub enum Buffers {
    Ring(RingBuf<MapData>),
    Perf(Vec<PerfEventArrayBuffer<MapData>>),
}

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
                let map = ebpf
                    .take_map(names::PERF)
                    .ok_or("the eBPF object has no perf event array")?;
                let mut array =
                    PerfEventArray::try_from(map).map_err(|e| format!("perf array: {e}"))?;
                let cpus = aya::util::online_cpus()
                    .map_err(|(what, e)| format!("online CPUs ({what}): {e}"))?;
                let pages = perf_pages_per_cpu(size, cpus.len());
                let mut bufs = Vec::with_capacity(cpus.len());
                for cpu in cpus {
                    bufs.push(
                        array
                            .open(cpu, Some(pages))
                            .map_err(|e| format!("perf buffer of CPU {cpu}: {e}"))?,
                    );
                }
                Ok(Buffers::Perf(bufs))
            }
        }
    }

    /// Waits until a buffer has data or `timeout_ms` passed.
    pub fn wait(&self, timeout_ms: i32) {
        let mut fds: Vec<libc::pollfd> = match self {
            Buffers::Ring(r) => vec![pollfd(r.as_raw_fd())],
            Buffers::Perf(bufs) => bufs.iter().map(|b| pollfd(b.as_raw_fd())).collect(),
        };
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    }

    /// Hands at most about `limit` records to `f` (header, frame pieces); returns how many
    /// there were. `f` returning `Break` stops early (the sink closed).
    pub fn drain(
        &mut self,
        limit: u64,
        f: &mut dyn FnMut(&RecordHeader, [&[u8]; 2]) -> ControlFlow<()>,
    ) -> (Drained, ControlFlow<()>) {
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
            Buffers::Perf(bufs) => {
                for buf in bufs.iter_mut() {
                    if !buf.readable() {
                        continue;
                    }
                    let flow = buf.try_fold((), |(), ev| match ev {
                        PerfEvent::Sample { head, tail } => match sample(head, tail) {
                            Ok((hdr, pieces)) => {
                                d.records += 1;
                                f(&hdr, pieces)
                            }
                            Err(BadRecord::Short) => {
                                d.bad += 1;
                                ControlFlow::Continue(())
                            }
                        },
                        // The program counts every failed output itself (ring_full).
                        PerfEvent::Lost { .. } => ControlFlow::Continue(()),
                    });
                    if flow.is_break() {
                        return (d, ControlFlow::Break(()));
                    }
                }
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

/// Header and frame pieces of a perf sample given as `head` and (when it wrapped) `tail`.
fn sample<'a>(head: &'a [u8], tail: &'a [u8]) -> Result<(RecordHeader, [&'a [u8]; 2]), BadRecord> {
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
