//! A connection record as one JSON object, nested keys in Elastic Common Schema form
//! (`source.ip` is `{"source":{"ip":…}}`). The field names are a contract (README, tests).
//!
//! A connection record is written by [`Obj`], a small writer whose keys are static identifiers
//! written as they are: this runs for every connection, and with derived serialization 15% of the
//! analyzer's instructions went to escaping strings, keys included. Values that may hold arbitrary
//! bytes (names, SNI, evidence) are escaped by serde_json; certificates are rendered once each.

use std::io::{self, Write};
use std::net::IpAddr;

use hashlink::LruCache;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::base::{PerSide, Timestamp};
use crate::cert::{CertInfo, Presented};
use crate::handshake::{Alert, Connection, Outcome};
use crate::tls::alert;

/// A cipher suite as its IANA name, or `0xXXXX` when unknown (no allocation for known ones).
struct CipherName(u16);

impl Serialize for CipherName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match crate::tls::cipher_name(self.0) {
            Some(name) => s.serialize_str(name),
            None => s.serialize_str(&format!("0x{:04X}", self.0)),
        }
    }
}

/// Writes one JSON object into a buffer. Keys are `'static` identifiers that need no escaping.
struct Obj<'b> {
    buf: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> Obj<'b> {
    fn new(buf: &'b mut Vec<u8>) -> Self {
        buf.push(b'{');
        Obj { buf, first: true }
    }

    fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
        self.buf
    }

    /// A string value, escaped as needed.
    fn str(&mut self, key: &'static str, value: &str) {
        let buf = self.key(key);
        if is_plain(value.as_bytes()) {
            buf.push(b'"');
            buf.extend_from_slice(value.as_bytes());
            buf.push(b'"');
        } else {
            let _ = serde_json::to_writer(&mut *buf, value);
        }
    }

    fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    /// A string value or `null`.
    fn str_or_null(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.key(key).extend_from_slice(b"null"),
        }
    }

    fn upper_hex(&mut self, key: &'static str, hex: &str) {
        let buf = self.key(key);
        buf.push(b'"');
        buf.extend(hex.bytes().map(|b| b.to_ascii_uppercase()));
        buf.push(b'"');
    }

    fn time(&mut self, key: &'static str, ts: Timestamp) {
        write_time(self.key(key), ts);
    }

    /// An address as a string.
    fn ip(&mut self, key: &'static str, ip: IpAddr) {
        let buf = self.key(key);
        buf.push(b'"');
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf.push(b'.');
                    }
                    buf.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(buf, "{v6}");
            }
        }
        buf.push(b'"');
    }

    /// A number as a string.
    fn num_str(&mut self, key: &'static str, value: impl itoa::Integer) {
        let buf = self.key(key);
        buf.push(b'"');
        buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        buf.push(b'"');
    }

    fn num(&mut self, key: &'static str, value: impl itoa::Integer) {
        let buf = self.key(key);
        buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        let v: &[u8] = if value { b"true" } else { b"false" };
        self.key(key).extend_from_slice(v);
    }

    fn raw(&mut self, key: &'static str, value: &[u8]) {
        self.key(key).extend_from_slice(value);
    }

    /// A nested object; finish it with [`Obj::end`] before writing the next key here.
    fn obj(&mut self, key: &'static str) -> Obj<'_> {
        Obj::new(self.key(key))
    }

    /// An array whose items `each` writes (commas are added here).
    fn array<T>(&mut self, key: &'static str, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
        let buf = self.key(key);
        buf.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            each(buf, item);
        }
        buf.push(b']');
    }

    fn end(self) {
        self.buf.push(b'}');
    }
}

/// `"2026-11-26T17:49:30.123456Z"`.
fn write_time(buf: &mut Vec<u8>, ts: Timestamp) {
    buf.push(b'"');
    match ts.rfc3339_bytes() {
        Some(b) => buf.extend_from_slice(&b),
        None => {
            let _ = write!(buf, "{ts}");
        }
    }
    buf.push(b'"');
}

/// `[a,b]`.
fn pair(buf: &mut Vec<u8>, a: impl itoa::Integer, b: impl itoa::Integer) {
    buf.push(b'[');
    buf.extend_from_slice(itoa::Buffer::new().format(a).as_bytes());
    buf.push(b',');
    buf.extend_from_slice(itoa::Buffer::new().format(b).as_bytes());
    buf.push(b']');
}

