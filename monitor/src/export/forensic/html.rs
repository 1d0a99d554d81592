//! The report as one self-contained HTML page: inline CSS, an inline SVG timeline, no script and
//! no external resource, so it can be attached to a ticket and opened anywhere. Well-formed XML
//! (every element closed, text escaped), which the tests parse.

use std::fmt::Write as _;

use super::{Collected, Lane, minute_label, when};
use crate::base::human;

/// Escapes text and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px;white-space:nowrap}\
td:last-child{white-space:normal}\
th{background:#f3f3f3}td.n{text-align:right}\
.ok{fill:#2e7d32}.failed{fill:#c62828}.event{stroke:#6a1b9a;stroke-width:2}\
.axis{stroke:#888}.lane{fill:#fafafa;stroke:#ddd}text{font-size:11px}";

/// Lane height and geometry of the timeline.
const LANE_H: i64 = 56;
const LEFT: i64 = 170;
const WIDTH: i64 = 1100;

pub fn render(c: &Collected) -> String {
    let mut o = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>trustwatch incident report</title><style>",
    );
    o.push_str(STYLE);
    o.push_str("</style></head><body><h1>trustwatch incident report</h1>");
    if let Some((a, b)) = c.span {
        let _ = write!(
            o,
            "<p id=\"span\">Capture from <time>{}</time> to <time>{}</time> ({}), {}.</p>",
            when(a),
            when(b),
            esc(&human::duration_us(b.since(a))),
            esc(&human::count(
                c.connections.total(),
                "TLS connection",
                "TLS connections"
            ))
        );
    }
    timeline(c, &mut o);
    table(
        &mut o,
        "events",
        "Events",
        &["time", "service", "event", "evidence"],
        c.events.iter().map(|e| {
            vec![
                when(e.at),
                e.service.clone(),
                e.kind.to_string(),
                e.text.clone(),
            ]
        }),
    );
    table(
        &mut o,
        "replicas",
        "Replicas",
        &[
            "replica",
            "CA keys presented (ok/failed)",
            "ok",
            "failed",
            "first seen",
            "last seen",
        ],
        c.replicas.iter().map(|(a, r)| {
            let keys: Vec<String> = r
                .keys
                .iter()
                .map(|(l, t)| format!("{} ({}/{})", l.short(), t.ok, t.failed))
                .collect();
            vec![
                a.to_string(),
                keys.join(", "),
                r.tally.ok.to_string(),
                r.tally.failed.to_string(),
                when(r.first),
                when(r.last),
            ]
        }),
    );
    table(
        &mut o,
        "clients",
        "Affected clients",
        &[
            "client",
            "first failure",
            "last failure",
            "failures",
            "last success",
            "CA key it last succeeded under",
            "failing at end",
        ],
        c.failing_clients().into_iter().map(|(ip, cl)| {
            vec![
                ip.to_string(),
                cl.first_failure.map(when).unwrap_or_default(),
                cl.last_failure.map(when).unwrap_or_default(),
                cl.failures.to_string(),
                cl.last_success.map(when).unwrap_or_else(|| "never".into()),
                cl.last_success_key
                    .as_ref()
                    .map_or("-".into(), ToString::to_string),
                if cl.failing_now { "yes" } else { "no" }.into(),
            ]
        }),
    );
    table(
        &mut o,
        "keys",
        "CA keys",
        &["CA key id", "issuer", "ok", "failed"],
        c.keys.iter().map(|(l, t)| {
            let subject = match l {
                Lane::Key(k) => c.key_subjects.get(k).cloned().unwrap_or_default(),
                _ => String::new(),
            };
            vec![l.label(), subject, t.ok.to_string(), t.failed.to_string()]
        }),
    );
    table(
        &mut o,
        "counters",
        "Counters",
        &["counter", "value"],
        c.counters
            .iter()
            .map(|(k, v)| vec![k.to_string(), v.to_string()]),
    );
    let l = c.left_out;
    if l != Default::default() {
        let _ = write!(
            o,
            "<p>Left out of this report (its bounds): {} minute entries, {} replicas, {} clients, {} events.</p>",
            l.minutes, l.replicas, l.clients, l.events
        );
    }
    o.push_str("</body></html>\n");
    o
}

fn table(
    o: &mut String,
    id: &str,
    title: &str,
    head: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) {
    let _ = write!(o, "<h2>{}</h2><table id=\"{id}\"><thead><tr>", esc(title));
    for h in head {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr></thead><tbody>");
    for row in rows {
        o.push_str("<tr>");
        for cell in row {
            let numeric = !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_digit());
            let _ = write!(
                o,
                "<td{}>{}</td>",
                if numeric { " class=\"n\"" } else { "" },
                esc(&cell)
            );
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
}

/// Handshakes per minute by CA key: one lane per key, green bars up for successes, red bars down
/// for failures, a time axis below, events as vertical lines (their text in a tooltip).
fn timeline(c: &Collected, o: &mut String) {
    let minutes = c.per_minute();
    let lanes = c.lanes();
    let (Some(first), Some(last)) = (
        minutes.keys().next().copied(),
        minutes.keys().last().copied(),
    ) else {
        return;
    };
    let span = (last - first + 1).max(1);
    let plot = WIDTH - LEFT - 10;
    let x = |m: i64| LEFT + (m - first) * plot / span;
    let bar = (plot / span - 2).max(1);
    let max = minutes
        .values()
        .flat_map(|r| r.values())
        .map(|t| t.ok.max(t.failed))
        .max()
        .unwrap_or(1)
        .max(1) as i64;
    let height = LANE_H * lanes.len() as i64 + 30;
    let _ = write!(
        o,
        "<h2>Timeline by CA key</h2><p>Handshakes per minute (UTC) under each CA key: succeeded above the line (green), failed below (red); events are the purple lines (hover for their text).</p><svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\">"
    );
    for (i, lane) in lanes.iter().enumerate() {
        let top = LANE_H * i as i64;
        let mid = top + LANE_H / 2;
        let _ = write!(
            o,
            "<g class=\"lane-row\" data-key=\"{}\"><rect class=\"lane\" x=\"{LEFT}\" y=\"{top}\" width=\"{plot}\" height=\"{LANE_H}\"/><text x=\"4\" y=\"{}\">{}</text>",
            esc(&lane.label()),
            mid + 4,
            esc(&lane.short())
        );
        for (m, row) in &minutes {
            let Some(t) = row.get(lane) else { continue };
            let half = LANE_H / 2 - 3;
            if t.ok > 0 {
                let h = (t.ok as i64 * half / max).max(1);
                let _ = write!(
                    o,
                    "<rect class=\"ok\" x=\"{}\" y=\"{}\" width=\"{bar}\" height=\"{h}\"><title>{} ok {}</title></rect>",
                    x(*m),
                    mid - h,
                    minute_label(*m, true),
                    t.ok
                );
            }
            if t.failed > 0 {
                let h = (t.failed as i64 * half / max).max(1);
                let _ = write!(
                    o,
                    "<rect class=\"failed\" x=\"{}\" y=\"{mid}\" width=\"{bar}\" height=\"{h}\"><title>{} failed {}</title></rect>",
                    x(*m),
                    minute_label(*m, true),
                    t.failed
                );
            }
        }
        o.push_str("</g>");
    }
    let axis = LANE_H * lanes.len() as i64 + 2;
    let _ = write!(
        o,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{axis}\" x2=\"{}\" y2=\"{axis}\"/>",
        LEFT + plot
    );
    // About eight ticks, on whole minutes.
    let step = (span / 8).max(1);
    let mut m = first;
    while m <= last {
        let _ = write!(
            o,
            "<line class=\"axis\" x1=\"{0}\" y1=\"{axis}\" x2=\"{0}\" y2=\"{1}\"/><text class=\"tick\" x=\"{0}\" y=\"{2}\">{3}</text>",
            x(m),
            axis + 5,
            axis + 18,
            minute_label(m, false)
        );
        m += step;
    }
    for e in &c.events {
        let ex = LEFT + (e.at.micros() - first * 60_000_000) * plot / (span * 60_000_000);
        let _ = write!(
            o,
            "<line class=\"event\" x1=\"{ex}\" y1=\"0\" x2=\"{ex}\" y2=\"{axis}\"><title>{} {}: {}</title></line>",
            when(e.at),
            e.kind,
            esc(&e.text)
        );
    }
    o.push_str("</svg>");
}
