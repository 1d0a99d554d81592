//! Evaluate [`Expect`]s against trustwatch's JSON Lines records of one pcap.
//!
//! Field access follows the output contract (ECS nested objects; a flat dotted key is accepted
//! too). A field that appears in no record of the whole run is "not reported": checks on it are
//! skipped with that reason (listed in the summary) rather than failed; a field reported for some
//! connections but missing on the selected one counts as absent and is compared.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::model::*;

/// Look up a dotted path in nested objects, accepting flat dotted keys at any level.
pub fn path<'a>(v: &'a Value, p: &str) -> Option<&'a Value> {
    if let Some(x) = v.get(p) {
        return Some(x);
    }
    let mut cur = v;
    let parts: Vec<&str> = p.split('.').collect();
    let mut i = 0;
    'outer: while i < parts.len() {
        // Longest flat key first.
        for j in (i + 1..=parts.len()).rev() {
            let k = parts[i..j].join(".");
            if let Some(x) = cur.get(&k) {
                cur = x;
                i = j;
                continue 'outer;
            }
        }
        return None;
    }
    Some(cur)
}

fn present<'a>(v: &'a Value, p: &str) -> Option<&'a Value> {
    path(v, p).filter(|x| !x.is_null())
}

fn as_want(v: Option<&Value>) -> Want {
    match v {
        None | Some(Value::Null) => Want::Absent,
        Some(Value::String(s)) => Want::Str(s.clone()),
        Some(Value::Bool(b)) => Want::Bool(*b),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Want::Num)
            .unwrap_or_else(|| Want::Str(n.to_string())),
        Some(Value::Array(a)) => Want::List(
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect(),
        ),
        Some(o @ Value::Object(_)) => Want::Str(o.to_string()),
    }
}

fn chain_key(side: Side) -> &'static str {
    match side {
        Side::Server => "trustwatch.server_chain",
        Side::Client => "trustwatch.client_chain",
    }
}

const SANS: [&str; 4] = ["sans", "san", "alternative_names", "subject_alt_names"];

/// Paths that hold a field (first existing wins); used both for reading and for "is it reported".
fn paths(field: Field) -> Vec<String> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
    match field {
        Field::Present | Field::ClientHelloSeen | Field::ServerHelloSeen => v(&[]),
        Field::Version => v(&["tls.version"]),
        Field::Cipher => v(&["tls.cipher"]),
        Field::Sni => v(&["tls.client.server_name"]),
        Field::Ja3 => v(&["tls.client.ja3"]),
        Field::Ja4 => v(&["tls.client.ja4"]),
        Field::Alpn => v(&["tls.next_protocol"]),
        Field::Established => v(&["tls.established"]),
        Field::Resumed => v(&["trustwatch.resumed", "tls.resumed"]),
        Field::ClientAuthRequested => v(&["trustwatch.client_auth_requested"]),
        Field::LastAlert | Field::FatalAlert => v(&["trustwatch.alerts"]),
        Field::Ja3s => v(&["tls.server.ja3s"]),
        Field::Ja3String => v(&["tls.client.ja3_string", "trustwatch.ja3_string"]),
        Field::ClientAlpns => v(&[
            "tls.client.supported_protocols",
            "tls.client.alpn",
            "trustwatch.client_alpn",
        ]),
        Field::Vlan => v(&["network.vlan.id", "vlan.id", "trustwatch.vlan"]),
        Field::Chain(s) | Field::ChainLen(s) => vec![chain_key(s).to_string()],
        Field::Leaf(side, a) => {
            let ecs = match (side, a) {
                (Side::Server, CertAttr::Sha1) => Some("tls.server.hash.sha1"),
                (Side::Server, CertAttr::Sha256) => Some("tls.server.hash.sha256"),
                (Side::Server, CertAttr::Subject) => Some("tls.server.subject"),
                (Side::Server, CertAttr::Issuer) => Some("tls.server.issuer"),
                (Side::Server, CertAttr::NotBefore) => Some("tls.server.not_before"),
                (Side::Server, CertAttr::NotAfter) => Some("tls.server.not_after"),
                (Side::Client, CertAttr::Sha1) => Some("tls.client.hash.sha1"),
                _ => None,
            };
            let mut p: Vec<String> = ecs.into_iter().map(str::to_string).collect();
            p.push(chain_key(side).to_string());
            p
        }
        Field::Cert(_) => vec![
            "trustwatch.server_chain".into(),
            "trustwatch.client_chain".into(),
        ],
    }
}

