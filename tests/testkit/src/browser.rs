//! Headless Chromium (the Debian package `chromium`, installed by `cargo xtask setup`) driven
//! through its own command line: `--dump-dom` (the DOM after the page's JavaScript ran, serialized)
//! and `--screenshot` (a PNG of the viewport).
//!
//! `--virtual-time-budget` lets the page's timers and fetches run before the DOM is taken: the
//! browser fast-forwards its clock while it waits, and pauses it while a request is in flight.
//!
//! Chromium refuses to start as root with its sandbox on (the sandbox needs an unprivileged user).
//! The tests run as root on CI machines and only ever load trustwatch's own page from loopback,
//! so they pass `--no-sandbox` when (and only when) the process is root; never do that to browse
//! anything else.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// A headless Chromium with a throwaway profile.
pub struct Chromium {
    bin: PathBuf,
    profile: tempfile::TempDir,
    /// Virtual time the page gets before the DOM or screenshot is taken.
    pub budget: Duration,
    /// Viewport (screenshots).
    pub window: (u32, u32),
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Chromium {
    /// `chromium` on PATH (Debian's package), else an error saying how to install it.
    pub fn new() -> Result<Chromium> {
        let bin = ["chromium", "chromium-browser"]
            .iter()
            .find_map(|name| {
                std::env::var_os("PATH").and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .find(|f| f.is_file())
                })
            })
            .ok_or("chromium is not installed: run `cargo xtask setup` (apt package chromium)")?;
        Ok(Chromium {
            bin,
            profile: tempfile::tempdir()?,
            budget: Duration::from_secs(5),
            window: (1000, 1300),
        })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--headless")
            .arg("--disable-gpu")
            .arg("--no-first-run")
            .arg("--disable-extensions")
            .arg("--hide-scrollbars")
            .arg("--force-device-scale-factor=1")
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .arg(format!("--virtual-time-budget={}", self.budget.as_millis()))
            .arg(format!("--window-size={},{}", self.window.0, self.window.1))
            // The page's times are UTC whatever the zone; pinned anyway for reproducible images.
            .env("TZ", "UTC")
            .stdin(Stdio::null());
        if is_root() {
            c.arg("--no-sandbox");
        }
        c
    }

    /// Runs chromium to completion (killed after 60 s); its stdout.
    fn run(&self, mut c: Command) -> Result<Vec<u8>> {
        let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().ok_or("chromium stdout")?;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = std::io::Read::read_to_end(&mut { stdout }, &mut out);
            out
        });
        let stderr = child.stderr.take().ok_or("chromium stderr")?;
        let err_reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = std::io::Read::read_to_end(&mut { stderr }, &mut out);
            out
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("chromium did not finish within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = reader.join().map_err(|_| "chromium stdout reader")?;
        let err = err_reader.join().map_err(|_| "chromium stderr reader")?;
        if !status.success() {
            return Err(format!(
                "chromium exited {status}: {}",
                String::from_utf8_lossy(&err)
            )
            .into());
        }
        Ok(out)
    }

    /// The DOM of `url` after its scripts ran for [`Chromium::budget`] of virtual time.
    pub fn dump_dom(&self, url: &str) -> Result<String> {
        let mut c = self.command();
        c.arg("--dump-dom").arg(url);
        let out = self.run(c)?;
        let dom = String::from_utf8(out)?;
        if !dom.contains("<html") {
            return Err(format!("chromium printed no document for {url}: {dom:.200}").into());
        }
        Ok(dom)
    }

    /// A PNG of `url`'s viewport, written to `to`.
    pub fn screenshot(&self, url: &str, to: &Path) -> Result<()> {
        let mut c = self.command();
        c.arg(format!("--screenshot={}", to.display())).arg(url);
        self.run(c)?;
        let png = std::fs::read(to)?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(format!("{} is not a PNG", to.display()).into());
        }
        Ok(())
    }
}
