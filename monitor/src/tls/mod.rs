//! TLS: records and handshake messages of one direction of a connection.
//!
//! Consumes in-order stream bytes; produces [`TlsEvent`]s (hellos with their fingerprints,
//! certificate chains as DER slices, alerts, CCS, and the sizes of records we cannot read).
//! Records are framed here; handshake messages that span records and TCP segments are
//! reassembled here, bounded by the handshake window. Parsing is tls-parser's.

pub mod alert;
pub mod fingerprint;
pub mod hello;
pub mod record;

use std::borrow::Cow;

pub use alert::cipher_name;
pub use hello::{ClientHello, ServerHello};
pub use record::{CertList, RecordStream};

/// TLS content types (RFC 8446 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    ChangeCipherSpec,
    Alert,
    Handshake,
    ApplicationData,
    Heartbeat,
}

/// Protocol version as on the wire (0x0303 = TLS 1.2, 0x0304 = TLS 1.3, 0x7f1c = draft 28, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(pub u16);

impl Version {
    pub const SSL3: Version = Version(0x0300);
    pub const TLS10: Version = Version(0x0301);
    pub const TLS11: Version = Version(0x0302);
    pub const TLS12: Version = Version(0x0303);
    pub const TLS13: Version = Version(0x0304);

    /// TLS 1.3 or one of its drafts (0x7fXX) or Facebook's experimental 0xfb1X.
    pub fn is_tls13(self) -> bool {
        self == Version::TLS13 || self.0 >> 8 == 0x7f || self.0 & 0xfff0 == 0xfb10
    }

    /// ECS `tls.version`: "1.2", "1.3", "3.0" for SSLv3; drafts as "1.3".
    pub fn ecs_version(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0200 => "2.0",
            0x0300 => "3.0",
            0x0301 => "1.0",
            0x0302 => "1.1",
            0x0303 => "1.2",
            _ if self.is_tls13() => "1.3",
            _ => return None,
        })
    }

    /// ECS `tls.version_protocol`: "ssl" for SSLv2/v3, else "tls".
    pub fn ecs_protocol(self) -> &'static str {
        if self.0 <= 0x0300 { "ssl" } else { "tls" }
    }

    /// Human name: "TLS 1.2", "TLS 1.3 (draft 28)", "SSL 3.0".
    pub fn name(self) -> Cow<'static, str> {
        match self.0 {
            0x0200 => "SSL 2.0".into(),
            0x0300 => "SSL 3.0".into(),
            0x0301 => "TLS 1.0".into(),
            0x0302 => "TLS 1.1".into(),
            0x0303 => "TLS 1.2".into(),
            0x0304 => "TLS 1.3".into(),
            v if v >> 8 == 0x7f => format!("TLS 1.3 (draft {})", v & 0xff).into(),
            v => format!("0x{v:04x}").into(),
        }
    }
}

/// What one direction's byte stream contained, in order.
#[derive(Debug)]
pub enum TlsEvent<'a> {
    /// Record header seen (every record, readable or not).
    Record {
        content_type: ContentType,
        version: Version,
        len: u16,
    },
    ClientHello(Box<ClientHello>),
    ServerHello(Box<ServerHello>),
    /// Certificate message; `certs` in wire order. `tls13` when it used the TLS 1.3 layout.
    Certificate {
        certs: CertList<'a>,
        tls13: bool,
    },
    CertificateRequest,
    ServerKeyExchange,
    ServerHelloDone,
    ClientKeyExchange,
    CertificateVerify,
    CertificateStatus,
    NewSessionTicket,
    EncryptedExtensions,
    /// A plaintext Finished (only visible in unusual captures; normally encrypted).
    Finished,
    /// Plaintext alert (record of exactly two bytes).
    Alert {
        level: u8,
        code: u8,
    },
    ChangeCipherSpec,
    /// A record whose content we cannot read: application data, TLS 1.3 encrypted handshake
    /// messages (outer type application_data), encrypted alerts and TLS 1.2 encrypted Finished.
    Opaque {
        content_type: ContentType,
        len: u16,
    },
    /// Bytes that are not TLS (or no longer in sync after a gap).
    NotTls,
    /// A record or handshake message that could not be parsed.
    Malformed,
}

#[cfg(test)]
mod tests {
    use super::Version;

    /// Names and ECS fields of the versions on the wire: the named ones, a TLS 1.3 draft (0x7fXX),
    /// and anything else as its hex value.
    #[test]
    fn version_names_and_ecs_fields() {
        let all = |v: u16| {
            let v = Version(v);
            (v.name().into_owned(), v.ecs_version(), v.ecs_protocol())
        };
        assert_eq!(all(0x0300), ("SSL 3.0".into(), Some("3.0"), "ssl"));
        assert_eq!(all(0x0303), ("TLS 1.2".into(), Some("1.2"), "tls"));
        assert_eq!(all(0x0304), ("TLS 1.3".into(), Some("1.3"), "tls"));
        assert_eq!(
            all(0x7f1c),
            ("TLS 1.3 (draft 28)".into(), Some("1.3"), "tls")
        );
        assert_eq!(all(0x7e1c), ("0x7e1c".into(), None, "tls"));
        assert_eq!(all(0x0a0a), ("0x0a0a".into(), None, "tls"));
    }
}
