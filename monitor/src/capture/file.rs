//! pcap and pcapng files, read in large blocks and framed in place.
//!
//! Consumes a path (or any reader: a pipe, a decompressor); produces packets in file order, either
//! borrowed from the read buffer ([`FileSource::next_frame`], what `analyze` uses: no copy and no
//! reference count per packet) or as owned [`Packet`]s that share the buffer
//! ([`FileSource::next_packet`]: a slice of it, never a copy). Records are framed by
//! [`format`] (rusticata's `pcap-parser`) following libpcap's rules, so every file reads as it did
//! through libpcap, and pcapng interfaces may have different link types and timestamp
//! resolutions.
//!
//! Problems with the file itself (missing, a directory, empty, not a capture, a link type we
//! cannot decode) are [`Error`]s with a one-line reason. Problems inside it are not:
//! - a file cut short inside its last record (a capture copied while still being written, a
//!   partial download) ends the read there, and [`FileSource::truncated`] says so;
//! - a corrupt record header in the middle (a length no capture can have, a pcapng block that does
//!   not parse) is skipped: the reader scans forward to where records frame again and goes on,
//!   and [`FileSource::damage`] says where, why and how many bytes were lost;
//! - packets on a pcapng interface whose link type we cannot decode are skipped and counted
//!   ([`FileSource::unsupported`]).
//!
//! A regular file is memory-mapped (`file/mapped.rs`): frames are slices of the page cache,
//! nothing is copied, and the pages behind the reader are released as it goes. Anything else (a
//! pipe, standard input, a decompressor, a file the kernel will not map) is read into a buffer of
//! [`READ_SIZE`] bytes (it grows only for a record longer than that, up to the largest record a
//! file may hold). Either way memory does not depend on the file's size.

mod format;
mod lookahead;
mod mapped;

#[cfg(test)]
pub(crate) use mapped::resident_kib_of_map;
pub use mapped::{PageWork, Pages};

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

use self::format::{Layout, OpenError, PlainPcap, Resync, Step};
use self::lookahead::Lookahead;
use super::source::{
    Backend, PacketSink, RunEnd, SinkFull, Source, SourceCounters, StopSignal, source_name,
};
use super::{Frame, LinkType, Packet};
use crate::base::Timestamp;
use crate::error::{Error, Result};

/// Bytes asked of the reader at a time: large enough that system calls cost nothing per packet,
/// small enough that what was just read is still in the CPU cache when it is framed and decoded.
pub const READ_SIZE: usize = 256 * 1024;
/// Damaged regions remembered per file (more are counted, not described).
const MAX_DAMAGE_KEPT: usize = 16;

/// A stretch of a file skipped because a record header in it was corrupt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// File offset of the corrupt header.
    pub offset: u64,
    /// Packets read before it.
    pub after_packets: u64,
    /// What was wrong with it.
    pub reason: String,
    /// Bytes skipped; reading resumed at `offset + skipped`, or the file ended.
    pub skipped: u64,
    /// False when nothing readable followed (the rest of the file was skipped).
    pub resumed: bool,
}

/// Packets skipped because their pcapng interface has a link type we cannot decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unsupported {
    pub packets: u64,
    /// The first such link type.
    pub linktype: Option<u16>,
}

/// A record located in the buffer.
#[derive(Clone, Copy, Debug)]
struct Rec {
    ts: Timestamp,
    linktype: LinkType,
    start: usize,
    end: usize,
}

/// Where a [`FileSource`]'s bytes come from.
enum Origin {
    /// Read into the buffer (a pipe, standard input, a decompressor, a file the kernel would not
    /// map).
    Reader(Box<dyn Read + Send>),
    /// The buffer is the whole mapped file, and `filled` the end of the window the reader may
    /// look at, moved on by [`FileSource::fill`] as a read buffer is refilled (see [`mapped`]).
    Mapped(mapped::Pages),
}

