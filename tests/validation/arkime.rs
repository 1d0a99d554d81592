//! Arkime capture regression sessions (`arkime-*.json`) → checks.
//!
//! A session selects the connection by source (client) / destination (server). `cert[]` is in
//! Arkime's storage order, so each entry selects the certificate by its SHA-1 within the flow's
//! server chain; `certCnt` is the chain length. CN values are lower-cased by Arkime.

use serde_json::Value;

use crate::model::*;

const SRC: &str = "arkime";

fn first_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

pub fn parse(pcap: &str, doc: &Value, out: &mut Parsed) {
    for (i, s) in doc
        .get("assertions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        session(pcap, i, s, out);
    }
}

fn session(pcap: &str, i: usize, s: &Value, out: &mut Parsed) {
    let origin = format!("session[{i}]");
    let ep = |k: &str| {
        let o = s.get(k)?;
        endpoint(
            o.get("ip")?.as_str()?,
            o.get("port")?.as_u64().and_then(|p| u16::try_from(p).ok()),
        )
    };
    let proto = s.get("ipProtocol").and_then(Value::as_u64);
    if proto == Some(17) {
        let what = format!("{origin} {}", strs(s.get("protocol")).join(","));
        let reason = if strs(s.get("protocol")).iter().any(|p| p == "quic") {
            "QUIC (UDP) is out of scope"
        } else {
            "UDP session (DNS), no TLS"
        };
        out.skip(pcap, SRC, what, reason);
        return;
    }
    let (Some(client), Some(server)) = (ep("source"), ep("destination")) else {
        out.skip(pcap, SRC, origin, "session without endpoints");
        return;
    };
    let sel = Selector::Flow {
        client: Some(client),
        server,
        all: false,
    };
    out.field(pcap, SRC, &origin, &sel, Field::Present, Want::Bool(true));
    if let Some(tls) = s.get("tls").and_then(Value::as_object) {
        for (k, v) in tls {
            let what = format!("{origin} tls.{k}");
            let val = first_str(Some(v));
            match k.as_str() {
                "version" => out.field(
                    pcap,
                    SRC,
                    &origin,
                    &sel,
                    Field::Version,
                    val.map(Want::Str).unwrap_or(Want::Absent),
                ),
                "cipher" => out.field(
                    pcap,
                    SRC,
                    &origin,
                    &sel,
                    Field::Cipher,
                    val.map(Want::Str).unwrap_or(Want::Absent),
                ),
                "ja3" => out.field(
                    pcap,
                    SRC,
                    &origin,
                    &sel,
                    Field::Ja3,
                    val.map(Want::Str).unwrap_or(Want::Absent),
                ),
                "ja4" => out.field(
                    pcap,
                    SRC,
                    &origin,
                    &sel,
                    Field::Ja4,
                    val.map(Want::Str).unwrap_or(Want::Absent),
                ),
                "ja3s" => out.field(
                    pcap,
                    SRC,
                    &origin,
                    &sel,
                    Field::Ja3s,
                    val.map(Want::Str).unwrap_or(Want::Absent),
                ),
                "ja3string" => out.field(
                    pcap,
                    SRC,
                    &origin,
                    &sel,
                    Field::Ja3String,
                    val.map(Want::Str).unwrap_or(Want::Absent),
                ),
                k if k.ends_with("Cnt") => {} // array sizes of the fields above
                "ja4_r" => out.skip(pcap, SRC, what, "raw (unhashed) JA4 is not reported"),
                "ja3sstring" => out.skip(pcap, SRC, what, "JA3S string is not reported"),
                "srcSessionId" | "dstSessionId" => {
                    out.skip(pcap, SRC, what, "TLS session ids are not reported")
                }
                _ => out.skip(pcap, SRC, what, "Arkime tls field not mapped"),
            }
        }
    }
    if let Some(host) = first_str(s.get("http").and_then(|h| h.get("host"))) {
        // Arkime stores the SNI as http.host.
        out.field(pcap, SRC, &origin, &sel, Field::Sni, Want::Str(host));
    }
    if let Some(n) = s.get("certCnt").and_then(Value::as_i64) {
        out.field(
            pcap,
            SRC,
            &origin,
            &sel,
            Field::ChainLen(Side::Server),
            Want::Num(n),
        );
    }
    if let Some(id) = s
        .get("dot1q")
        .and_then(|d| d.get("id"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_i64)
    {
        out.field(pcap, SRC, &origin, &sel, Field::Vlan, Want::Num(id));
    }
    for (j, c) in s
        .get("cert")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        cert(pcap, &format!("{origin} cert[{j}]"), &sel, c, out);
    }
    for k in ["network", "tcpflags", "segmentCnt", "protocol"] {
        if s.get(k).is_some() {
            out.skip(
                pcap,
                SRC,
                format!("{origin} {k}"),
                "packet/byte counters and protocol tags are not TLS handshake values",
            );
        }
    }
}

fn cert(pcap: &str, origin: &str, flow: &Selector, c: &Value, out: &mut Parsed) {
    let Some(hash) = c.get("hash").and_then(Value::as_str) else {
        out.skip(pcap, SRC, origin.to_string(), "cert without hash");
        return;
    };
    let sel = Selector::Cert {
        sha256: None,
        sha1: Some(hexnorm(hash)),
        within: Some((Box::new(flow.clone()), Side::Server)),
    };
    out.field(
        pcap,
        SRC,
        origin,
        &sel,
        Field::Cert(CertAttr::Sha1),
        Want::Str(hash.to_string()),
    );
    let Some(obj) = c.as_object() else { return };
    for (k, v) in obj {
        let what = format!("{origin} {k}");
        let list = |attr| Some((attr, Want::List(strs(Some(v)))));
        let mapped = match k.as_str() {
            "hash" => None,
            "serial" => Some((
                CertAttr::Serial,
                Want::Str(v.as_str().unwrap_or_default().to_string()),
            )),
            "notBefore" | "notAfter" => {
                let ms = v.as_i64().unwrap_or_default();
                let attr = if k == "notBefore" {
                    CertAttr::NotBefore
                } else {
                    CertAttr::NotAfter
                };
                Some((attr, Want::Str(epoch_to_rfc3339(ms.div_euclid(1000)))))
            }
            "subjectCN" => list(CertAttr::SubjectCnLower),
            "issuerCN" => list(CertAttr::IssuerCnLower),
            "subjectON" => list(CertAttr::SubjectO),
            "issuerON" => list(CertAttr::IssuerO),
            "subjectOU" => list(CertAttr::SubjectOu),
            "issuerOU" => list(CertAttr::IssuerOu),
            "alt" => list(CertAttr::Sans),
            "altCnt" => None,
            "remainingDays" | "remainingSeconds" | "validDays" | "validSeconds" => {
                out.skip(
                    pcap,
                    SRC,
                    what,
                    "relative to Arkime's test clock (validity itself is checked)",
                );
                None
            }
            "publicAlgorithm" | "curve" => {
                out.skip(pcap, SRC, what, "key algorithm/curve is not reported");
                None
            }
            _ => {
                out.skip(pcap, SRC, what, "Arkime cert field not mapped");
                None
            }
        };
        if let Some((attr, want)) = mapped {
            out.field(pcap, SRC, origin, &sel, Field::Cert(attr), want);
        }
    }
}
