//! JSON Lines output: one object per connection, nested keys in Elastic Common Schema form
//! (`source.ip` is `{"source":{"ip":…}}`). The field names are a contract (README, tests).

use std::io::{self, Write};

use hashlink::LruCache;
use serde::Serialize;
use serde_json::value::RawValue;

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

#[derive(Serialize)]
struct Endpoint {
    ip: String,
    port: u16,
}

#[derive(Serialize)]
struct Event {
    kind: &'static str,
    category: [&'static str; 1],
    #[serde(rename = "type")]
    kind_type: [&'static str; 1],
    outcome: &'static str,
    start: String,
    end: String,
    /// Nanoseconds, as ECS asks.
    duration: i64,
}

#[derive(Serialize)]
struct Vlan {
    id: String,
}

#[derive(Serialize)]
struct Network {
    transport: &'static str,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<Vlan>,
}

/// ECS hashes are upper-case hex.
#[derive(Serialize)]
struct Hash {
    sha256: String,
    sha1: String,
}

#[derive(Serialize)]
struct TlsClient<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    server_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ja3: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ja4: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supported_ciphers: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<Hash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
}

#[derive(Serialize)]
struct TlsServer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<Hash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_after: Option<&'a str>,
}

#[derive(Serialize)]
struct Tls<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_protocol: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cipher: Option<CipherName>,
    established: bool,
    resumed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_protocol: Option<&'a str>,
    client: TlsClient<'a>,
    server: TlsServer<'a>,
}

#[derive(Serialize)]
struct AlertJson {
    code: Option<u8>,
    name: Option<&'static str>,
    level: Option<&'static str>,
    from: &'static str,
    encrypted: bool,
    #[serde(rename = "@timestamp")]
    ts: String,
}

impl From<&Alert> for AlertJson {
    fn from(a: &Alert) -> Self {
        match *a {
            Alert::Plain {
                from,
                level,
                code,
                ts,
            } => AlertJson {
                code: Some(code),
                name: Some(alert::name(code)),
                level: Some(match level {
                    1 => "warning",
                    2 => "fatal",
                    _ => "unknown",
                }),
                from: from.as_str(),
                encrypted: false,
                ts: ts.rfc3339(),
            },
            Alert::Encrypted { from, ts } => AlertJson {
                code: None,
                name: None,
                level: None,
                from: from.as_str(),
                encrypted: true,
                ts: ts.rfc3339(),
            },
        }
    }
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

/// A chain entry: the certificate's cached rendering, or the hashes of unparseable DER.
enum CertOut<'a> {
    Rendered(&'a RawValue),
    Malformed(CertJson<'a>),
}

impl Serialize for CertOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CertOut::Rendered(raw) => raw.serialize(s),
            CertOut::Malformed(c) => c.serialize(s),
        }
    }
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

fn cert_json(p: &Presented) -> CertOut<'_> {
    match p {
        Presented::Parsed(c) => CertOut::Rendered(c.rendered.get_or_init(|| {
            serde_json::value::to_raw_value(&parsed_json(c))
                .unwrap_or_else(|_| RawValue::NULL.to_owned())
        })),
        Presented::Malformed { sha256, sha1 } => CertOut::Malformed(CertJson {
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
        }),
    }
}

#[derive(Serialize)]
struct Trustwatch<'a> {
    service: &'a str,
    outcome: Outcome,
    evidence: &'a str,
    alert: Option<AlertJson>,
    alerts: Vec<AlertJson>,
    server_chain: Vec<CertOut<'a>>,
    client_chain: Vec<CertOut<'a>>,
    ca_key_id: Option<&'a str>,
    client_ca_key_id: Option<&'a str>,
    client_auth_requested: bool,
    resumed: bool,
    hello_retry: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ja3_string: Option<&'a str>,
    app_records: [u32; 2],
    #[serde(skip_serializing_if = "is_zero_pair")]
    gap_bytes: [u64; 2],
}

fn is_zero_pair(p: &[u64; 2]) -> bool {
    p[0] == 0 && p[1] == 0
}

#[derive(Serialize)]
struct Record<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    event: Event,
    source: Endpoint,
    destination: Endpoint,
    network: Network,
    tls: Tls<'a>,
    trustwatch: Trustwatch<'a>,
}

fn leaf(chain: &[Presented]) -> Option<&CertInfo> {
    match chain.first() {
        Some(Presented::Parsed(c)) => Some(c),
        _ => None,
    }
}

