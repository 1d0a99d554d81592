//! Outcome of a handshake and the rules that decide it.
//!
//! Consumes [`Facts`] (what the tracker saw of both directions); produces a [`Verdict`]. A plaintext
//! fatal alert decides exactly. TLS 1.3 hides alerts and most of the handshake, so there the
//! outcome is inferred from encrypted record sizes, their order and the close (the behaviour of
//! Go's crypto/tls, rustls and OpenSSL):
//!
//! * an encrypted alert is 19 bytes (2 + inner content type + 16-byte AEAD tag), a Finished 53 or
//!   69 (SHA-256 / SHA-384), an empty client Certificate 25;
//! * client rejects the server's chain: after the server's flight the client sends one short
//!   record and no Finished;
//! * server rejects the client: after the client's Finished the server sends one short record and
//!   closes, with no other record (no session tickets, no application data).

use serde::Serialize;

use crate::base::{Timestamp, human};
use crate::flow::Side;
use crate::tls::{Version, alert};

use super::Alert;

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
    /// The capture ended (or the connection closed before a ServerHello) before anything was decided.
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

    /// The side that aborted, when known.
    pub fn rejecting_side(self) -> Option<Side> {
        match self {
            Outcome::RejectedByClient => Some(Side::Client),
            Outcome::RejectedByServer => Some(Side::Server),
            _ => None,
        }
    }

    fn rejected_by(side: Side) -> Outcome {
        match side {
            Side::Client => Outcome::RejectedByClient,
            Side::Server => Outcome::RejectedByServer,
        }
    }
}

/// AEAD-encrypted alert: 2 bytes + content type + 16-byte tag (8-byte tag with CCM_8: 11).
pub const ENCRYPTED_ALERT_LEN: u16 = 19;
/// Longest record still read as an alert (allows a little record padding; an empty Certificate,
/// the shortest handshake record that can take its place, is 25).
pub const ENCRYPTED_ALERT_MAX: u16 = 24;
/// Encrypted Finished: 4-byte header + 32/48-byte verify data + content type + tag (16 or 8).
pub const FINISHED_LENS: [u16; 4] = [53, 69, 45, 61];
/// Encrypted empty client Certificate (no certificate offered).
pub const EMPTY_CERTIFICATE_LEN: u16 = 25;

/// An encrypted record of TLS 1.3 (outer type application_data) after the ServerHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedRecord {
    pub from: Side,
    pub len: u16,
    pub ts: Timestamp,
}

impl SealedRecord {
    fn is_alert_sized(&self) -> bool {
        self.len <= ENCRYPTED_ALERT_MAX
    }
    fn is_finished_sized(&self) -> bool {
        FINISHED_LENS.contains(&self.len)
    }
}

/// How one side stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    pub rst: bool,
    pub ts: Timestamp,
}

/// Per-side facts of a TLS ≤ 1.2 handshake and of the TCP lifecycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideFacts {
    /// ChangeCipherSpec sent.
    pub ccs: bool,
    /// An encrypted handshake record after ChangeCipherSpec (the TLS ≤ 1.2 Finished).
    pub finished: bool,
    /// Encrypted alert records after ChangeCipherSpec (TLS ≤ 1.2).
    pub sealed_alert: Option<Timestamp>,
    /// Application data records (TLS ≤ 1.2; in TLS 1.3 they are in the sealed log).
    pub app_records: u32,
    pub close: Option<Close>,
}

/// Everything the rules look at.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub server_hello: bool,
    pub version: Option<Version>,
    pub alerts: &'a [Alert],
    pub client: SideFacts,
    pub server: SideFacts,
    /// TLS 1.3: encrypted records after the (final) ServerHello, in arrival order.
    pub sealed: &'a [SealedRecord],
    /// No more data will come (flow closed, evicted, timed out, or the capture ended).
    pub ended: bool,
}

impl Facts<'_> {
    fn side(&self, side: Side) -> &SideFacts {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }
    fn closed(&self) -> bool {
        self.client.close.is_some() || self.server.close.is_some()
    }
    fn first_closer(&self) -> Option<Side> {
        match (self.client.close, self.server.close) {
            (Some(c), Some(s)) => Some(if s.ts < c.ts {
                Side::Server
            } else {
                Side::Client
            }),
            (Some(_), None) => Some(Side::Client),
            (None, Some(_)) => Some(Side::Server),
            (None, None) => None,
        }
    }
    fn close_text(&self) -> String {
        match self.first_closer() {
            Some(side) => {
                let kind = if self.side(side).close.is_some_and(|c| c.rst) {
                    "RST"
                } else {
                    "FIN"
                };
                format!("{kind} from {}", side.as_str())
            }
            None => "capture end".to_string(),
        }
    }
}

