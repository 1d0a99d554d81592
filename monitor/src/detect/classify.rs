//! What one [`Connection`] says about trust: a success, a certificate-related rejection (and by
//! which side), another failure, or nothing (incomplete).

use serde::Serialize;

use crate::flow::Side;
use crate::handshake::{Alert, Connection, Outcome};
use crate::tls::alert::is_trust_rejection;

/// Which side refused the other's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectingSide {
    /// The clients (edges) do not trust the server's CA.
    Client,
    /// The server rejects the clients' certificates.
    Server,
    /// Both kinds of rejection are in the window.
    Both,
    Unknown,
}

impl RejectingSide {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectingSide::Client => "client",
            RejectingSide::Server => "server",
            RejectingSide::Both => "both",
            RejectingSide::Unknown => "unknown",
        }
    }
}

/// A connection as the detector counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Success,
    /// Rejected with a certificate alert (42–46, 48, 116), decrypt_error (51, a chain signed by a
    /// same-name CA with another key) or an inferred encrypted TLS 1.3 alert.
    CertFailure(RejectingSide),
    /// Aborted for another reason (handshake_failure, protocol_version, a reset without alert).
    OtherFailure,
}

/// `None` for connections that say nothing about trust (no ServerHello seen).
pub fn classify(conn: &Connection) -> Option<Class> {
    let side_of = |from: Side| match from {
        Side::Client => RejectingSide::Client,
        Side::Server => RejectingSide::Server,
    };
    match conn.outcome {
        Outcome::Established => Some(Class::Success),
        Outcome::Incomplete => None,
        Outcome::RejectedByClient | Outcome::RejectedByServer | Outcome::Failed => {
            let certificate = match conn.deciding_alert() {
                Some(Alert::Plain { code, .. }) => is_trust_rejection(*code),
                Some(Alert::Encrypted { .. }) => true,
                None => false,
            };
            if !certificate {
                return Some(Class::OtherFailure);
            }
            let side = match conn.outcome {
                Outcome::RejectedByClient => RejectingSide::Client,
                Outcome::RejectedByServer => RejectingSide::Server,
                _ => conn
                    .deciding_alert()
                    .map_or(RejectingSide::Unknown, |a| side_of(a.from())),
            };
            Some(Class::CertFailure(side))
        }
    }
}
