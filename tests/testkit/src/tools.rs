//! The deployment tests' external tools: kustomize (`kubectl kustomize`, offline), the pinned
//! Python tools (kubernetes-validate, checkov) that `cargo xtask setup` installs into their own
//! virtual environment, and a YAML reader (that environment's PyYAML, so that no YAML crate is
//! needed).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Result;

/// The virtual environment of the Python tools (the same rule as `cargo xtask setup`):
/// `$TRUSTWATCH_PYTOOLS`, else `~/.cache/trustwatch/venv`.
pub fn pytools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRUSTWATCH_PYTOOLS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/trustwatch/venv")
}

/// A program of that environment (`checkov`, `kubernetes-validate`, `python`).
pub fn pytool(name: &str) -> Result<PathBuf> {
    let p = pytools_dir().join("bin").join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("{} missing: run `cargo xtask setup`", p.display()).into())
    }
}

/// `kubectl kustomize DIR`: the rendered manifests.
pub fn kustomize(dir: &Path) -> Result<String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| format!("kubectl (kustomize) could not start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Every document of a YAML stream, as JSON values (empty documents skipped).
pub fn yaml_documents(text: &str) -> Result<Vec<serde_json::Value>> {
    let mut child = Command::new(pytool("python")?)
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("python stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("YAML: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    match serde_json::from_slice(&out.stdout)? {
        serde_json::Value::Array(v) => Ok(v),
        other => Err(format!("YAML: expected a list, got {other}").into()),
    }
}
