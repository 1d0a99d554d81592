//! The common expectation model every source parser produces, and the value normalizers that make
//! the four tools' formats comparable with trustwatch's JSON Lines output.
//!
//! An [`Expect`] is one check derived from one third-party assertion; a [`Skip`] is an assertion
//! that is deliberately not checked, with the reason. Values are canonicalised on both sides
//! (expected at parse time, trustwatch's at evaluation time) by the same per-field function.

use std::fmt;
use std::net::IpAddr;

/// Which certificate chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Server,
    Client,
}

/// A property of one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertAttr {
    Sha1,
    Sha256,
    Subject,
    Issuer,
    Serial,
    NotBefore,
    NotAfter,
    IsCa,
    /// The CN values of the subject, lower-cased (Arkime's `subjectCN`).
    SubjectCnLower,
    IssuerCnLower,
    /// The O / OU values (Arkime's `subjectON`, `issuerOU`, ...).
    SubjectO,
    IssuerO,
    SubjectOu,
    IssuerOu,
    /// subjectAltName DNS names. Not in trustwatch's contract: checked only when reported.
    Sans,
}

/// A value trustwatch reports about a connection (or, for [`Field::Cert`], about a certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// The selected connection exists (value is always `true`).
    Present,
    /// `tls.version`, negotiated.
    Version,
    Cipher,
    Sni,
    Ja3,
    Ja4,
    /// `tls.next_protocol`: the ALPN protocol the server selected.
    Alpn,
    Established,
    Resumed,
    ClientAuthRequested,
    /// Name of the last plaintext alert (Zeek's `last_alert`); absent when none.
    LastAlert,
    /// Some plaintext fatal alert was seen (nDPI's "TLS Fatal Alert" risk).
    FatalAlert,
    /// The leaf certificate of a chain.
    Leaf(Side, CertAttr),
    /// SHA-256 of every certificate of a chain, wire order.
    Chain(Side),
    ChainLen(Side),
    /// A property of the certificate selected by a [`Selector::Cert`].
    Cert(CertAttr),
    /// The connection had a ClientHello (JA3 or JA4 reported) / a ServerHello (cipher or version).
    ClientHelloSeen,
    ServerHelloSeen,
    /// Not in trustwatch's output contract (may be added): checked when the output carries them.
    Ja3s,
    Ja3String,
    ClientAlpns,
    Vlan,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Leaf(s, a) => write!(f, "{s:?}Leaf.{a:?}"),
            Field::Chain(s) => write!(f, "{s:?}Chain.sha256[]"),
            Field::ChainLen(s) => write!(f, "{s:?}Chain.len"),
            Field::Cert(a) => write!(f, "Cert.{a:?}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A canonical value (see [`canon`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Str(String),
    Bool(bool),
    Num(i64),
    List(Vec<String>),
    Absent,
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::Str(s) => write!(f, "{s:?}"),
            Want::Bool(b) => write!(f, "{b}"),
            Want::Num(n) => write!(f, "{n}"),
            Want::List(l) => write!(f, "{l:?}"),
            Want::Absent => write!(f, "<absent>"),
        }
    }
}

/// How a predicate compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    /// Raw (un-canonicalised) substring, as a Suricata `content` match; `nocase` folds case.
    Contains {
        nocase: bool,
    },
    EndsWith {
        nocase: bool,
    },
    /// Numeric comparisons for `tls.cert_chain_len` and year comparisons.
    Lt,
    Gt,
    Ne,
    /// Exclusive range (Suricata `a<>b`): low < x < high, with `want` = Num(low) and the high bound here.
    Between(i64),
    /// A list contains `want` (canonicalised).
    ListContains,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pred {
    pub field: Field,
    pub op: Op,
    pub want: Want,
}

impl Pred {
    pub fn eq(field: Field, want: Want) -> Pred {
        Pred {
            field,
            op: Op::Eq,
            want,
        }
    }
}