/// An open capture file.
pub struct FileSource {
    path: PathBuf,
    name: String,
    counters: Arc<SourceCounters>,
    origin: Origin,
    layout: Layout,
    /// Set for plain pcap files: records are framed inline.
    plain: Option<PlainPcap>,
    /// The read buffer (or the whole mapped file); `buf[at..filled]` is not consumed yet. A
    /// `Bytes` so that owned packets can share it; reused in place when no packet holds it any
    /// more.
    buf: Bytes,
    at: usize,
    filled: usize,
    /// Fetches the coming record headers.
    lookahead: Lookahead,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    file_size: u64,
    /// Bytes consumed, shared with a progress display.
    position: Arc<AtomicU64>,
    packets: u64,
    truncated: bool,
    finished: bool,
    damage: Vec<Damage>,
    damaged_regions: u64,
    unsupported: Unsupported,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.path)
            .field("packets", &self.packets)
            .field("truncated", &self.truncated)
            .field("damage", &self.damage)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// Opens `path` (pcap with micro- or nanosecond timestamps, either byte order, or pcapng).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fail = |reason: String| Error::File {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(io_reason(&e)))?;
        if meta.is_dir() {
            return Err(fail("is a directory, not a capture file".into()));
        }
        let file = File::open(path).map_err(|e| fail(io_reason(&e)))?;
        if meta.is_file()
            && let Some((bytes, pages)) = mapped::map(path, &file, meta.len())
        {
            return Self::new(path, meta.len(), bytes, Origin::Mapped(pages));
        }
        Self::from_reader(path, Box::new(file), meta.len())
    }

    /// A capture read from any reader (standard input, a decompressor); `path` names it in
    /// messages and `size` (0 when unknown) scales the progress display.
    pub fn from_reader(
        path: impl AsRef<Path>,
        input: Box<dyn Read + Send>,
        size: u64,
    ) -> Result<Self> {
        Self::new(path.as_ref(), size, Bytes::new(), Origin::Reader(input))
    }

    /// `bytes` read as a mapped file is read, through a window of `window` bytes that moves as
    /// the reader goes: the fuzz harness checks it against [`FileSource::from_reader`] with
    /// windows of a few bytes.
    pub fn from_bytes_windowed(path: &Path, bytes: Bytes, window: usize) -> Result<Self> {
        let size = bytes.len() as u64;
        let pages = mapped::in_memory(window);
        Self::new(path, size, bytes, Origin::Mapped(pages))
    }

    /// A capture of `size` bytes from `origin`; `buf` is the mapped file, or empty for a reader.
    fn new(path: &Path, size: u64, buf: Bytes, origin: Origin) -> Result<Self> {
        let path = path.to_path_buf();
        let mut src = FileSource {
            name: source_name(Backend::File, &path.display().to_string()),
            path,
            counters: Arc::new(SourceCounters::default()),
            origin,
            layout: Layout::unknown(),
            plain: None,
            filled: 0,
            eof: false,
            buf,
            at: 0,
            lookahead: Lookahead::default(),
            base: 0,
            file_size: size,
            position: Arc::new(AtomicU64::new(0)),
            packets: 0,
            truncated: false,
            finished: false,
            damage: Vec::new(),
            damaged_regions: 0,
            unsupported: Unsupported::default(),
        };
        src.read_header()?;
        Ok(src)
    }

    fn fail(&self, reason: String) -> Error {
        Error::File {
            path: self.path.clone(),
            reason,
        }
    }

    /// Reads and checks the file header (and, for pcapng, the blocks up to the first packet, for
    /// the link types).
    fn read_header(&mut self) -> Result<()> {
        self.fill(format::PCAP_HEADER_LEN)?;
        if self.filled == 0 {
            return Err(self.fail("empty file, not a capture".into()));
        }
        let (layout, len) = loop {
            match Layout::open(&self.buf[..self.filled]) {
                Ok(opened) => break opened,
                Err(OpenError::Bad(reason)) => return Err(self.fail(reason)),
                Err(OpenError::NeedMore(n)) if self.eof || n <= self.filled => {
                    return Err(self.fail(format!(
                        "truncated capture header (only {} of {n} bytes)",
                        self.filled
                    )));
                }
                Err(OpenError::NeedMore(n)) => self.fill(n)?,
            }
        };
        self.plain = layout.plain_pcap();
        self.layout = layout;
        self.at = len;
        self.position.store(len as u64, Ordering::Relaxed);
        if self.layout.is_pcapng() {
            self.check_pcapng_interfaces()?;
        } else if let Some(Err(raw)) = self.layout.first_linktype() {
            return Err(self.linktype_error(raw));
        }
        Ok(())
    }

    /// pcapng: the blocks before the first packet must describe an interface we can decode (the
    /// scan runs on a copy of the layout over the buffer; nothing is consumed).
    fn check_pcapng_interfaces(&mut self) -> Result<()> {
        self.fill(self.at + READ_SIZE)?;
        let mut probe = self.layout.clone();
        let mut at = self.at;
        while let Step::Skip {
            len,
            unsupported: None,
        } = probe.next(&self.buf[at..self.filled])
        {
            at += len;
        }
        match probe.first_linktype() {
            None if self.eof && at == self.filled => {
                Err(self.fail("the capture file has no Interface Description Blocks".into()))
            }
            Some(Err(raw)) if !probe.any_decodable() => Err(self.linktype_error(raw)),
            _ => Ok(()),
        }
    }

    fn linktype_error(&self, raw: u32) -> Error {
        let linktype = i32::try_from(raw).unwrap_or(i32::MAX);
        Error::LinkType {
            path: self.path.clone(),
            linktype,
            name: pcap::Linktype(linktype)
                .get_name()
                .unwrap_or_else(|_| "unknown".into()),
        }
    }

    /// Reads until at least `want` bytes from `at` on are buffered, or the input ends. Consumed
    /// bytes are dropped first (`at` becomes 0); the buffer is reused when no packet holds it. A
    /// mapped file moves its window instead (`at` stays).
    fn fill(&mut self, want: usize) -> Result<()> {
        let Origin::Mapped(pages) = &mut self.origin else {
            return self.read_more(want);
        };
        // No bytes move, the window does (its pages behind the reader released, those ahead
        // mapped).
        let len = self.buf.len();
        self.filled = len.min(want.max(self.at).saturating_add(pages.window));
        self.eof = self.filled == len;
        pages.advance(self.at, self.filled);
        Ok(())
    }

    /// [`FileSource::fill`] from a reader.
    fn read_more(&mut self, want: usize) -> Result<()> {
        let Origin::Reader(input) = &mut self.origin else {
            return Ok(());
        };
        let want_from_at = want.saturating_sub(self.at);
        let capacity = READ_SIZE.max(want_from_at + READ_SIZE / 4);
        let tail = self.at..self.filled;
        let kept = tail.len();
        let old = std::mem::take(&mut self.buf);
        let mut buf = match old.try_into_mut() {
            Ok(mut b) if b.len() >= capacity => {
                b.copy_within(tail, 0);
                b
            }
            // Held by packets (or too small): a new buffer; the old one lives as long as they do.
            Ok(b) => fresh_buffer(capacity, &b[tail]),
            Err(b) => fresh_buffer(capacity, &b[tail]),
        };
        self.base += self.at as u64;
        self.at = 0;
        self.filled = kept;
        while self.filled < want_from_at.max(kept + 1) && !self.eof && self.filled < buf.len() {
            let end = (self.filled + READ_SIZE).min(buf.len());
            match input.read(&mut buf[self.filled..end]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf = buf.freeze();
                    return Err(self.fail(format!(
                        "read error after {} packets: {}",
                        self.packets,
                        one_line(&e.to_string())
                    )));
                }
            }
        }
        self.buf = buf.freeze();
        Ok(())
    }

    /// The next record, located in the buffer.
    #[inline]
    fn next_record(&mut self) -> Result<Option<Rec>> {
        if let Some(plain) = self.plain
            && !self.finished
        {
            let avail = &self.buf[self.at..self.filled];
            if let Some((len, ts, linktype, data)) = format::frame_pcap(plain, avail) {
                let start = self.at + (data.as_ptr() as usize - avail.as_ptr() as usize);
                let rec = Rec {
                    ts,
                    linktype,
                    start,
                    end: start + data.len(),
                };
                self.at += len;
                self.packets += 1;
                self.position
                    .store(self.base + self.at as u64, Ordering::Relaxed);
                self.lookahead.hint(&self.buf, self.at, len);
                return Ok(Some(rec));
            }
        }
        self.next_record_general()
    }

    /// [`FileSource::next_record`] for everything but a complete plain pcap record.
    #[inline(never)]
    fn next_record_general(&mut self) -> Result<Option<Rec>> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let avail = &self.buf[self.at..self.filled];
            match self.layout.next(avail) {
                Step::Packet {
                    len,
                    ts,
                    linktype,
                    data,
                } => {
                    let start = self.at + (data.as_ptr() as usize - avail.as_ptr() as usize);
                    let rec = Rec {
                        ts,
                        linktype,
                        start,
                        end: start + data.len(),
                    };
                    self.at += len;
                    self.packets += 1;
                    self.position
                        .store(self.base + self.at as u64, Ordering::Relaxed);
                    self.lookahead.hint(&self.buf, self.at, len);
                    return Ok(Some(rec));
                }
                Step::Skip { len, unsupported } => {
                    self.at += len;
                    if let Some(raw) = unsupported {
                        self.unsupported.packets += 1;
                        self.unsupported.linktype.get_or_insert(raw);
                    }
                }
                Step::NeedMore(_) if self.eof => {
                    // The last record is cut short: end here, flagged, with every complete record read.
                    self.truncated = self.at < self.filled;
                    self.finish();
                }
                Step::NeedMore(n) => self.fill(self.at + n)?,
                Step::Corrupt(reason) => self.skip_damage(reason)?,
            }
        }
    }

    /// A corrupt header at `at`: scan forward to where records frame again (reading on as
    /// needed), and remember what was lost.
    fn skip_damage(&mut self, reason: String) -> Result<()> {
        let offset = self.base + self.at as u64;
        let step = if self.layout.is_pcapng() { 4 } else { 1 };
        let mut from = self.at + step;
        let resumed = loop {
            match format::resync(&self.layout, &self.buf[..self.filled], from, self.eof) {
                Resync::Found(at) => {
                    self.at = at;
                    break true;
                }
                Resync::NotFound if self.eof => {
                    self.at = self.filled;
                    break false;
                }
                // Read on, keeping the candidate that needs more bytes (or the unscanned tail).
                // (A read buffer starts at `at` again after `fill`; a mapped file stays put.)
                Resync::NeedMore(at) => {
                    self.at = at;
                    self.fill(at + format::RESYNC_LOOKAHEAD)?;
                    from = self.at;
                }
                Resync::NotFound => {
                    let ahead = from.saturating_sub(self.filled);
                    self.at = self.filled;
                    self.fill(self.filled + ahead + READ_SIZE)?;
                    from = self.at + ahead;
                }
            }
        };
        let skipped = self.base + self.at as u64 - offset;
        self.damaged_regions += 1;
        if self.damage.len() < MAX_DAMAGE_KEPT {
            self.damage.push(Damage {
                offset,
                after_packets: self.packets,
                reason,
                skipped,
                resumed,
            });
        }
        if !resumed {
            self.finish();
        }
        Ok(())
    }

    /// A mapped file's bytes, all of them (every frame [`FileSource::next_frame`] lends is a slice
    /// of them), and the management of their pages for whoever reads the frames later
    /// ([`Pages::hand_over`]: this reader keeps releasing what is more than `keep_behind` bytes
    /// behind it); `None` for a file read into a buffer.
    pub fn hand_over_map(&mut self, keep_behind: usize) -> Option<(Bytes, Pages)> {
        let Origin::Mapped(pages) = &mut self.origin else {
            return None;
        };
        Some((self.buf.clone(), pages.hand_over(keep_behind)?))
    }

    /// The next packet, borrowed from the read buffer; `None` at the end of the file (or where a
    /// truncated file stops).
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        Ok(self.next_record()?.map(|r| Frame {
            ts: r.ts,
            linktype: r.linktype,
            data: &self.buf[r.start..r.end],
        }))
    }

    /// The next packet, sharing the read buffer; `None` at the end of the file (or where a
    /// truncated file stops).
    pub fn next_packet(&mut self) -> Result<Option<Packet>> {
        Ok(self.next_record()?.map(|r| Packet {
            ts: r.ts,
            linktype: r.linktype,
            data: self.buf.slice(r.start..r.end),
        }))
    }

    fn finish(&mut self) {
        self.finished = true;
        self.position.store(
            self.file_size.max(self.base + self.at as u64),
            Ordering::Relaxed,
        );
    }

    /// The link type of the file's packets (pcapng: of its first interface).
    pub fn linktype(&self) -> LinkType {
        match self.layout.first_linktype() {
            Some(Ok(linktype)) => linktype,
            _ => LinkType::Ethernet,
        }
    }

    /// The LINKTYPE_* number of the file (pcapng: of its first interface).
    pub fn raw_linktype(&self) -> i32 {
        match self.layout.first_linktype() {
            Some(Ok(linktype)) => linktype.number(),
            Some(Err(raw)) => i32::try_from(raw).unwrap_or(i32::MAX),
            None => -1,
        }
    }

    /// Bytes of the file consumed so far (exact), for a progress bar.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }

    /// The position, readable while the source runs (for a progress display).
    pub fn position_handle(&self) -> Arc<AtomicU64> {
        self.position.clone()
    }

    /// Size of the file in bytes (0 when unknown).
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

    /// Stretches skipped because of corrupt record headers (the first few; see
    /// [`FileSource::damaged_regions`] for the count).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// How many stretches were skipped in all.
    pub fn damaged_regions(&self) -> u64 {
        self.damaged_regions
    }

    /// Packets skipped because their interface's link type cannot be decoded.
    pub fn unsupported(&self) -> Unsupported {
        self.unsupported
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

/// A zeroed buffer of `capacity` bytes starting with `kept`.
fn fresh_buffer(capacity: usize, kept: &[u8]) -> BytesMut {
    let mut fresh = BytesMut::zeroed(capacity);
    fresh[..kept.len()].copy_from_slice(kept);
    fresh
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => "no such file".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::IsADirectory => "is a directory, not a capture file".into(),
        _ => one_line(&e.to_string()),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
