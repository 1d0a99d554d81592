//! Child processes of the demo and their output: each child runs in its own process group (a
//! Ctrl-C in the terminal reaches only the demo, which then stops its children in order), its
//! stdout/stderr lines arrive, time-stamped on arrival, on one channel; a child is killed when
//! its [`Proc`] is dropped. Also the demo's own SIGINT/SIGTERM flag.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use crate::Result;

/// Who wrote a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Edge `n` (its address is 127.0.0.`n`): one JSON record per attempt.
    Edge(u8),
    /// `trustwatch live` stdout: detector events, JSON Lines.
    MonitorEvents,
    /// `trustwatch live` stderr: the timeline and its start/stop lines.
    MonitorLog,
    /// A Go server's stdout (JSON: `listening`, `switch`, `conn`).
    Server(&'static str),
    /// Any child's stderr but the monitor's.
    Stderr(&'static str),
}

/// One line of a child's output and when it arrived.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub wall: SystemTime,
    pub from: Source,
    pub text: String,
}

/// A running child.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

fn forward(r: impl Read + Send + 'static, from: Source, tx: Sender<Line>) {
    std::thread::spawn(move || {
        for text in BufReader::new(r).lines().map_while(|l| l.ok()) {
            let line = Line {
                at: Instant::now(),
                wall: SystemTime::now(),
                from,
                text,
            };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

impl Proc {
    /// Starts `cmd` in a new process group; its stdout and stderr lines go to `tx` tagged `out`
    /// and `err` (`None`: discarded).
    pub fn spawn(
        name: impl Into<String>,
        cmd: &mut Command,
        out: Option<Source>,
        err: Option<Source>,
        tx: &Sender<Line>,
    ) -> Result<Proc> {
        let name = name.into();
        let pipe = |s: &Option<Source>| {
            if s.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(pipe(&out))
            .stderr(pipe(&err))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        if let (Some(src), Some(r)) = (out, child.stdout.take()) {
            forward(r, src, tx.clone());
        }
        if let (Some(src), Some(r)) = (err, child.stderr.take()) {
            forward(r, src, tx.clone());
        }
        Ok(Proc {
            name,
            child: Some(child),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig` (e.g. `libc::SIGHUP`).
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = self.pid().ok_or("process already reaped")?;
        let pid = libc::pid_t::try_from(pid)?;
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet (we hold its Child).
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(format!(
                "kill {} ({pid}): {}",
                self.name,
                std::io::Error::last_os_error()
            )
            .into());
        }
        Ok(())
    }

    /// Whether the child has exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `sig`, waits up to `grace` for the exit, then kills. Returns the exit status.
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: as in `signal`: our unreaped child.
            unsafe { libc::kill(pid, sig) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into [`stop_requested`] (for the demo binary, not for tests).
pub fn install_stop_handler() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// A SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// A Go cloudhub (mutual TLS, `-n 0`: serves until killed) on `listen` with `leaf`, trusting
/// client certificates of `client_ca`, plus `extra` server flags; returns once it listens. Its
/// per-connection lines are drained.
pub fn go_cloudhub(
    listen: std::net::SocketAddr,
    leaf: &crate::pki::Leaf,
    client_ca: &crate::pki::Ca,
    extra: &[&str],
) -> Result<Proc> {
    let bin = crate::peers::go::binary()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = Proc::spawn(
        "cloudhub",
        Command::new(&bin)
            .arg("server")
            .arg("-listen")
            .arg(listen.to_string())
            .arg("-cert")
            .arg(&leaf.chain_path)
            .arg("-key")
            .arg(&leaf.key_path)
            .arg("-client-ca")
            .arg(&client_ca.cert_path)
            .args(["-n", "0"])
            .args(extra),
        Some(Source::Server("cloudhub")),
        None,
        &tx,
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.text.contains("\"listening\"") => break,
            Ok(_) => {}
            Err(_) => return Err("cloudhub did not start listening".into()),
        }
    }
    // The server's per-connection records are not needed: drain them.
    std::thread::spawn(move || for _ in rx {});
    Ok(server)
}