/// Does this record carry the field at all (key present, even if null/empty)?
pub fn carries(rec: &Value, field: Field) -> bool {
    match field {
        Field::Present | Field::ClientHelloSeen | Field::ServerHelloSeen => true,
        Field::Leaf(_, CertAttr::Sans) | Field::Cert(CertAttr::Sans) => {
            let chains = [chain_key(Side::Server), chain_key(Side::Client)];
            chains.iter().any(|c| {
                path(rec, c)
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|e| SANS.iter().any(|k| e.get(k).is_some())))
            })
        }
        f => paths(f).iter().any(|p| path(rec, p).is_some()),
    }
}

/// Read a certificate attribute from one chain entry object.
fn cert_attr(e: &Value, a: CertAttr) -> Want {
    let s = |k: &str| as_want(e.get(k));
    let dn_list = |k: &str, attr: &str, lower: bool| match e.get(k).and_then(Value::as_str) {
        Some(dn) => Want::List(
            dn_values(dn, attr)
                .into_iter()
                .map(|v| if lower { v.to_lowercase() } else { v })
                .collect(),
        ),
        None => Want::Absent,
    };
    match a {
        CertAttr::Sha1 => s("sha1"),
        CertAttr::Sha256 => s("sha256"),
        CertAttr::Subject => s("subject"),
        CertAttr::Issuer => s("issuer"),
        CertAttr::Serial => s("serial"),
        CertAttr::NotBefore => s("not_before"),
        CertAttr::NotAfter => s("not_after"),
        CertAttr::IsCa => s("is_ca"),
        CertAttr::SubjectCnLower => dn_list("subject", "cn", true),
        CertAttr::IssuerCnLower => dn_list("issuer", "cn", true),
        CertAttr::SubjectO => dn_list("subject", "o", false),
        CertAttr::IssuerO => dn_list("issuer", "o", false),
        CertAttr::SubjectOu => dn_list("subject", "ou", false),
        CertAttr::IssuerOu => dn_list("issuer", "ou", false),
        CertAttr::Sans => SANS
            .iter()
            .find_map(|k| e.get(*k))
            .map(|v| as_want(Some(v)))
            .unwrap_or(Want::Absent),
    }
}

fn chain(rec: &Value, side: Side) -> Vec<&Value> {
    path(rec, chain_key(side))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn plain_alerts(rec: &Value) -> Vec<&Value> {
    path(rec, "trustwatch.alerts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|x| x.get("encrypted").and_then(Value::as_bool) != Some(true))
                .collect()
        })
        .unwrap_or_default()
}

/// Alert level as a number (the output may use "warning"/"fatal" or 1/2).
pub fn alert_level(a: &Value) -> Option<u64> {
    match a.get("level")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if s.eq_ignore_ascii_case("fatal") => Some(2),
        Value::String(s) if s.eq_ignore_ascii_case("warning") => Some(1),
        _ => None,
    }
}

