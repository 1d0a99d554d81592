//! suricata-verify expectations (`sv-*.json`) → checks.
//!
//! A `filter` check ("exactly `count` eve records match all keys") becomes a [`Check::Count`] over
//! trustwatch's connection records. eve `tls` keys map onto trustwatch fields; keys trustwatch does
//! not report are dropped from the conjunction and listed as skipped. `alert` checks are translated
//! from the rule text: the TLS sticky buffers/keywords become predicates (an alert with sid N fires
//! once per matching flow), rules relying on engine features (flowbits, lua, tls.random, raw cert
//! DER, IPS verdicts) are skipped with the reason.

use serde_json::Value;

use crate::model::*;

const SRC: &str = "suricata";

pub fn parse(pcap: &str, doc: &Value, out: &mut Parsed) {
    let Some(asserts) = doc.get("assertions").and_then(Value::as_array) else {
        out.skip(pcap, SRC, "file", "no assertions array");
        return;
    };
    for (i, a) in asserts.iter().enumerate() {
        let test = a.get("test").and_then(Value::as_str).unwrap_or("?");
        let short = test
            .trim_end_matches("/test.yaml")
            .rsplit('/')
            .next()
            .unwrap_or(test);
        let origin = format!("{short}#{i}");
        match a.get("type").and_then(Value::as_str) {
            Some("filter") => filter(pcap, &origin, a, out),
            Some("shell") => out.skip(
                pcap,
                SRC,
                format!("{origin} shell"),
                "greps Suricata's own stdout/filestore, not a TLS value",
            ),
            Some("stats") => stats(pcap, &origin, a, out),
            other => out.skip(
                pcap,
                SRC,
                format!("{origin} {other:?}"),
                "unknown check type",
            ),
        }
    }
}

fn stats(pcap: &str, origin: &str, a: &Value, out: &mut Parsed) {
    let Some(st) = a.get("stats").and_then(Value::as_object) else {
        return;
    };
    for (k, v) in st {
        match (k.as_str(), v.as_u64()) {
            // One TLS app-layer flow per connection that carried TLS.
            ("app_layer.flow.tls", Some(n)) => out.expect(
                pcap,
                SRC,
                format!("{origin} stats {k}"),
                Check::Count {
                    conds: vec![],
                    count: n as usize,
                },
            ),
            _ => out.skip(
                pcap,
                SRC,
                format!("{origin} stats {k}"),
                "Suricata engine counter (transactions), no trustwatch equivalent",
            ),
        }
    }
}

fn filter(pcap: &str, origin: &str, a: &Value, out: &mut Parsed) {
    let count = a.get("count").and_then(Value::as_u64).unwrap_or(0) as usize;
    let Some(m) = a.get("match").and_then(Value::as_object) else {
        return;
    };
    let event = m.get("event_type").and_then(Value::as_str);
    if m.keys().any(|k| k.starts_with("quic.")) || event == Some("quic") {
        // QUIC/UDP flows are out of trustwatch's scope (it monitors TLS over TCP).
        out.skip(
            pcap,
            SRC,
            format!("{origin} {m:?}"),
            "QUIC (UDP) is out of scope",
        );
        return;
    }
    // Version-gated checks (`check_requires`) are kept: they describe what a current Suricata reports.
    match event {
        Some("tls") => tls_filter(pcap, origin, m, count, out),
        Some("alert") | None if m.contains_key("alert.signature_id") => {
            alert_filter(pcap, origin, a, m, count, out)
        }
        _ => out.skip(
            pcap,
            SRC,
            format!("{origin} {m:?}"),
            "not a tls/alert record check",
        ),
    }
}

