//! ClientHello and ServerHello: the fields trustwatch reports and the fingerprints derived from them.
//!
//! Consumes the body of a handshake message (after its 4-byte header) or an SSLv2 CLIENT-HELLO
//! record; produces [`ClientHello`] / [`ServerHello`]. The fixed part is parsed by tls-parser; the
//! extension block is split here so that one malformed extension only loses its own field, and
//! each interesting extension is decoded by tls-parser's extension parser.

use std::sync::Arc;

use tls_parser::{
    TlsExtension, parse_tls_client_hello_extension, parse_tls_server_hello_extension,
};

use super::Version;
use super::fingerprint::Fingerprints;

/// What a ClientHello offered (GREASE values removed everywhere except `raw_*` lists).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub legacy_version: Version,
    /// supported_versions extension, in offer order, GREASE removed.
    pub supported_versions: Vec<Version>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    /// The first ALPN value's raw bytes (JA4 reads them; ALPN values need not be UTF-8).
    pub first_alpn: Option<Vec<u8>>,
    pub ciphers: Vec<u16>,
    pub groups: Vec<u16>,
    pub ec_point_formats: Vec<u8>,
    /// Extension types in wire order, GREASE removed.
    pub extensions: Vec<u16>,
    pub signature_algorithms: Vec<u16>,
    pub session_id: Vec<u8>,
    /// A non-empty session_ticket extension (TLS 1.2 resumption attempt).
    pub session_ticket: bool,
    /// pre_shared_key extension present (TLS 1.3 resumption attempt).
    pub psk: bool,
    /// The hello came in SSLv2 record format.
    pub sslv2: bool,
    /// JA3 and JA4, filled by [`super::fingerprint::fill`]: shared by every hello of one kind of
    /// client (they are held by the fingerprint cache too).
    pub fingerprints: Option<Arc<Fingerprints>>,
}

impl ClientHello {
    /// JA3 string (`version,ciphers,extensions,groups,point_formats`); empty until filled.
    pub fn ja3(&self) -> &str {
        self.fingerprints.as_deref().map_or("", |f| &f.ja3)
    }

    /// MD5 of the JA3 string, in hex; empty until filled.
    pub fn ja3_md5(&self) -> &str {
        self.fingerprints.as_deref().map_or("", |f| &f.ja3_md5)
    }

    /// JA4 (client fingerprint `a_b_c`), computed over TCP ("t" prefix); empty until filled.
    pub fn ja4(&self) -> &str {
        self.fingerprints.as_deref().map_or("", |f| &f.ja4)
    }
}

/// What a ServerHello selected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerHello {
    pub legacy_version: Version,
    /// supported_versions extension if present, else the legacy version.
    pub selected_version: Version,
    pub cipher: u16,
    pub session_id: Vec<u8>,
    /// A HelloRetryRequest (ServerHello with the special random).
    pub hello_retry: bool,
    pub alpn: Option<String>,
    /// pre_shared_key extension present: the server accepted a TLS 1.3 PSK (resumption).
    pub psk: bool,
    /// Extension types in wire order.
    pub extensions: Vec<u16>,
}

/// The ServerHello.random that marks a HelloRetryRequest (RFC 8446 §4.1.3).
pub const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// A GREASE value (RFC 8701): 0x0a0a, 0x1a1a, ..., 0xfafa.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

const EXT_SNI: u16 = 0x0000;
const EXT_GROUPS: u16 = 0x000a;
const EXT_POINT_FORMATS: u16 = 0x000b;
const EXT_SIG_ALGS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SESSION_TICKET: u16 = 0x0023;
const EXT_PSK: u16 = 0x0029;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// Splits an extension block into `(type, data, whole extension bytes)`; stops at the first
/// extension whose length overruns the block.
#[derive(Clone)]
struct RawExtensions<'a>(&'a [u8]);