/// True when `s` needs no escaping in a JSON string: printable ASCII without `"` and `\\`.
/// Eight bytes at a time (SWAR): this runs over every string of every record.
fn is_plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// High bit set in each byte of `x` that is zero (exact when combined as below).
    fn zero_bytes(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGH
    }
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Bytes ≥ 0x80 or < 0x20, equal to '"', '\\' or 0x7f: any of them fails.
        let bad = (x & HIGH)
            | zero_bytes(x & 0xe0e0_e0e0_e0e0_e0e0)
            | zero_bytes(x ^ (ONES * u64::from(b'"')))
            | zero_bytes(x ^ (ONES * u64::from(b'\\')))
            | zero_bytes(x ^ (ONES * 0x7f));
        if bad != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

fn write_alert(buf: &mut Vec<u8>, a: &Alert) {
    let mut o = Obj::new(buf);
    match *a {
        Alert::Plain {
            from,
            level,
            code,
            ts,
        } => {
            o.num("code", code);
            o.str("name", alert::name(code));
            o.str(
                "level",
                match level {
                    1 => "warning",
                    2 => "fatal",
                    _ => "unknown",
                },
            );
            o.str("from", from.as_str());
            o.bool("encrypted", false);
            o.time("@timestamp", ts);
        }
        Alert::Encrypted { from, ts } => {
            o.raw("code", b"null");
            o.raw("name", b"null");
            o.raw("level", b"null");
            o.str("from", from.as_str());
            o.bool("encrypted", true);
            o.time("@timestamp", ts);
        }
    }
    o.end();
}

#[derive(Serialize)]
struct CertJson<'a> {
    sha256: &'a str,
    sha1: &'a str,
    subject: Option<&'a str>,
    issuer: Option<&'a str>,
    serial: Option<&'a str>,
    not_before: Option<&'a str>,
    not_after: Option<&'a str>,
    ski: Option<&'a str>,
    aki: Option<&'a str>,
    spki_sha256: Option<&'a str>,
    is_ca: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_bits: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    san: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    malformed: bool,
}

fn parsed_json(c: &CertInfo) -> CertJson<'_> {
    CertJson {
        sha256: &c.sha256,
        sha1: &c.sha1,
        subject: Some(&c.subject),
        issuer: Some(&c.issuer),
        serial: Some(&c.serial),
        not_before: Some(&c.not_before),
        not_after: Some(&c.not_after),
        ski: c.ski.as_deref(),
        aki: c.aki.as_deref(),
        spki_sha256: Some(&c.spki_sha256),
        is_ca: c.is_ca,
        key_type: Some(&c.key_type),
        key_bits: c.key_bits,
        san: &c.sans,
        malformed: false,
    }
}

/// A chain entry: the certificate's cached rendering, or the hashes of unparseable DER.
fn write_cert(buf: &mut Vec<u8>, p: &Presented) {
    match p {
        Presented::Parsed(c) => {
            let raw = c.rendered.get_or_init(|| {
                serde_json::value::to_raw_value(&parsed_json(c))
                    .unwrap_or_else(|_| RawValue::NULL.to_owned())
            });
            buf.extend_from_slice(raw.get().as_bytes());
        }
        Presented::Malformed { sha256, sha1 } => {
            let malformed = CertJson {
                sha256,
                sha1,
                subject: None,
                issuer: None,
                serial: None,
                not_before: None,
                not_after: None,
                ski: None,
                aki: None,
                spki_sha256: None,
                is_ca: false,
                key_type: None,
                key_bits: None,
                san: &[],
                malformed: true,
            };
            let _ = serde_json::to_writer(&mut *buf, &malformed);
        }
    }
}
fn leaf(chain: &[Presented]) -> Option<&CertInfo> {
    match chain.first() {
        Some(Presented::Parsed(c)) => Some(c),
        _ => None,
    }
}

/// The common name in an RFC 4514 style name (`CN=KubeEdge, O=…`), when there is one.
fn common_name(dn: &str) -> Option<&str> {
    dn.split(", ").find_map(|rdn| rdn.strip_prefix("CN="))
}