/// The raw value of a field on a connection record.
pub fn get(rec: &Value, field: Field) -> Want {
    match field {
        Field::Present => Want::Bool(true),
        Field::LastAlert => match plain_alerts(rec).last() {
            Some(a) => as_want(a.get("name")),
            None => Want::Absent,
        },
        Field::FatalAlert => {
            Want::Bool(plain_alerts(rec).iter().any(|a| alert_level(a) == Some(2)))
        }
        Field::ClientHelloSeen => Want::Bool(
            present(rec, "tls.client.ja3").is_some() || present(rec, "tls.client.ja4").is_some(),
        ),
        Field::ServerHelloSeen => Want::Bool(
            present(rec, "tls.cipher").is_some() || present(rec, "tls.version").is_some(),
        ),
        Field::Chain(side) => match path(rec, chain_key(side)) {
            Some(_) => Want::List(
                chain(rec, side)
                    .iter()
                    .map(|e| {
                        e.get("sha256")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string()
                    })
                    .collect(),
            ),
            None => Want::Absent,
        },
        Field::ChainLen(side) => match path(rec, chain_key(side)) {
            Some(_) => Want::Num(chain(rec, side).len() as i64),
            None => Want::Absent,
        },
        Field::Leaf(side, a) => {
            let ps = paths(field);
            // ECS path when the contract defines one, else the first chain entry.
            if ps.len() == 2
                && let Some(v) = path(rec, &ps[0])
            {
                return as_want(Some(v));
            }
            chain(rec, side)
                .first()
                .map(|e| cert_attr(e, a))
                .unwrap_or(Want::Absent)
        }
        Field::Cert(_) => Want::Absent, // read through a certificate selector
        f => paths(f)
            .iter()
            .find_map(|p| present(rec, p))
            .map(|v| as_want(Some(v)))
            .unwrap_or(Want::Absent),
    }
}

fn year(w: &Want) -> Option<i64> {
    match w {
        Want::Str(s) => s.get(..4)?.parse().ok(),
        _ => None,
    }
}

/// Does `got` (raw) satisfy `pred`?
pub fn holds(pred: &Pred, got_raw: &Want) -> bool {
    let got = canon(pred.field, got_raw.clone());
    let fold = |s: &str, n: bool| if n { s.to_lowercase() } else { s.to_string() };
    match (pred.op, &pred.want, &got) {
        (Op::Eq, Want::Str(w), Want::Str(g)) if pred.field == Field::Version => {
            // Drafts: trustwatch reports TLS 1.3 drafts as "1.3" (ECS has no draft notion).
            g == w
                || w.split_once("-draft")
                    .is_some_and(|(base, _)| g == base || g.starts_with(&format!("{base}-")))
        }
        (Op::Eq, w, g) => w == g,
        (Op::Contains { nocase }, Want::Str(w), Want::Str(_)) => {
            let Want::Str(raw) = got_raw else {
                return false;
            };
            fold(raw, nocase).contains(&fold(w, nocase))
        }
        (Op::EndsWith { nocase }, Want::Str(w), Want::Str(_)) => {
            let Want::Str(raw) = got_raw else {
                return false;
            };
            fold(raw, nocase).ends_with(&fold(w, nocase))
        }
        (Op::Contains { .. } | Op::EndsWith { .. }, Want::Str(w), Want::List(l)) => {
            l.iter().any(|x| x.contains(w.as_str()))
        }
        (Op::ListContains, Want::Str(w), Want::List(l)) => l.iter().any(|x| x == w),
        (Op::ListContains, Want::Str(w), Want::Str(g)) => g == w,
        (Op::Ne, Want::Absent, g) => !matches!(g, Want::Absent) && g != &Want::List(vec![]),
        (Op::Ne, w, g) => w != g,
        (op @ (Op::Lt | Op::Gt | Op::Between(_)), Want::Num(w), g) => {
            let x = match g {
                Want::Num(n) => Some(*n),
                other => year(other),
            };
            match (op, x) {
                (Op::Lt, Some(x)) => x < *w,
                (Op::Gt, Some(x)) => x > *w,
                (Op::Between(hi), Some(x)) => *w < x && x < hi,
                _ => false,
            }
        }
        _ => false,
    }
}

fn endpoint_of(rec: &Value, which: &str) -> Option<(String, u16)> {
    let ip = path(rec, &format!("{which}.ip"))?.as_str()?.to_string();
    let port = path(rec, &format!("{which}.port"))?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())?;
    Some((ip, port))
}

