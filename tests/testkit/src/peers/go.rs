//! The Go peer (`tests/go`, crypto/tls as in KubeEdge's CloudCore and EdgeCore), built once per
//! process with `go build`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::{ClientOpts, PeerResult, TlsVersion};
use crate::Result;
use crate::pki::Leaf;

/// Builds (once per process) and returns the path of the Go peer binary.
pub fn binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build().map_err(|e| e.to_string()))
        .clone()
        .map_err(Into::into)
}

fn build() -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../go");
    let out_dir = crate::target_dir().join("go-peer");
    std::fs::create_dir_all(&out_dir)?;
    // A per-process output name: parallel test binaries may build at the same time.
    let bin = out_dir.join(format!("peer-{}", std::process::id()));
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", out_dir.join("cache"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .output()?;
    if !out.status.success() {
        return Err(format!("go build failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(bin)
}

fn version_arg(v: Option<TlsVersion>) -> &'static str {
    v.map(TlsVersion::as_str).unwrap_or("")
}

/// Go server options (`peer server`).
pub struct ServerOpts<'a> {
    pub listen: SocketAddr,
    pub identity: &'a Leaf,
    /// CA file that verifies client certificates (RequireAndVerifyClientCert); `None` disables
    /// client authentication.
    pub client_ca: Option<PathBuf>,
    /// Max version (min is always 1.2, like CloudCore).
    pub max_version: Option<TlsVersion>,
    /// Exit after N connections (0: until killed).
    pub accept: usize,
    /// A second identity (chain, key, client CA) to switch to after `switch_after` connections
    /// or on SIGHUP: "CloudCore restarts with another CA".
    pub second: Option<(&'a Leaf, PathBuf)>,
    pub switch_after: usize,
    /// Cert-service mode: HTTPS without client certificates, `GET /ca.crt`.
    pub certsvc: bool,
    /// Extra raw flags.
    pub extra: Vec<String>,
}

impl<'a> ServerOpts<'a> {
    pub fn new(listen: SocketAddr, identity: &'a Leaf) -> Self {
        ServerOpts {
            listen,
            identity,
            client_ca: None,
            max_version: None,
            accept: 1,
            second: None,
            switch_after: 0,
            certsvc: false,
            extra: Vec::new(),
        }
    }
}

/// A running Go server; its per-connection JSON records are collected.
pub struct GoServer {
    pub addr: SocketAddr,
    child: Child,
    lines: Option<JoinHandle<Vec<Value>>>,
}

/// A server never outlives its test, even one that fails before `join`.
impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GoServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `timeout`) for the server to exit after its N connections (kills it after
    /// that) and returns its records (`{"event":"conn","ok":..,"error":..}` and `{"event":"switch"}`).
    pub fn join(mut self, timeout: Duration) -> Vec<Value> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines
            .take()
            .and_then(|l| l.join().ok())
            .unwrap_or_default()
    }

    /// The connection records only, as [`PeerResult`]s.
    pub fn join_results(self, timeout: Duration) -> Vec<PeerResult> {
        self.join(timeout)
            .iter()
            .filter(|v| v["event"] == "conn")
            .map(result_of)
            .collect()
    }
}

fn result_of(v: &Value) -> PeerResult {
    PeerResult {
        ok: v["ok"].as_bool().unwrap_or(false),
        handshake_ok: v["handshake_ok"]
            .as_bool()
            .unwrap_or(v["version"].is_string()),
        error: v["error"].as_str().map(String::from),
        version: v["version"].as_str().map(String::from),
        resumed: v["resumed"].as_bool().unwrap_or(false),
        local: v["local"].as_str().and_then(|s| s.parse().ok()),
        remote: v["remote"].as_str().and_then(|s| s.parse().ok()),
    }
}

/// Starts the Go server and waits until it listens.
pub fn server(opts: ServerOpts<'_>) -> Result<GoServer> {
    let mut cmd = Command::new(binary()?);
    cmd.arg("server")
        .arg("-listen")
        .arg(opts.listen.to_string())
        .arg("-cert")
        .arg(&opts.identity.chain_path)
        .arg("-key")
        .arg(&opts.identity.key_path)
        .arg("-n")
        .arg(opts.accept.to_string())
        .arg("-max")
        .arg(version_arg(opts.max_version));
    match &opts.client_ca {
        Some(ca) => {
            cmd.arg("-client-ca").arg(ca);
        }
        None => {
            cmd.arg("-no-client-auth");
        }
    }
    if let Some((leaf, ca)) = &opts.second {
        cmd.arg("-cert2")
            .arg(&leaf.chain_path)
            .arg("-key2")
            .arg(&leaf.key_path)
            .arg("-client-ca2")
            .arg(ca);
        cmd.arg("-switch-after").arg(opts.switch_after.to_string());
    }
    if opts.certsvc {
        cmd.arg("-certsvc");
    }
    cmd.args(&opts.extra);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    let lines = std::thread::spawn(move || {
        let mut v = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Ok(j) = serde_json::from_str::<Value>(&line) {
                if j["event"] == "listening" {
                    let _ = tx.send(());
                } else {
                    v.push(j);
                }
            }
        }
        v
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return Err("Go server did not start".into());
    }
    Ok(GoServer {
        addr: opts.listen,
        child,
        lines: Some(lines),
    })
}

/// Runs the Go client (`peer client`): `opts.attempts` connections, one result each.
/// `identity` `None` → no client certificate. `get` → an HTTP GET (cert-service) instead of ping.
pub fn client(
    opts: &ClientOpts,
    ca: &Path,
    identity: Option<&Leaf>,
    get: Option<&str>,
) -> Result<Vec<PeerResult>> {
    let mut cmd = Command::new(binary()?);
    cmd.arg("client")
        .arg("-connect")
        .arg(opts.connect.to_string())
        .arg("-ca")
        .arg(ca)
        .arg("-server-name")
        .arg(&opts.server_name)
        .arg("-max")
        .arg(version_arg(opts.version))
        .arg("-n")
        .arg(opts.attempts.to_string())
        .arg("-interval")
        .arg(format!("{}ms", opts.interval.as_millis()));
    if opts.version == Some(TlsVersion::V13) {
        cmd.args(["-min", "1.3"]);
    }
    if let Some(ip) = opts.local_ip {
        cmd.arg("-local").arg(ip.to_string());
    }
    if let Some(m) = opts.mss {
        cmd.arg("-mss").arg(m.to_string());
    }
    if opts.resume {
        cmd.arg("-resume");
    }
    if let Some(leaf) = identity {
        cmd.arg("-cert")
            .arg(&leaf.chain_path)
            .arg("-key")
            .arg(&leaf.key_path);
    }
    if let Some(path) = get {
        cmd.arg("-get").arg(path);
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(format!("Go client failed: {}", out.status).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| result_of(&v))
        .collect())
}
