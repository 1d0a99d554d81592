//! Cross-checks against `tshark-summary.json` (what tshark 4.0.17 decodes in each pcap; not a
//! source assertion). tshark counts handshake *messages*; `known.json` → `tshark` holds the per-pcap
//! adjustments that turn them into per-connection counts (QUIC hellos, a HelloRetryRequest's second
//! hello, a duplicated ClientHello, client Certificate messages) and the pcaps where tshark's
//! reassembly is known to be unreliable (README caveats).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::*;

const SRC: &str = "tshark";

fn n(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

pub fn parse(pcap: &str, summary: &Value, adj: Option<&Value>, out: &mut Parsed) {
    let Some(t) = summary.get("tshark") else {
        out.skip(pcap, SRC, "summary", "no tshark section");
        return;
    };
    let empty = Value::Null;
    let adj = adj.unwrap_or(&empty);
    if let Some(reason) = adj.get("skip_all").and_then(Value::as_str) {
        out.skip(pcap, SRC, "all tshark cross-checks", reason);
        return;
    }
    let hm = t.get("handshake_messages").cloned().unwrap_or_default();
    let count = |conds: Vec<Cond>, count: i64| Check::Count {
        conds,
        count: count.max(0) as usize,
    };
    let is = |f: Field, w: Want| Cond::Is(Pred::eq(f, w));

    // Connections with a ClientHello / ServerHello.
    let ch = n(&hm, "ClientHello") - n(adj, "quic_ch") - n(adj, "extra_ch");
    let sh = n(&hm, "ServerHello") - n(adj, "quic_sh") - n(adj, "extra_sh");
    out.expect(
        pcap,
        SRC,
        "ClientHello count",
        count(vec![is(Field::ClientHelloSeen, Want::Bool(true))], ch),
    );
    out.expect(
        pcap,
        SRC,
        "ServerHello count",
        count(vec![is(Field::ServerHelloSeen, Want::Bool(true))], sh),
    );

    // Negotiated versions.
    let minus = adj.get("versions_minus").cloned().unwrap_or_default();
    for (v, c) in t
        .get("server_hello_versions")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let c = c.as_i64().unwrap_or(0) - n(&minus, v);
        out.expect(
            pcap,
            SRC,
            format!("ServerHello version {v}"),
            count(
                vec![is(
                    Field::Version,
                    canon(Field::Version, Want::Str(v.clone())),
                )],
                c,
            ),
        );
    }

    // Plaintext Certificate chain lengths (server side; client chains listed in known.json).
    match adj.get("skip_chains").and_then(Value::as_str) {
        Some(reason) => out.skip(pcap, SRC, "Certificate chain lengths", reason),
        None => {
            let mut lens: Vec<i64> = t
                .get("certificate_msgs_chain_lengths")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .collect();
            for c in adj
                .get("client_chains")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
            {
                if let Some(i) = lens.iter().position(|l| *l == c) {
                    lens.remove(i);
                }
            }
            let mut hist: BTreeMap<i64, i64> = BTreeMap::new();
            for l in lens.into_iter().filter(|l| *l > 0) {
                *hist.entry(l).or_default() += 1;
            }
            let total: i64 = hist.values().sum();
            out.expect(
                pcap,
                SRC,
                "plaintext server Certificate messages",
                count(
                    vec![Cond::Is(Pred {
                        field: Field::ChainLen(Side::Server),
                        op: Op::Gt,
                        want: Want::Num(0),
                    })],
                    total,
                ),
            );
            for (l, c) in hist {
                out.expect(
                    pcap,
                    SRC,
                    format!("server chains of {l} certs"),
                    count(vec![is(Field::ChainLen(Side::Server), Want::Num(l))], c),
                );
            }
        }
    }

    // Plaintext alerts, "fatal(2) handshake_failure(40)": n.
    let alerts = t
        .get("alerts")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut total = 0usize;
    for (k, c) in &alerts {
        let num = |s: &str| {
            s.split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .and_then(|(d, _)| d.parse::<u8>().ok())
        };
        let (lv, desc) = k.split_once(' ').unwrap_or((k, ""));
        let c = c.as_u64().unwrap_or(0) as usize;
        total += c;
        out.expect(
            pcap,
            SRC,
            format!("alert {k}"),
            Check::PlainAlerts {
                level: num(lv),
                code: num(desc),
                count: c,
            },
        );
    }
    out.expect(
        pcap,
        SRC,
        "plaintext alerts total",
        Check::PlainAlerts {
            level: None,
            code: None,
            count: total,
        },
    );

    // SNI values (TCP ones; QUIC-only SNIs listed in known.json).
    let quic_sni: Vec<&str> = adj
        .get("quic_sni")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for s in t
        .get("sni")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if quic_sni.contains(&s) {
            out.skip(
                pcap,
                SRC,
                format!("SNI {s}"),
                "only in a QUIC flow (out of scope)",
            );
        } else {
            out.expect(
                pcap,
                SRC,
                format!("SNI {s}"),
                Check::Exists {
                    conds: vec![is(Field::Sni, Want::Str(s.to_string()))],
                },
            );
        }
    }

    // One record per TCP connection tshark decoded TLS on.
    match adj.get("skip_streams").and_then(Value::as_str) {
        Some(reason) => out.skip(pcap, SRC, "TLS TCP streams", reason),
        None => out.expect(
            pcap,
            SRC,
            "TLS TCP streams = records",
            count(vec![], n(t, "tls_tcp_streams")),
        ),
    }
}
