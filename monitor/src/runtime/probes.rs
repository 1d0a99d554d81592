//! The live monitor's probes of the replicas: scheduling, running them off the pipeline thread,
//! and handing their results to the detector.
//!
//! Consumes the probe targets and the detector's requests (failures started: probe now); produces
//! [`ProbeResult`]s for the detector and the status page. Probes are blocking and bounded
//! ([`ProbeLimits`]); they run on tokio's blocking pool and report back over a channel, first the
//! probe's local address as soon as TCP connects (so its own connection, seen in the capture, is
//! excluded before it is judged), then the result. Wall time: probes exist only live.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crate::base::Timestamp;
use crate::detect::{Detector, Event};
use crate::trust::probe::{
    self, ProbeLimits, ProbeResult, ProbeScheduler, ProbeStatus, ProbeTarget,
};

/// What a probe worker sends back.
enum ProbeMsg {
    /// The probe's TCP connection is up: exclude it from the passive figures.
    Connected(SocketAddr),
    Done(Box<ProbeResult>),
}

/// Probe scheduling and results.
pub struct Probes {
    scheduler: ProbeScheduler,
    limits: ProbeLimits,
    tx: Sender<ProbeMsg>,
    rx: Receiver<ProbeMsg>,
    results: Vec<ProbeStatus>,
    runtime: tokio::runtime::Handle,
}

impl Probes {
    /// Probes `targets` every `interval` (and sooner, at most every `min_gap`, once failures start)
    /// on `runtime`'s blocking pool.
    pub fn new(
        targets: Vec<ProbeTarget>,
        interval: Duration,
        min_gap: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        Probes {
            scheduler: ProbeScheduler::new(targets, interval, min_gap),
            limits: ProbeLimits::default(),
            tx,
            rx,
            results: Vec::new(),
            runtime,
        }
    }

    /// The latest result per target.
    pub fn results(&self) -> &[ProbeStatus] {
        &self.results
    }

    /// Probe every target soon.
    pub fn trigger(&mut self) {
        self.scheduler.trigger();
    }

    /// Hands what the probes reported so far to the detector.
    pub fn drain(&mut self, detector: &mut Detector, events: &mut Vec<Event>) {
        while let Ok(msg) = self.rx.try_recv() {
            let now = Timestamp::now();
            match msg {
                ProbeMsg::Connected(local) => detector.exclude_probe_client(local, now),
                ProbeMsg::Done(r) => {
                    self.scheduler.completed(&r.target);
                    detector.observe_probe(&r, now, events);
                    let failed = u64::from(r.outcome.is_err());
                    match self.results.iter_mut().find(|p| p.last.target == r.target) {
                        Some(p) => {
                            p.last = *r;
                            p.runs += 1;
                            p.failures += failed;
                        }
                        None => self.results.push(ProbeStatus {
                            last: *r,
                            runs: 1,
                            failures: failed,
                        }),
                    }
                }
            }
        }
    }

    /// Starts the probes that are due; forgets the results of targets no longer probed (a
    /// replica address a name stopped resolving to).
    pub fn start_due(&mut self) {
        let targets = self.scheduler.targets();
        self.results.retain(|p| targets.contains(&p.last.target));
        for target in self.scheduler.due(Instant::now()) {
            let tx = self.tx.clone();
            let limits = self.limits;
            self.runtime.spawn_blocking(move || {
                let r = probe::run(&target, &limits, &mut |local| {
                    let _ = tx.send(ProbeMsg::Connected(local));
                });
                let _ = tx.send(ProbeMsg::Done(Box::new(r)));
            });
        }
    }
}
