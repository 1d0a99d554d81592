//! pcap and pcapng files, read through libpcap.
//!
//! Consumes a path; produces [`Packet`]s in file order. Problems with the file itself (missing,
//! a directory, empty, not a capture, a link type we cannot decode) are [`Error`]s with a one-line
//! reason. A file cut short inside its last record (a capture copied while still being written, a
//! partial download) is not an error: the read ends there and [`FileSource::truncated`] says so,
//! for the caller to report.
//!
//! libpcap reuses one buffer for every record, so each packet is copied out; the copies are carved
//! from a [`PacketArena`] rather than allocated one by one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use pcap::{Capture, Linktype, Offline, Precision};

use super::source::{
    Backend, PacketSink, RunEnd, SinkFull, Source, SourceCounters, StopSignal, source_name,
};
use super::{LinkType, Packet};
use crate::base::Timestamp;
use crate::error::{Error, Result};

/// Bytes of a pcap file header (pcapng section/interface blocks are larger; positions are estimates).
const FILE_HEADER_LEN: u64 = 24;
/// Per-record overhead added to the captured length when estimating the read position:
/// 16 bytes in pcap, at least 32 in pcapng (Enhanced Packet Block).
const PCAP_RECORD_OVERHEAD: u64 = 16;
const PCAPNG_RECORD_OVERHEAD: u64 = 32;
/// First four bytes of a pcapng file (Section Header Block type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// Size of a [`PacketArena`] chunk: small enough to stay in L2 cache while packets are recycled
/// (256 KiB measured slower and 2 MiB more resident on the throughput bench).
const ARENA_CHUNK: usize = 64 * 1024;

/// Copies packets into shared chunks: each packet is a [`Bytes`] view of a chunk, so copying one
/// costs no allocation. A chunk whose packets have all been dropped is reused from its start; one
/// still referenced (a packet kept by a consumer) is left to its holders and a new chunk begun, so
/// a kept packet pins at most one chunk.
#[derive(Debug, Default)]
pub(crate) struct PacketArena {
    chunk: BytesMut,
}

impl PacketArena {
    pub(crate) fn copy(&mut self, data: &[u8]) -> Bytes {
        if self.chunk.capacity() < data.len() && !self.chunk.try_reclaim(data.len()) {
            self.chunk = BytesMut::with_capacity(ARENA_CHUNK.max(data.len()));
        }
        self.chunk.extend_from_slice(data);
        self.chunk.split().freeze()
    }
}