fn ep_matches(rec: &Value, which: &str, e: &Endpoint) -> bool {
    endpoint_of(rec, which).is_some_and(|(ip, port)| {
        ip.parse::<std::net::IpAddr>().ok() == Some(e.ip) && e.port.is_none_or(|p| p == port)
    })
}

fn flow_matches(rec: &Value, client: Option<&Endpoint>, server: &Endpoint) -> bool {
    ep_matches(rec, "destination", server) && client.is_none_or(|c| ep_matches(rec, "source", c))
}

fn reversed_matches(rec: &Value, client: Option<&Endpoint>, server: &Endpoint) -> bool {
    ep_matches(rec, "source", server) && client.is_none_or(|c| ep_matches(rec, "destination", c))
}

fn cond_holds(rec: &Value, c: &Cond) -> bool {
    match c {
        Cond::Is(p) => holds(p, &get(rec, p.field)),
        Cond::AnyOf(ps) => ps.iter().any(|p| holds(p, &get(rec, p.field))),
        Cond::Flow { client, server } => flow_matches(rec, Some(client), server),
    }
}

fn cond_fields(c: &Cond) -> Vec<Field> {
    match c {
        Cond::Is(p) => vec![p.field],
        Cond::AnyOf(ps) => ps.iter().map(|p| p.field).collect(),
        Cond::Flow { .. } => vec![],
    }
}

/// Result of one check.
pub enum Outcome {
    Pass,
    Fail(String),
    /// Not evaluated (field not reported by trustwatch).
    Skipped(String),
    /// Passed after dropping conjuncts on unreported fields (count became a lower bound).
    PassPartial(String),
}

/// Which fields the run reports at all.
pub struct Reported(pub BTreeSet<String>);

impl Reported {
    pub fn of(all: &[Value]) -> Reported {
        let mut set = BTreeSet::new();
        for f in ALL_FIELDS {
            if all.iter().any(|r| carries(r, *f)) {
                set.insert(f.to_string());
            }
        }
        // Certificate attributes are reported when chains carry them.
        Reported(set)
    }
    pub fn has(&self, f: Field) -> bool {
        match f {
            Field::Present => true,
            Field::LastAlert | Field::FatalAlert => self.0.contains(&Field::LastAlert.to_string()),
            Field::ClientHelloSeen => self.has(Field::Ja3) || self.has(Field::Ja4),
            Field::ServerHelloSeen => self.has(Field::Cipher) || self.has(Field::Version),
            Field::Leaf(side, a) if a != CertAttr::Sans => {
                self.0.contains(&f.to_string()) || self.0.contains(&Field::Chain(side).to_string())
            }
            Field::Cert(a) => {
                if a == CertAttr::Sans {
                    self.0
                        .contains(&Field::Leaf(Side::Server, CertAttr::Sans).to_string())
                } else {
                    self.0.contains(&Field::Chain(Side::Server).to_string())
                }
            }
            f => self.0.contains(&f.to_string()),
        }
    }
}

pub const ALL_FIELDS: &[Field] = &[
    Field::Version,
    Field::Cipher,
    Field::Sni,
    Field::Ja3,
    Field::Ja4,
    Field::Alpn,
    Field::Established,
    Field::Resumed,
    Field::ClientAuthRequested,
    Field::LastAlert,
    Field::Ja3s,
    Field::Ja3String,
    Field::ClientAlpns,
    Field::Vlan,
    Field::Chain(Side::Server),
    Field::Chain(Side::Client),
    Field::ChainLen(Side::Server),
    Field::ChainLen(Side::Client),
    Field::Leaf(Side::Server, CertAttr::Sha1),
    Field::Leaf(Side::Server, CertAttr::Sha256),
    Field::Leaf(Side::Server, CertAttr::Subject),
    Field::Leaf(Side::Server, CertAttr::Issuer),
    Field::Leaf(Side::Server, CertAttr::Serial),
    Field::Leaf(Side::Server, CertAttr::NotBefore),
    Field::Leaf(Side::Server, CertAttr::NotAfter),
    Field::Leaf(Side::Server, CertAttr::Sans),
    Field::Leaf(Side::Client, CertAttr::Sha1),
    Field::Leaf(Side::Client, CertAttr::Subject),
    Field::Leaf(Side::Client, CertAttr::Serial),
];

