//! Runs `trustwatch analyze --json` on capture files and parses its JSON Lines.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::Result;

/// `trustwatch analyze --ports <ports> --json <files>`: one JSON object per connection (none when
/// it exits 5, nothing found).
pub fn analyze(bin: &Path, ports: &str, files: &[&Path]) -> Result<Vec<Value>> {
    let mut cmd = Command::new(bin);
    cmd.arg("analyze");
    if ports == "any" {
        cmd.arg("--any-port");
    } else {
        cmd.args(["--ports", ports]);
    }
    cmd.arg("--json");
    cmd.args(files);
    let out = cmd.output()?;
    // 5: not one TLS connection found (no records): a valid answer for a capture.
    if !out.status.success() && out.status.code() != Some(5) {
        return Err(format!(
            "trustwatch analyze failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut records = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        records
            .push(serde_json::from_str(line).map_err(|e| format!("bad JSON line {line:?}: {e}"))?);
    }
    Ok(records)
}

/// `v[a][b]...` for a dotted path (`"tls.server.hash.sha256"`); `Null` when absent.
pub fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .unwrap_or(&NULL)
}

/// `get(v, path)` as a string, `None` when absent or not a string.
pub fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    get(v, path).as_str()
}
