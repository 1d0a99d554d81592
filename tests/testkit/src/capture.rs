//! Live capture on loopback: libpcap on `lo` with a BPF filter, written to a pcap file.
//!
//! Consumes the interface's traffic from [`Capture::start`] until [`Capture::stop`]; produces a
//! pcap (Ethernet link type on Linux `lo`) at the returned path. The capture is active (filter set,
//! kernel buffering) before `start` returns, so peers started afterwards are fully recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Result;

/// A running capture.
pub struct Capture {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::result::Result<u64, String>>>,
}

/// The file a capture produced.
#[derive(Clone, Debug)]
pub struct Captured {
    pub path: PathBuf,
    pub packets: u64,
}

impl Capture {
    /// Captures `tcp port <port>` on `lo` into `<dir>/<name>.pcap`.
    pub fn start_port(dir: &Path, name: &str, port: u16) -> Result<Capture> {
        Self::start(dir, name, &format!("tcp port {port}"))
    }

    /// Captures packets matching the BPF `filter` on `lo` into `<dir>/<name>.pcap`.
    pub fn start(dir: &Path, name: &str, filter: &str) -> Result<Capture> {
        let path = dir.join(format!("{name}.pcap"));
        let mut cap = pcap::Capture::from_device("lo")?
            .immediate_mode(true)
            .snaplen(262_144)
            .buffer_size(8 << 20)
            .timeout(20)
            .open()?
            .setnonblock()?;
        cap.filter(filter, true)?;
        let mut save = cap.savefile(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                match cap.next_packet() {
                    Ok(p) => {
                        save.write(&p);
                        n += 1;
                    }
                    Err(pcap::Error::TimeoutExpired) => {
                        if flag.load(Ordering::Acquire) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            save.flush().map_err(|e| e.to_string())?;
            Ok(n)
        });
        Ok(Capture {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits ~100 ms for the last packets, stops and closes the file.
    pub fn stop(mut self) -> Result<Captured> {
        std::thread::sleep(Duration::from_millis(100));
        self.stop.store(true, Ordering::Release);
        let packets = match self.thread.take() {
            Some(t) => t.join().map_err(|_| "capture thread panicked")??,
            None => 0,
        };
        Ok(Captured {
            path: self.path.clone(),
            packets,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