fn short(rec: &Value) -> String {
    let c = endpoint_of(rec, "source")
        .map(|(i, p)| format!("{i}:{p}"))
        .unwrap_or("?".into());
    let s = endpoint_of(rec, "destination")
        .map(|(i, p)| format!("{i}:{p}"))
        .unwrap_or("?".into());
    format!("{c}->{s}")
}

pub fn evaluate(check: &Check, recs: &[Value], rep: &Reported) -> Outcome {
    match check {
        Check::Field { sel, pred } => {
            if !rep.has(pred.field) {
                return Outcome::Skipped(format!("trustwatch output has no {} field", pred.field));
            }
            field_check(sel, pred, recs)
        }
        Check::Exists { conds } => {
            if let Some(f) = conds.iter().flat_map(cond_fields).find(|f| !rep.has(*f)) {
                return Outcome::Skipped(format!("trustwatch output has no {f} field"));
            }
            if recs.iter().any(|r| conds.iter().all(|c| cond_holds(r, c))) {
                Outcome::Pass
            } else {
                let refs: Vec<&Cond> = conds.iter().collect();
                Outcome::Fail(format!("no record matches{}", near_misses(&refs, recs)))
            }
        }
        Check::PlainAlerts { level, code, count } => {
            if !rep.has(Field::LastAlert) {
                return Outcome::Skipped("trustwatch output has no alerts field".into());
            }
            let all: Vec<&Value> = recs.iter().flat_map(plain_alerts).collect();
            let n = all
                .iter()
                .filter(|a| level.is_none_or(|l| alert_level(a) == Some(u64::from(l))))
                .filter(|a| {
                    code.is_none_or(|c| a.get("code").and_then(Value::as_u64) == Some(u64::from(c)))
                })
                .count();
            if n == *count {
                Outcome::Pass
            } else {
                let seen: Vec<String> = all
                    .iter()
                    .map(|a| {
                        format!(
                            "{}/{}",
                            a.get("level").unwrap_or(&Value::Null),
                            a.get("code").unwrap_or(&Value::Null)
                        )
                    })
                    .collect();
                Outcome::Fail(format!(
                    "{n} matching plaintext alerts; all plaintext alerts: {seen:?}"
                ))
            }
        }
        Check::Count { conds, count } => {
            let (kept, dropped): (Vec<&Cond>, Vec<&Cond>) = conds.iter().partition(|c| {
                cond_fields(c).iter().any(|f| rep.has(*f)) || cond_fields(c).is_empty()
            });
            let n = recs
                .iter()
                .filter(|r| kept.iter().all(|c| cond_holds(r, c)))
                .count();
            let dropped_txt: Vec<String> = dropped.iter().map(|c| c.to_string()).collect();
            if dropped.is_empty() {
                if n == *count {
                    Outcome::Pass
                } else {
                    Outcome::Fail(format!(
                        "{n} records match (expected {count}){}",
                        near_misses(&kept, recs)
                    ))
                }
            } else if *count == 0 {
                Outcome::Skipped(format!(
                    "conjuncts on unreported fields: {}",
                    dropped_txt.join(", ")
                ))
            } else if n >= *count {
                Outcome::PassPartial(format!(
                    "lower bound only; dropped unreported {}",
                    dropped_txt.join(", ")
                ))
            } else {
                Outcome::Fail(format!(
                    "{n} records match the reported conjuncts, fewer than {count}{}",
                    near_misses(&kept, recs)
                ))
            }
        }
    }
}