impl fmt::Display for Pred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Op::Eq => write!(f, "{} == {}", self.field, self.want),
            op => write!(f, "{} {:?} {}", self.field, op, self.want),
        }
    }
}

/// An endpoint; port 0 never occurs in the corpus so `None` means "any port".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// Which record(s) or certificate a [`Check::Field`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// The connection(s) with these endpoints (client optional). `all` = every matching
    /// connection must satisfy the predicate (Zeek known_certs: several connections to one host);
    /// otherwise exactly one must match.
    Flow {
        client: Option<Endpoint>,
        server: Endpoint,
        all: bool,
    },
    /// Every connection record of the pcap (at least one must exist).
    All,
    /// The certificate with this SHA-256/SHA-1 (lower hex) in any chain of the pcap, optionally only
    /// in the chain of the given side of the given flow.
    Cert {
        sha256: Option<String>,
        sha1: Option<String>,
        within: Option<(Box<Selector>, Side)>,
    },
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Flow {
                client: Some(c),
                server,
                ..
            } => write!(f, "flow {c} -> {server}"),
            Selector::Flow {
                client: None,
                server,
                ..
            } => write!(f, "flows to {server}"),
            Selector::All => write!(f, "every record"),
            Selector::Cert { sha256, sha1, .. } => {
                write!(
                    f,
                    "cert {}",
                    sha256.as_deref().or(sha1.as_deref()).unwrap_or("?")
                )
            }
        }
    }
}

/// One conjunct of a [`Check::Count`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    Is(Pred),
    /// At least one holds (a Suricata cert keyword without `flow:` direction inspects both the
    /// server's and the client's certificate).
    AnyOf(Vec<Pred>),
    /// The record's endpoints.
    Flow {
        client: Endpoint,
        server: Endpoint,
    },
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Is(p) => write!(f, "{p}"),
            Cond::AnyOf(ps) => write!(
                f,
                "({})",
                ps.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" || ")
            ),
            Cond::Flow { client, server } => write!(f, "flow {client} -> {server}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The selected record/certificate satisfies `pred`.
    Field { sel: Selector, pred: Pred },
    /// Exactly `count` connection records satisfy all `conds` (Suricata's `filter` semantics).
    Count { conds: Vec<Cond>, count: usize },
    /// At least one record satisfies all `conds`.
    Exists { conds: Vec<Cond> },
    /// The total number of plaintext alerts (of this level/code when given) over all records.
    PlainAlerts {
        level: Option<u8>,
        code: Option<u8>,
        count: usize,
    },
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Field { sel, pred } => write!(f, "[{sel}] {pred}"),
            Check::Count { conds, count } => {
                let p: Vec<String> = conds.iter().map(|p| p.to_string()).collect();
                write!(
                    f,
                    "count(records where {}) == {count}",
                    if p.is_empty() {
                        "true".into()
                    } else {
                        p.join(" && ")
                    }
                )
            }
            Check::Exists { conds } => {
                write!(
                    f,
                    "some record where {}",
                    conds
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(" && ")
                )
            }
            Check::PlainAlerts { level, code, count } => {
                write!(
                    f,
                    "plaintext alerts (level {level:?}, code {code:?}) == {count}"
                )
            }
        }
    }
}

/// One check derived from a third-party assertion.
#[derive(Clone, Debug)]
pub struct Expect {
    pub pcap: String,
    pub source: &'static str,
    /// Test / baseline / flow index the assertion came from.
    pub origin: String,
    pub check: Check,
    /// Set when this check replaces the tool's value because trustwatch deliberately differs.
    pub disagreement: Option<String>,
}

/// An assertion that is not checked, and why.
#[derive(Clone, Debug)]
pub struct Skip {
    pub pcap: String,
    pub source: &'static str,
    pub what: String,
    pub reason: String,
}

/// What a parser produced for one expected/*.json file.
#[derive(Default, Debug)]
pub struct Parsed {
    pub expects: Vec<Expect>,
    pub skips: Vec<Skip>,
}

