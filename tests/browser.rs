//! The status page in a real browser, during the incident demo: headless Chromium (Debian's
//! `chromium`) loads `/` from `trustwatch live` while the simulated CloudCore switches from CA_A
//! (the CA in casecret, trusted by the edges) to CA_B. Before the switch the rendered DOM must say
//! healthy and name only CA_A; after it, collapsed, both CA keys (short form, full id in the
//! title, the colour derived from the key), every affected edge's address in the table and in the
//! CSV download, and runbook links that resolve on `/runbook`. Screenshots of both moments go to
//! `target/status-page/` (and to `docs/` with `TRUSTWATCH_UPDATE_SCREENSHOTS=1`, for the README).
//!
//! Chromium runs with `--no-sandbox` only when the test runs as root (CI): its sandbox refuses
//! root, and the only page it loads is trustwatch's own, on loopback (see the testkit's `browser`).

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use trustwatch_testkit::Result;
use trustwatch_testkit::browser::Chromium;
use trustwatch_testkit::demo::scenario::{self, Options, Phase};
use trustwatch_testkit::demo::{Ports, http};
use trustwatch_testkit::peers::go;

const BIN: &str = env!("CARGO_BIN_EXE_trustwatch");

/// The page's colour of a CA key (`color()` in page.html), computed independently.
fn colour(key: &str) -> String {
    let h = u32::from_str_radix(&key[..4], 16).unwrap_or(0) % 360;
    let l = 30 + u32::from_str_radix(&key[4..6], 16).unwrap_or(0) % 14;
    format!("hsl({h},70%,{l}%)")
}

fn short(k: &str) -> &str {
    &k[..16]
}

fn state(ports: Ports) -> Result<Value> {
    let (code, body) = http::get(Ports::addr(ports.http), "/api/state")?;
    if code != 200 {
        return Err(format!("/api/state: {code}").into());
    }
    Ok(serde_json::from_str(&body)?)
}

fn cloudhub(s: &Value) -> Option<&Value> {
    s["detector"]["services"]
        .as_array()?
        .iter()
        .find(|x| x["service"] == "cloudhub")
}

/// Waits until `/api/state` satisfies `ok` (polling every 200 ms).
fn wait_state(ports: Ports, limit: Duration, ok: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = state(ports)
            && ok(&s)
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "/api/state not as expected within {limit:?}: {}",
                state(ports)?
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The element with `attr` (e.g. `id="verdict"`), from its opening tag to the next `</div>`.
fn element<'a>(dom: &'a str, attr: &str) -> &'a str {
    let Some(start) = dom.find(attr) else {
        return "";
    };
    let rest = &dom[start..];
    &rest[..rest.find("</div>").unwrap_or(rest.len())]
}

/// Decodes the percent-encoding of a `data:` URL.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The DOM without its `<script>` (whose source names every word the page can draw).
fn rendered(dom: &str) -> String {
    match (dom.find("<script>"), dom.find("</script>")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &dom[..a], &dom[b + 9..]),
        _ => dom.to_string(),
    }
}

fn shots_dir() -> std::path::PathBuf {
    trustwatch_testkit::target_dir().join("status-page")
}