/// For a failed count: the per-record values of the failing conjuncts.
fn near_misses(conds: &[&Cond], recs: &[Value]) -> String {
    let mut s = String::new();
    for r in recs.iter().take(8) {
        let failing: Vec<String> = conds
            .iter()
            .filter(|c| !cond_holds(r, c))
            .map(|c| {
                let got: Vec<String> = cond_fields(c)
                    .iter()
                    .map(|f| format!("{f}={}", get(r, *f)))
                    .collect();
                if got.is_empty() {
                    format!("not {c}")
                } else {
                    format!("want {c}; got {}", got.join(", "))
                }
            })
            .collect();
        if !failing.is_empty() {
            s.push_str(&format!(
                "\n        record {}: {}",
                short(r),
                failing.join("; ")
            ));
        }
    }
    if recs.is_empty() {
        s.push_str("\n        (no records)");
    }
    s
}

fn select<'a>(sel: &Selector, recs: &'a [Value]) -> Vec<&'a Value> {
    match sel {
        Selector::All => recs.iter().collect(),
        Selector::Flow { client, server, .. } => recs
            .iter()
            .filter(|r| flow_matches(r, client.as_ref(), server))
            .collect(),
        Selector::Cert { within, .. } => match within {
            Some((s, _)) => select(s, recs),
            None => recs.iter().collect(),
        },
    }
}