impl<'a> Iterator for RawExtensions<'a> {
    type Item = (u16, &'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        let ty = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
        let Some(raw) = b.get(..4 + len) else {
            self.0 = &[];
            return None;
        };
        self.0 = b.get(4 + len..).unwrap_or_default();
        Some((ty, raw.get(4..).unwrap_or_default(), raw))
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The values that are not GREASE, in a vector sized once (`filter` hides the length from
/// `collect`, which would grow it step by step: this runs for every list of every hello).
fn without_grease(values: impl IntoIterator<Item = u16, IntoIter: ExactSizeIterator>) -> Vec<u16> {
    let values = values.into_iter();
    let mut out = Vec::with_capacity(values.len());
    out.extend(values.filter(|&v| !is_grease(v)));
    out
}

/// Parses a ClientHello handshake body (fingerprints are left empty).
pub fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let (_, ch) = tls_parser::parse_tls_handshake_client_hello(body).ok()?;
    let mut out = ClientHello {
        legacy_version: Version(ch.version.0),
        session_id: ch.session_id.unwrap_or_default().to_vec(),
        ciphers: without_grease(ch.ciphers.iter().map(|c| c.0)),
        ..ClientHello::default()
    };
    let extensions = RawExtensions(ch.ext.unwrap_or_default());
    out.extensions.reserve_exact(extensions.clone().count());
    for (ty, data, raw) in extensions {
        if is_grease(ty) {
            continue;
        }
        out.extensions.push(ty);
        match ty {
            EXT_SESSION_TICKET => out.session_ticket = !data.is_empty(),
            EXT_PSK => out.psk = true,
            EXT_SNI
            | EXT_GROUPS
            | EXT_POINT_FORMATS
            | EXT_SIG_ALGS
            | EXT_ALPN
            | EXT_SUPPORTED_VERSIONS => {
                let Ok((_, ext)) = parse_tls_client_hello_extension(raw) else {
                    continue;
                };
                match ext {
                    TlsExtension::SNI(names) => {
                        out.sni = names.iter().find(|(t, _)| t.0 == 0).map(|(_, n)| lossy(n));
                    }
                    TlsExtension::EllipticCurves(groups) => {
                        out.groups = without_grease(groups.iter().map(|g| g.0));
                    }
                    TlsExtension::EcPointFormats(pf) => out.ec_point_formats = pf.to_vec(),
                    TlsExtension::SignatureAlgorithms(algs) => {
                        out.signature_algorithms = without_grease(algs);
                    }
                    TlsExtension::ALPN(protos) => {
                        out.first_alpn = protos.first().map(|p| p.to_vec());
                        out.alpn = protos.iter().map(|p| lossy(p)).collect();
                    }
                    TlsExtension::SupportedVersions(versions) => {
                        out.supported_versions = versions
                            .iter()
                            .filter(|v| !is_grease(v.0))
                            .map(|v| Version(v.0))
                            .collect();
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// Parses an SSLv2 CLIENT-HELLO (the record body after the 2-byte SSLv2 header: msg type 1,
/// version, three lengths, cipher specs, session id, challenge). Cipher specs whose first byte is
/// 0 are TLS cipher suites and kept; SSLv2-only specs are dropped.
pub fn parse_sslv2_client_hello(msg: &[u8]) -> Option<ClientHello> {
    if *msg.first()? != 1 {
        return None;
    }
    let version = be16(msg, 1)?;
    let specs_len = usize::from(be16(msg, 3)?);
    let sid_len = usize::from(be16(msg, 5)?);
    let challenge_len = usize::from(be16(msg, 7)?);
    if specs_len % 3 != 0 || 9 + specs_len + sid_len + challenge_len > msg.len() {
        return None;
    }
    let specs = msg.get(9..9 + specs_len)?;
    let session_id = msg.get(9 + specs_len..9 + specs_len + sid_len)?;
    let out = ClientHello {
        legacy_version: Version(version),
        session_id: session_id.to_vec(),
        ciphers: specs
            .chunks_exact(3)
            .filter(|s| s.first() == Some(&0))
            .filter_map(|s| be16(s, 1))
            .filter(|&c| !is_grease(c))
            .collect(),
        sslv2: true,
        ..ClientHello::default()
    };
    Some(out)
}

/// Parses a ServerHello handshake body (TLS 1.0–1.3, SSLv3, and the TLS 1.3 draft ≤ 21 layout
/// without session id and compression).
pub fn parse_server_hello(body: &[u8]) -> Option<ServerHello> {
    let version = be16(body, 0)?;
    let (random, session_id, cipher, ext) = if version >> 8 == 0x7f && version & 0xff < 22 {
        let random = body.get(2..34)?;
        let cipher = be16(body, 34)?;
        let ext = match be16(body, 36) {
            Some(n) => Some(body.get(38..38 + usize::from(n))?),
            None => None,
        };
        (random, &[][..], cipher, ext)
    } else {
        let (_, sh) = tls_parser::parse_tls_handshake_server_hello(body).ok()?;
        (
            sh.random,
            sh.session_id.unwrap_or_default(),
            sh.cipher.0,
            sh.ext,
        )
    };
    let mut out = ServerHello {
        legacy_version: Version(version),
        selected_version: Version(version),
        cipher,
        session_id: session_id.to_vec(),
        hello_retry: random == HELLO_RETRY_RANDOM,
        ..ServerHello::default()
    };
    server_extensions(&mut out, ext.unwrap_or_default());
    Some(out)
}

/// Parses a draft-TLS 1.3 HelloRetryRequest message (handshake type 6: version, cipher, extensions)
/// into a [`ServerHello`] with `hello_retry` set.
pub fn parse_draft_hello_retry(body: &[u8]) -> Option<ServerHello> {
    let version = be16(body, 0)?;
    let mut out = ServerHello {
        legacy_version: Version(version),
        selected_version: Version(version),
        hello_retry: true,
        ..ServerHello::default()
    };
    if let Ok((_, tls_parser::TlsMessageHandshake::HelloRetryRequest(hrr))) =
        tls_parser::parse_tls_handshake_msg_hello_retry_request(body)
    {
        out.cipher = hrr.cipher.0;
        server_extensions(&mut out, hrr.ext.unwrap_or_default());
    }
    Some(out)
}

fn server_extensions(out: &mut ServerHello, block: &[u8]) {
    for (ty, data, raw) in RawExtensions(block) {
        out.extensions.push(ty);
        match ty {
            EXT_PSK => out.psk = true,
            // The server's supported_versions is a single version.
            EXT_SUPPORTED_VERSIONS => {
                if let (Some(v), 2) = (be16(data, 0), data.len()) {
                    out.selected_version = Version(v);
                }
            }
            EXT_ALPN => {
                if let Ok((_, TlsExtension::ALPN(protos))) = parse_tls_server_hello_extension(raw) {
                    out.alpn = protos.first().map(|p| lossy(p));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grease_values() {
        let grease: Vec<u16> = (0..=u16::MAX).filter(|&v| is_grease(v)).collect();
        assert_eq!(grease.len(), 16);
        assert_eq!(grease[0], 0x0a0a);
        assert_eq!(grease[15], 0xfafa);
        assert!(!is_grease(0x1a2a));
    }

    #[test]
    fn truncated_extension_keeps_earlier_fields() {
        // version 0x0303, random, empty sid, one cipher, null compression, then extensions:
        // SNI "a.b", then a truncated extension.
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        let sni = [0u8, 0, 0, 8, 0, 6, 0, 0, 3, b'a', b'.', b'b'];
        let ext_len = (sni.len() + 4) as u16;
        body.extend(ext_len.to_be_bytes());
        body.extend(sni);
        body.extend([0, 0x10, 0, 9]); // ALPN claiming 9 bytes, none present
        let ch = parse_client_hello(&body).unwrap();
        assert_eq!(ch.sni.as_deref(), Some("a.b"));
        assert_eq!(ch.extensions, [0]);
        assert_eq!(ch.ciphers, [0x1301]);
        assert!(ch.alpn.is_empty());
    }

    #[test]
    fn server_hello_fields() {
        let mut body = vec![3, 3];
        body.extend(HELLO_RETRY_RANDOM);
        body.extend([0, 0x13, 0x02, 0]); // empty session id, cipher, compression
        let exts = [0u8, 0x2b, 0, 2, 3, 4, 0, 0x33, 0, 2, 0, 0x1d];
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let sh = parse_server_hello(&body).unwrap();
        assert!(sh.hello_retry);
        assert_eq!(sh.selected_version, Version::TLS13);
        assert_eq!(sh.legacy_version, Version::TLS12);
        assert_eq!(sh.cipher, 0x1302);
        assert_eq!(sh.extensions, [0x2b, 0x33]);
        body[2] ^= 1; // no longer the HRR random
        assert!(!parse_server_hello(&body).unwrap().hello_retry);
    }
}
