//! Outcome of a handshake and the rules that decide it.

use serde::Serialize;

/// How a TLS handshake ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Established,
    /// The client aborted (e.g. it did not trust the server's chain).
    RejectedByClient,
    /// The server aborted (e.g. it refused the client certificate).
    RejectedByServer,
    /// Aborted; which side is unknown.
    Failed,
    /// No ServerHello before the capture or the connection ended.
    Incomplete,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Established,
        Outcome::RejectedByClient,
        Outcome::RejectedByServer,
        Outcome::Failed,
        Outcome::Incomplete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::RejectedByClient => "rejected_by_client",
            Outcome::RejectedByServer => "rejected_by_server",
            Outcome::Failed => "failed",
            Outcome::Incomplete => "incomplete",
        }
    }
}
