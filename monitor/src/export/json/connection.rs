//! A connection record as one JSON object, nested keys in Elastic Common Schema form
//! (`source.ip` is `{"source":{"ip":…}}`). The field names are a contract (README, tests).
//!
//! A connection record is written by [`Obj`], a small writer whose keys are static identifiers
//! written as they are: this runs for every connection, and with derived serialization 15% of the
//! analyzer's instructions went to escaping strings, keys included. Values that may hold arbitrary
//! bytes (names, SNI, evidence) are escaped by serde_json; certificates are rendered once each.

use std::io::Write;
use std::net::IpAddr;

use hashlink::LruCache;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::base::{PerSide, Side, Timestamp};
use crate::cert::verdict::ChainVerdict;
use crate::cert::{CertInfo, Presented};
use crate::handshake::{Alert, Connection, Outcome};
use crate::tls::{ClientHello, alert};

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
        if is_plain(value.as_bytes()) {
            self.plain(key, value);
        } else {
            let _ = serde_json::to_writer(&mut *self.key(key), value);
        }
    }

    /// A string value that needs no escaping by how it is made: a fixed name, hex, base64, a
    /// fingerprint (not scanned; debug builds, and so every test and fuzz run, check it).
    fn plain(&mut self, key: &'static str, value: &str) {
        debug_assert!(
            is_plain(value.as_bytes()),
            "{key}: {value:?} needs escaping"
        );
        let buf = self.key(key);
        buf.push(b'"');
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'"');
    }

    fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    fn opt_plain(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.plain(key, v);
        }
    }

    /// A [`plain`](Obj::plain) value or `null`.
    fn plain_or_null(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(v) => self.plain(key, v),
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

    /// Fields rendered before (`"k":v,…` without braces), as if each were written here.
    fn fields(&mut self, rendered: &[u8]) {
        if rendered.is_empty() {
            return;
        }
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.extend_from_slice(rendered);
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
            o.plain("name", alert::name(code));
            o.plain(
                "level",
                match level {
                    1 => "warning",
                    2 => "fatal",
                    _ => "unknown",
                },
            );
            o.plain("from", from.as_str());
            o.bool("encrypted", false);
            o.time("@timestamp", ts);
        }
        Alert::Encrypted { from, ts } => {
            o.raw("code", b"null");
            o.raw("name", b"null");
            o.raw("level", b"null");
            o.plain("from", from.as_str());
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
            let raw = c.rendered.chain_entry(|| {
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

/// `{"sha256":…,"sha1":…}` of a leaf, upper-case hex as ECS asks.
fn leaf_hash(o: &mut Obj<'_>, sha256: &str, sha1: &str) {
    let mut h = o.obj("hash");
    h.upper_hex("sha256", sha256);
    h.upper_hex("sha1", sha1);
    h.end();
}

/// The ECS fields of a chain's leaf in `tls.client` or `tls.server`: its hashes, names (and for
/// the server its validity) and x509 field set. A parsed leaf's are rendered once per
/// certificate; a malformed one has only its hashes.
fn write_leaf(o: &mut Obj<'_>, side: Side, chain: &[Presented]) {
    match chain.first() {
        None => {}
        Some(Presented::Malformed { sha256, sha1 }) => leaf_hash(o, sha256, sha1),
        Some(Presented::Parsed(l)) => o.fields(l.rendered.leaf(side, || render_leaf(side, l))),
    }
}

fn render_leaf(side: Side, l: &CertInfo) -> Box<[u8]> {
    let mut buf = Vec::with_capacity(512);
    let mut o = Obj::new(&mut buf);
    leaf_hash(&mut o, &l.sha256, &l.sha1);
    o.str("subject", &l.subject);
    o.str("issuer", &l.issuer);
    if side == Side::Server {
        o.str("not_before", &l.not_before);
        o.str("not_after", &l.not_after);
    }
    write_x509(&mut o, l);
    o.end();
    // Without the braces: the fields go into the side's object.
    buf[1..buf.len() - 1].into()
}

/// Renderings the writer keeps across records: the record's parts that repeat.
struct Kept<'a> {
    /// The client's offered cipher suites.
    supported_ciphers: Option<&'a RawValue>,
    /// Each side's certificate verdict, when it presented a parseable leaf.
    verdicts: PerSide<Option<&'a [u8]>>,
}

fn write_record(buf: &mut Vec<u8>, c: &Connection, kept: &Kept<'_>) {
    let ch = c.client_hello.as_deref();
    let sh = c.server_hello.as_deref();
    let mut r = Obj::new(buf);
    r.time("@timestamp", c.start);
    let mut ecs = r.obj("ecs");
    ecs.plain("version", super::ECS_VERSION);
    ecs.end();

    let mut event = r.obj("event");
    event.plain("kind", "event");
    event.raw("category", b"[\"network\"]");
    event.raw("type", b"[\"connection\"]");
    event.plain(
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
    network.plain("transport", "tcp");
    network.plain("protocol", "tls");
    network.plain(
        "community_id",
        super::community_id::tcp(c.client, c.server).as_str(),
    );
    if let Some(id) = c.vlan {
        let mut vlan = network.obj("vlan");
        vlan.num_str("id", id);
        vlan.end();
    }
    network.end();

    let mut tls = r.obj("tls");
    tls.opt_plain("version", c.version.and_then(|v| v.ecs_version()));
    tls.opt_plain("version_protocol", c.version.map(|v| v.ecs_protocol()));
    if let Some(sh) = sh {
        match crate::tls::cipher_name(sh.cipher) {
            Some(name) => tls.plain("cipher", name),
            None => tls.plain("cipher", &format!("0x{:04X}", sh.cipher)),
        }
    }
    tls.bool("established", c.outcome == Outcome::Established);
    tls.bool("resumed", c.resumed);
    tls.opt_str("next_protocol", sh.and_then(|s| s.alpn.as_deref()));
    let mut client = tls.obj("client");
    client.opt_str("server_name", ch.and_then(|h| h.sni.as_deref()));
    client.opt_plain("ja3", ch.map(ClientHello::ja3_md5));
    client.opt_plain("ja4", ch.map(ClientHello::ja4));
    if let Some(list) = kept.supported_ciphers {
        client.raw("supported_ciphers", list.get().as_bytes());
    }
    write_leaf(&mut client, Side::Client, &c.client_chain);
    client.end();
    let mut server = tls.obj("server");
    write_leaf(&mut server, Side::Server, &c.server_chain);
    server.end();
    tls.end();

    let mut tw = r.obj("trustwatch");
    tw.str("service", &c.service);
    tw.plain("outcome", c.outcome.as_str());
    tw.str("evidence", &c.evidence);
    tw.plain("evidence_code", c.evidence_code);
    match c.deciding_alert() {
        Some(a) => write_alert(tw.key("alert"), a),
        None => tw.raw("alert", b"null"),
    }
    tw.array("alerts", &c.alerts, write_alert);
    tw.array("server_chain", &c.server_chain, write_cert);
    tw.array("client_chain", &c.client_chain, write_cert);
    tw.plain_or_null("ca_key_id", c.ca_key_id.as_deref());
    tw.plain_or_null("client_ca_key_id", c.client_ca_key_id.as_deref());
    // Certificate verdicts at handshake time, per side that presented a parseable leaf, and the
    // codes of what is wrong (an expired server leaf makes an established handshake unhealthy).
    let mut certs = tw.obj("certificates");
    for side in [Side::Server, Side::Client] {
        if let Some(json) = kept.verdicts[side] {
            certs.raw(side.as_str(), json);
        }
    }
    certs.end();
    let problems: Vec<&str> = c.certificate_problems().collect();
    tw.array("certificate_problems", &problems, |w, p| {
        let _ = serde_json::to_writer(w, p);
    });
    tw.bool("healthy", c.healthy());
    tw.bool("client_auth_requested", c.client_auth_requested);
    tw.bool("resumed", c.resumed);
    tw.bool("hello_retry", c.hello_retry);
    if let Some(v) = c.version {
        tw.plain("version_name", &v.name());
    }
    tw.opt_plain("ja3_string", ch.map(ClientHello::ja3));
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
    /// Every distinct certificate verdict met so far, rendered (a verdict is a few small enums:
    /// there are fewer than a hundred).
    verdicts: Vec<(ChainVerdict, Box<[u8]>)>,
}

impl Default for ConnectionWriter {
    fn default() -> Self {
        ConnectionWriter {
            cipher_lists: LruCache::new(CIPHER_LISTS),
            verdicts: Vec::new(),
        }
    }
}

impl ConnectionWriter {
    /// Appends one connection as a JSON line to `buf` (the stream's own buffer: a record is
    /// rendered where it is written from, not copied there).
    pub fn write(&mut self, buf: &mut Vec<u8>, c: &Connection, observer: Option<&[u8]>) {
        // Only the verdicts of sides with a parseable leaf are written.
        let verdict_at = c
            .certificates
            .map(|v| v.validity.is_some().then(|| self.verdict_index(v)));
        if let Some(ch) = c.client_hello.as_deref() {
            self.cipher_list(&ch.ciphers);
        }
        let kept = Kept {
            supported_ciphers: c.client_hello.as_deref().map(|ch| {
                self.cipher_lists
                    .peek(&ch.ciphers)
                    .map_or(RawValue::NULL, |raw| raw)
            }),
            verdicts: verdict_at.map(|at| at.map(|i| &*self.verdicts[i].1)),
        };
        write_record(buf, c, &kept);
        super::add_observer(buf, observer);
        buf.push(b'\n');
    }

    /// Renders `["TLS_AES_128_GCM_SHA256", …]` once per distinct list (and marks it used).
    fn cipher_list(&mut self, ids: &[u16]) {
        if self.cipher_lists.get(ids).is_none() {
            let names: Vec<CipherName> = ids.iter().copied().map(CipherName).collect();
            let raw = serde_json::value::to_raw_value(&names)
                .unwrap_or_else(|_| RawValue::NULL.to_owned());
            self.cipher_lists.insert(ids.to_vec(), raw);
        }
    }

    /// Where `v`'s rendering is in `verdicts`, rendered now if it is new.
    fn verdict_index(&mut self, v: ChainVerdict) -> usize {
        match self.verdicts.iter().position(|(known, _)| *known == v) {
            Some(i) => i,
            None => {
                let json = serde_json::to_vec(&v).unwrap_or_else(|_| b"null".to_vec());
                self.verdicts.push((v, json.into()));
                self.verdicts.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::verdict::{Anchor, ChainOrder, Validity};

    /// A self-signed certificate for `cn`, parsed.
    fn certificate(cn: &str) -> Presented {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec![format!("{cn}.example")]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, cn.to_string());
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2034, 1, 1);
        crate::cert::parse(p.self_signed(&key).unwrap().der())
    }

    fn connection(server_chain: Vec<Presented>, client_chain: Vec<Presented>) -> Connection {
        Connection {
            server_chain,
            client_chain,
            ..Connection::test_record(
                "10.0.0.7:40000".parse().unwrap(),
                "10.0.0.1:10000".parse().unwrap(),
                Timestamp::from_micros(1_700_000_000_000_000),
                Timestamp::from_micros(1_700_000_000_250_000),
            )
        }
    }

    fn record(w: &mut ConnectionWriter, c: &Connection) -> serde_json::Value {
        let mut out = Vec::new();
        w.write(&mut out, c, None);
        serde_json::from_slice(&out).unwrap()
    }

    /// A leaf's ECS fields are rendered once per certificate and side: the same certificate as
    /// the server's leaf carries its validity there, as the client's leaf it does not, and the
    /// renderings kept from a first record are what a second record gets.
    #[test]
    fn leaf_renderings_are_per_side_and_reused() {
        let cert = certificate("edge-1");
        let other = certificate("edge-2");
        let mut w = ConnectionWriter::default();
        let c = connection(vec![cert.clone()], vec![cert.clone()]);
        let first = record(&mut w, &c);
        for _ in 0..2 {
            let again = record(&mut w, &c);
            assert_eq!(again, first);
        }
        let (client, server) = (&first["tls"]["client"], &first["tls"]["server"]);
        let info = cert.info().unwrap();
        for side in [client, server] {
            assert_eq!(side["subject"], "CN=edge-1");
            assert_eq!(side["hash"]["sha256"], info.sha256.to_uppercase());
            assert_eq!(
                side["x509"]["subject"]["common_name"],
                serde_json::json!(["edge-1"])
            );
            assert_eq!(
                side["x509"]["alternative_names"],
                serde_json::json!(["edge-1.example"])
            );
        }
        assert_eq!(server["not_before"], "2024-01-01T00:00:00Z");
        assert_eq!(server["not_after"], "2034-01-01T00:00:00Z");
        assert!(client.get("not_before").is_none(), "{client}");
        // Another certificate on one side changes that side only.
        let mixed = record(&mut w, &connection(vec![cert], vec![other]));
        assert_eq!(mixed["tls"]["server"], first["tls"]["server"]);
        assert_eq!(mixed["tls"]["client"]["subject"], "CN=edge-2");
        // No chain: no leaf fields, and the object stays well-formed.
        let bare = record(&mut w, &connection(vec![], vec![]));
        assert_eq!(bare["tls"]["client"], serde_json::json!({}));
        assert_eq!(bare["tls"]["server"], serde_json::json!({}));
    }

    /// Verdicts are rendered once per distinct value; each side gets its own, and a side
    /// without a parseable leaf (no validity) gets none.
    #[test]
    fn verdict_renderings_follow_each_sides_value() {
        let mut w = ConnectionWriter::default();
        let verdict = |validity, order, anchor| ChainVerdict {
            validity: Some(validity),
            order: Some(order),
            anchor,
        };
        let cases = [
            (
                verdict(Validity::Valid, ChainOrder::Ordered, None),
                verdict(
                    Validity::Expired,
                    ChainOrder::Unlinked,
                    Some(Anchor::BadSignature),
                ),
            ),
            (
                verdict(
                    Validity::Expired,
                    ChainOrder::Unlinked,
                    Some(Anchor::BadSignature),
                ),
                verdict(Validity::Valid, ChainOrder::Ordered, None),
            ),
            (
                verdict(
                    Validity::NotYetValid,
                    ChainOrder::Misordered,
                    Some(Anchor::Verified),
                ),
                ChainVerdict::default(),
            ),
        ];
        for (server, client) in cases {
            let mut c = connection(vec![], vec![]);
            c.certificates = PerSide::new(client, server);
            let r = record(&mut w, &c);
            let certs = &r["trustwatch"]["certificates"];
            assert_eq!(certs["server"], serde_json::to_value(server).unwrap());
            if client.validity.is_some() {
                assert_eq!(certs["client"], serde_json::to_value(client).unwrap());
            } else {
                assert!(certs.get("client").is_none(), "{certs}");
            }
        }
        assert_eq!(w.verdicts.len(), 3, "one rendering per distinct verdict");
    }

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

    /// The values written without the escaping scan, and the alerts: a TLS 1.2 handshake the
    /// client rejected, with its hello's fingerprints and the CA key ids of both chains.
    #[test]
    fn plain_values_alerts_and_key_ids_are_written() {
        let mut hello = crate::tls::ClientHello {
            legacy_version: crate::tls::Version::TLS12,
            ciphers: vec![0xc02b, 0xc02f],
            extensions: vec![10, 11],
            groups: vec![29, 23],
            ec_point_formats: vec![0],
            ..Default::default()
        };
        crate::tls::fingerprint::fill(&mut hello);
        let at = Timestamp::from_micros(1_700_000_000_100_000);
        let c = Connection {
            client_hello: Some(Box::new(hello)),
            version: Some(crate::tls::Version::TLS12),
            outcome: Outcome::RejectedByClient,
            alerts: vec![
                Alert::Plain {
                    from: Side::Client,
                    level: 2,
                    code: 42,
                    ts: at,
                },
                Alert::Encrypted {
                    from: Side::Server,
                    ts: at,
                },
            ],
            ca_key_id: crate::base::KeyId::parse("0a1b"),
            ..connection(vec![], vec![])
        };
        let v = record(&mut ConnectionWriter::default(), &c);
        let tls = &v["tls"];
        assert_eq!(tls["version"], "1.2");
        assert_eq!(tls["version_protocol"], "tls");
        use md5::{Digest, Md5};
        let ja3_md5 = hex::encode(Md5::digest("771,49195-49199,10-11,29-23,0"));
        assert_eq!(tls["client"]["ja3"], ja3_md5.as_str());
        assert_eq!(
            v["trustwatch"]["ja3_string"],
            "771,49195-49199,10-11,29-23,0"
        );
        assert!(
            tls["client"]["ja4"]
                .as_str()
                .is_some_and(|j| j.starts_with("t12i0202")),
            "{v}"
        );
        let tw = &v["trustwatch"];
        assert_eq!(tw["outcome"], "rejected_by_client");
        assert_eq!(tw["version_name"], "TLS 1.2");
        assert_eq!(tw["ca_key_id"], "0a1b");
        assert_eq!(tw["client_ca_key_id"], serde_json::Value::Null);
        assert_eq!(
            tw["alerts"],
            serde_json::json!([
                {"code": 42, "name": "bad_certificate", "level": "fatal", "from": "client",
                 "encrypted": false, "@timestamp": "2023-11-14T22:13:20.100000Z"},
                {"code": null, "name": null, "level": null, "from": "server",
                 "encrypted": true, "@timestamp": "2023-11-14T22:13:20.100000Z"},
            ])
        );
        assert_eq!(tw["alert"]["code"], 42, "the deciding alert: {v}");
        assert_eq!(v["event"]["outcome"], "failure");
    }
}