/// Map one eve.json `tls.*` key to trustwatch predicates; `Err(reason)` when not reported.
fn eve_key(key: &str, v: &Value) -> Result<Vec<Pred>, String> {
    let s = || {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let leaf = |a| Field::Leaf(Side::Server, a);
    let cleaf = |a| Field::Leaf(Side::Client, a);
    let p = |f: Field, w: Want| Ok(vec![Pred::eq(f, canon(f, w))]);
    match key {
        "tls.version" | "tls.server_handshake.version" => p(Field::Version, Want::Str(s())),
        "tls.sni" => p(Field::Sni, Want::Str(s())),
        "tls.subject" => p(leaf(CertAttr::Subject), Want::Str(s())),
        "tls.issuerdn" => p(leaf(CertAttr::Issuer), Want::Str(s())),
        "tls.serial" => p(leaf(CertAttr::Serial), Want::Str(s())),
        "tls.fingerprint" => p(leaf(CertAttr::Sha1), Want::Str(s())),
        "tls.notbefore" => p(leaf(CertAttr::NotBefore), Want::Str(s())),
        "tls.notafter" => p(leaf(CertAttr::NotAfter), Want::Str(s())),
        "tls.client.serial" => p(cleaf(CertAttr::Serial), Want::Str(s())),
        "tls.client.notbefore" => p(cleaf(CertAttr::NotBefore), Want::Str(s())),
        "tls.client.notafter" => p(cleaf(CertAttr::NotAfter), Want::Str(s())),
        "tls.client.subject" => p(cleaf(CertAttr::Subject), Want::Str(s())),
        "tls.client.issuerdn" => p(cleaf(CertAttr::Issuer), Want::Str(s())),
        "tls.client.fingerprint" => p(cleaf(CertAttr::Sha1), Want::Str(s())),
        "tls.ja3.hash" => p(Field::Ja3, Want::Str(s())),
        "tls.ja3.string" => p(Field::Ja3String, Want::Str(s())),
        "tls.ja4" => p(Field::Ja4, Want::Str(s())),
        "tls.ja3s.hash" => p(Field::Ja3s, Want::Str(s())),
        "tls.session_resumed" => p(Field::Resumed, Want::Bool(v.as_bool().unwrap_or(false))),
        "tls.server_handshake.cipher" => match v.as_u64().and_then(iana_cipher) {
            Some(name) => p(Field::Cipher, Want::Str(name.into())),
            None => Err(format!("cipher id {v} not in the local IANA table")),
        },
        k if k.starts_with("tls.server_alpns[0]") => p(Field::Alpn, Want::Str(s())),
        k if k.starts_with("tls.client_alpns[") => Ok(vec![Pred {
            field: Field::ClientAlpns,
            op: Op::ListContains,
            want: Want::Str(s()),
        }]),
        k if k.starts_with("tls.subjectaltname[") => Ok(vec![Pred {
            field: leaf(CertAttr::Sans),
            op: Op::ListContains,
            want: Want::Str(s()),
        }]),
        "tls.ja3s.string" => Err("JA3S string not reported".into()),
        "tls.from_proto" => Err("STARTTLS carrier protocol (ldap) is not reported".into()),
        k if k.starts_with("tls.client_handshake.") || k == "tls.server_handshake.exts" => Err(
            "raw hello lists (ciphers/extensions/sig_algs) are not reported; JA3/JA4 cover them"
                .into(),
        ),
        _ => Err(format!("eve key {key} has no trustwatch equivalent")),
    }
}

/// has-key / not-has-key on eve keys.
fn has_key(key: &str) -> Result<Pred, String> {
    match key {
        "tls.ja4" => Ok(Pred {
            field: Field::Ja4,
            op: Op::Ne,
            want: Want::Absent,
        }),
        "tls.subjectaltname" => Ok(Pred {
            field: Field::Leaf(Side::Server, CertAttr::Sans),
            op: Op::Ne,
            want: Want::Absent,
        }),
        "tls.client.subject"
        | "tls.client.issuerdn"
        | "tls.client.fingerprint"
        | "tls.client.chain" => Ok(Pred {
            field: Field::ChainLen(Side::Client),
            op: Op::Gt,
            want: Want::Num(0),
        }),
        "tls.certificate" | "tls.chain" | "tls.client.certificate" => {
            Err("certificate DER (base64) is not exported".into())
        }
        _ => Err(format!("has-key {key} has no trustwatch equivalent")),
    }
}

fn tls_filter(
    pcap: &str,
    origin: &str,
    m: &serde_json::Map<String, Value>,
    count: usize,
    out: &mut Parsed,
) {
    let mut preds: Vec<Cond> = Vec::new();
    for (k, v) in m {
        let what = format!("{origin} {k}={v}");
        match k.as_str() {
            "event_type" | "proto" => {}
            "src_ip" | "src_port" | "dest_ip" | "dest_port" => {} // handled below as a flow predicate
            "pcap_cnt" | "pkt_src" => {
                out.skip(pcap, SRC, what, "Suricata packet counter, not a TLS value")
            }
            "not-has-key" => {
                // Only `tls.ja4` under the 7.0.x (no JA4 feature) test: an engine-build expectation.
                out.skip(
                    pcap,
                    SRC,
                    what,
                    "Suricata 7.0.x build without JA4: absence is an engine option, not a property of the capture",
                )
            }
            "has-key" => {
                let keys: Vec<&str> = match v {
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    Value::String(s) => vec![s.as_str()],
                    _ => vec![],
                };
                for key in keys {
                    match has_key(key) {
                        Ok(p) if !preds.contains(&Cond::Is(p.clone())) => preds.push(Cond::Is(p)),
                        Ok(_) => {}
                        Err(r) => out.skip(pcap, SRC, format!("{origin} has-key {key}"), r),
                    }
                }
            }
            _ => match eve_key(k, v) {
                Ok(ps) => preds.extend(ps.into_iter().map(Cond::Is)),
                Err(r) => out.skip(pcap, SRC, what, r),
            },
        }
    }
    if let Some(flow) = flow_cond(m) {
        preds.push(flow);
    }
    out.expect(
        pcap,
        SRC,
        origin.to_string(),
        Check::Count {
            conds: preds,
            count,
        },
    );
}

/// src/dest keys of an eve record → endpoint condition (client = src for tls events).
fn flow_cond(m: &serde_json::Map<String, Value>) -> Option<Cond> {
    let ip = |k: &str| m.get(k).and_then(Value::as_str);
    let port = |k: &str| {
        m.get(k)
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
    };
    Some(Cond::Flow {
        client: endpoint(ip("src_ip")?, Some(port("src_port")?))?,
        server: endpoint(ip("dest_ip")?, Some(port("dest_port")?))?,
    })
}

/// IANA TLS cipher suite registry entries needed by this corpus (numeric eve values).
fn iana_cipher(id: u64) -> Option<&'static str> {
    Some(match id {
        0xC02F => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xC030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xC02B => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xC02C => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        _ => return None,
    })
}