/// A leaf certificate as ECS's x509 field set (`tls.server.x509.*`, `tls.client.x509.*`).
fn write_x509(o: &mut Obj<'_>, l: &CertInfo) {
    let mut x = o.obj("x509");
    for (key, dn) in [("subject", &l.subject), ("issuer", &l.issuer)] {
        let mut name = x.obj(key);
        name.str("distinguished_name", dn);
        let cn: Vec<&str> = common_name(dn).into_iter().collect();
        name.array("common_name", &cn, |w, s| {
            let _ = serde_json::to_writer(w, s);
        });
        name.end();
    }
    x.upper_hex("serial_number", &l.serial);
    x.str("not_before", &l.not_before);
    x.str("not_after", &l.not_after);
    x.str("public_key_algorithm", &l.key_type);
    if let Some(bits) = l.key_bits {
        x.num("public_key_size", bits);
    }
    if !l.sans.is_empty() {
        x.array("alternative_names", &l.sans, |w, s| {
            let _ = serde_json::to_writer(w, s);
        });
    }
    x.end();
}

/// `{"sha256":…,"sha1":…}` of a chain's leaf, upper-case hex as ECS asks.
fn leaf_hash(o: &mut Obj<'_>, chain: &[Presented]) {
    let Some(first) = chain.first() else { return };
    let (sha256, sha1) = match first {
        Presented::Parsed(c) => (&c.sha256, &c.sha1),
        Presented::Malformed { sha256, sha1 } => (sha256, sha1),
    };
    let mut h = o.obj("hash");
    h.upper_hex("sha256", sha256);
    h.upper_hex("sha1", sha1);
    h.end();
}

fn write_record(buf: &mut Vec<u8>, c: &Connection, supported_ciphers: Option<&RawValue>) {
    let ch = c.client_hello.as_deref();
    let sh = c.server_hello.as_deref();
    let mut r = Obj::new(buf);
    r.time("@timestamp", c.start);
    let mut ecs = r.obj("ecs");
    ecs.str("version", super::ECS_VERSION);
    ecs.end();

    let mut event = r.obj("event");
    event.str("kind", "event");
    event.raw("category", b"[\"network\"]");
    event.raw("type", b"[\"connection\"]");
    event.str(
        "outcome",
        match c.outcome {
            Outcome::Established => "success",
            Outcome::Incomplete => "unknown",
            _ => "failure",
        },
    );
    event.time("start", c.start);
    event.time("end", c.end);
    // Nanoseconds, as ECS asks.
    event.num("duration", c.end.since(c.start).saturating_mul(1000));
    event.end();

    for (key, addr) in [("source", c.client), ("destination", c.server)] {
        let mut e = r.obj(key);
        e.ip("ip", addr.ip());
        e.num("port", addr.port());
        e.end();
    }

    let mut network = r.obj("network");
    network.str("transport", "tcp");
    network.str("protocol", "tls");
    network.str(
        "community_id",
        &super::community_id::tcp(c.client, c.server),
    );
    if let Some(id) = c.vlan {
        let mut vlan = network.obj("vlan");
        vlan.num_str("id", id);
        vlan.end();
    }
    network.end();

    let mut tls = r.obj("tls");
    tls.opt_str("version", c.version.and_then(|v| v.ecs_version()));
    tls.opt_str("version_protocol", c.version.map(|v| v.ecs_protocol()));
    if let Some(sh) = sh {
        match crate::tls::cipher_name(sh.cipher) {
            Some(name) => tls.str("cipher", name),
            None => tls.str("cipher", &format!("0x{:04X}", sh.cipher)),
        }
    }
    tls.bool("established", c.outcome == Outcome::Established);
    tls.bool("resumed", c.resumed);
    tls.opt_str("next_protocol", sh.and_then(|s| s.alpn.as_deref()));
    let mut client = tls.obj("client");
    client.opt_str("server_name", ch.and_then(|h| h.sni.as_deref()));
    client.opt_str("ja3", ch.map(|h| h.ja3_md5.as_str()));
    client.opt_str("ja4", ch.map(|h| h.ja4.as_str()));
    if let Some(list) = supported_ciphers {
        client.raw("supported_ciphers", list.get().as_bytes());
    }
    leaf_hash(&mut client, &c.client_chain);
    let client_leaf = leaf(&c.client_chain);
    client.opt_str("subject", client_leaf.map(|l| l.subject.as_str()));
    client.opt_str("issuer", client_leaf.map(|l| l.issuer.as_str()));
    if let Some(l) = client_leaf {
        write_x509(&mut client, l);
    }
    client.end();
    let mut server = tls.obj("server");
    leaf_hash(&mut server, &c.server_chain);
    if let Some(l) = leaf(&c.server_chain) {
        server.str("subject", &l.subject);
        server.str("issuer", &l.issuer);
        server.str("not_before", &l.not_before);
        server.str("not_after", &l.not_after);
        write_x509(&mut server, l);
    }
    server.end();
    tls.end();

    let mut tw = r.obj("trustwatch");
    tw.str("service", &c.service);
    tw.str("outcome", c.outcome.as_str());
    tw.str("evidence", &c.evidence);
    tw.str("evidence_code", c.evidence_code);
    match c.deciding_alert() {
        Some(a) => write_alert(tw.key("alert"), a),
        None => tw.raw("alert", b"null"),
    }
    tw.array("alerts", &c.alerts, write_alert);
    tw.array("server_chain", &c.server_chain, write_cert);
    tw.array("client_chain", &c.client_chain, write_cert);
    tw.str_or_null("ca_key_id", c.ca_key_id.as_deref());
    tw.str_or_null("client_ca_key_id", c.client_ca_key_id.as_deref());
    // Certificate verdicts at handshake time, per side that presented a parseable leaf, and the
    // codes of what is wrong (an expired server leaf makes an established handshake unhealthy).
    let mut certs = tw.obj("certificates");
    for (side, v) in [
        ("server", &c.certificates.server),
        ("client", &c.certificates.client),
    ] {
        if v.validity.is_some() {
            let json = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
            certs.raw(side, json.as_bytes());
        }
    }
    certs.end();
    let problems = c.certificate_problems();
    tw.array("certificate_problems", &problems, |w, p| {
        let _ = serde_json::to_writer(w, p);
    });
    tw.bool("healthy", c.healthy());
    tw.bool("client_auth_requested", c.client_auth_requested);
    tw.bool("resumed", c.resumed);
    tw.bool("hello_retry", c.hello_retry);
    if let Some(v) = c.version {
        tw.str("version_name", &v.name());
    }
    tw.opt_str("ja3_string", ch.map(|h| h.ja3.as_str()));
    pair(
        tw.key("app_records"),
        c.app_records.client,
        c.app_records.server,
    );
    if c.gap_bytes != PerSide::default() {
        pair(tw.key("gap_bytes"), c.gap_bytes.client, c.gap_bytes.server);
    }
    tw.end();
    r.end();
}

