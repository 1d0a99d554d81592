//! Errors that stop a run. Each renders as one line naming the input and the problem, and maps to
//! a documented exit code ([`Error::exit_code`]). Problems inside the data (malformed packets,
//! records, certificates) are never errors: they are counted in [`crate::stats::Stats`].
//!
//! Exit codes: 0 done, nothing wrong; 1 `check` found the CA inconsistent; 2 bad input (a file,
//! a flag, an interface, a permission); 3 `analyze` found a trust problem; 4 output could not be
//! written (a closed pipe, a full disk); 5 `analyze` found not one TLS connection on the watched
//! ports (a warning names the busiest other ports).

/// Exit code when output could not be written.
pub const EXIT_OUTPUT: i32 = 4;
/// Exit code when `analyze` found no TLS connection at all on the watched ports.
pub const EXIT_NOTHING_FOUND: i32 = 5;

/// One line on stderr, best effort: a closed or full stderr never stops the program or panics.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

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
    /// Writing output failed (a closed pipe, a full disk).
    #[error("output: {}", output_reason(.0))]
    Output(#[from] std::io::Error),
}

impl Error {
    /// Process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Output(_) => EXIT_OUTPUT,
            _ => 2,
        }
    }
}

fn output_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => "the reader went away (broken pipe)".into(),
        std::io::ErrorKind::StorageFull => "no space left on the device".into(),
        _ => e.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