fn alert_filter(
    pcap: &str,
    origin: &str,
    a: &Value,
    m: &serde_json::Map<String, Value>,
    count: usize,
    out: &mut Parsed,
) {
    let sid = m
        .get("alert.signature_id")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let what = format!("{origin} alert sid {sid}");
    let Some(rule) = a.get("rule").and_then(Value::as_str) else {
        out.skip(pcap, SRC, what, "alert check without rule text");
        return;
    };
    match rule_preds(rule) {
        Ok(mut preds) => {
            // Extra eve keys on the alert record (e.g. tls.ja4, tls.client_alpns) are the flow's TLS
            // metadata: same mapping as tls records.
            for (k, v) in m {
                if k.starts_with("tls.") {
                    match eve_key(k, v) {
                        Ok(ps) => preds.extend(ps.into_iter().map(Cond::Is)),
                        Err(r) => out.skip(pcap, SRC, format!("{what} {k}"), r),
                    }
                }
            }
            out.expect(
                pcap,
                SRC,
                format!("{what}: {}", short_rule(rule)),
                Check::Count {
                    conds: preds,
                    count,
                },
            )
        }
        Err(reason) => out.skip(pcap, SRC, format!("{what}: {}", short_rule(rule)), reason),
    }
}

fn short_rule(rule: &str) -> String {
    let r: String = rule.chars().take(110).collect();
    if r.len() < rule.len() {
        format!("{r}…")
    } else {
        r
    }
}

