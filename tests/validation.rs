//! Validation against third-party tools: runs `trustwatch analyze --any-port --json` on the 60
//! public captures of `../shared/validation/pcaps` and checks every value that Suricata
//! (suricata-verify), Zeek (btest baselines), Arkime and nDPI assert about them, plus tshark's
//! per-pcap handshake counts.
//!
//! Each source's `expected/*.json` is parsed into a common list of [`model::Expect`] (a check) and
//! [`model::Skip`] (an assertion not applicable to trustwatch, with the reason: QUIC, Zeek's history
//! string, a Suricata engine option, ...). Deliberate disagreements with a tool live in
//! `validation/known.json` with their reasons; the check then compares against trustwatch's value.
//! The test prints "checked N assertions, skipped M (reasons)" and fails listing every mismatch
//! (pcap, source, check, got). It also requires exit status 0 and an error-free stderr on every pcap.
//!
//! The corpus is not in this repository: CI checks out `../shared` beside the clone. A missing
//! corpus fails the test (it never passes silently).

#[path = "validation/arkime.rs"]
mod arkime;
#[path = "validation/eval.rs"]
mod eval;
#[path = "validation/model.rs"]
mod model;
#[path = "validation/ndpi.rs"]
mod ndpi;
#[path = "validation/suricata.rs"]
mod suricata;
#[path = "validation/tshark.rs"]
mod tshark;
#[path = "validation/zeek.rs"]
mod zeek;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use model::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/validation");
const KNOWN: &str = include_str!("validation/known.json");

