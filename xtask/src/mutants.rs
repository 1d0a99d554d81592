//! `cargo xtask mutants`: mutation testing of the decision code with cargo-mutants.
//!
//! Mutates the files in [`DECISION_FILES`] (or those given with `--file`, or only the lines of
//! them a branch changed with `--in-diff`), runs the fast test set on each mutant (`cargo test -p
//! trustwatch --lib`, set in `.cargo/mutants.toml`) and prints per file how many mutants the
//! tests caught, missed, timed out on or could not build. A missed mutant must be listed in
//! `xtask/mutants-equivalent.txt` with the reason it is equivalent to the original; any other
//! fails the task, and so does a full run in which a file scores below [`MIN_SCORE`].
//!
//! ```text
//! cargo xtask mutants                                      # every decision file (hours)
//! cargo xtask mutants --file monitor/src/handshake/outcome.rs   # one file while working on it
//! cargo xtask mutants --in-diff [BASE]                     # lines changed since the merge base
//!                                                          # with BASE (default main)
//! cargo xtask mutants --file F --re 'in Window::client$'  # only mutants whose names match
//! cargo xtask mutants --list [...]                         # what would be mutated
//! ```
//!
//! `--jobs N` runs N mutants at once (default 1; each needs a core and ~1 GB). `--budget MIN`
//! (default 40 with `--in-diff`) keeps a run within MIN minutes: when the mutants would take
//! longer, a deterministic round-robin sample (`--shard`) of them runs and the report says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, target_dir, workspace};

/// The code that decides outcomes and trust: every rule here must be pinned by a test.
pub const DECISION_FILES: &[&str] = &[
    "monitor/src/handshake/outcome.rs",
    "monitor/src/handshake/tracker.rs",
    "monitor/src/tls/alert.rs",
    "monitor/src/tls/record.rs",
    "monitor/src/detect/classify.rs",
    "monitor/src/detect/mod.rs",
    "monitor/src/detect/service/mod.rs",
    "monitor/src/detect/service/window.rs",
    "monitor/src/detect/service/servers.rs",
    "monitor/src/detect/service/collapse.rs",
    "monitor/src/detect/service/divergence.rs",
    "monitor/src/detect/service/reference.rs",
    "monitor/src/detect/service/snapshot.rs",
    "monitor/src/trust/mod.rs",
];

/// Caught (or timed out) share of the viable mutants each decision file must reach.
pub const MIN_SCORE: f64 = 0.90;

/// Mutants that survive on purpose, with their reasons.
const EQUIVALENT_FILE: &str = "xtask/mutants-equivalent.txt";

/// Seconds one mutant takes with one job (incremental build of the crate + the lib tests), on
/// the 2-core CI machine; used to keep `--budget`.
const SECS_PER_MUTANT: u64 = 70;

struct Opts {
    files: Vec<String>,
    /// `Some(base)`: only the lines changed since the merge base with `base`.
    in_diff: Option<String>,
    jobs: u32,
    budget_min: Option<u64>,
    list: bool,
    /// Only the mutants whose names match one of these regexes (cargo-mutants' `--re`).
    re: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        files: Vec::new(),
        in_diff: None,
        jobs: 1,
        budget_min: None,
        list: false,
        re: Vec::new(),
    };
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--file" | "-f" => o.files.push(value("--file")?),
            "--jobs" | "-j" => {
                o.jobs = value("--jobs")?
                    .parse()
                    .map_err(|e| format!("--jobs: {e}"))?
            }
            "--budget" => {
                o.budget_min = Some(
                    value("--budget")?
                        .parse()
                        .map_err(|e| format!("--budget: {e}"))?,
                )
            }
            "--list" => o.list = true,
            "--re" => o.re.push(value("--re")?),
            "--in-diff" => {
                let base = match it.peek() {
                    Some(b) if !b.starts_with('-') => it.next().cloned(),
                    _ => None,
                };
                o.in_diff = Some(base.unwrap_or_else(|| "main".into()));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.in_diff.is_some() && o.budget_min.is_none() {
        o.budget_min = Some(40);
    }
    Ok(o)
}

