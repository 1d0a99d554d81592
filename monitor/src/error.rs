//! Errors that stop a run. Each renders as one line naming the input and the problem; the binary
//! maps them to exit code 2 (bad input). Problems inside the data (malformed packets, records,
//! certificates) are never errors: they are counted in [`crate::stats::Stats`].

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A capture file that cannot be read as pcap/pcapng.
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// A capture file whose link type trustwatch cannot decode.
    #[error("{}: unsupported link type {linktype} ({name})", path.display())]
    LinkType {
        path: PathBuf,
        linktype: i32,
        name: String,
    },
    /// A bad command-line value.
    #[error("{0}")]
    Usage(String),
    /// A live interface or permission problem.
    #[error("{0}")]
    Capture(String),
    /// Writing output failed (e.g. a closed pipe).
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// Process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            // A closed stdout (e.g. `| head`) is not bad input.
            Error::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
            Error::Output(_) => 1,
            _ => 2,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