fn corpus() -> PathBuf {
    let dir = PathBuf::from(CORPUS);
    assert!(
        dir.join("expected").is_dir() && dir.join("pcaps").is_dir(),
        "validation corpus missing: expected {} with pcaps/ and expected/ (CI must check out `shared` beside the repository clone)",
        dir.display()
    );
    dir
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every expectation and skip of the corpus, with known.json applied.
struct Plan {
    pcaps: Vec<String>,
    expects: Vec<Expect>,
    skips: Vec<Skip>,
    duplicates: usize,
    /// (pcap, source, field, tool value, reason) of applied disagreements.
    disagreements: Vec<(String, String, String, String, String)>,
}

fn plan(dir: &Path) -> Plan {
    let known: Value = serde_json::from_str(KNOWN).expect("validation/known.json");
    let summary = read_json(&dir.join("tshark-summary.json"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("expected"))
        .expect("expected/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut parsed = Parsed::default();
    let mut pcaps = Vec::new();
    for f in &files {
        let doc = read_json(f);
        let pcap = doc
            .get("pcap")
            .and_then(Value::as_str)
            .and_then(|p| p.rsplit('/').next())
            .unwrap_or_else(|| panic!("{}: no pcap key", f.display()))
            .to_string();
        match pcap.split('-').next() {
            Some("sv") => suricata::parse(&pcap, &doc, &mut parsed),
            Some("zeek") => zeek::parse(&pcap, &doc, &mut parsed),
            Some("arkime") => arkime::parse(&pcap, &doc, &mut parsed),
            Some("ndpi") => ndpi::parse(&pcap, &doc, &mut parsed),
            _ => panic!("{pcap}: unknown source prefix"),
        }
        match summary.get(&pcap) {
            Some(s) => tshark::parse(
                &pcap,
                s,
                known.get("tshark").and_then(|t| t.get(&pcap)),
                &mut parsed,
            ),
            None => parsed.skip(
                &pcap,
                "tshark",
                "summary",
                "pcap missing from tshark-summary.json",
            ),
        }
        pcaps.push(pcap);
    }
    // Identical checks asserted by several tests/baselines are checked once.
    let mut seen = HashSet::new();
    let before = parsed.expects.len();
    parsed
        .expects
        .retain(|e| seen.insert(format!("{}|{}", e.pcap, e.check)));
    let duplicates = before - parsed.expects.len();

    let mut disagreements = Vec::new();
    for d in known
        .get("disagreements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let g = |k: &str| {
            d.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (pcap, source, field, reason) = (g("pcap"), g("source"), g("field"), g("reason"));
        let origin = g("origin");
        let tw = d.get("trustwatch").cloned().unwrap_or(Value::Null);
        let mut hits = 0;
        for e in parsed
            .expects
            .iter_mut()
            .filter(|e| e.pcap == pcap && e.source == source && e.origin.contains(&origin))
        {
            let replace = |p: &mut Pred| {
                if p.field.to_string() == field {
                    let w = match &tw {
                        Value::Null => Want::Absent,
                        Value::Bool(b) => Want::Bool(*b),
                        Value::Number(n) => Want::Num(n.as_i64().unwrap_or_default()),
                        Value::String(s) => Want::Str(s.clone()),
                        other => Want::Str(other.to_string()),
                    };
                    p.want = canon(p.field, w);
                    p.op = Op::Eq;
                    true
                } else {
                    false
                }
            };
            let changed = match &mut e.check {
                Check::Field { pred, .. } => replace(pred),
                Check::Count { conds, .. } | Check::Exists { conds } => conds
                    .iter_mut()
                    .map(|c| {
                        if let Cond::Is(p) = c {
                            replace(p)
                        } else {
                            false
                        }
                    })
                    .fold(false, |a, b| a | b),
                Check::PlainAlerts { .. } => false,
            };
            if changed {
                e.disagreement = Some(reason.clone());
                hits += 1;
            }
        }
        assert!(
            hits > 0,
            "known.json disagreement matches no expectation: {d}"
        );
        disagreements.push((pcap, source, field, g("tool_value"), reason));
    }
    for n in known
        .get("not_applicable")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let g = |k: &str| {
            n.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (pcap, source, contains, reason) =
            (g("pcap"), g("source"), g("check_contains"), g("reason"));
        let before = parsed.expects.len();
        let mut removed = Vec::new();
        parsed.expects.retain(|e| {
            let hit =
                e.pcap == pcap && e.source == source && e.check.to_string().contains(&contains);
            if hit {
                removed.push(format!("{} {}", e.origin, e.check));
            }
            !hit
        });
        assert!(
            parsed.expects.len() < before,
            "known.json not_applicable entry matches no expectation: {n}"
        );
        for what in removed {
            parsed.skips.push(Skip {
                pcap: pcap.clone(),
                source: "known.json",
                what,
                reason: reason.clone(),
            });
        }
    }
    Plan {
        pcaps,
        expects: parsed.expects,
        skips: parsed.skips,
        duplicates,
        disagreements,
    }
}

fn skip_summary(skips: &[(String, String)]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in skips {
        *by.entry(r.as_str()).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = by.into_iter().collect();
    v.sort_by_key(|a| std::cmp::Reverse(a.1));
    v.iter()
        .map(|(r, n)| format!("  {n:4} × {r}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The expectation side alone (runs without the analyzer): every assertion of every source becomes
/// a check or a reasoned skip, every pcap has checks, and known.json has no stale entries.
#[test]
fn expectations_cover_every_assertion() {
    let dir = corpus();
    let p = plan(&dir);
    assert_eq!(p.pcaps.len(), 60, "expected 60 expected/*.json files");
    for pcap in &p.pcaps {
        assert!(
            dir.join("pcaps").join(pcap).is_file(),
            "{pcap} listed in expected/ but missing from pcaps/"
        );
        let n = p
            .expects
            .iter()
            .filter(|e| &e.pcap == pcap && e.source != "tshark")
            .count();
        let s = p.skips.iter().filter(|s| &s.pcap == pcap).count();
        assert!(n + s > 0, "{pcap}: no source assertion parsed");
    }
    for s in &p.skips {
        assert!(
            !s.reason.contains("not mapped") && !s.reason.contains("not translated"),
            "unmapped assertion: {s:?}"
        );
    }
    let skips: Vec<(String, String)> = p
        .skips
        .iter()
        .map(|s| (s.what.clone(), s.reason.clone()))
        .collect();
    println!(
        "{} checks ({} duplicate assertions merged), {} not applicable:\n{}",
        p.expects.len(),
        p.duplicates,
        p.skips.len(),
        skip_summary(&skips)
    );
}

struct Run {
    /// Connection records (objects with `tls` and `trustwatch`).
    records: Vec<Value>,
    /// Other JSON lines (detector events).
    other: usize,
    problems: Vec<String>,
}

fn run_analyzer(pcap: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_trustwatch"))
        .args(["analyze", "--any-port", "--json"])
        .arg(pcap)
        .output()
        .unwrap_or_else(|e| panic!("running trustwatch: {e}"));
    let mut problems = Vec::new();
    // Exit 5 (no TLS connection at all) is an answer, checked below: then stdout must be empty
    // and stderr the one warning that says so.
    let nothing_found = out.status.code() == Some(5);
    if !out.status.success() && !nothing_found {
        problems.push(format!("exit status {}", out.status));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if nothing_found && !out.stdout.is_empty() {
        problems.push("exit 5 (nothing found) with records on stdout".into());
    }
    for l in stderr.lines().filter(|l| {
        let expected = nothing_found
            && l.starts_with("trustwatch: warning: no TLS connection found on any TCP port");
        let l = l.to_ascii_lowercase();
        !expected && (l.contains("error") || l.contains("panic") || l.contains("warn"))
    }) {
        problems.push(format!("stderr: {l}"));
    }
    let mut records = Vec::new();
    let mut other = 0;
    for (i, l) in String::from_utf8_lossy(&out.stdout).lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(l) {
            Ok(v) if v.get("tls").is_some() && v.get("trustwatch").is_some() => records.push(v),
            Ok(v) if v.is_object() => other += 1,
            Ok(_) => problems.push(format!("stdout line {}: not a JSON object", i + 1)),
            Err(e) => problems.push(format!(
                "stdout line {}: {e}: {}",
                i + 1,
                l.chars().take(120).collect::<String>()
            )),
        }
    }
    Run {
        records,
        other,
        problems,
    }
}

#[test]
fn trustwatch_matches_public_tool_expectations() {
    let dir = corpus();
    let p = plan(&dir);
    let mut runs = BTreeMap::new();
    for pcap in &p.pcaps {
        runs.insert(pcap.clone(), run_analyzer(&dir.join("pcaps").join(pcap)));
    }
    let all: Vec<Value> = runs
        .values()
        .flat_map(|r| r.records.iter().cloned())
        .collect();
    let rep = eval::Reported::of(&all);

    let mut failures: Vec<String> = Vec::new();
    let mut skipped: Vec<(String, String)> = p
        .skips
        .iter()
        .map(|s| {
            (
                format!("{} {} {}", s.pcap, s.source, s.what),
                s.reason.clone(),
            )
        })
        .collect();
    let (mut passed, mut partial) = (0usize, 0usize);
    let mut disagreement_results = Vec::new();
    let mut partial_notes = Vec::new();
    for (pcap, run) in &runs {
        for pr in &run.problems {
            failures.push(format!("{pcap}: analyzer: {pr}"));
        }
    }
    for e in &p.expects {
        let recs = &runs[&e.pcap].records;
        let res = eval::evaluate(&e.check, recs, &rep);
        let tag = if e.disagreement.is_some() {
            " [deliberate disagreement]"
        } else {
            ""
        };
        match res {
            eval::Outcome::Pass => passed += 1,
            eval::Outcome::PassPartial(note) => {
                partial += 1;
                partial_notes.push(format!("{} [{}] {}: {note}", e.pcap, e.source, e.check));
            }
            eval::Outcome::Skipped(r) => {
                skipped.push((format!("{} {} {}", e.pcap, e.source, e.check), r))
            }
            eval::Outcome::Fail(got) => failures.push(format!(
                "{} [{} {}]{tag}\n      expected: {}\n      got: {got}",
                e.pcap, e.source, e.origin, e.check
            )),
        }
        if let Some(r) = &e.disagreement {
            disagreement_results.push(format!("{} [{}] {} — {r}", e.pcap, e.source, e.check));
        }
    }
    let checked = passed
        + partial
        + failures
            .iter()
            .filter(|f| !f.contains(": analyzer: "))
            .count();
    let other: usize = runs.values().map(|r| r.other).sum();
    println!(
        "records: {} connections (+{other} other JSON lines) over {} pcaps; fields reported: {:?}",
        all.len(),
        runs.len(),
        rep.0
    );
    println!(
        "checks that dropped conjuncts on unreported fields (count checked as a lower bound):"
    );
    for n in &partial_notes {
        println!("  {n}");
    }
    println!("deliberate disagreements ({}):", p.disagreements.len());
    for d in &disagreement_results {
        println!("  {d}");
    }
    println!(
        "checked {checked} assertions ({passed} passed, {partial} passed as lower bound, {} failed; {} duplicates merged), skipped {}:\n{}",
        checked - passed - partial,
        p.duplicates,
        skipped.len(),
        skip_summary(&skipped)
    );
    if !failures.is_empty() {
        panic!("{} mismatches:\n{}", failures.len(), failures.join("\n"));
    }
}