/// The rules' answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: more packets are needed.
    Pending,
    Decided {
        outcome: Outcome,
        /// Machine-readable name of the rule that decided (`tls13_server_alert_sized_record`).
        code: &'static str,
        evidence: String,
        /// An alert inferred from an encrypted record (TLS 1.3), to add to the connection's alerts.
        inferred: Option<Alert>,
    },
}

fn decided(outcome: Outcome, code: &'static str, evidence: String) -> Verdict {
    Verdict::Decided {
        outcome,
        code,
        evidence,
        inferred: None,
    }
}

fn describe(a: &Alert) -> String {
    match *a {
        Alert::Plain {
            from, level, code, ..
        } => format!(
            "{} sent {} alert {}({code}) in plaintext",
            from.as_str(),
            if level == 2 { "fatal" } else { "warning" },
            alert::name(code)
        ),
        Alert::Encrypted { from, .. } => format!("{} sent an encrypted alert", from.as_str()),
    }
}

/// Applies the rules. With `facts.ended` the verdict is final (never `Pending`).
pub fn decide(facts: &Facts<'_>) -> Verdict {
    // A plaintext fatal alert decides exactly, in any version (OpenSSL sends its rejection in
    // plaintext even in TLS 1.3). Warnings (e.g. unrecognized_name) do not.
    if let Some(a) = facts
        .alerts
        .iter()
        .find(|a| matches!(a, Alert::Plain { level: 2, .. }))
    {
        return decided(
            Outcome::rejected_by(a.from()),
            "plaintext_fatal_alert",
            describe(a),
        );
    }
    if !facts.server_hello {
        if facts.ended || facts.closed() {
            return decided(
                Outcome::Incomplete,
                "no_server_hello",
                format!(
                    "no ServerHello before the connection ended ({})",
                    facts.close_text()
                ),
            );
        }
        return Verdict::Pending;
    }
    match facts.version {
        Some(v) if v.is_tls13() => decide_tls13(facts),
        _ => decide_tls12(facts),
    }
}

fn decide_tls12(f: &Facts<'_>) -> Verdict {
    let (c, s) = (&f.client, &f.server);
    if c.finished && s.finished {
        return decided(
            Outcome::Established,
            "tls12_finished_both",
            "ChangeCipherSpec and encrypted Finished from both sides".into(),
        );
    }
    if c.app_records > 0 && s.app_records > 0 {
        return decided(
            Outcome::Established,
            "tls12_application_data_both",
            "application data in both directions".into(),
        );
    }
    // An encrypted alert during the handshake (after that side's ChangeCipherSpec).
    for side in [Side::Client, Side::Server] {
        if let Some(ts) = f.side(side).sealed_alert {
            return Verdict::Decided {
                code: "tls12_encrypted_alert",
                outcome: Outcome::rejected_by(side),
                evidence: format!(
                    "{} sent an encrypted alert before the handshake completed",
                    side.as_str()
                ),
                inferred: Some(Alert::Encrypted { from: side, ts }),
            };
        }
    }
    if f.closed() || f.ended {
        if !f.closed() {
            return decided(
                Outcome::Incomplete,
                "capture_ended",
                "capture ended before the handshake completed".into(),
            );
        }
        // A warning alert with a close, or a bare close, before Finished.
        if let Some(a) = f.alerts.last() {
            return decided(
                Outcome::rejected_by(a.from()),
                "alert_then_close",
                format!(
                    "{} and the connection closed ({})",
                    describe(a),
                    f.close_text()
                ),
            );
        }
        return decided(
            Outcome::Failed,
            "closed_before_finished",
            format!(
                "connection closed before the handshake completed ({})",
                f.close_text()
            ),
        );
    }
    Verdict::Pending
}

/// End of the client's flight (Certificate, CertificateVerify, Finished, maybe early application
/// data): its Finished-sized record, else the last record of its first run of records once a
/// server record follows or the connection is over.
fn client_flight_end(f: &Facts<'_>, first_client: usize) -> Option<usize> {
    let rest = f.sealed.get(first_client..)?;
    if let Some(i) = rest
        .iter()
        .position(|r| r.from == Side::Client && r.is_finished_sized())
    {
        return Some(first_client + i);
    }
    match rest.iter().position(|r| r.from == Side::Server) {
        Some(i) => Some(first_client + i - 1),
        None if f.closed() || f.ended => Some(f.sealed.len() - 1),
        None => None,
    }
}

