//! Handshake summary: one [`Connection`] per TCP connection that carried TLS.
//!
//! Consumes the [`TlsEvent`](crate::tls::TlsEvent)s of both directions plus the TCP lifecycle;
//! produces a `Connection` with the hellos, both certificate chains, the alerts and the outcome
//! with the evidence that decided it (exact from a plaintext alert, inferred from record sizes and
//! the close for TLS 1.3).

pub mod outcome;
pub mod tracker;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::base::{KeyId, PerSide, Timestamp};
use crate::cert::Presented;
use crate::cert::verdict::ChainVerdict;
use crate::flow::Side;
use crate::tls::{ClientHello, ServerHello, Version};

pub use outcome::Outcome;
pub use tracker::Tracker;

/// An alert, seen in plaintext or inferred from an encrypted record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    /// A plaintext alert: code and level are exact.
    Plain {
        from: Side,
        level: u8,
        code: u8,
        ts: Timestamp,
    },
    /// An encrypted record that, by its size and place, is an alert; the code is unknown.
    Encrypted { from: Side, ts: Timestamp },
}

impl Alert {
    pub fn from(&self) -> Side {
        match *self {
            Alert::Plain { from, .. } | Alert::Encrypted { from, .. } => from,
        }
    }
    pub fn code(&self) -> Option<u8> {
        match *self {
            Alert::Plain { code, .. } => Some(code),
            Alert::Encrypted { .. } => None,
        }
    }
    pub fn is_fatal(&self) -> bool {
        match *self {
            Alert::Plain { level, .. } => level == 2,
            Alert::Encrypted { .. } => true,
        }
    }
    pub fn ts(&self) -> Timestamp {
        match *self {
            Alert::Plain { ts, .. } | Alert::Encrypted { ts, .. } => ts,
        }
    }
}

/// A presented certificate chain, in wire order (leaf first).
pub type Chain = Vec<Presented>;

/// Everything trustwatch knows about one TLS connection.
#[derive(Clone, Debug)]
pub struct Connection {
    /// First packet of the connection.
    pub start: Timestamp,
    /// When the outcome was decided (or the flow ended).
    pub end: Timestamp,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Service name of the server port (`cloudhub`, ..., or `tcp/<port>`).
    pub service: Arc<str>,
    pub vlan: Option<u16>,
    pub client_hello: Option<Box<ClientHello>>,
    /// The ServerHello that completed negotiation (the second one after a HelloRetryRequest).
    pub server_hello: Option<Box<ServerHello>>,
    pub hello_retry: bool,
    /// The negotiated version (ServerHello supported_versions, else its legacy version).
    pub version: Option<Version>,
    pub server_chain: Chain,
    pub client_chain: Chain,
    /// The server asked for a client certificate (CertificateRequest, or inferred for TLS 1.3).
    pub client_auth_requested: bool,
    /// TLS 1.2 abbreviated handshake or TLS 1.3 PSK.
    pub resumed: bool,
    /// Every alert in order (plaintext ones exact, inferred ones marked).
    pub alerts: Vec<Alert>,
    pub outcome: Outcome,
    /// Human-readable reason for the outcome, e.g. "client sent fatal bad_certificate(42)".
    pub evidence: String,
    /// The rule that decided the outcome, machine-readable (`plaintext_fatal_alert`,
    /// `tls13_server_alert_sized_record`, …; `undecided` when none did).
    pub evidence_code: &'static str,
    /// The key of the CA that issued the server leaf (see [`crate::cert::ca_key_id`]).
    pub ca_key_id: Option<KeyId>,
    /// The key of the CA that issued the client leaf.
    pub client_ca_key_id: Option<KeyId>,
    /// Application data records seen per direction (client, server).
    pub app_records: PerSide<u32>,
    /// Stream bytes lost to gaps during the handshake (client, server).
    pub gap_bytes: PerSide<u64>,
    /// A trustwatch probe made it (its ClientHello carries [`crate::config::PROBE_SNI`]).
    pub probe: bool,
    /// Certificate verdicts at handshake time (validity, chain order, the trusted CA's signature),
    /// filled by the runtime, which knows the trusted CAs.
    pub certificates: PerSide<ChainVerdict>,
}

#[cfg(test)]
impl Connection {
    /// A mutual-TLS `cloudhub` connection from `client` to `server` between `start` and `end`,
    /// established, with nothing else known: tests set what they are about with `..`.
    pub(crate) fn test_record(
        client: SocketAddr,
        server: SocketAddr,
        start: Timestamp,
        end: Timestamp,
    ) -> Connection {
        Connection {
            start,
            end,
            client,
            server,
            service: Arc::from("cloudhub"),
            vlan: None,
            client_hello: None,
            server_hello: None,
            hello_retry: false,
            version: None,
            server_chain: vec![],
            client_chain: vec![],
            client_auth_requested: true,
            resumed: false,
            alerts: vec![],
            outcome: Outcome::Established,
            evidence: String::new(),
            evidence_code: "test",
            ca_key_id: None,
            client_ca_key_id: None,
            app_records: Default::default(),
            gap_bytes: Default::default(),
            probe: false,
            certificates: Default::default(),
        }
    }
}

impl Connection {
    /// Machine-readable codes of what is wrong with the presented certificates (server first).
    pub fn certificate_problems(&self) -> impl Iterator<Item = &'static str> {
        (self.certificates.server.problems(Side::Server))
            .chain(self.certificates.client.problems(Side::Client))
    }

    /// Established, and nothing wrong with the certificates at handshake time.
    pub fn healthy(&self) -> bool {
        self.outcome == Outcome::Established && self.certificate_problems().next().is_none()
    }

    /// The alert that decided the outcome: the first fatal one, else the last one.
    pub fn deciding_alert(&self) -> Option<&Alert> {
        self.alerts
            .iter()
            .find(|a| a.is_fatal())
            .or(self.alerts.last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::verdict::{Anchor, Validity};

    #[test]
    fn certificate_problems_come_server_first_and_decide_health() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mut c = Connection::test_record(
            at("10.0.0.1:40000"),
            at("10.0.0.2:10000"),
            Timestamp(0),
            Timestamp(1),
        );
        assert_eq!(c.certificate_problems().count(), 0);
        assert!(c.healthy(), "established, nothing wrong");
        c.certificates.client.validity = Some(Validity::Expired);
        c.certificates.server.anchor = Some(Anchor::UnknownIssuer);
        assert_eq!(
            c.certificate_problems().collect::<Vec<_>>(),
            ["server_chain_unknown_issuer", "client_certificate_expired"]
        );
        assert!(!c.healthy(), "established over a certificate problem");
        c.certificates = PerSide::default();
        c.outcome = Outcome::RejectedByClient;
        assert!(!c.healthy(), "not established");
    }
}
