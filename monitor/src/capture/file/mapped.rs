//! A regular capture file read through a memory map: its frames are slices of the page cache, so
//! nothing is copied (a `read` into a buffer copies every byte once, which on a bulk capture is
//! as much work as all the analysis after it).
//!
//! Consumes an open regular file; produces its bytes as one [`Bytes`] (packets share it, as they
//! share a read buffer) of which the reader looks at a window of [`WINDOW`] bytes at a time, moved
//! on as a read buffer would be refilled. Each move keeps the memory the map costs bounded: the
//! pages behind the reader are dropped from the map (`MADV_DONTNEED`: they stay in the page cache
//! and come back on the next touch, so a packet that still holds them stays valid) and the new
//! window is mapped in one call (`MADV_POPULATE_READ`, where the kernel has it, rather than a page
//! fault every 64 KiB). Without that, the peak resident size would grow with the file, also while
//! a damaged stretch is scanned.
//!
//! A mapped file that shrinks under the reader (another process truncates it) makes the next
//! touch of a vanished page raise `SIGBUS`; the handler installed with the first map prints one
//! line and exits with 2, as for any bad input, rather than dying without a word.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, Once};

use bytes::Bytes;
use memmap2::{Advice, Mmap, UncheckedAdvice};

/// Bytes of the file the reader looks at past where it is (or past what it asked for).
pub const WINDOW: usize = 2 << 20;

/// The map, shared by the [`Bytes`] the reader frames from and by the [`Pages`] that manage it.
struct Shared(Arc<Mmap>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The pages of a map the reader has gone past, and those it is about to read.
pub struct Pages {
    /// `None`: bytes in memory read through the same window (the fuzz harness's differential
    /// check of the window logic), nothing to advise.
    map: Option<Arc<Mmap>>,
    /// Bytes the reader looks at past where it is ([`WINDOW`] for a file).
    pub window: usize,
    /// Bytes behind the reader kept mapped (0; more once [`Pages::hand_over`] gave the pages to
    /// whoever reads the frames later, the reader keeping only a bound of its own).
    keep_behind: usize,
    /// Whether the reader maps the window ahead of it (not once the pages were handed over).
    map_ahead: bool,
    /// Everything before this offset has been released.
    released: usize,
    /// Mapped in one call up to here.
    populated: usize,
}

/// Page-table work on a map, planned by the one who knows where the readers are ([`Pages::plan`])
/// and done by whichever thread has time ([`PageWork::run`]): the output never depends on who.
pub struct PageWork {
    map: Arc<Mmap>,
    /// Whole pages to drop from the map.
    release: Range<usize>,
    /// Bytes to map in one call.
    populate: Range<usize>,
}

impl PageWork {
    pub fn run(&self) {
        let Range { start, end } = self.release;
        if end > start {
            // SAFETY: DONTNEED on a read-only shared file map only drops the page table entries;
            // the next touch maps the same file bytes again from the page cache, so no reference
            // into the map (a packet still held) ever sees other contents.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start)
            };
        }
        let Range { start, end } = self.populate;
        if end > start {
            let _ = self
                .map
                .advise_range(Advice::PopulateRead, start, end - start);
        }
    }
}

/// Maps `file` (`len` bytes, more than 0, at `path`). `None` when the kernel refuses (the caller
/// reads the file instead).
pub fn map(path: &Path, file: &File, len: u64) -> Option<(Bytes, Pages)> {
    if len == 0 || usize::try_from(len).is_err() {
        return None;
    }
    // SAFETY: the map is read-only and lives as long as any `Bytes` over it. Another process
    // may change or truncate the file meanwhile (the caveat of every mapped file): a change shows
    // through as garbled packets, never as memory out of bounds (a record's length is read once,
    // when it is framed, and its slice is bounded by the map), and a truncation raises SIGBUS,
    // which `on_sigbus` turns into a one-line error.
    let map = unsafe { Mmap::map(file) }.ok()?;
    install_sigbus_handler(path);
    let _ = map.advise(Advice::Sequential);
    let map = Arc::new(map);
    let bytes = Bytes::from_owner(Shared(map.clone()));
    Some((bytes, Pages::new(Some(map), WINDOW)))
}