/// Cipher lists whose rendering is remembered: a fleet of edges offers very few distinct lists.
const CIPHER_LISTS: usize = 256;

/// Writes connection records as JSON lines.
pub struct ConnectionWriter {
    cipher_lists: LruCache<Vec<u16>, Box<RawValue>>,
    /// One record, reused.
    buf: Vec<u8>,
}

impl Default for ConnectionWriter {
    fn default() -> Self {
        ConnectionWriter {
            cipher_lists: LruCache::new(CIPHER_LISTS),
            buf: Vec::with_capacity(8192),
        }
    }
}

impl ConnectionWriter {
    /// Writes one connection as a JSON line.
    pub fn write(
        &mut self,
        w: &mut impl Write,
        c: &Connection,
        observer: Option<&[u8]>,
    ) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let ciphers = c
            .client_hello
            .as_deref()
            .map(|ch| self.cipher_list(&ch.ciphers));
        write_record(&mut buf, c, ciphers);
        super::add_observer(&mut buf, observer);
        buf.push(b'\n');
        let written = w.write_all(&buf);
        self.buf = buf;
        written
    }

    /// `["TLS_AES_128_GCM_SHA256", …]`, rendered once per distinct list.
    fn cipher_list(&mut self, ids: &[u16]) -> &RawValue {
        if !self.cipher_lists.contains_key(ids) {
            let names: Vec<CipherName> = ids.iter().copied().map(CipherName).collect();
            let raw = serde_json::value::to_raw_value(&names)
                .unwrap_or_else(|_| RawValue::NULL.to_owned());
            self.cipher_lists.insert(ids.to_vec(), raw);
        }
        self.cipher_lists.get(ids).map_or(RawValue::NULL, |raw| raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(s: &[u8]) -> bool {
        s.iter()
            .all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    }

    #[test]
    fn plain_check_agrees_with_the_byte_rule() {
        // Every byte value at every position of strings of 1 to 19 bytes, in a plain background.
        for len in 1..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(is_plain(&s), naive(&s), "{b:#x} at {at} of {len}");
                }
            }
        }
        assert!(is_plain(b""));
        assert!(is_plain(b"CN=KubeEdge, O=kubeedge"));
        assert!(!is_plain("CN=caf\u{e9}".as_bytes()));
    }
}
