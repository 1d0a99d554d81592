//! A real Prometheus (Debian's `/usr/bin/prometheus`) on loopback for the tests: a generated
//! configuration, optional rule files, its HTTP API (instant queries, alerts). Stopped and its data
//! removed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::demo::http;
use crate::{Result, free_port};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// One scrape target.
pub struct Target {
    pub addr: SocketAddr,
    /// Extra target labels (e.g. `node`).
    pub labels: Vec<(String, String)>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` as job `trustwatch` every `every`, evaluating
    /// `rule_files` at the same period. Waits until it is ready (30 s).
    pub fn start(
        targets: &[Target],
        rule_files: &[PathBuf],
        every: Duration,
    ) -> Result<Prometheus> {
        if !Path::new(PROMETHEUS).exists() {
            return Err(format!("{PROMETHEUS} missing: run `cargo xtask setup`").into());
        }
        let dir = tempfile::tempdir()?;
        let secs = format!("{}ms", every.as_millis());
        let mut cfg = format!(
            "global:\n  scrape_interval: {secs}\n  scrape_timeout: {secs}\n  evaluation_interval: {secs}\n"
        );
        if !rule_files.is_empty() {
            cfg.push_str("rule_files:\n");
            for r in rule_files {
                cfg.push_str(&format!("  - '{}'\n", r.display()));
            }
        }
        cfg.push_str("scrape_configs:\n  - job_name: trustwatch\n    static_configs:\n");
        for t in targets {
            cfg.push_str(&format!("      - targets: ['{}']\n", t.addr));
            if !t.labels.is_empty() {
                cfg.push_str("        labels:\n");
                for (k, v) in &t.labels {
                    cfg.push_str(&format!("          {k}: '{v}'\n"));
                }
            }
        }
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, cfg)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http::get(addr, "/-/ready"), Ok((200, _))) {
            if Instant::now() > deadline {
                return Err("Prometheus not ready within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(p)
    }

    /// The folder of its configuration and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET /api/v1/query?query=...` (instant, now): the `data.result` array.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let (status, body) = http::get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        )?;
        let v: Value = serde_json::from_str(&body)?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("query {promql}: {status} {body}").into());
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /api/v1/alerts`: (alertname, state, labels) of every pending or firing alert.
    pub fn alerts(&self) -> Result<Vec<(String, String, Value)>> {
        let (status, body) = http::get(self.addr, "/api/v1/alerts")?;
        let v: Value = serde_json::from_str(&body)?;
        if status != 200 {
            return Err(format!("alerts: {status} {body}").into());
        }
        Ok(v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["state"].as_str().unwrap_or("").to_string(),
                    a["labels"].clone(),
                )
            })
            .collect())
    }

    /// `GET /api/v1/rules`: the names of the loaded alerting rules.
    pub fn alert_rules(&self) -> Result<Vec<String>> {
        let (_, body) = http::get(self.addr, "/api/v1/rules?type=alert")?;
        let v: Value = serde_json::from_str(&body)?;
        let mut names = Vec::new();
        for g in v["data"]["groups"].as_array().cloned().unwrap_or_default() {
            for r in g["rules"].as_array().cloned().unwrap_or_default() {
                names.extend(r["name"].as_str().map(String::from));
            }
        }
        Ok(names)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding of a query parameter.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `promtool ARGS` in `dir`; (success, stdout + stderr).
pub fn promtool(dir: &Path, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("{PROMTOOL} could not start: {e}"))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}
