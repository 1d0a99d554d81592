//! The status page at `/` and the runbook it links to at `/runbook`.
//!
//! The page is one self-contained HTML document (`page.html`: inline CSS and JavaScript, no
//! external assets) that polls `/api/state` every two seconds and draws an overall verdict, per
//! service the state and its duration, presented vs trusted CA per replica, a timeline with a
//! time axis and a colour per CA key derived from the key, events in words, a "what to do" panel
//! per state and the affected edges (table and CSV). Its "what to do" links point at sections of
//! `deploy/RUNBOOK.md`, served here as HTML with the same anchors GitHub gives its headings, so
//! the links work on a node without internet access.

/// The status page.
pub const HTML: &str = include_str!("page.html");

/// The operator's runbook (Markdown), as the repository has it.
pub const RUNBOOK_MD: &str = include_str!("../../../deploy/RUNBOOK.md");

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped, spaces
/// to `-`.
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// In-page links `[text](#anchor)` of an escaped line become `<a>` elements.
fn links(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let tail = &rest[open..];
        let parsed = tail.find("](#").and_then(|mid| {
            let close = tail[mid..].find(')')? + mid;
            Some((&tail[1..mid], &tail[mid + 2..close], close))
        });
        match parsed {
            Some((text, href, close)) if !text.contains('[') => {
                out.push_str(&rest[..open]);
                out.push_str(&format!("<a href=\"{href}\">{text}</a>"));
                rest = &tail[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The runbook as one HTML document: headings with GitHub's anchors, code blocks as `<pre>`,
/// everything else as wrapped text with its in-page links.
pub fn runbook_html() -> String {
    let mut h = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>trustwatch runbook</title>\
         <style>body{font:14px/1.5 system-ui,sans-serif;max-width:900px;margin:16px auto;padding:0 16px;color:#1d2430}\
         pre{background:#f4f5f7;padding:8px;overflow:auto}.t{white-space:pre-wrap;margin:0 0 8px}\
         :target{background:#fff3c4}</style></head><body><p><a href=\"./\">← status page</a></p>\n",
    );
    let mut in_code = false;
    let mut para = String::new();
    let flush = |h: &mut String, para: &mut String| {
        if !para.is_empty() {
            h.push_str(&format!("<p class=\"t\">{}</p>\n", links(&escape(para))));
            para.clear();
        }
    };
    for line in RUNBOOK_MD.lines() {
        if line.starts_with("```") {
            flush(&mut h, &mut para);
            h.push_str(if in_code { "</pre>\n" } else { "<pre>" });
            in_code = !in_code;
        } else if in_code {
            h.push_str(&escape(line));
            h.push('\n');
        } else if let Some(level) = (1..=4).find(|n| {
            line.strip_prefix(&"#".repeat(*n))
                .is_some_and(|r| r.starts_with(' '))
        }) {
            flush(&mut h, &mut para);
            let text = line[level..].trim();
            h.push_str(&format!(
                "<h{level} id=\"{}\">{}</h{level}>\n",
                anchor(text),
                escape(text)
            ));
        } else if line.trim().is_empty() {
            flush(&mut h, &mut para);
        } else {
            if !para.is_empty() {
                para.push('\n');
            }
            para.push_str(line);
        }
    }
    flush(&mut h, &mut para);
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every runbook anchor the page links to is a heading of `deploy/RUNBOOK.md`, and the served
    /// runbook carries it as an element id.
    #[test]
    fn every_runbook_link_of_the_page_resolves() {
        let served = runbook_html();
        let mut linked = 0;
        for part in HTML.split("rb(\"").skip(1) {
            let Some(end) = part.find('"') else { continue };
            let a = &part[..end];
            if a.is_empty() || a.contains(',') {
                continue;
            }
            linked += 1;
            assert!(
                RUNBOOK_MD
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .any(|l| anchor(l.trim_start_matches('#')) == a),
                "no heading of deploy/RUNBOOK.md has the anchor #{a}"
            );
            assert!(
                served.contains(&format!(" id=\"{a}\"")),
                "/runbook lacks #{a}"
            );
        }
        assert!(linked >= 8, "{linked} links found");
        assert!(served.contains("<a href=\"#kubeedge-recovery\">KubeEdge recovery</a>"));
    }

    #[test]
    fn anchors_as_github_makes_them() {
        assert_eq!(anchor(" KubeEdge recovery"), "kubeedge-recovery");
        assert_eq!(anchor("KubeEdgeTrustCollapse"), "kubeedgetrustcollapse");
        assert_eq!(anchor("`trustwatch check`"), "trustwatch-check");
    }

    /// The page abbreviates a key id exactly as [`crate::base::KeyId::short`] does.
    #[test]
    fn the_page_uses_the_one_documented_abbreviation() {
        let k = crate::base::KeyId::parse(&"ab".repeat(20)).expect("a key id");
        assert!(HTML.contains(&format!("const SHORT={};", k.short().len())));
    }

    #[test]
    fn the_page_is_self_contained() {
        for external in ["src=\"http", "href=\"http", "@import", "url(http", "<link "] {
            assert!(!HTML.contains(external), "{external}");
        }
    }
}