fn leaf_hash(chain: &[Presented]) -> Option<Hash> {
    let (sha256, sha1) = match chain.first()? {
        Presented::Parsed(c) => (&c.sha256, &c.sha1),
        Presented::Malformed { sha256, sha1 } => (sha256, sha1),
    };
    Some(Hash {
        sha256: sha256.to_ascii_uppercase(),
        sha1: sha1.to_ascii_uppercase(),
    })
}

fn record<'a>(c: &'a Connection, supported_ciphers: Option<&'a RawValue>) -> Record<'a> {
    let ch = c.client_hello.as_deref();
    let sh = c.server_hello.as_deref();
    let server_leaf = leaf(&c.server_chain);
    let client_leaf = leaf(&c.client_chain);
    let established = c.outcome == Outcome::Established;
    Record {
        timestamp: c.start.rfc3339(),
        event: Event {
            kind: "event",
            category: ["network"],
            kind_type: ["connection"],
            outcome: match c.outcome {
                Outcome::Established => "success",
                Outcome::Incomplete => "unknown",
                _ => "failure",
            },
            start: c.start.rfc3339(),
            end: c.end.rfc3339(),
            duration: c.end.since(c.start).saturating_mul(1000),
        },
        source: Endpoint {
            ip: c.client.ip().to_string(),
            port: c.client.port(),
        },
        destination: Endpoint {
            ip: c.server.ip().to_string(),
            port: c.server.port(),
        },
        network: Network {
            transport: "tcp",
            protocol: "tls",
            vlan: c.vlan.map(|id| Vlan { id: id.to_string() }),
        },
        tls: Tls {
            version: c.version.and_then(|v| v.ecs_version()),
            version_protocol: c.version.map(|v| v.ecs_protocol()),
            cipher: sh.map(|s| CipherName(s.cipher)),
            established,
            resumed: c.resumed,
            next_protocol: sh.and_then(|s| s.alpn.as_deref()),
            client: TlsClient {
                server_name: ch.and_then(|h| h.sni.as_deref()),
                ja3: ch.map(|h| h.ja3_md5.as_str()),
                ja4: ch.map(|h| h.ja4.as_str()),
                supported_ciphers,
                hash: leaf_hash(&c.client_chain),
                subject: client_leaf.map(|l| l.subject.as_str()),
                issuer: client_leaf.map(|l| l.issuer.as_str()),
            },
            server: TlsServer {
                hash: leaf_hash(&c.server_chain),
                subject: server_leaf.map(|l| l.subject.as_str()),
                issuer: server_leaf.map(|l| l.issuer.as_str()),
                not_before: server_leaf.map(|l| l.not_before.as_str()),
                not_after: server_leaf.map(|l| l.not_after.as_str()),
            },
        },
        trustwatch: Trustwatch {
            service: &c.service,
            outcome: c.outcome,
            evidence: &c.evidence,
            alert: c.deciding_alert().map(AlertJson::from),
            alerts: c.alerts.iter().map(AlertJson::from).collect(),
            server_chain: c.server_chain.iter().map(cert_json).collect(),
            client_chain: c.client_chain.iter().map(cert_json).collect(),
            ca_key_id: c.ca_key_id.as_deref(),
            client_ca_key_id: c.client_ca_key_id.as_deref(),
            client_auth_requested: c.client_auth_requested,
            resumed: c.resumed,
            hello_retry: c.hello_retry,
            version_name: c.version.map(|v| v.name()),
            ja3_string: ch.map(|h| h.ja3.as_str()),
            app_records: [c.app_records.0, c.app_records.1],
            gap_bytes: [c.gap_bytes.0, c.gap_bytes.1],
        },
    }
}

/// Cipher lists whose rendering is remembered: a fleet of edges offers very few distinct lists.
const CIPHER_LISTS: usize = 256;

/// Writes connection records as JSON lines.
pub struct ConnectionWriter {
    cipher_lists: LruCache<Vec<u16>, Box<RawValue>>,
}

impl Default for ConnectionWriter {
    fn default() -> Self {
        ConnectionWriter {
            cipher_lists: LruCache::new(CIPHER_LISTS),
        }
    }
}

impl ConnectionWriter {
    /// Writes one connection as a JSON line.
    pub fn write(&mut self, w: &mut impl Write, c: &Connection) -> io::Result<()> {
        let ciphers = c
            .client_hello
            .as_deref()
            .map(|ch| self.cipher_list(&ch.ciphers));
        serde_json::to_writer(&mut *w, &record(c, ciphers))?;
        w.write_all(b"\n")
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

/// Writes any serializable event (detector events) as a JSON line.
pub fn write_line(w: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *w, value)?;
    w.write_all(b"\n")
}