fn git(args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(workspace())
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The diff of `files` between the merge base with `base` (or `origin/base`) and the working
/// tree; `None` when it is empty. Written where cargo-mutants reads it.
fn diff_since(base: &str, files: &[&str], out: &Path) -> Result<Option<(String, PathBuf)>, String> {
    let candidates = [base.to_string(), format!("origin/{base}")];
    let merge_base = candidates
        .iter()
        .find_map(|b| git(&["merge-base", "HEAD", b]).ok())
        .ok_or_else(|| format!("no merge base with {base} or origin/{base}"))?;
    let merge_base = merge_base.trim().to_string();
    let mut args = vec!["diff", "--no-ext-diff", merge_base.as_str(), "--"];
    args.extend(files);
    let diff = git(&args)?;
    if diff.trim().is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let path = out.join("in-diff.patch");
    std::fs::write(&path, diff).map_err(|e| e.to_string())?;
    Ok(Some((merge_base, path)))
}

/// `cargo mutants` with the files (and diff) of this run.
fn mutants_cmd(files: &[&str], diff: Option<&Path>, re: &[String]) -> std::process::Command {
    let mut c = cargo();
    c.arg("mutants").args(["--colors", "never", "--no-shuffle"]);
    for f in files {
        c.args(["--file", f]);
    }
    for r in re {
        c.args(["--re", r]);
    }
    if let Some(d) = diff {
        c.arg("--in-diff").arg(d);
    }
    c
}

fn list(files: &[&str], diff: Option<&Path>, re: &[String]) -> Result<Vec<String>, String> {
    let out = mutants_cmd(files, diff, re)
        .arg("--list")
        .current_dir(workspace())
        .output()
        .map_err(|e| format!("cargo mutants --list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo mutants --list failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect())
}

pub fn mutants(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    crate::setup::ensure_cargo_mutants()?;
    let root = workspace();
    let files: Vec<&str> = if o.files.is_empty() {
        DECISION_FILES.to_vec()
    } else {
        o.files.iter().map(String::as_str).collect()
    };
    for f in &files {
        if !root.join(f).is_file() {
            return Err(format!(
                "{f}: no such file (paths are relative to the workspace)"
            ));
        }
    }
    let out_dir = target_dir().join("mutants");
    let diff = match &o.in_diff {
        Some(base) => match diff_since(base, &files, &out_dir)? {
            Some((merge_base, path)) => {
                println!(
                    "mutants: lines of the decision files changed since {} ({base})",
                    &merge_base[..merge_base.len().min(12)]
                );
                Some(path)
            }
            None => {
                println!("mutants: no decision file changed since the merge base with {base}");
                return Ok(());
            }
        },
        None => None,
    };
    let names = list(&files, diff.as_deref(), &o.re)?;
    if o.list {
        for n in &names {
            println!("{n}");
        }
        println!("{} mutants", names.len());
        return Ok(());
    }
    if names.is_empty() {
        println!("mutants: the change produces no mutants");
        return Ok(());
    }
    let full = o.files.is_empty() && diff.is_none() && o.re.is_empty();
    let mut cmd = mutants_cmd(&files, diff.as_deref(), &o.re);
    cmd.arg("--output").arg(&out_dir);
    cmd.args(["--jobs", &o.jobs.to_string()]);
    let mut sampled = None;
    if let Some(budget) = o.budget_min {
        let minutes = (names.len() as u64 * SECS_PER_MUTANT).div_ceil(60 * u64::from(o.jobs));
        if minutes > budget {
            let shards = minutes.div_ceil(budget.max(1));
            // Rotates with the commit, so successive changes sample different shards.
            let head = git(&["rev-parse", "HEAD"]).unwrap_or_default();
            let k = u64::from_str_radix(head.get(..8).unwrap_or("0"), 16).unwrap_or(0) % shards;
            cmd.args([
                "--shard",
                &format!("{k}/{shards}"),
                "--sharding",
                "round-robin",
            ]);
            sampled = Some((k, shards));
        }
    }
    // cargo-mutants copies the workspace into a scratch folder under TMPDIR; tests read the
    // public corpus from `<workspace>/../shared`, so the scratch folder's parent gets a
    // `shared` link to it.
    let tmp = out_dir.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let shared = root.join("../shared");
    let link = tmp.join("shared");
    if shared.exists() && std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(&shared, &link)
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    cmd.env("TMPDIR", &tmp);
    if o.jobs == 1 {
        // One job at a time can build in the workspace's target folder, where the dependencies
        // are already built (each job would otherwise build them all in its scratch copy); the
        // copy's own crates get their own artifacts (their path differs).
        cmd.env("CARGO_TARGET_DIR", target_dir());
    }
    println!(
        "mutants: {} mutants in {} file(s){}",
        names.len(),
        files.len(),
        sampled.map_or(String::new(), |(k, n)| format!(
            "; over the {} min budget, running shard {k} of {n} (round-robin)",
            o.budget_min.unwrap_or(0)
        ))
    );
    // cargo-mutants exits 2 for missed mutants and 3 for timeouts: the report below judges.
    let status = cmd
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cargo mutants: {e}"))?;
    if !matches!(status.code(), Some(0 | 2 | 3)) {
        return Err(format!("cargo mutants failed ({status})"));
    }
    let results = Results::read(&out_dir.join("mutants.out"))?;
    let equivalent = Equivalent::read(&root.join(EQUIVALENT_FILE))?;
    report(&results, &equivalent, &files, full)
}

/// What cargo-mutants concluded about each mutant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Caught,
    Missed,
    Timeout,
    Unviable,
}

/// One mutant: file, line, and its description without the position.
#[derive(Clone, Debug)]
struct Mutant {
    file: String,
    line: usize,
    what: String,
}

impl Mutant {
    /// `path:line:col: description`, as cargo-mutants names it.
    fn parse(name: &str) -> Option<Mutant> {
        let (file, rest) = name.split_once(':')?;
        let (pos, what) = rest.split_once(": ")?;
        let line = pos.split(':').next()?.parse().ok()?;
        Some(Mutant {
            file: file.to_string(),
            line,
            what: what.trim().to_string(),
        })
    }
    fn key(&self) -> String {
        format!("{}: {}", self.file, self.what)
    }
}

struct Results(Vec<(Mutant, Verdict)>);

impl Results {
    fn read(dir: &Path) -> Result<Results, String> {
        let mut v = Vec::new();
        for (file, verdict) in [
            ("caught.txt", Verdict::Caught),
            ("missed.txt", Verdict::Missed),
            ("timeout.txt", Verdict::Timeout),
            ("unviable.txt", Verdict::Unviable),
        ] {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let m = Mutant::parse(line)
                    .ok_or_else(|| format!("{}: cannot read {line:?}", path.display()))?;
                v.push((m, verdict));
            }
        }
        Ok(Results(v))
    }
}

/// One entry of the equivalent-mutants file: the mutant's name without its position, an
/// optional piece of its source line to tell apart mutants of the same name, and the reason.
#[derive(Debug)]
struct Entry {
    key: String,
    at: Option<String>,
    reason: String,
}

#[derive(Debug)]
struct Equivalent(Vec<Entry>);

impl Equivalent {
    /// Lines `path: description [@ source text]`, several of them sharing the indented reason
    /// that follows; `#` starts a comment line.
    fn read(path: &Path) -> Result<Equivalent, String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut entries: Vec<Entry> = Vec::new();
        let mut pending: Vec<(String, Option<String>)> = Vec::new();
        let mut reason = String::new();
        let flush = |pending: &mut Vec<(String, Option<String>)>,
                     reason: &mut String,
                     entries: &mut Vec<Entry>|
         -> Result<(), String> {
            if pending.is_empty() {
                return Ok(());
            }
            if reason.trim().is_empty() {
                return Err(format!(
                    "{}: no reason given for {:?}",
                    path.display(),
                    pending[0].0
                ));
            }
            for (key, at) in pending.drain(..) {
                entries.push(Entry {
                    key,
                    at,
                    reason: reason.trim().to_string(),
                });
            }
            reason.clear();
            Ok(())
        };
        for line in text.lines() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            if line.trim().is_empty() {
                flush(&mut pending, &mut reason, &mut entries)?;
            } else if line.starts_with(char::is_whitespace) {
                reason.push_str(line.trim());
                reason.push(' ');
            } else {
                if !reason.is_empty() {
                    flush(&mut pending, &mut reason, &mut entries)?;
                }
                let (key, at) = match line.split_once(" @ ") {
                    Some((k, a)) => (k.trim().to_string(), Some(a.trim().to_string())),
                    None => (line.trim().to_string(), None),
                };
                pending.push((key, at));
            }
        }
        flush(&mut pending, &mut reason, &mut entries)?;
        Ok(Equivalent(entries))
    }

    /// The entry that explains `m`, if any.
    fn find(&self, m: &Mutant) -> Option<&Entry> {
        let key = m.key();
        self.0.iter().find(|e| {
            e.key == key
                && e.at.as_ref().is_none_or(|at| {
                    source_line(&m.file, m.line).is_some_and(|l| l.contains(at.as_str()))
                })
        })
    }
}