impl Parsed {
    pub fn skip(
        &mut self,
        pcap: &str,
        source: &'static str,
        what: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.skips.push(Skip {
            pcap: pcap.into(),
            source,
            what: what.into(),
            reason: reason.into(),
        });
    }
    pub fn expect(
        &mut self,
        pcap: &str,
        source: &'static str,
        origin: impl Into<String>,
        check: Check,
    ) {
        self.expects.push(Expect {
            pcap: pcap.into(),
            source,
            origin: origin.into(),
            check,
            disagreement: None,
        });
    }
    pub fn field(
        &mut self,
        pcap: &str,
        source: &'static str,
        origin: &str,
        sel: &Selector,
        field: Field,
        want: Want,
    ) {
        let want = canon(field, want);
        self.expect(
            pcap,
            source,
            origin,
            Check::Field {
                sel: sel.clone(),
                pred: Pred::eq(field, want),
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical forms
// ---------------------------------------------------------------------------------------------

/// Canonicalise a value for `field` (used for expected and reported values alike).
pub fn canon(field: Field, v: Want) -> Want {
    let attr = match field {
        Field::Leaf(_, a) | Field::Cert(a) => Some(a),
        _ => None,
    };
    match (field, attr, v) {
        (Field::Version, _, Want::Str(s)) => Want::Str(version(&s)),
        // trustwatch prints `network.vlan.id` as a string (ECS keyword).
        (Field::Vlan, _, Want::Str(s)) => s.trim().parse().map(Want::Num).unwrap_or(Want::Str(s)),
        (Field::Ja3 | Field::Ja3s, _, Want::Str(s)) => Want::Str(s.to_ascii_lowercase()),
        (Field::Chain(_), _, Want::List(l)) => Want::List(l.iter().map(|h| hexnorm(h)).collect()),
        (_, Some(CertAttr::Sha1 | CertAttr::Sha256), Want::Str(s)) => Want::Str(hexnorm(&s)),
        (_, Some(CertAttr::Serial), Want::Str(s)) => Want::Str(serial(&s)),
        (_, Some(CertAttr::Subject | CertAttr::Issuer), Want::Str(s)) => Want::Str(dn_canon(&s)),
        (_, Some(CertAttr::NotBefore | CertAttr::NotAfter), Want::Str(s)) => {
            Want::Str(time_canon(&s))
        }
        (_, _, v) => v,
    }
}

/// Lower-case hex without separators.
pub fn hexnorm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Serial: lower-case hex, no separators, no leading zeros (`00:97:E6` → `97e6`).
pub fn serial(s: &str) -> String {
    let h = hexnorm(s);
    let t = h.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

/// Version token of any source → trustwatch's `tls.version` ("1.2", "3.0" for SSLv3, "1.3" for
/// drafts: ECS has no draft notion; see the draft note in `eval`).
pub fn version(s: &str) -> String {
    let t = s.trim();
    let l = t.to_ascii_lowercase().replace([' ', '_'], "");
    let (base, draft) = match l.split_once("draft") {
        Some((b, d)) => (
            b.trim_end_matches('-').to_string(),
            Some(d.trim_start_matches('-').to_string()),
        ),
        None => (l.clone(), None),
    };
    let num = match base.as_str() {
        "sslv3" | "ssl3" | "ssl3.0" | "3.0" | "sslv3.0" => "3.0",
        "sslv2" | "2.0" => "2.0",
        "tlsv1" | "tls1" | "tlsv10" | "tlsv1.0" | "tls1.0" | "1.0" => "1.0",
        "tlsv11" | "tlsv1.1" | "tls1.1" | "1.1" => "1.1",
        "tlsv12" | "tlsv1.2" | "tls1.2" | "1.2" => "1.2",
        "tlsv13" | "tlsv1.3" | "tls1.3" | "1.3" => "1.3",
        _ => return t.to_string(),
    };
    match draft {
        Some(d) => format!("{num}-draft{d}"),
        None => num.to_string(),
    }
}

/// RFC 3339 UTC to the second: accepts "2019-01-17T16:43:24", "...Z", "2015-11-15 00:00:00",
/// fractional seconds, and epoch seconds ("1397045108.000000").
pub fn time_canon(s: &str) -> String {
    let t = s.trim();
    if !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        && !t[1..].contains('-')
        && let Ok(f) = t.parse::<f64>()
    {
        return epoch_to_rfc3339(f.floor() as i64);
    }
    let t = t.replacen(' ', "T", 1);
    let t = t.trim_end_matches('Z');
    let t = t.strip_suffix("+00:00").unwrap_or(t);
    let t = match t.split_once('.') {
        Some((a, _)) => a,
        None => t,
    };
    format!("{t}Z")
}

pub fn epoch_to_rfc3339(secs: i64) -> String {
    // Civil-from-days (H. Hinnant), valid for negative epochs (pre-1970 certificates).
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Attribute name aliases across OpenSSL/Zeek, Suricata, nDPI and x509-parser.
fn attr_canon(a: &str) -> String {
    let l = a.trim().to_ascii_lowercase();
    match l.as_str() {
        "e" | "email" | "emailaddress" | "1.2.840.113549.1.9.1" => "email".into(),
        "s" | "st" | "stateorprovincename" | "2.5.4.8" => "st".into(),
        "street" | "streetaddress" | "2.5.4.9" => "street".into(),
        "postalcode" | "2.5.4.17" => "postalcode".into(),
        "serialnumber" | "2.5.4.5" => "serialnumber".into(),
        "l" | "localityname" | "2.5.4.7" => "l".into(),
        "cn" | "commonname" | "2.5.4.3" => "cn".into(),
        "o" | "organizationname" | "2.5.4.10" => "o".into(),
        "ou" | "organizationalunitname" | "2.5.4.11" => "ou".into(),
        "c" | "countryname" | "2.5.4.6" => "c".into(),
        _ => l,
    }
}

/// Split a DN into (attribute, value) pairs in written order. A separator is a comma (optionally
/// followed by a space) that is not backslash-escaped and is followed by `attr=`; this keeps
/// unescaped commas inside values ("O=Qualys, Inc.") together, as Suricata and x509-parser print them.
pub fn dn_parts(s: &str) -> Vec<(String, String)> {
    let b: Vec<char> = s.chars().collect();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '\\' && i + 1 < b.len() {
            cur.push(b[i + 1]);
            i += 2;
            continue;
        }
        if c == ',' && starts_attr(&b[i + 1..]) {
            parts.push(std::mem::take(&mut cur));
            i += 1;
            while i < b.len() && b[i] == ' ' {
                i += 1;
            }
            continue;
        }
        cur.push(c);
        i += 1;
    }
    if !cur.is_empty() || !parts.is_empty() {
        parts.push(cur);
    }
    parts
        .into_iter()
        .map(|p| match p.split_once('=') {
            Some((a, v)) => (attr_canon(a), v.to_string()),
            None => (String::new(), p),
        })
        .collect()
}

fn starts_attr(rest: &[char]) -> bool {
    let mut i = 0;
    while i < rest.len() && rest[i] == ' ' {
        i += 1;
    }
    let start = i;
    while i < rest.len() && (rest[i].is_ascii_alphanumeric() || rest[i] == '.' || rest[i] == '-') {
        i += 1;
    }
    i > start && i < rest.len() && rest[i] == '=' && rest[start].is_ascii_alphanumeric()
}

/// Canonical DN text: `attr=value` joined by `|`, attribute names aliased, order kept.
pub fn dn_canon(s: &str) -> String {
    dn_parts(s)
        .into_iter()
        .map(|(a, v)| format!("{a}={v}"))
        .collect::<Vec<_>>()
        .join("|")
}

/// Zeek prints DNs in reverse (RFC 2253) order; turn one into Suricata/x509-parser order.
pub fn zeek_dn_to_rfc4514_order(s: &str) -> String {
    let mut p = dn_parts(s);
    p.reverse();
    p.into_iter()
        .map(|(a, v)| format!("{a}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Values of one attribute of a DN, in order.
pub fn dn_values(s: &str, attr: &str) -> Vec<String> {
    dn_parts(s)
        .into_iter()
        .filter(|(a, _)| a == attr)
        .map(|(_, v)| v)
        .collect()
}

/// Parse `ip:port`, `[v6]:port`, or a bare IP.
pub fn parse_endpoint(s: &str) -> Option<Endpoint> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(Endpoint { ip, port: None });
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:")?;
        return Some(Endpoint {
            ip: ip.parse().ok()?,
            port: Some(port.parse().ok()?),
        });
    }
    let (ip, port) = s.rsplit_once(':')?;
    Some(Endpoint {
        ip: ip.parse().ok()?,
        port: Some(port.parse().ok()?),
    })
}

pub fn endpoint(ip: &str, port: Option<u16>) -> Option<Endpoint> {
    Some(Endpoint {
        ip: ip.trim().parse().ok()?,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_split_keeps_unescaped_commas_in_values() {
        let p =
            dn_parts("C=US, ST=California, L=Redwood City, O=Qualys, Inc., OU=Production, CN=x");
        assert_eq!(p.len(), 6);
        assert_eq!(p[3], ("o".into(), "Qualys, Inc.".into()));
    }

    #[test]
    fn zeek_dn_reverses_and_unescapes() {
        let z = "CN=www.tobu-estate.com,O=TOBU RAILWAY Co.\\,Ltd.,L=Sumida-ku,C=JP";
        assert_eq!(
            zeek_dn_to_rfc4514_order(z),
            "c=JP, l=Sumida-ku, o=TOBU RAILWAY Co.,Ltd., cn=www.tobu-estate.com"
        );
        assert_eq!(
            dn_canon(&zeek_dn_to_rfc4514_order("CN=Bro")),
            dn_canon("CN=Bro")
        );
        assert_eq!(
            dn_canon(&zeek_dn_to_rfc4514_order("CN=a,emailAddress=x@y,C=US")),
            dn_canon("C=US, Email=x@y, CN=a")
        );
    }

    #[test]
    fn times() {
        assert_eq!(time_canon("1397045108.000000"), "2014-04-09T12:05:08Z");
        assert_eq!(time_canon("2015-02-12T18:07:27"), "2015-02-12T18:07:27Z");
        assert_eq!(time_canon("2015-11-15 00:00:00"), "2015-11-15T00:00:00Z");
        assert_eq!(time_canon("2019-01-17T16:43:24Z"), "2019-01-17T16:43:24Z");
        assert_eq!(epoch_to_rfc3339(-86_400), "1969-12-31T00:00:00Z");
        assert_eq!(epoch_to_rfc3339(1_483_228_799), "2016-12-31T23:59:59Z");
    }

    #[test]
    fn versions_and_serials() {
        assert_eq!(version("TLS 1.2"), "1.2");
        assert_eq!(version("TLSv1"), "1.0");
        assert_eq!(version("TLSv12"), "1.2");
        assert_eq!(version("SSLv3"), "3.0");
        assert_eq!(version("TLS 1.3 draft-28"), "1.3-draft28");
        assert_eq!(version("TLSv13-draft16"), "1.3-draft16");
        assert_eq!(serial("00:97:E6:47:09:8E:EA:C9:B4"), "97e647098eeac9b4");
        assert_eq!(serial("023A69"), "23a69");
        assert_eq!(hexnorm("3a:0b:3B"), "3a0b3b");
    }

    #[test]
    fn endpoints() {
        assert_eq!(parse_endpoint("[2a00::1]:443").unwrap().port, Some(443));
        assert_eq!(
            parse_endpoint("10.0.0.1:80").unwrap().to_string(),
            "10.0.0.1:80"
        );
    }
}