#[test]
fn status_page_in_chromium_before_and_after_the_ca_switch() -> Result<()> {
    let browser = Chromium::new()?;
    let ports = Ports::free()?;
    let (tx, rx) = mpsc::channel();
    let o = Options {
        ports,
        narrate: false,
        // Long enough for a healthy DOM and screenshot before the switch on a loaded machine.
        switch_after: Duration::from_secs(20),
        run_for: Some(Duration::from_secs(50)),
        casecret: true,
        phases: Some(tx),
        ..Options::quick(BIN.into())
    };
    // The Go peer is built before the clock starts: from an empty Go cache (a fresh clone) the
    // build alone takes ~33 s here, which the phase limits below are not about.
    go::binary()?;
    let run = std::thread::spawn(move || scenario::run(&o).map_err(|e| e.to_string()));
    let wait_phase = |want: Phase, limit: Duration| -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(p) if p == want => return Ok(()),
                Ok(Phase::Ending) => return Err(format!("the run ended before {want:?}").into()),
                Ok(_) => {}
                Err(_) => return Err(format!("no {want:?} within {limit:?}").into()),
            }
        }
    };
    let url = format!("http://127.0.0.1:{}/", ports.http);
    std::fs::create_dir_all(shots_dir())?;

    wait_phase(Phase::MonitorUp, Duration::from_secs(30))?;
    // Healthy: every edge has succeeded, the trusted CA (casecret) is loaded.
    let before = wait_state(ports, Duration::from_secs(10), |s| {
        cloudhub(s).is_some_and(|c| c["succeeding_clients"].as_u64() >= Some(12))
    })?;
    let ca_a = before["detector"]["reference_cas"][0]["key_id"]
        .as_str()
        .ok_or("no trusted CA in /api/state")?
        .to_string();
    let t = Instant::now();
    let dom_before = rendered(&browser.dump_dom(&url)?);
    let dump_time = t.elapsed();
    let page_len = http_len(ports).unwrap_or(0);
    let t = Instant::now();
    browser.screenshot(&url, &shots_dir().join("status-healthy.png"))?;
    let shot_time = t.elapsed();
    assert!(
        matches!(rx.try_recv(), Err(mpsc::TryRecvError::Empty)),
        "the servers switched before the healthy page was taken (machine too slow?)"
    );

    wait_phase(Phase::Switched, Duration::from_secs(30))?;
    // Collapsed, with every edge listed and the replica's CA_B known from the probes.
    let after = wait_state(ports, Duration::from_secs(25), |s| {
        let certsvc_moved = s["detector"]["services"].as_array().is_some_and(|v| {
            v.iter().any(|x| {
                x["service"] == "certsvc"
                    && x["servers"].as_array().is_some_and(|v| {
                        v.iter()
                            .any(|x| x["presented_ca_key_id"].as_str().is_some_and(|k| k != ca_a))
                    })
            })
        });
        certsvc_moved
            && cloudhub(s).is_some_and(|c| {
                c["state"] == "collapsed"
                    && c["failing_client_list"].as_array().map(Vec::len) == Some(12)
                    && c["servers"].as_array().is_some_and(|v| {
                        v.iter()
                            .any(|x| x["presented_ca_key_id"].as_str().is_some_and(|k| k != ca_a))
                    })
            })
    })?;
    let dom_after = rendered(&browser.dump_dom(&url)?);
    std::fs::write(shots_dir().join("healthy.html"), &dom_before)?;
    std::fs::write(shots_dir().join("collapsed.html"), &dom_after)?;
    browser.screenshot(&url, &shots_dir().join("status-collapsed.png"))?;
    let runbook = http::get(Ports::addr(ports.http), "/runbook")?;

    let report = run.join().map_err(|_| "scenario panicked")??;
    eprintln!(
        "browser: --dump-dom {:.1} s, --screenshot {:.1} s, page {} bytes, healthy DOM {} bytes, collapsed DOM {} bytes",
        dump_time.as_secs_f64(),
        shot_time.as_secs_f64(),
        page_len,
        dom_before.len(),
        dom_after.len()
    );

    // Ground truth: the fixture's two CAs and the edges' own logs.
    assert_eq!(ca_a, report.ca_a_key_id, "casecret holds CA_A");
    let ca_b = report.ca_b_key_id.as_str();
    assert_ne!(ca_a, ca_b);
    let failing: BTreeSet<String> = report
        .failures
        .iter()
        .map(|(ip, _)| ip.to_string())
        .collect();
    assert_eq!(failing.len(), 12, "{report:?}");

    // Before the switch.
    let verdict = element(&dom_before, "id=\"verdict\"");
    assert!(
        verdict.contains("data-verdict=\"healthy\"") && verdict.contains(">Healthy"),
        "{verdict}"
    );
    assert!(dom_before.contains("data-service=\"cloudhub\" data-status=\"healthy\""));
    assert!(
        dom_before.contains(&format!("title=\"CA key id {ca_a}\"")),
        "CA_A with its full id"
    );
    assert!(dom_before.contains(&format!("{}</code>", short(&ca_a))));
    assert!(
        dom_before.contains(&colour(&ca_a)),
        "CA_A's colour {}",
        colour(&ca_a)
    );
    assert!(dom_before.contains("= trusted"));
    assert!(!dom_before.contains(short(ca_b)), "CA_B before the switch");
    assert!(!dom_before.contains("≠ trusted") && !dom_before.contains("Trust collapse"));
    assert!(
        !dom_before.contains("class=\"edge\""),
        "no affected edge before the switch"
    );
    assert!(
        dom_before.contains("<svg class=\"timeline\"") && dom_before.contains("class=\"tick\""),
        "a time axis"
    );

    // After: the verdict and the service agree.
    let verdict = element(&dom_after, "id=\"verdict\"");
    assert!(
        verdict.contains("data-verdict=\"collapsed\"")
            && verdict.contains("Trust collapse (total) on cloudhub: 12 of 12"),
        "{verdict}"
    );
    assert!(!dom_after.contains(">Healthy") && !dom_after.contains("CA consistent"));
    assert!(dom_after.contains("data-service=\"cloudhub\" data-status=\"collapsed\""));
    // certsvc has no edge traffic (its trust state stays healthy) but now serves CA_B, which is
    // not casecret's: the page says so instead of "healthy".
    assert!(
        dom_after.contains("data-service=\"certsvc\" data-status=\"inconsistent\""),
        "certsvc"
    );
    let card = &dom_after[dom_after
        .find("data-service=\"cloudhub\"")
        .ok_or("no cloudhub card")?..];
    assert!(card.contains("collapsed for "), "how long");
    assert!(card.contains("Rejecting side: <b>client</b>"));
    // Both CA keys: short form, full id in the title, colour from the key.
    for k in [ca_a.as_str(), ca_b] {
        assert!(
            dom_after.contains(&format!("title=\"CA key id {k}\"")),
            "{k}"
        );
        assert!(dom_after.contains(&format!("{}</code>", short(k))), "{k}");
        assert!(dom_after.contains(&colour(k)), "colour of {k}");
    }
    // The replica presents CA_B, which is not the trusted CA_A.
    let replicas = &card[card.find("class=\"replicas\"").ok_or("no replica table")?..];
    let row = &replicas[replicas
        .find(&format!("127.0.0.1:{}", ports.cloudhub))
        .ok_or("no cloudhub replica row")?..];
    let row = &row[..row.find("</tr>").unwrap_or(row.len())];
    assert!(
        row.contains(&format!("title=\"CA key id {ca_b}\"")) && row.contains("≠ trusted"),
        "{row}"
    );
    // The affected edges: exactly the edges that failed, in the table and in the CSV.
    let listed: BTreeSet<String> = dom_after
        .split("<td class=\"edge\">")
        .skip(1)
        .filter_map(|p| p.split('<').next().map(str::to_string))
        .collect();
    assert_eq!(listed, failing, "affected-edges table");
    let href = card
        .split("href=\"data:text/csv;charset=utf-8,")
        .nth(1)
        .ok_or("no CSV link")?;
    let csv = percent_decode(&href[..href.find('"').ok_or("CSV href")?]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("service,address,failing_since,last_seen,last_ok,trusted_ca_key_id")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows.iter()
            .map(|r| r[1].to_string())
            .collect::<BTreeSet<_>>(),
        failing,
        "{csv}"
    );
    assert!(
        rows.iter().all(|r| r[0] == "cloudhub" && r[5] == ca_a),
        "each edge trusts CA_A: {csv}"
    );
    // What to do: the edges trust the stored CA, so restart the replica; re-join as the fallback.
    let todo = element(card, "class=\"todo");
    for anchor in ["kubeedgecainconsistent", "kubeedge-recovery", "prevention"] {
        assert!(
            todo.contains(&format!("href=\"runbook#{anchor}\"")),
            "{anchor}: {todo}"
        );
        assert!(
            runbook.1.contains(&format!("id=\"{anchor}\"")),
            "/runbook #{anchor}"
        );
    }
    // Events in words, naming the keys.
    let events = &dom_after[dom_after.find("id=\"events\"").ok_or("no events")?..];
    let events = &events[..events.find("<h2>Probes").unwrap_or(events.len())];
    assert!(events.contains("<b>Trust collapse</b> ("), "{events}");
    assert!(events.contains(") on cloudhub: "), "{events}");
    assert!(events.contains("<b>CA changed</b>"), "{events}");
    assert!(
        !events.contains("TRUST_COLLAPSE"),
        "raw log lines: {events}"
    );
    check_schema_doc(&[&before, &after])?;
    // The state the page drew is the state the API had.
    assert_eq!(
        cloudhub(&after).map(|c| c["rejecting_side"].clone()),
        Some("client".into())
    );

    if std::env::var_os("TRUSTWATCH_UPDATE_SCREENSHOTS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        for f in ["status-healthy.png", "status-collapsed.png"] {
            std::fs::copy(shots_dir().join(f), docs.join(f))?;
        }
    }
    Ok(())
}

