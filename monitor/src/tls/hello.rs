//! ClientHello and ServerHello: the fields trustwatch reports and the fingerprints derived from them.

use super::Version;

/// What a ClientHello offered (GREASE values removed everywhere except `raw_*` lists).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub legacy_version: Version,
    /// supported_versions extension, in offer order, GREASE removed.
    pub supported_versions: Vec<Version>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
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
    /// JA3 string (`version,ciphers,extensions,groups,point_formats`) and its MD5.
    pub ja3: String,
    pub ja3_md5: String,
    /// JA4 (client fingerprint `a_b_c`), computed over TCP ("t" prefix).
    pub ja4: String,
}

impl Default for Version {
    fn default() -> Self {
        Version(0)
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
