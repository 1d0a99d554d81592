//! What `analyze` reads: a capture file, standard input (`-`), either of them gzip or zstd
//! compressed (told by their first bytes, not their names).
//!
//! Consumes a path argument; produces a [`FileSource`] and what a progress display needs (the size
//! on disk, the bytes of it consumed). A plain file is opened by path; anything that must be
//! streamed (standard input, a decompressor) goes through [`FileSource::from_reader`], so every
//! input is framed by the same capture reader.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::file::{FileSource, io_reason};
use crate::error::{Error, Result};

/// The argument that means standard input.
pub const STDIN_ARG: &str = "-";

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How an input is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn of(head: &[u8]) -> Compression {
        if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// One opened input.
pub struct Input {
    pub source: FileSource,
    /// How it is named in messages (`stdin` for `-`).
    pub label: PathBuf,
    pub compression: Compression,
    /// Bytes on disk (0 for standard input).
    pub size: u64,
    /// Bytes read from disk for a streamed input (compressed bytes); `None`: ask the source.
    consumed: Option<Arc<AtomicU64>>,
}

impl Input {
    /// Bytes of the input consumed so far (estimated for plain files, exact for streamed ones).
    pub fn position(&self) -> u64 {
        match &self.consumed {
            Some(c) => c.load(Ordering::Relaxed),
            None => self.source.position(),
        }
    }
}

/// Opens every argument (all or nothing: the first failure is returned). `-` may appear once.
pub fn open_all(args: &[PathBuf]) -> Result<Vec<Input>> {
    let stdin_args = args.iter().filter(|p| p.as_os_str() == STDIN_ARG).count();
    if stdin_args > 1 {
        return Err(Error::Usage(format!(
            "standard input (`{STDIN_ARG}`) can be read only once, it was given {stdin_args} times"
        )));
    }
    args.iter().map(|a| open(a)).collect()
}

/// Opens one argument.
pub fn open(arg: &Path) -> Result<Input> {
    if arg.as_os_str() == STDIN_ARG {
        let label = PathBuf::from("stdin");
        let (head, compression) = {
            let mut stdin = io::stdin().lock();
            let head = read_head(&mut stdin).map_err(|e| file_error(&label, &e))?;
            let c = Compression::of(&head);
            (head, c)
        };
        if head.is_empty() {
            return Err(Error::File {
                path: label,
                reason: "empty input, not a capture".into(),
            });
        }
        let counted = Arc::new(AtomicU64::new(0));
        let raw = Counting {
            inner: io::Cursor::new(head).chain(io::stdin()),
            n: counted.clone(),
        };
        return streamed(label, raw, compression, 0, counted);
    }
    let mut f = File::open(arg).map_err(|e| file_error(arg, &e))?;
    let meta = f.metadata().map_err(|e| file_error(arg, &e))?;
    if meta.is_dir() {
        return Err(Error::File {
            path: arg.to_path_buf(),
            reason: "is a directory, not a capture file".into(),
        });
    }
    let head = read_head(&mut f).map_err(|e| file_error(arg, &e))?;
    match Compression::of(&head) {
        Compression::None => Ok(Input {
            source: FileSource::open(arg)?,
            label: arg.to_path_buf(),
            compression: Compression::None,
            size: meta.len(),
            consumed: None,
        }),
        c => {
            let counted = Arc::new(AtomicU64::new(0));
            let raw = Counting {
                inner: io::Cursor::new(head).chain(f),
                n: counted.clone(),
            };
            streamed(arg.to_path_buf(), raw, c, meta.len(), counted)
        }
    }
}

fn streamed(
    label: PathBuf,
    raw: impl Read + Send + 'static,
    compression: Compression,
    size: u64,
    counted: Arc<AtomicU64>,
) -> Result<Input> {
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(Labelled {
            inner: flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 16, raw)),
            what: "gzip",
        }),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::new(raw).map_err(|e| file_error(&label, &e))?;
            Box::new(Labelled {
                inner: d,
                what: "zstd",
            })
        }
    };
    Ok(Input {
        // The decompressed size is unknown: progress counts the bytes read from disk instead.
        source: FileSource::from_reader(&label, reader, 0)?,
        label,
        compression,
        size,
        consumed: Some(counted),
    })
}

/// The first bytes of an input (up to 4: enough for every magic number), read fully even from a
/// pipe that delivers them one at a time.
fn read_head(r: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(4);
    r.take(4).read_to_end(&mut head)?;
    Ok(head)
}

fn file_error(path: &Path, e: &io::Error) -> Error {
    Error::File {
        path: path.to_path_buf(),
        reason: io_reason(e),
    }
}

/// Counts the bytes read through it (the compressed bytes of a streamed input, for progress).
struct Counting<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Names the decompressor in its errors (`gzip: corrupt deflate stream`).
struct Labelled<R> {
    inner: R,
    what: &'static str,
}

impl<R: Read> Read for Labelled<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            // A stream that ends inside its compressed data (a file copied while being written):
            // the end of the capture, which the reader flags as truncated where a record is cut.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            r => r.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.what))),
        }
    }
}