fn source_line(file: &str, line: usize) -> Option<String> {
    let text = std::fs::read_to_string(workspace().join(file)).ok()?;
    text.lines().nth(line.checked_sub(1)?).map(String::from)
}

#[derive(Default)]
struct Tally {
    caught: usize,
    missed: usize,
    equivalent: usize,
    timeout: usize,
    unviable: usize,
}

impl Tally {
    fn viable(&self) -> usize {
        self.caught + self.missed + self.timeout
    }
    fn score(&self) -> Option<f64> {
        let v = self.viable();
        (v > 0).then(|| (self.caught + self.timeout) as f64 / v as f64)
    }
}

fn report(r: &Results, eq: &Equivalent, files: &[&str], full: bool) -> Result<(), String> {
    let mut per_file: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut unexplained = Vec::new();
    let mut explained = Vec::new();
    let mut used = vec![false; eq.0.len()];
    for (m, v) in &r.0 {
        let t = per_file.entry(m.file.as_str()).or_default();
        match v {
            Verdict::Caught => t.caught += 1,
            Verdict::Timeout => t.timeout += 1,
            Verdict::Unviable => t.unviable += 1,
            Verdict::Missed => {
                t.missed += 1;
                match eq.find(m) {
                    Some(e) => {
                        t.equivalent += 1;
                        explained.push(format!(
                            "{}:{}: {}\n      {}",
                            m.file, m.line, m.what, e.reason
                        ));
                        if let Some(i) = eq.0.iter().position(|x| std::ptr::eq(x, e)) {
                            used[i] = true;
                        }
                    }
                    None => unexplained.push(format!("{}:{}: {}", m.file, m.line, m.what)),
                }
            }
        }
    }
    if !explained.is_empty() {
        println!("\nmissed, listed as equivalent in {EQUIVALENT_FILE}:");
        for e in &explained {
            println!("  {e}");
        }
    }
    println!();
    println!(
        "{:<44} {:>7} {:>6} {:>13} {:>7} {:>8} {:>7}",
        "file", "mutants", "caught", "missed (eq.)", "timeout", "unviable", "score"
    );
    let mut low = Vec::new();
    let mut total = Tally::default();
    for (file, t) in &per_file {
        let score = t.score();
        println!(
            "{:<44} {:>7} {:>6} {:>13} {:>7} {:>8} {:>7}",
            file,
            t.viable() + t.unviable,
            t.caught,
            format!("{} ({})", t.missed, t.equivalent),
            t.timeout,
            t.unviable,
            score.map_or("-".into(), |s| format!("{:.1}%", s * 100.0))
        );
        if score.is_some_and(|s| s < MIN_SCORE) {
            low.push(*file);
        }
        total.caught += t.caught;
        total.missed += t.missed;
        total.equivalent += t.equivalent;
        total.timeout += t.timeout;
        total.unviable += t.unviable;
    }
    println!(
        "{:<44} {:>7} {:>6} {:>13} {:>7} {:>8} {:>7}",
        "total",
        total.viable() + total.unviable,
        total.caught,
        format!("{} ({})", total.missed, total.equivalent),
        total.timeout,
        total.unviable,
        total
            .score()
            .map_or("-".into(), |s| format!("{:.1}%", s * 100.0))
    );
    println!(
        "score: caught or timed out / viable (caught + missed + timeout); eq.: listed in {EQUIVALENT_FILE}"
    );
    if full {
        let stale: Vec<&Entry> =
            eq.0.iter()
                .zip(&used)
                .filter(|(e, used)| {
                    !**used && files.iter().any(|f| e.key.starts_with(&format!("{f}: ")))
                })
                .map(|(e, _)| e)
                .collect();
        for e in stale {
            println!(
                "warning: {EQUIVALENT_FILE} lists {:?}{}, which no longer survives",
                e.key,
                e.at.as_ref().map_or(String::new(), |a| format!(" @ {a:?}"))
            );
        }
    }
    if !unexplained.is_empty() {
        println!(
            "\nmissed mutants that are not listed as equivalent (kill them with a test, or list them with the reason):"
        );
        for u in &unexplained {
            println!("  {u}");
        }
        return Err(format!(
            "{} missed mutant(s) not explained",
            unexplained.len()
        ));
    }
    if full && !low.is_empty() {
        return Err(format!(
            "below {:.0}% caught: {}",
            MIN_SCORE * 100.0,
            low.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutant_names_and_equivalent_entries() {
        let m = Mutant::parse(
            "monitor/src/handshake/outcome.rs:306:62: replace - with + in client_flight_end",
        )
        .unwrap();
        assert_eq!(m.file, "monitor/src/handshake/outcome.rs");
        assert_eq!(m.line, 306);
        assert_eq!(
            m.key(),
            "monitor/src/handshake/outcome.rs: replace - with + in client_flight_end"
        );
        let dir = std::env::temp_dir().join(format!("xtask-eq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("eq.txt");
        std::fs::write(
            &f,
            "# comment\na.rs: replace x\nb.rs: replace y @ foo(1)\n  the reason\n  goes on\n\nc.rs: z\n",
        )
        .unwrap();
        assert!(Equivalent::read(&f).unwrap_err().contains("no reason"));
        std::fs::write(
            &f,
            "a.rs: replace x\nb.rs: replace y @ foo(1)\n  the reason\n",
        )
        .unwrap();
        let eq = Equivalent::read(&f).unwrap();
        assert_eq!(eq.0.len(), 2);
        assert_eq!(eq.0[1].at.as_deref(), Some("foo(1)"));
        assert_eq!(eq.0[0].reason, "the reason");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn decision_files_exist() {
        for f in DECISION_FILES {
            assert!(workspace().join(f).is_file(), "{f}");
        }
    }
}
