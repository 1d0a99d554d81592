//! nDPI ndpiReader flow lines (`ndpi-*.json`) → checks.
//!
//! A line selects the connection by client/server endpoints. Issuer/Subject/Certificate SHA-1/
//! Validity are of the server leaf; `Risk` "TLS Fatal Alert" ⇔ a plaintext fatal alert;
//! "Missing SNI TLS Extn" ⇒ no SNI.

use serde_json::Value;

use crate::model::*;

const SRC: &str = "ndpi";

pub fn parse(pcap: &str, doc: &Value, out: &mut Parsed) {
    for a in doc
        .get("assertions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        line(pcap, a, out);
    }
}

fn line(pcap: &str, a: &Value, out: &mut Parsed) {
    let idx = a.get("flow_index").and_then(Value::as_u64).unwrap_or(0);
    let origin = format!("flow {idx}");
    let g = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
    if g("l4").as_deref() == Some("UDP") {
        out.skip(pcap, SRC, origin, "QUIC (UDP) is out of scope");
        return;
    }
    let (Some(client), Some(server)) = (
        g("client").and_then(|c| parse_endpoint(&c)),
        g("server").and_then(|c| parse_endpoint(&c)),
    ) else {
        out.skip(pcap, SRC, origin, "line without endpoints");
        return;
    };
    let has_tls_meta = ["version_token", "JA3C", "JA4", "Hostname/SNI", "Cipher"]
        .iter()
        .any(|k| a.get(*k).is_some());
    if !has_tls_meta {
        // Only a protocol guess (port / mid-stream heuristics); nothing about a handshake.
        out.skip(
            pcap,
            SRC,
            format!(
                "{origin} ({client} -> {server}, {})",
                g("proto").unwrap_or_default()
            ),
            "nDPI reports no handshake metadata for this flow (no hello in the capture)",
        );
        return;
    }
    let sel = Selector::Flow {
        client: Some(client),
        server,
        all: false,
    };
    let Some(obj) = a.as_object() else { return };
    let risk = g("Risk").unwrap_or_default();
    let mut fields: Vec<(Field, Want)> = Vec::new();
    for (k, v) in obj {
        let what = format!("{origin} {k}");
        let val = v.as_str().unwrap_or_default().to_string();
        let leaf = |attr| Field::Leaf(Side::Server, attr);
        match k.as_str() {
            "flow_index" | "l4" | "client" | "server" | "direction" | "encryption" => {}
            "proto" => out.skip(pcap, SRC, what, "nDPI application classification"),
            "version_token" => fields.push((Field::Version, Want::Str(val))),
            "Hostname/SNI" => fields.push((Field::Sni, Want::Str(val))),
            "JA3C" => fields.push((Field::Ja3, Want::Str(val))),
            "JA4" => fields.push((Field::Ja4, Want::Str(val))),
            "JA3S" => fields.push((Field::Ja3s, Want::Str(val))),
            "Cipher" => fields.push((Field::Cipher, Want::Str(val))),
            "Issuer" => fields.push((leaf(CertAttr::Issuer), Want::Str(val))),
            "Subject" => fields.push((leaf(CertAttr::Subject), Want::Str(val))),
            "Certificate SHA-1" => fields.push((leaf(CertAttr::Sha1), Want::Str(val))),
            "Validity" => match val.split_once(" - ") {
                Some((nb, na)) => {
                    fields.push((leaf(CertAttr::NotBefore), Want::Str(nb.into())));
                    fields.push((leaf(CertAttr::NotAfter), Want::Str(na.into())));
                }
                None => out.skip(pcap, SRC, what, "unparsed validity"),
            },
            "ServerNames" => fields.push((
                leaf(CertAttr::Sans),
                Want::List(val.split(',').map(str::to_string).collect()),
            )),
            "(Advertised) ALPNs" => fields.push((
                Field::ClientAlpns,
                Want::List(val.split(';').map(str::to_string).collect()),
            )),
            "VLAN" => fields.push((Field::Vlan, Want::Num(val.parse().unwrap_or(-1)))),
            "Risk" => {
                for r in risk.split("**").map(str::trim).filter(|r| !r.is_empty()) {
                    match r {
                        "TLS Fatal Alert" => {}
                        "Missing SNI TLS Extn" => fields.push((Field::Sni, Want::Absent)),
                        _ => out.skip(
                            pcap,
                            SRC,
                            format!("{origin} Risk {r}"),
                            "nDPI policy risk (hostname/ALPN/port/blocklist heuristics), not a handshake value",
                        ),
                    }
                }
            }
            "Risk Info" => out.skip(pcap, SRC, what, "free-text detail of the risks above"),
            _ => out.skip(pcap, SRC, what, "nDPI field not mapped"),
        }
    }
    // The fatal-alert risk is asserted both ways for flows with handshake metadata.
    fields.push((
        Field::FatalAlert,
        Want::Bool(risk.contains("TLS Fatal Alert")),
    ));
    for (f, w) in fields {
        out.field(pcap, SRC, &origin, &sel, f, w);
    }
}