/// Every field path of a JSON document: `a.b`, `a[].c`; the keys of maps keyed by data (timeline
/// services, CA key ids) as `<service>` / `<ca_key_id>`; events as `detector.recent_events[]` only
/// (their fields are the event stream's, documented with it).
fn paths(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    if !at.is_empty() && !at.ends_with("[]") {
        out.insert(at.to_string());
    }
    if at == "detector.recent_events[]" {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let k = match at {
                    "timeline" => "<service>",
                    "timeline.<service>[].keys" => "<ca_key_id>",
                    _ => k.as_str(),
                };
                let p = if at.is_empty() {
                    k.to_string()
                } else {
                    format!("{at}.{k}")
                };
                paths(x, &p, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                paths(x, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

/// `docs/api-state.md` documents every field `/api/state` has (a renamed or added field fails
/// here), and every documented field is there unless its row says "only when".
fn check_schema_doc(states: &[&Value]) -> Result<()> {
    let mut real = BTreeSet::new();
    for s in states {
        paths(s, "", &mut real);
    }
    std::fs::write(
        shots_dir().join("api-state-paths.txt"),
        real.iter().cloned().collect::<Vec<_>>().join("\n"),
    )?;
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api-state.md"),
    )?;
    let mut documented = BTreeSet::new();
    let mut conditional = BTreeSet::new();
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        let path = row[3..].split('`').next().unwrap_or_default().to_string();
        if row.contains("only when") {
            conditional.insert(path.clone());
        }
        documented.insert(path);
    }
    let undocumented: Vec<&String> = real.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/api-state.md: {undocumented:?}"
    );
    let missing: Vec<&String> = documented
        .difference(&real)
        .filter(|p| !conditional.contains(*p))
        .collect();
    assert!(missing.is_empty(), "documented but not served: {missing:?}");
    Ok(())
}

fn http_len(ports: Ports) -> Option<usize> {
    http::get(Ports::addr(ports.http), "/")
        .ok()
        .map(|(_, b)| b.len())
}
