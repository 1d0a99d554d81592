//! Live sources on their own threads, restarted after errors.
//!
//! Consumes opened [`Source`]s, a bounded queue to the pipeline thread and a [`StopSignal`];
//! produces one thread per source that runs it until stopped. A run that fails is counted
//! (`errors`), logged on stderr, and retried after a backoff that doubles from [`Backoff::first`]
//! up to [`Backoff::max`] (back to the first after a run that lasted longer than the maximum).
//! While it is down the source's counters say so, with since when
//! ([`SourceCounters::down_for`]), so liveness can tell a source that stays down.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::source::{FlowFeedback, RunEnd, Source, SourceCounters, StopSignal};
use super::{Backend, Packet};
use crate::error::Error;

/// Restart delays after a failed run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

/// One source running on its thread.
pub struct Running {
    pub name: String,
    pub backend: Backend,
    pub counters: Arc<SourceCounters>,
    pub feedback: Option<Arc<dyn FlowFeedback>>,
    last_error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// The error that ended the source's last failed run.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    /// Waits for the thread (after the stop signal was set).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps `d`, waking early when stopped; false when stopped.
fn sleep_unless_stopped(d: Duration, stop: &StopSignal) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.is_stopped() {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    !stop.is_stopped()
}

/// Starts `source` on a thread feeding `tx`, restarting it with `backoff` after errors.
pub fn spawn(
    mut source: Box<dyn Source>,
    tx: SyncSender<Packet>,
    stop: StopSignal,
    backoff: Backoff,
) -> Result<Running, Error> {
    let name = source.name().to_string();
    let counters = source.counters();
    let feedback = source.feedback();
    let backend = source.backend();
    let last_error = Arc::new(Mutex::new(None));
    // Opened by the caller: up until a run says otherwise.
    counters.set_up();
    let thread = {
        let (counters, last_error, label) = (counters.clone(), last_error.clone(), name.clone());
        let run = move || {
            let mut sink = tx;
            let mut delay = backoff.first;
            loop {
                let started = Instant::now();
                match source.run(&mut sink, &stop) {
                    Ok(RunEnd::Stopped | RunEnd::Exhausted) => break,
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        counters.set_down();
                        if started.elapsed() > backoff.max {
                            delay = backoff.first;
                        }
                        crate::note!(
                            "trustwatch: capture {label}: {e}; retrying in {:.1}s",
                            delay.as_secs_f64()
                        );
                        *last_error.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(e.to_string());
                        if !sleep_unless_stopped(delay, &stop) {
                            break;
                        }
                        delay = (delay * 2).min(backoff.max);
                        counters.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            counters.set_down();
        };
        std::thread::Builder::new()
            .name(format!("capture-{name}"))
            .spawn(run)
            .map_err(|e| {
                Error::Capture(format!("cannot start the capture thread for {name}: {e}"))
            })?
    };
    Ok(Running {
        name,
        backend,
        counters,
        feedback,
        last_error,
        thread: Some(thread),
    })
}