/// An open capture file.
pub struct FileSource {
    path: PathBuf,
    name: String,
    counters: Arc<SourceCounters>,
    capture: Capture<Offline>,
    linktype: LinkType,
    raw_linktype: i32,
    file_size: u64,
    record_overhead: u64,
    /// Estimated bytes consumed, shared with a progress display.
    position: Arc<AtomicU64>,
    packets: u64,
    truncated: bool,
    finished: bool,
    arena: PacketArena,
    /// For [`FileSource::from_reader`]: the reader's failure, if it failed.
    reader_failed: Option<Arc<std::sync::Mutex<Option<ReaderEnd>>>>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.path)
            .field("linktype", &self.linktype)
            .field("packets", &self.packets)
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// Opens `path` (pcap with micro- or nanosecond timestamps, or pcapng).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fail = |reason: String| Error::File {
            path: path.to_path_buf(),
            reason,
        };

        // Check the things libpcap reports poorly (or not at all) before handing it the path.
        let meta = std::fs::metadata(path).map_err(|e| fail(io_reason(&e)))?;
        if meta.is_dir() {
            return Err(fail("is a directory, not a capture file".into()));
        }
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| fail(io_reason(&e)))?;
            let n = f.read(&mut magic).map_err(|e| fail(io_reason(&e)))?;
            if n == 0 {
                return Err(fail("empty file, not a capture".into()));
            }
        }
        if path.to_str().is_none() {
            return Err(fail(
                "path is not valid UTF-8 (libpcap cannot open it)".into(),
            ));
        }

        // Nanosecond precision: libpcap scales every file (pcap µs/ns, pcapng any if_tsresol) to it.
        let capture = Capture::from_file_with_precision(path, Precision::Nano)
            .map_err(|e| fail(open_reason(&e)))?;
        let raw_linktype = capture.get_datalink().0;
        let linktype = LinkType::from_linktype(raw_linktype).ok_or_else(|| Error::LinkType {
            path: path.to_path_buf(),
            linktype: raw_linktype,
            name: Linktype(raw_linktype)
                .get_name()
                .unwrap_or_else(|_| "unknown".into()),
        })?;
        let record_overhead = if magic == PCAPNG_MAGIC {
            PCAPNG_RECORD_OVERHEAD
        } else {
            PCAP_RECORD_OVERHEAD
        };
        Ok(FileSource {
            path: path.to_path_buf(),
            name: source_name(Backend::File, &path.display().to_string()),
            counters: Arc::new(SourceCounters::default()),
            capture,
            linktype,
            raw_linktype,
            file_size: meta.len(),
            record_overhead,
            position: Arc::new(AtomicU64::new(FILE_HEADER_LEN.min(meta.len()))),
            packets: 0,
            truncated: false,
            finished: false,
            arena: PacketArena::default(),
            reader_failed: None,
        })
    }

    /// Opens a capture read from `reader` (standard input, a decompressor): a thread copies it into
    /// a pipe that libpcap reads, so every input is decoded by the same reader as a file. `name`
    /// names the input in errors. A failure of `reader` (a corrupt gzip stream) ends the read with
    /// an error naming it. Its size and position are unknown (0).
    pub fn from_reader(name: &Path, reader: Box<dyn std::io::Read + Send>) -> Result<Self> {
        use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
        let fail = |reason: String| Error::File {
            path: name.to_path_buf(),
            reason,
        };
        let mut fds = [0i32; 2];
        // SAFETY: pipe(2) fills two new descriptors, owned below.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(fail(io_reason(&std::io::Error::last_os_error())));
        }
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let failed: Arc<std::sync::Mutex<Option<ReaderEnd>>> = Arc::default();
        let slot = failed.clone();
        let copier = std::thread::Builder::new()
            .name("trustwatch-input".into())
            .spawn(move || {
                let mut reader = reader;
                let mut out = std::fs::File::from(write_end);
                // A write error means libpcap stopped reading (the read end closed): not a failure.
                if let Err(e) = copy_reader(&mut reader, &mut out)
                    && let Ok(mut s) = slot.lock()
                {
                    *s = Some(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        ReaderEnd::CutShort
                    } else {
                        ReaderEnd::Failed(one_line(&e.to_string()))
                    });
                }
            })
            .map_err(|e| fail(one_line(&e.to_string())))?;
        // SAFETY: the read end is handed to libpcap, which owns (and closes) it from here on.
        let opened =
            unsafe { Capture::from_raw_fd_with_precision(read_end.into_raw_fd(), Precision::Nano) };
        let reader_failure = |failed: &std::sync::Mutex<Option<ReaderEnd>>| match failed
            .lock()
            .ok()
            .and_then(|mut s| s.take())
        {
            Some(ReaderEnd::Failed(reason)) => Some(reason),
            Some(ReaderEnd::CutShort) => Some("cut short before the capture header".into()),
            None => None,
        };
        let capture = match opened {
            Ok(c) => c,
            Err(e) => {
                let _ = copier.join();
                return Err(fail(
                    reader_failure(&failed).unwrap_or_else(|| open_reason(&e)),
                ));
            }
        };
        let raw_linktype = capture.get_datalink().0;
        let linktype = LinkType::from_linktype(raw_linktype).ok_or_else(|| Error::LinkType {
            path: name.to_path_buf(),
            linktype: raw_linktype,
            name: Linktype(raw_linktype)
                .get_name()
                .unwrap_or_else(|_| "unknown".into()),
        })?;
        Ok(FileSource {
            path: name.to_path_buf(),
            name: source_name(Backend::File, &name.display().to_string()),
            counters: Arc::new(SourceCounters::default()),
            capture,
            linktype,
            raw_linktype,
            file_size: 0,
            record_overhead: 0,
            position: Arc::new(AtomicU64::new(0)),
            packets: 0,
            truncated: false,
            finished: false,
            arena: PacketArena::default(),
            reader_failed: Some(failed),
        })
    }

    /// The next packet, `None` at the end of the file (or where a truncated file stops).
    pub fn next_packet(&mut self) -> Result<Option<Packet>> {
        if self.finished {
            return Ok(None);
        }
        match self.capture.next_packet() {
            Ok(p) => {
                let ts = timestamp_from_nanos(p.header.ts.tv_sec, p.header.ts.tv_usec);
                self.packets += 1;
                let pos = self
                    .position
                    .load(Ordering::Relaxed)
                    .saturating_add(u64::from(p.header.caplen) + self.record_overhead)
                    .min(self.file_size);
                self.position.store(pos, Ordering::Relaxed);
                Ok(Some(Packet {
                    ts,
                    linktype: self.linktype,
                    data: self.arena.copy(p.data),
                }))
            }
            Err(pcap::Error::NoMorePackets) => {
                self.finish();
                self.reader_result()
            }
            Err(pcap::Error::PcapError(msg)) if msg.contains("truncated") => {
                // The last record is cut short: end here, flagged, with every complete record read.
                self.truncated = true;
                self.finish();
                self.reader_result()
            }
            Err(e) => {
                self.finished = true;
                Err(Error::File {
                    path: self.path.clone(),
                    reason: format!(
                        "unreadable record after {} packets: {}",
                        self.packets,
                        one_line(&e.to_string())
                    ),
                })
            }
        }
    }

    /// At the end of a [`FileSource::from_reader`] input: the reader's failure, which explains the
    /// end better than libpcap can (a corrupt compressed stream reads as a short capture).
    fn reader_result(&mut self) -> Result<Option<Packet>> {
        let failure = self
            .reader_failed
            .as_ref()
            .and_then(|f| f.lock().ok().and_then(|mut s| s.take()));
        match failure {
            Some(ReaderEnd::Failed(reason)) => Err(Error::File {
                path: self.path.clone(),
                reason: format!("after {} packets: {reason}", self.packets),
            }),
            Some(ReaderEnd::CutShort) => {
                self.truncated = true;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.position.store(self.file_size, Ordering::Relaxed);
    }

    /// The decodable link type of the file's packets.
    pub fn linktype(&self) -> LinkType {
        self.linktype
    }

    /// libpcap's LINKTYPE_* number for the file.
    pub fn raw_linktype(&self) -> i32 {
        self.raw_linktype
    }

    /// Estimated bytes of the file consumed so far (exact at the end), for a progress bar.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }

    /// The position, readable while the source runs (for a progress display).
    pub fn position_handle(&self) -> Arc<AtomicU64> {
        self.position.clone()
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Packets read so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// True when the read ended at a record cut short (the file is truncated).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Offline the sink is the pipeline itself: a file is read at its pace and never dropped from.
impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> Backend {
        Backend::File
    }

    fn counters(&self) -> Arc<SourceCounters> {
        self.counters.clone()
    }

    fn run(&mut self, sink: &mut dyn PacketSink, stop: &StopSignal) -> Result<RunEnd> {
        /// Packets between looks at the stop signal and updates of the shared counters.
        const BATCH: u32 = 4096;
        self.counters.set_up();
        let mut batch = (0u32, 0usize);
        let end = loop {
            if batch.0 == BATCH {
                self.counters
                    .handed_many(u64::from(batch.0), batch.1 as u64);
                batch = (0, 0);
                if stop.is_stopped() {
                    break RunEnd::Stopped;
                }
            }
            let Some(pkt) = self.next_packet()? else {
                break RunEnd::Exhausted;
            };
            let len = pkt.data.len();
            match sink.push(pkt) {
                Ok(()) => batch = (batch.0 + 1, batch.1 + len),
                Err(SinkFull::Full) => {
                    self.counters.count_drop(super::DropReason::QueueFull, 1);
                }
                Err(SinkFull::Closed) => break RunEnd::Exhausted,
            }
        };
        self.counters
            .handed_many(u64::from(batch.0), batch.1 as u64);
        self.counters.set_down();
        Ok(end)
    }
}

impl Iterator for FileSource {
    type Item = Result<Packet>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_packet().transpose()
    }
}

/// How the reader of a [`FileSource::from_reader`] input ended, when not at a clean end.
#[derive(Debug)]
enum ReaderEnd {
    /// The stream ends inside its compressed data (a file copied while being written).
    CutShort,
    Failed(String),
}

/// Copies `reader` into `out` until the end; a failure to write (the reader of the pipe is gone)
/// ends the copy quietly, a failure to read is returned.
fn copy_reader(reader: &mut dyn std::io::Read, out: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::{ErrorKind, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if out.write_all(&buf[..n]).is_err() {
            return Ok(());
        }
    }
}

/// `tv_usec` holds nanoseconds because the file is opened with [`Precision::Nano`].
fn timestamp_from_nanos(sec: i64, nsec: i64) -> Timestamp {
    Timestamp::from_micros(
        sec.saturating_mul(1_000_000)
            .saturating_add(nsec.div_euclid(1_000)),
    )
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory, not a capture file".into(),
        _ => one_line(&e.to_string()),
    }
}

/// A clean reason for libpcap's open errors.
fn open_reason(e: &pcap::Error) -> String {
    let msg = match e {
        pcap::Error::PcapError(m) => m.as_str(),
        other => return one_line(&other.to_string()),
    };
    if msg.contains("unknown file format") {
        "not a pcap or pcapng capture (unknown file format)".into()
    } else if msg.contains("truncated") {
        format!("truncated capture header ({})", one_line(msg))
    } else {
        one_line(msg)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