fn field_check(sel: &Selector, pred: &Pred, recs: &[Value]) -> Outcome {
    let chosen = select(sel, recs);
    if chosen.is_empty() {
        let why = match sel {
            Selector::Flow { client, server, .. }
                if recs
                    .iter()
                    .any(|r| reversed_matches(r, client.as_ref(), server)) =>
            {
                "no record for this flow (a record exists with client/server REVERSED)".to_string()
            }
            _ => format!(
                "no record selected ({} records: {})",
                recs.len(),
                recs.iter()
                    .take(6)
                    .map(short)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Outcome::Fail(why);
    }
    match sel {
        Selector::Cert {
            sha256,
            sha1,
            within,
        } => {
            let sides: Vec<Side> = match within {
                Some((_, s)) => vec![*s],
                None => vec![Side::Server, Side::Client],
            };
            let mut found = Vec::new();
            for r in &chosen {
                for s in &sides {
                    for e in chain(r, *s) {
                        let h256 = e.get("sha256").and_then(Value::as_str).map(hexnorm);
                        let h1 = e.get("sha1").and_then(Value::as_str).map(hexnorm);
                        if (sha256.is_some() && h256 == *sha256) || (sha1.is_some() && h1 == *sha1)
                        {
                            found.push(e);
                        }
                    }
                }
            }
            if found.is_empty() {
                return Outcome::Fail(format!(
                    "certificate not in any {:?} chain of the selected records",
                    sides
                ));
            }
            let Field::Cert(a) = pred.field else {
                return Outcome::Fail("bad field".into());
            };
            let bad: Vec<Want> = found
                .iter()
                .map(|e| cert_attr(e, a))
                .filter(|g| !holds(pred, g))
                .collect();
            match bad.first() {
                None => Outcome::Pass,
                Some(g) => Outcome::Fail(format!("got {g}")),
            }
        }
        Selector::Flow { all: false, .. } => {
            let gots: Vec<Want> = chosen.iter().map(|r| get(r, pred.field)).collect();
            if gots.iter().any(|g| holds(pred, g)) {
                Outcome::Pass
            } else {
                let extra = if chosen.len() > 1 {
                    format!(" ({} records for this flow)", chosen.len())
                } else {
                    String::new()
                };
                Outcome::Fail(format!(
                    "got {}{extra}",
                    gots.iter()
                        .map(|g| g.to_string())
                        .collect::<Vec<_>>()
                        .join(" | ")
                ))
            }
        }
        Selector::Flow { all: true, .. } | Selector::All => {
            let bad: Vec<(String, Want)> = chosen
                .iter()
                .map(|r| (short(r), get(r, pred.field)))
                .filter(|(_, g)| !holds(pred, g))
                .collect();
            if bad.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail(
                    bad.iter()
                        .map(|(r, g)| format!("{r} got {g}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record in the shape `monitor/src/export/json.rs` writes.
    fn rec() -> Value {
        serde_json::json!({
            "source": {"ip": "192.168.56.1", "port": 49365},
            "destination": {"ip": "192.168.56.101", "port": 443},
            "network": {"vlan": {"id": "50"}},
            "tls": {"version": "1.3", "cipher": "TLS_AES_128_GCM_SHA256", "established": false, "resumed": false,
                    "client": {"server_name": "localhost", "ja3": "D00857E0C8E7A7F35E446508C6233460", "ja4": "t13d"},
                    "server": {"hash": {"sha1": "3A0B3B23152C445C27AC6A0C41D6FA74AFB4095B", "sha256": "AB"},
                               "subject": "C=FR, ST=IDF, L=Paris, O=Stamus, CN=SELKS", "not_before": "2015-02-12T18:07:27Z"}},
            "trustwatch": {"alerts": [{"code": 48, "name": "unknown_ca", "level": "fatal", "from": "client", "encrypted": false}],
                           "server_chain": [{"sha256": "ab", "sha1": "3a0b", "serial": "97e647098eeac9b4", "subject": "CN=SELKS", "issuer": "CN=x", "san": ["a.b"]}],
                           "client_chain": []}
        })
    }

    #[test]
    fn reads_exporter_shape() {
        let r = rec();
        let fp = canon(
            Field::Leaf(Side::Server, CertAttr::Sha1),
            Want::Str("3a:0b:3b:23:15:2c:44:5c:27:ac:6a:0c:41:d6:fa:74:af:b4:09:5b".into()),
        );
        assert!(holds(
            &Pred::eq(Field::Leaf(Side::Server, CertAttr::Sha1), fp),
            &get(&r, Field::Leaf(Side::Server, CertAttr::Sha1))
        ));
        let ser = canon(
            Field::Leaf(Side::Server, CertAttr::Serial),
            Want::Str("00:97:E6:47:09:8E:EA:C9:B4".into()),
        );
        assert!(holds(
            &Pred::eq(Field::Leaf(Side::Server, CertAttr::Serial), ser),
            &get(&r, Field::Leaf(Side::Server, CertAttr::Serial))
        ));
        let draft = canon(Field::Version, Want::Str("TLS 1.3 draft-28".into()));
        assert!(holds(
            &Pred::eq(Field::Version, draft),
            &get(&r, Field::Version)
        ));
        assert!(!holds(
            &Pred::eq(Field::Version, Want::Str("1.2".into())),
            &get(&r, Field::Version)
        ));
        assert_eq!(get(&r, Field::LastAlert), Want::Str("unknown_ca".into()));
        assert_eq!(get(&r, Field::FatalAlert), Want::Bool(true));
        assert!(holds(
            &Pred::eq(Field::Vlan, Want::Num(50)),
            &get(&r, Field::Vlan)
        ));
        assert!(holds(
            &Pred::eq(
                Field::Ja3,
                canon(
                    Field::Ja3,
                    Want::Str("d00857e0c8e7a7f35e446508c6233460".into())
                )
            ),
            &get(&r, Field::Ja3)
        ));
        assert!(carries(&r, Field::Leaf(Side::Server, CertAttr::Sans)));
        let c = Cond::Flow {
            client: endpoint("192.168.56.1", Some(49365)).unwrap(),
            server: endpoint("192.168.56.101", Some(443)).unwrap(),
        };
        assert!(cond_holds(&r, &c));
        let nb = canon(
            Field::Leaf(Side::Server, CertAttr::NotBefore),
            Want::Str("2015-02-12T18:07:27".into()),
        );
        assert!(holds(
            &Pred::eq(Field::Leaf(Side::Server, CertAttr::NotBefore), nb),
            &get(&r, Field::Leaf(Side::Server, CertAttr::NotBefore))
        ));
        assert_eq!(get(&r, Field::ChainLen(Side::Client)), Want::Num(0));
    }
}
