//! The OpenSSL command line (`openssl s_server` / `s_client`) as a TLS peer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{ClientOpts, PeerResult, TlsVersion};
use crate::Result;
use crate::pki::Leaf;

fn version_flag(v: Option<TlsVersion>) -> Option<&'static str> {
    match v? {
        TlsVersion::V12 => Some("-tls1_2"),
        TlsVersion::V13 => Some("-tls1_3"),
    }
}

/// `openssl s_server` options.
pub struct ServerOpts<'a> {
    pub listen: SocketAddr,
    pub identity: &'a Leaf,
    /// CA file that verifies client certificates; `None`: no client authentication.
    pub client_ca: Option<PathBuf>,
    pub version: Option<TlsVersion>,
    /// `-naccept`
    pub accept: usize,
}

/// A running `openssl s_server -rev`.
pub struct OpensslServer {
    pub addr: SocketAddr,
    child: Child,
    output: JoinHandle<String>,
}

impl OpensslServer {
    /// Waits (at most `timeout`) for s_server to exit after `-naccept` connections, then returns
    /// its output (stdout and stderr).
    pub fn join(mut self, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output.join().unwrap_or_default()
    }
}

/// Starts `openssl s_server` and waits until it accepts connections.
pub fn server(opts: ServerOpts<'_>) -> Result<OpensslServer> {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_server")
        .arg("-accept")
        .arg(opts.listen.to_string())
        .arg("-cert")
        .arg(&opts.identity.cert_path)
        .arg("-key")
        .arg(&opts.identity.key_path)
        .args(["-rev", "-naccept", &opts.accept.to_string()]);
    if let Some(p) = &opts.identity.intermediates_path {
        cmd.arg("-cert_chain").arg(p);
    }
    if let Some(ca) = &opts.client_ca {
        cmd.arg("-CAfile")
            .arg(ca)
            .args(["-Verify", "3", "-verify_return_error"]);
    }
    if let Some(f) = version_flag(opts.version) {
        cmd.arg(f);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = mpsc::channel();
    let output = std::thread::spawn(move || {
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if line.contains("ACCEPT") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all.push_str(&err.join().unwrap_or_default());
        all
    });
    rx.recv_timeout(Duration::from_secs(5))
        .map_err(|_| "openssl s_server did not start")?;
    Ok(OpensslServer {
        addr: opts.listen,
        child,
        output,
    })
}

/// Runs `openssl s_client` once: handshake, send `ping`, wait ~300 ms for the answer, close.
/// `ok` is true when s_client verified the server (return code 0) and received the reversed line.
pub fn client(opts: &ClientOpts, ca: &Path, identity: Option<&Leaf>) -> Result<PeerResult> {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(opts.connect.to_string())
        .arg("-CAfile")
        .arg(ca)
        .arg("-verify_return_error");
    if opts.server_name.parse::<std::net::IpAddr>().is_ok() {
        cmd.args(["-verify_ip", &opts.server_name, "-noservername"]);
    } else {
        cmd.args([
            "-verify_hostname",
            &opts.server_name,
            "-servername",
            &opts.server_name,
        ]);
    }
    if let Some(ip) = opts.local_ip {
        cmd.arg("-bind").arg(format!("{ip}:0"));
    }
    if let Some(leaf) = identity {
        cmd.arg("-cert")
            .arg(&leaf.cert_path)
            .arg("-key")
            .arg(&leaf.key_path);
        if let Some(p) = &leaf.intermediates_path {
            cmd.arg("-cert_chain").arg(p);
        }
    }
    if let Some(f) = version_flag(opts.version) {
        cmd.arg(f);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"ping\n");
        std::thread::sleep(Duration::from_millis(300));
        drop(stdin);
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // s_client may print "Verify return code: 0" after an aborted handshake: an `:error:` line
    // on stderr is what tells the failure.
    let verified = stdout.contains("Verify return code: 0 (ok)") && !stderr.contains(":error:");
    let answered = stdout.contains("gnip");
    let version = if stdout.contains("Protocol  : TLSv1.3") || stdout.contains("TLSv1.3,") {
        Some("1.3".to_string())
    } else if stdout.contains("Protocol  : TLSv1.2") || stdout.contains("TLSv1.2,") {
        Some("1.2".to_string())
    } else {
        None
    };
    let handshake_ok = verified && version.is_some();
    Ok(PeerResult {
        ok: handshake_ok && answered,
        handshake_ok,
        error: (!(handshake_ok && answered)).then(|| {
            stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(4)
                .collect::<Vec<_>>()
                .join(" | ")
        }),
        version,
        resumed: stdout.contains("Reused,"),
        local: None,
        remote: Some(opts.connect),
    })
}