/// Split rule options on `;` outside quotes.
fn options(rule: &str) -> Option<(String, Vec<(String, String)>)> {
    let open = rule.find('(')?;
    let action = rule.split_whitespace().next()?.to_string();
    let body = rule[open + 1..].trim_end().trim_end_matches(')');
    let mut opts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut esc = false;
    for c in body.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' => {
                esc = true;
                cur.push(c);
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => {
                let t = cur.trim().to_string();
                if !t.is_empty() {
                    let (k, v) = t
                        .split_once(':')
                        .map(|(k, v)| (k.trim(), v.trim()))
                        .unwrap_or((t.as_str(), ""));
                    opts.push((k.to_string(), v.to_string()));
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    Some((action, opts))
}

/// Decode a Suricata content string: quotes stripped, `|hex|` runs to bytes (as chars).
fn content(v: &str) -> String {
    let v = v.trim().trim_start_matches('!').trim_matches('"');
    let mut out = String::new();
    let mut parts = v.split('|');
    let mut in_hex = false;
    for part in parts.by_ref() {
        if in_hex {
            let bytes: Vec<u8> = part
                .split_whitespace()
                .filter_map(|h| u8::from_str_radix(h, 16).ok())
                .collect();
            out.push_str(&String::from_utf8_lossy(&bytes));
        } else {
            out.push_str(&part.replace("\\\"", "\"").replace("\\;", ";"));
        }
        in_hex = !in_hex;
    }
    out
}

/// Which side's certificate a cert keyword inspects: the rule's `flow:` direction, else either.
#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Either,
    ToClient,
    ToServer,
}

/// Translate a Suricata rule into predicates on one connection record.
pub fn rule_preds(rule: &str) -> Result<Vec<Cond>, String> {
    let (action, opts) = options(rule).ok_or("unparseable rule")?;
    let has = |k: &str| opts.iter().any(|(o, _)| o == k);
    if action != "alert" && !has("alert") {
        return Err(format!(
            "`{action}` rule: asserts an IPS verdict (pass/drop ordering), not a TLS value"
        ));
    }
    if has("noalert") {
        return Err("noalert rule (only sets state for other rules)".into());
    }
    for (k, _) in &opts {
        let reason = match k.as_str() {
            "flowbits" => "depends on flowbits set by other rules / the engine's TLS error events",
            "flowint" => "flowint state keyword (engine-internal per-flow counter)",
            "lua" => "lua script detection",
            "tls.random" | "tls.random_time" | "tls.random_bytes" => {
                "hello random bytes are not reported"
            }
            "tls.certs" => "raw certificate DER bytes are not exported",
            _ => continue,
        };
        return Err(reason.into());
    }
    let dir = match opts
        .iter()
        .find(|(k, _)| k == "flow")
        .map(|(_, v)| v.replace(' ', ""))
    {
        Some(f) if f.contains("to_client") || f.contains("from_server") => Dir::ToClient,
        Some(f) if f.contains("to_server") || f.contains("from_client") => Dir::ToServer,
        _ => Dir::Either,
    };
    let cert = |a: CertAttr| match dir {
        Dir::ToServer => vec![Field::Leaf(Side::Client, a)],
        Dir::ToClient => vec![Field::Leaf(Side::Server, a)],
        Dir::Either => vec![Field::Leaf(Side::Server, a), Field::Leaf(Side::Client, a)],
    };
    let mut preds: Vec<Cond> = Vec::new();
    // The sticky buffer the next `content` applies to.
    let mut buffer: Option<Vec<Field>> = None;
    // Index in `preds` of the last content condition (for its modifiers).
    let mut last: Option<usize> = None;
    for (k, v) in &opts {
        match k.as_str() {
            "msg" | "sid" | "rev" | "classtype" | "flow" | "requires" | "alert" | "metadata" => {}
            // Sticky buffers.
            "tls.sni" | "tls_sni" => buffer = Some(vec![Field::Sni]),
            "tls.cert_subject" | "tls_cert_subject" => buffer = Some(cert(CertAttr::Subject)),
            "tls.cert_issuer" | "tls_cert_issuer" => buffer = Some(cert(CertAttr::Issuer)),
            "tls.cert_serial" | "tls_cert_serial" => buffer = Some(cert(CertAttr::Serial)),
            "tls.cert_fingerprint" | "tls_cert_fingerprint" => buffer = Some(cert(CertAttr::Sha1)),
            "tls.subjectaltname" => buffer = Some(cert(CertAttr::Sans)),
            "tls.alpn" => buffer = Some(vec![Field::ClientAlpns, Field::Alpn]),
            "ja3.string" => buffer = Some(vec![Field::Ja3String]),
            "ja3.hash" | "ja3_hash" => buffer = Some(vec![Field::Ja3]),
            "ja3s.hash" => buffer = Some(vec![Field::Ja3s]),
            "ja4.hash" => buffer = Some(vec![Field::Ja4]),
            "content" => {
                let fields = buffer
                    .clone()
                    .ok_or_else(|| format!("content without a TLS buffer in `{rule}`"))?;
                let text = content(v);
                let pred_for = |f: Field| -> Pred {
                    match f {
                        // content on a hash buffer: the eve value is the full hash.
                        Field::Ja3 | Field::Ja3s | Field::Ja4 => {
                            Pred::eq(f, canon(f, Want::Str(text.clone())))
                        }
                        Field::Leaf(_, CertAttr::Sha1) => {
                            Pred::eq(f, canon(f, Want::Str(text.clone())))
                        }
                        Field::Leaf(_, CertAttr::Sans) | Field::ClientAlpns => Pred {
                            field: f,
                            op: Op::ListContains,
                            want: Want::Str(text.clone()),
                        },
                        _ => Pred {
                            field: f,
                            op: Op::Contains { nocase: false },
                            want: Want::Str(text.clone()),
                        },
                    }
                };
                last = Some(preds.len());
                preds.push(any_of(fields.into_iter().map(pred_for).collect()));
            }
            "nocase" | "endswith" | "dotprefix" | "startswith" => {
                let Some(cond) = last.and_then(|i| preds.get_mut(i)) else {
                    continue;
                };
                let modify = |p: &mut Pred| match (k.as_str(), &mut p.op, &mut p.want) {
                    ("nocase", Op::Contains { nocase }, _)
                    | ("nocase", Op::EndsWith { nocase }, _) => *nocase = true,
                    ("endswith", Op::Contains { nocase }, _) => {
                        p.op = Op::EndsWith { nocase: *nocase }
                    }
                    ("dotprefix", _, Want::Str(s)) if !s.starts_with('.') => *s = format!(".{s}"),
                    _ => {}
                };
                match cond {
                    Cond::Is(p) => modify(p),
                    Cond::AnyOf(ps) => ps.iter_mut().for_each(modify),
                    Cond::Flow { .. } => {}
                }
            }
            // Direct keywords.
            "tls.fingerprint" => {
                let f = cert(CertAttr::Sha1);
                preds.push(any_of(
                    f.into_iter()
                        .map(|f| Pred::eq(f, canon(f, Want::Str(content(v)))))
                        .collect(),
                ));
            }
            "tls.subject" | "tls.issuerdn" => {
                let a = if k == "tls.subject" {
                    CertAttr::Subject
                } else {
                    CertAttr::Issuer
                };
                let ps: Vec<Pred> = cert(a)
                    .into_iter()
                    .map(|f| Pred {
                        field: f,
                        op: Op::Contains { nocase: false },
                        want: Want::Str(content(v)),
                    })
                    .collect();
                preds.push(any_of(ps));
            }
            "tls.cert_chain_len" => preds.push(Cond::Is(chain_len(v)?)),
            "tls_cert_notafter" | "tls_cert_notbefore" => {
                let f = Field::Leaf(
                    Side::Server,
                    if k == "tls_cert_notafter" {
                        CertAttr::NotAfter
                    } else {
                        CertAttr::NotBefore
                    },
                );
                let (op, year) = if let Some(y) = v.strip_prefix('>') {
                    (Op::Gt, y)
                } else if let Some(y) = v.strip_prefix('<') {
                    (Op::Lt, y)
                } else {
                    (Op::Eq, v.as_str())
                };
                let year: i64 = year
                    .trim()
                    .parse()
                    .map_err(|_| format!("date form `{v}` not handled"))?;
                preds.push(Cond::Is(Pred {
                    field: f,
                    op,
                    want: Want::Num(year),
                }));
            }
            other => return Err(format!("rule keyword `{other}` not translated")),
        }
    }
    if preds.is_empty() {
        return Err("rule has no TLS condition".into());
    }
    Ok(preds)
}

fn any_of(mut ps: Vec<Pred>) -> Cond {
    if ps.len() == 1
        && let Some(p) = ps.pop()
    {
        return Cond::Is(p);
    }
    Cond::AnyOf(ps)
}

fn chain_len(v: &str) -> Result<Pred, String> {
    let f = Field::ChainLen(Side::Server);
    let v = v.trim();
    let num = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("cert_chain_len `{v}`"))
    };
    Ok(if let Some((lo, hi)) = v.split_once("<>") {
        Pred {
            field: f,
            op: Op::Between(num(hi)?),
            want: Want::Num(num(lo)?),
        }
    } else if let Some(n) = v.strip_prefix('<') {
        Pred {
            field: f,
            op: Op::Lt,
            want: Want::Num(num(n)?),
        }
    } else if let Some(n) = v.strip_prefix('>') {
        Pred {
            field: f,
            op: Op::Gt,
            want: Want::Num(num(n)?),
        }
    } else if let Some(n) = v.strip_prefix('!') {
        Pred {
            field: f,
            op: Op::Ne,
            want: Want::Num(num(n)?),
        }
    } else {
        Pred {
            field: f,
            op: Op::Eq,
            want: Want::Num(num(v)?),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_translate() {
        let p = rule_preds(r#"alert tls any any -> any any (tls.sni; content:"google"; sid:1;)"#)
            .unwrap();
        assert_eq!(
            p,
            vec![Cond::Is(Pred {
                field: Field::Sni,
                op: Op::Contains { nocase: false },
                want: Want::Str("google".into())
            })]
        );
        let p = rule_preds(r#"pass tls any any -> any any (tls.sni; dotprefix; content:".githubusercontent.com"; nocase; endswith; alert; msg:"x"; flow:established,to_server; sid:188; rev:1;)"#).unwrap();
        assert!(
            matches!(&p[0], Cond::Is(Pred { op: Op::EndsWith { nocase: true }, want: Want::Str(s), .. }) if s == ".githubusercontent.com")
        );
        assert!(
            rule_preds(r#"drop tls any any -> any any (msg:"x"; flow:to_server; sid:6001;)"#)
                .is_err()
        );
        let p = rule_preds(
            r#"alert tls any any -> any any (msg:"c"; tls.cert_chain_len:0<>4; sid:4;)"#,
        )
        .unwrap();
        assert!(matches!(
            &p[0],
            Cond::Is(Pred {
                op: Op::Between(4),
                ..
            })
        ));
        let p = rule_preds(r#"alert tls any any -> any any (msg:"n"; tls.cert_subject; content:"O=Microsoft Corporat|00|on"; sid:1;)"#)
            .unwrap();
        assert_eq!(p.len(), 1);
        assert!(
            rule_preds(r#"alert tls any any -> any any (msg:"r"; flow:established,to_server; tls.random; content:"|94 2d|"; sid:1;)"#)
                .is_err()
        );
    }

    #[test]
    fn content_hex() {
        assert_eq!(content(r#""a|00|b""#), "a\0b");
        assert_eq!(content(r#""|77 77 77 2e|bing""#), "www.bing");
    }
}