/// Pages for bytes in memory read as a mapped file is, through a window of `window` bytes (at
/// least 1); there is nothing to advise.
pub fn in_memory(window: usize) -> Pages {
    Pages::new(None, window.max(1))
}

impl Pages {
    fn new(map: Option<Arc<Mmap>>, window: usize) -> Self {
        Pages {
            map,
            window,
            keep_behind: 0,
            map_ahead: true,
            released: 0,
            populated: 0,
        }
    }

    /// The reader is at `at` and will look up to `to`: releases the pages before it (whole pages,
    /// but the last `keep_behind` bytes) and maps those up to `to` (best effort: kernels before
    /// 5.14 lack `MADV_POPULATE_READ`, and a page fault maps them instead).
    pub fn advance(&mut self, at: usize, to: usize) {
        let ahead = if self.map_ahead { at..to } else { at..at };
        if let Some(work) = self.plan(at.saturating_sub(self.keep_behind), ahead) {
            work.run();
        }
    }

    /// The work that releases the pages before `before` (whole pages) and maps those in `ahead`,
    /// leaving out what was released or mapped before; `None` when there is none (or no map).
    pub fn plan(&mut self, before: usize, ahead: Range<usize>) -> Option<PageWork> {
        let map = self.map.as_ref()?;
        let page = page_size();
        let end = before / page * page;
        let release = self.released..end.max(self.released);
        self.released = release.end;
        let from = self.populated.max(ahead.start / page * page);
        let to = ahead.end.min(map.len());
        let populate = from..to.max(from);
        self.populated = self.populated.max(populate.end);
        (!release.is_empty() || !populate.is_empty()).then(|| PageWork {
            map: map.clone(),
            release,
            populate,
        })
    }

    /// Gives the management of the pages to whoever reads the frames after the reader (a
    /// parallel run's workers): the reader from now on maps nothing ahead and releases only what
    /// is more than `keep_behind` bytes behind it (a bound for when nobody else gets to: a long
    /// damaged stretch has no frames). `None` without a map.
    pub fn hand_over(&mut self, keep_behind: usize) -> Option<Pages> {
        let map = self.map.clone()?;
        self.keep_behind = keep_behind;
        self.map_ahead = false;
        Some(Pages {
            released: self.released,
            populated: self.populated,
            ..Pages::new(Some(map), self.window)
        })
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
}

/// The one line a truncated mapped file ends the run with (exit 2: bad input), naming the
/// mapped files: set before the handler can run, replaced (the old one leaked: the handler may be
/// reading it) when another file is mapped.
static SIGBUS_MESSAGE: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());
/// The files mapped so far, for that message.
static MAPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn install_sigbus_handler(path: &Path) {
    let mut mapped = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
    mapped.push(path.display().to_string());
    let what = match mapped.as_slice() {
        [one] => format!("{one}: the capture file"),
        many => format!("one of the capture files ({})", many.join(", ")),
    };
    let line = format!(
        "trustwatch: {what} shrank while it was being read (SIGBUS at a vanished page); stopped there\n"
    );
    SIGBUS_MESSAGE.store(
        Box::into_raw(Box::new(line.into_bytes())),
        Ordering::Release,
    );
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a plain sigaction with a handler that only calls async-signal-safe functions.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

extern "C" fn on_sigbus(_: libc::c_int) {
    const FALLBACK: &[u8] = b"trustwatch: a capture file shrank while it was being read (SIGBUS)\n";
    let message = SIGBUS_MESSAGE.load(Ordering::Acquire);
    // SAFETY: a message, once stored, is never freed; write(2) and _exit(2) are
    // async-signal-safe.
    unsafe {
        let line: &[u8] = if message.is_null() {
            FALLBACK
        } else {
            &*message
        };
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(2);
    }
}

/// Resident memory of the map holding address `at` (its `Rss` in `/proc/self/smaps`), KiB.
#[cfg(test)]
pub(crate) fn resident_kib_of_map(at: usize) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let range = line
            .split_whitespace()
            .next()
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                ))
            });
        if let Some((from, to)) = range.filter(|_| !line.starts_with(char::is_uppercase)) {
            inside = (from..to).contains(&at);
        } else if inside && let Some(v) = line.strip_prefix("Rss:") {
            return v.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    panic!("no map holds {at:#x}");
}
