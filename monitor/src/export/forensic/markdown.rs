//! The report as Markdown tables (GitHub-flavoured), to paste into an incident ticket.

use std::fmt::Write as _;

use super::{Collected, Lane, minute_label, when};
use crate::base::human;

/// Rows of the affected-clients table (the CSV report has them all).
const CLIENT_ROWS: usize = 50;
/// Minutes shown before and after each event in the per-minute table.
pub const AROUND_EVENT_MIN: i64 = 3;

/// A table cell: pipes and line breaks escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn render(c: &Collected) -> String {
    let mut o = String::from("# trustwatch incident report\n\n");
    if let Some((a, b)) = c.span {
        let _ = writeln!(
            o,
            "Capture: {} to {} ({}); {}.\n",
            when(a),
            when(b),
            human::duration_us(b.since(a)),
            human::count(c.connections.total(), "TLS connection", "TLS connections")
        );
    }
    o.push_str("| outcome | connections |\n|---|---:|\n");
    for (k, n) in &c.by_outcome {
        let _ = writeln!(o, "| {k} | {n} |");
    }
    o.push_str("\n## Events\n\n");
    if c.events.is_empty() {
        o.push_str("No trust events (healthy throughout).\n");
    } else {
        o.push_str("| time | service | event | evidence |\n|---|---|---|---|\n");
        for e in &c.events {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                when(e.at),
                cell(&e.service),
                e.kind,
                cell(&e.text)
            );
        }
    }
    o.push_str("\n## CA keys\n\n| CA key id | issuer | ok | failed |\n|---|---|---:|---:|\n");
    for (lane, t) in &c.keys {
        let subject = match lane {
            Lane::Key(k) => c.key_subjects.get(k).map(String::as_str).unwrap_or(""),
            _ => "",
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            lane.label(),
            cell(subject),
            t.ok,
            t.failed
        );
    }
    o.push_str("\n## Replicas\n\n| replica | CA keys presented (ok/failed) | ok | failed | first seen | last seen |\n|---|---|---:|---:|---|---|\n");
    for (addr, r) in &c.replicas {
        let keys: Vec<String> = r
            .keys
            .iter()
            .map(|(l, t)| format!("{} ({}/{})", l.short(), t.ok, t.failed))
            .collect();
        let _ = writeln!(
            o,
            "| {addr} | {} | {} | {} | {} | {} |",
            keys.join(", "),
            r.tally.ok,
            r.tally.failed,
            when(r.first),
            when(r.last)
        );
    }
    let failing = c.failing_clients();
    let _ = writeln!(o, "\n## Affected clients ({})\n", failing.len());
    if !failing.is_empty() {
        o.push_str("| client | first failure | last failure | failures | last success | CA key it last succeeded under | failing at end |\n|---|---|---|---:|---|---|---|\n");
        for (ip, cl) in failing.iter().take(CLIENT_ROWS) {
            let _ = writeln!(
                o,
                "| {ip} | {} | {} | {} | {} | {} | {} |",
                cl.first_failure.map(when).unwrap_or_default(),
                cl.last_failure.map(when).unwrap_or_default(),
                cl.failures,
                cl.last_success.map(when).unwrap_or_else(|| "never".into()),
                cl.last_success_key
                    .as_ref()
                    .map_or("-".to_string(), |k| k.to_string()),
                if cl.failing_now { "yes" } else { "no" }
            );
        }
        if failing.len() > CLIENT_ROWS {
            let _ = writeln!(
                o,
                "\n(+{} more in the CSV report)",
                failing.len() - CLIENT_ROWS
            );
        }
    }
    per_minute(c, &mut o);
    if !c.counters.is_empty() {
        o.push_str("\n## Counters\n\n| counter | value |\n|---|---:|\n");
        for (k, v) in &c.counters {
            let _ = writeln!(o, "| {k} | {v} |");
        }
    }
    let l = c.left_out;
    if l != Default::default() {
        let _ = writeln!(
            o,
            "\nLeft out of this report (its bounds): {} minute entries, {} replicas, {} clients, {} events.",
            l.minutes, l.replicas, l.clients, l.events
        );
    }
    o
}

/// Handshakes per minute (ok/failed per CA key) around each event, or the whole capture when
/// there is no event and it is short.
fn per_minute(c: &Collected, o: &mut String) {
    let minutes = c.per_minute();
    let lanes = c.lanes();
    let around: Vec<(i64, i64)> = if c.events.is_empty() {
        match (minutes.keys().next(), minutes.keys().last()) {
            (Some(a), Some(b)) if b - a < 60 => vec![(*a, *b)],
            _ => return,
        }
    } else {
        c.events
            .iter()
            .map(|e| {
                let m = e.at.micros().div_euclid(60_000_000);
                (m - AROUND_EVENT_MIN, m + AROUND_EVENT_MIN)
            })
            .collect()
    };
    o.push_str("\n## Per minute (ok/failed by CA key)\n\n| minute (UTC) |");
    for l in &lanes {
        let _ = write!(o, " {} |", l.short());
    }
    o.push_str("\n|---|");
    for _ in &lanes {
        o.push_str("---|");
    }
    o.push('\n');
    for (m, row) in &minutes {
        if !around.iter().any(|(a, b)| m >= a && m <= b) {
            continue;
        }
        let _ = write!(o, "| {} |", minute_label(*m, true));
        for l in &lanes {
            let t = row.get(l).copied().unwrap_or_default();
            let _ = write!(o, " {}/{} |", t.ok, t.failed);
        }
        o.push('\n');
    }
}