fn decide_tls13(f: &Facts<'_>) -> Verdict {
    let Some(first_client) = f.sealed.iter().position(|r| r.from == Side::Client) else {
        if !(f.closed() || f.ended) {
            return Verdict::Pending;
        }
        if !f.closed() {
            return decided(
                Outcome::Incomplete,
                "capture_ended",
                "TLS 1.3: capture ended before the client's Finished".into(),
            );
        }
        let outcome = match f.first_closer() {
            Some(Side::Client) if !f.sealed.is_empty() => Outcome::RejectedByClient,
            _ => Outcome::Failed,
        };
        return decided(
            outcome,
            "tls13_closed_without_client_record",
            format!(
                "TLS 1.3: connection closed ({}) after {} server records, without any client record",
                f.close_text(),
                f.sealed.len()
            ),
        );
    };
    let server_flight = first_client;
    let first = f.sealed[first_client];
    // The client's first sealed record being short means it aborted with an alert.
    if first.is_alert_sized() {
        return Verdict::Decided {
            code: "tls13_client_alert_sized_record",
            outcome: Outcome::RejectedByClient,
            evidence: format!(
                "TLS 1.3: after the server's flight ({}) the client sent one \
                 {}-byte encrypted record (an alert) and no Finished",
                human::count(server_flight as u64, "record", "records"),
                first.len
            ),
            inferred: Some(Alert::Encrypted {
                from: Side::Client,
                ts: first.ts,
            }),
        };
    }
    let Some(flight_end) = client_flight_end(f, first_client) else {
        return Verdict::Pending;
    };
    let after = f.sealed.get(flight_end + 1..).unwrap_or_default();
    let server_after: Vec<&SealedRecord> =
        after.iter().filter(|r| r.from == Side::Server).collect();
    let client_after = after.iter().filter(|r| r.from == Side::Client).count();
    if let Some(big) = server_after.iter().find(|r| !r.is_alert_sized()) {
        return decided(
            Outcome::Established,
            "tls13_server_record_after_client_flight",
            format!(
                "TLS 1.3: the client's flight ({}) was answered by a {}-byte server record \
                 (session ticket or application data)",
                human::count((flight_end + 1 - first_client) as u64, "record", "records"),
                big.len
            ),
        );
    }
    if server_after.len() >= 2 {
        return decided(
            Outcome::Established,
            "tls13_server_records_after_client_flight",
            "TLS 1.3: several server records after the client's flight".into(),
        );
    }
    let closed = f.closed();
    if let [short] = server_after.as_slice() {
        // An alert is exactly 19 bytes and ends the connection. A slightly longer short record is
        // an alert only when the server closes first: otherwise it is a small reply (a 5-byte
        // "pong" is a 22-byte record) after which the client hung up.
        let server_closed_first = f.first_closer() == Some(Side::Server);
        if closed && short.len != ENCRYPTED_ALERT_LEN && !server_closed_first {
            return decided(
                Outcome::Established,
                "tls13_small_server_reply",
                format!(
                    "TLS 1.3: the server answered the client's flight with a {}-byte record and the \
                     client closed first ({})",
                    short.len,
                    f.close_text()
                ),
            );
        }
        if closed {
            return Verdict::Decided {
                code: "tls13_server_alert_sized_record",
                outcome: Outcome::RejectedByServer,
                evidence: format!(
                    "TLS 1.3: the server answered the client's flight with one {}-byte encrypted \
                     record (an alert) and the connection closed ({})",
                    short.len,
                    f.close_text()
                ),
                inferred: Some(Alert::Encrypted {
                    from: Side::Server,
                    ts: short.ts,
                }),
            };
        }
        if f.ended {
            return decided(
                Outcome::Established,
                "tls13_short_server_record_no_close",
                "TLS 1.3: client flight done; one short server record, no close seen".into(),
            );
        }
        return Verdict::Pending;
    }
    // No server record after the client's flight.
    if client_after > 0 && (closed || f.ended) {
        return decided(
            Outcome::Established,
            "tls13_client_application_data",
            format!(
                "TLS 1.3: the client sent application data after its Finished and the server \
                 sent no alert ({})",
                f.close_text()
            ),
        );
    }
    if closed {
        return decided(
            Outcome::Failed,
            "tls13_closed_after_client_flight",
            format!(
                "TLS 1.3: connection closed ({}) after the client's flight with no server record",
                f.close_text()
            ),
        );
    }
    if f.ended {
        return decided(
            Outcome::Established,
            "tls13_capture_ended_after_client_flight",
            "TLS 1.3: client flight seen; the capture ended before any server reply".into(),
        );
    }
    Verdict::Pending
}

#[cfg(test)]
mod tests;
