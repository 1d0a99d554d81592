//! Zeek btest baselines (`zeek-*.json`) → checks.
//!
//! ssl.log rows select the connection by its 4-tuple (orig = client); x509.log rows select a
//! certificate by its SHA-256 anywhere in the pcap's chains (Zeek DNs are reversed into RFC 4514
//! order first); files.log rows select the certificate in the flow's chain and check its hashes
//! and position; known_certs rows check the leaf of every connection to that host:port.
//! `derived_assertions` (event prints split out of multi-trace tests) are translated by hand below.

use serde_json::Value;

use crate::model::*;

const SRC: &str = "zeek";

fn s(r: &Value, k: &str) -> Option<String> {
    match r.get(k)? {
        Value::String(v) if v != "-" => Some(v.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn flow(r: &Value, all: bool) -> Option<Selector> {
    let port = |k| s(r, k).and_then(|p| p.parse::<u16>().ok());
    Some(Selector::Flow {
        client: Some(endpoint(&s(r, "id.orig_h")?, Some(port("id.orig_p")?))?),
        server: endpoint(&s(r, "id.resp_h")?, Some(port("id.resp_p")?))?,
        all,
    })
}

fn tf(v: &str) -> bool {
    v == "T"
}

pub fn parse(pcap: &str, doc: &Value, out: &mut Parsed) {
    for a in doc
        .get("assertions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let log = a.get("log").and_then(Value::as_str).unwrap_or("?");
        let test = a.get("test").and_then(Value::as_str).unwrap_or("?");
        let origin = format!("{} {log}", test.rsplit('/').next().unwrap_or(test));
        let Some(r) = a.get("record") else { continue };
        match log {
            "ssl" => ssl(pcap, &origin, r, out),
            "x509" => x509(pcap, &origin, r, out),
            "files" => files(pcap, &origin, r, out),
            "known_certs" => known_certs(pcap, &origin, r, out),
            "notice" => notice(pcap, &origin, r, out),
            "conn.log.cut" => conn(pcap, &origin, r, out),
            "quic" => out.skip(
                pcap,
                SRC,
                format!("{origin} row"),
                "QUIC (UDP) is out of scope",
            ),
            other => out.skip(
                pcap,
                SRC,
                format!("{origin} row"),
                format!("log {other} not mapped"),
            ),
        }
    }
    for d in doc
        .get("derived_assertions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        derived(pcap, d, out);
    }
}

fn ssl(pcap: &str, origin: &str, r: &Value, out: &mut Parsed) {
    let Some(sel) = flow(r, false) else {
        out.skip(pcap, SRC, format!("{origin} row"), "row without endpoints");
        return;
    };
    if pcap.starts_with("zeek-quicv2") || pcap.starts_with("zeek-merlinc2") {
        out.skip(
            pcap,
            SRC,
            format!("{origin} ssl row"),
            "TLS inside QUIC (UDP) is out of scope",
        );
        return;
    }
    let obj = r.as_object().cloned().unwrap_or_default();
    for (k, v) in &obj {
        let what = format!("{origin} {k}");
        let val = s(r, k);
        let want = |w: Option<String>| w.map(Want::Str).unwrap_or(Want::Absent);
        match k.as_str() {
            "ts" | "uid" | "id.orig_h" | "id.orig_p" | "id.resp_h" | "id.resp_p" => {}
            "version" => out.field(pcap, SRC, origin, &sel, Field::Version, want(val)),
            "cipher" => out.field(pcap, SRC, origin, &sel, Field::Cipher, want(val)),
            "server_name" => out.field(pcap, SRC, origin, &sel, Field::Sni, want(val)),
            "next_protocol" => out.field(pcap, SRC, origin, &sel, Field::Alpn, want(val)),
            "established" => out.field(
                pcap,
                SRC,
                origin,
                &sel,
                Field::Established,
                Want::Bool(val.as_deref().is_some_and(tf)),
            ),
            "resumed" => out.field(pcap, SRC, origin, &sel, Field::Resumed, Want::Bool(val.as_deref().is_some_and(tf))),
            "last_alert" => out.field(pcap, SRC, origin, &sel, Field::LastAlert, want(val)),
            "cert_chain_fps" | "client_cert_chain_fps" => {
                let side = if k == "cert_chain_fps" { Side::Server } else { Side::Client };
                let list: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                out.field(pcap, SRC, origin, &sel, Field::Chain(side), Want::List(list));
            }
            "subject" | "issuer" | "client_subject" | "client_issuer" => {
                let side = if k.starts_with("client_") { Side::Client } else { Side::Server };
                let attr = if k.ends_with("subject") {
                    CertAttr::Subject
                } else {
                    CertAttr::Issuer
                };
                match val {
                    Some(dn) => out.field(
                        pcap,
                        SRC,
                        origin,
                        &sel,
                        Field::Leaf(side, attr),
                        Want::Str(zeek_dn_to_rfc4514_order(&dn)),
                    ),
                    // "-": Zeek has no leaf on this side; the chain fps assertion covers emptiness.
                    None => out.skip(pcap, SRC, what, "unset in Zeek (no certificate); covered by the chain fps check"),
                }
            }
            "server_cert_sha1" => out.field(pcap, SRC, origin, &sel, Field::Leaf(Side::Server, CertAttr::Sha1), want(val)),
            "ssl_history" => out.skip(pcap, SRC, what, "Zeek's message-history string has no trustwatch equivalent"),
            "curve" | "server_key_share_group" | "client_key_share_groups" | "client_curves" | "point_formats" => {
                out.skip(pcap, SRC, what, "key-exchange group/curve is not reported")
            }
            "validation_status" | "sni_matches_cert" | "valid_ct_logs" | "valid_ct_operators" => out.skip(
                pcap,
                SRC,
                what,
                "trust-store/hostname validation needs Zeek's CA bundle and clock; trustwatch does not validate against a trust store",
            ),
            _ => out.skip(
                pcap,
                SRC,
                what,
                "ssl-log-ext/policy field (raw hello/key-exchange detail) is not reported",
            ),
        }
    }
}

fn x509(pcap: &str, origin: &str, r: &Value, out: &mut Parsed) {
    let Some(fp) = s(r, "fingerprint") else {
        out.skip(
            pcap,
            SRC,
            format!("{origin} row"),
            "x509 row without fingerprint",
        );
        return;
    };
    let sel = Selector::Cert {
        sha256: Some(hexnorm(&fp)),
        sha1: None,
        within: None,
    };
    let obj = r.as_object().cloned().unwrap_or_default();
    // The row exists ⇒ the certificate was presented.
    out.field(
        pcap,
        SRC,
        origin,
        &sel,
        Field::Cert(CertAttr::Sha256),
        Want::Str(fp.clone()),
    );
    for (k, _) in &obj {
        let what = format!("{origin} {k}");
        let val = s(r, k);
        match k.as_str() {
            "ts" | "fingerprint" => {}
            "certificate.serial" => out.field(
                pcap,
                SRC,
                origin,
                &sel,
                Field::Cert(CertAttr::Serial),
                val.map(Want::Str).unwrap_or(Want::Absent),
            ),
            "certificate.subject" | "certificate.issuer" => {
                let attr = if k.ends_with("subject") {
                    CertAttr::Subject
                } else {
                    CertAttr::Issuer
                };
                if let Some(dn) = val {
                    out.field(
                        pcap,
                        SRC,
                        origin,
                        &sel,
                        Field::Cert(attr),
                        Want::Str(zeek_dn_to_rfc4514_order(&dn)),
                    );
                }
            }
            "certificate.not_valid_before" | "certificate.not_valid_after" => {
                let attr = if k.ends_with("before") {
                    CertAttr::NotBefore
                } else {
                    CertAttr::NotAfter
                };
                if let Some(t) = val {
                    out.field(pcap, SRC, origin, &sel, Field::Cert(attr), Want::Str(t));
                }
            }
            "basic_constraints.ca" => {
                // Unset ("-") means no basicConstraints extension: not a CA.
                out.field(
                    pcap,
                    SRC,
                    origin,
                    &sel,
                    Field::Cert(CertAttr::IsCa),
                    Want::Bool(val.as_deref().is_some_and(tf)),
                )
            }
            "san.dns" => {
                let list: Vec<String> = r
                    .get(k)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                if list.is_empty() {
                    out.skip(pcap, SRC, what, "no DNS SANs asserted");
                } else {
                    out.field(
                        pcap,
                        SRC,
                        origin,
                        &sel,
                        Field::Cert(CertAttr::Sans),
                        Want::List(list),
                    );
                }
            }
            "host_cert" | "client_cert" => {
                // Zeek's host_cert = presented by the responder; checked via which chain holds it.
                let side = if k == "host_cert" {
                    Side::Server
                } else {
                    Side::Client
                };
                if val.as_deref().is_some_and(tf) {
                    let within = Selector::Cert {
                        sha256: Some(hexnorm(&fp)),
                        sha1: None,
                        within: Some((Box::new(Selector::All), side)),
                    };
                    out.field(
                        pcap,
                        SRC,
                        origin,
                        &within,
                        Field::Cert(CertAttr::Sha256),
                        Want::Str(fp.clone()),
                    );
                } else {
                    out.skip(
                        pcap,
                        SRC,
                        what,
                        "negative role flag (F) is implied by the T flag check",
                    );
                }
            }
            "cert" => out.skip(pcap, SRC, what, "base64 DER is not exported"),
            _ => out.skip(
                pcap,
                SRC,
                what,
                "key/signature algorithm detail is not reported",
            ),
        }
    }
}

fn files(pcap: &str, origin: &str, r: &Value, out: &mut Parsed) {
    let (Some(sel), Some(sha256)) = (flow(r, false), s(r, "sha256")) else {
        out.skip(
            pcap,
            SRC,
            format!("{origin} row"),
            "files row without flow/sha256",
        );
        return;
    };
    let side = if s(r, "is_orig").as_deref() == Some("T") {
        Side::Client
    } else {
        Side::Server
    };
    let cert = Selector::Cert {
        sha256: Some(hexnorm(&sha256)),
        sha1: None,
        within: Some((Box::new(sel.clone()), side)),
    };
    out.field(
        pcap,
        SRC,
        origin,
        &cert,
        Field::Cert(CertAttr::Sha256),
        Want::Str(sha256.clone()),
    );
    if let Some(sha1) = s(r, "sha1") {
        out.field(
            pcap,
            SRC,
            origin,
            &cert,
            Field::Cert(CertAttr::Sha1),
            Want::Str(sha1),
        );
    }
    if s(r, "mime_type").as_deref() == Some("application/x-x509-user-cert") {
        // The user cert is the leaf.
        out.field(
            pcap,
            SRC,
            origin,
            &sel,
            Field::Leaf(side, CertAttr::Sha256),
            Want::Str(sha256),
        );
    }
    for k in [
        "md5",
        "seen_bytes",
        "fuid",
        "mime_type",
        "analyzers",
        "depth",
        "duration",
        "timedout",
        "missing_bytes",
        "overflow_bytes",
        "total_bytes",
        "source",
        "local_orig",
        "filename",
        "parent_fuid",
    ] {
        if r.get(k).is_some() && k != "mime_type" {
            out.skip(
                pcap,
                SRC,
                format!("{origin} {k}"),
                "Zeek file-analysis bookkeeping (MD5/byte counts/ids) is not reported",
            );
        }
    }
}

fn known_certs(pcap: &str, origin: &str, r: &Value, out: &mut Parsed) {
    let (Some(host), Some(port)) = (s(r, "host"), s(r, "port_num").and_then(|p| p.parse().ok()))
    else {
        return;
    };
    let Some(server) = endpoint(&host, Some(port)) else {
        return;
    };
    let sel = Selector::Flow {
        client: None,
        server,
        all: true,
    };
    if let Some(v) = s(r, "subject") {
        out.field(
            pcap,
            SRC,
            origin,
            &sel,
            Field::Leaf(Side::Server, CertAttr::Subject),
            Want::Str(zeek_dn_to_rfc4514_order(&v)),
        );
    }
    if let Some(v) = s(r, "issuer_subject") {
        out.field(
            pcap,
            SRC,
            origin,
            &sel,
            Field::Leaf(Side::Server, CertAttr::Issuer),
            Want::Str(zeek_dn_to_rfc4514_order(&v)),
        );
    }
    if let Some(v) = s(r, "serial") {
        out.field(
            pcap,
            SRC,
            origin,
            &sel,
            Field::Leaf(Side::Server, CertAttr::Serial),
            Want::Str(v),
        );
    }
}

/// Certificate_Expired / Expires_Soon notices: the message names the leaf subject and its notAfter.
fn notice(pcap: &str, origin: &str, r: &Value, out: &mut Parsed) {
    let (Some(sel), Some(msg)) = (flow(r, false), s(r, "msg")) else {
        return;
    };
    let what = format!("{origin} {}", s(r, "note").unwrap_or_default());
    // "Certificate <dn> expired at 2014-03-04-23:59:59.000000000" / "... is going to expire at ...".
    let Some(rest) = msg.strip_prefix("Certificate ") else {
        out.skip(pcap, SRC, what, "notice message not parsed");
        return;
    };
    let (dn, at) = match rest
        .split_once(" expired at ")
        .or_else(|| rest.split_once(" is going to expire at "))
    {
        Some(x) => x,
        None => {
            out.skip(pcap, SRC, what, "notice message not parsed");
            return;
        }
    };
    // Zeek's log escaping doubles the backslash of an escaped comma.
    let dn = dn.replace("\\\\", "\\");
    out.field(
        pcap,
        SRC,
        origin,
        &sel,
        Field::Leaf(Side::Server, CertAttr::Subject),
        Want::Str(zeek_dn_to_rfc4514_order(&dn)),
    );
    // 2014-03-04-23:59:59.000000000
    if let Some((date, time)) = at.rsplit_once('-').filter(|(d, _)| d.len() == 10) {
        out.field(
            pcap,
            SRC,
            origin,
            &sel,
            Field::Leaf(Side::Server, CertAttr::NotAfter),
            Want::Str(format!("{date}T{time}")),
        );
    }
    out.skip(
        pcap,
        SRC,
        format!("{what} (expiry relative to capture time)"),
        "the notice decision uses the capture clock; trustwatch reports validity, not expiry notices",
    );
}

fn conn(pcap: &str, origin: &str, r: &Value, out: &mut Parsed) {
    if s(r, "service").is_some_and(|v| v.contains("quic")) {
        out.skip(
            pcap,
            SRC,
            format!("{origin} row"),
            "QUIC (UDP) is out of scope",
        );
        return;
    }
    match flow(r, false) {
        Some(sel) => {
            out.field(pcap, SRC, origin, &sel, Field::Present, Want::Bool(true));
            if r.get("pppoe_session_id").is_some() {
                out.skip(
                    pcap,
                    SRC,
                    format!("{origin} pppoe_session_id"),
                    "encapsulation ids are not reported",
                );
            }
        }
        None => out.skip(
            pcap,
            SRC,
            format!("{origin} row"),
            "conn row without endpoints",
        ),
    }
}

fn derived(pcap: &str, d: &Value, out: &mut Parsed) {
    let test = d.get("test").and_then(Value::as_str).unwrap_or("?");
    let t = test.rsplit('/').next().unwrap_or(test);
    let lines: Vec<&str> = d
        .get("lines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let origin = format!("{t} (derived)");
    match t {
        // "Client hello, <orig>, <resp>, <client_version>": a connection between these hosts had a ClientHello.
        "dpd.test" => {
            for l in lines {
                let f: Vec<&str> = l.split(", ").collect();
                if f.len() == 4
                    && f[0] == "Client hello"
                    && let (Some(c), Some(srv)) = (endpoint(f[1], None), endpoint(f[2], None))
                {
                    let sel = Selector::Flow {
                        client: Some(c),
                        server: srv,
                        all: false,
                    };
                    out.field(pcap, SRC, &origin, &sel, Field::Present, Want::Bool(true));
                    out.skip(
                        pcap,
                        SRC,
                        format!("{origin} client_version {}", f[3]),
                        "legacy ClientHello.client_version is not reported",
                    );
                }
            }
        }
        // ssl_certificate_request fired ⇒ the server sent a CertificateRequest.
        "certificate_request.zeek" => {
            // The pcap holds one TLS connection.
            out.field(
                pcap,
                SRC,
                &origin,
                &Selector::All,
                Field::ClientAuthRequested,
                Want::Bool(true),
            );
            out.skip(
                pcap,
                SRC,
                format!("{origin} signature/certificate types"),
                "signature_algorithms and certificate_types lists are not reported",
            );
        }
        "session-ticket.test" => out.skip(
            pcap,
            SRC,
            origin,
            "NewSessionTicket lifetime/ticket bytes are not reported",
        ),
        _ => out.skip(pcap, SRC, origin, "derived event print not mapped"),
    }
}
