//! The trust state machine of a service: healthy → degraded → collapsed → recovered.
//!
//! Consumes the window's tallies after every observation and tick; produces `trust_collapse`
//! (at least K distinct clients failing on certificate grounds, at least R of the window's
//! clients) and `trust_recovered` (clients succeed again and the failing share fell below R).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::window::Obs;
use super::{Ctx, ServiceState};
use crate::base::{KeyId, Timestamp};
use crate::detect::classify::Class;
use crate::detect::event::{Collapse, EventDetail, Recovered};

/// Trust state of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustState {
    Healthy,
    /// Certificate failures in the window, below the collapse rule.
    Degraded,
    Collapsed,
    /// Successes resumed after a collapse.
    Recovered,
}

/// The state and what the events name.
#[derive(Debug)]
pub(super) struct TrustMachine {
    pub state: TrustState,
    pub since: Option<Timestamp>,
    collapsed_at: Option<Timestamp>,
    /// The last CA key with successes when the collapse began.
    collapse_prev_ca: Option<KeyId>,
    /// Clients that succeeded since the collapse.
    ok_since_collapse: HashSet<IpAddr>,
    /// The CA key of the latest success / certificate failure (when known).
    pub last_good_ca: Option<KeyId>,
    last_fail_ca: Option<KeyId>,
    last_fail_server: Option<SocketAddr>,
    /// Failures started since the last probe request was taken.
    pub probe_request: bool,
}

impl Default for TrustMachine {
    fn default() -> Self {
        TrustMachine {
            state: TrustState::Healthy,
            since: None,
            collapsed_at: None,
            collapse_prev_ca: None,
            ok_since_collapse: HashSet::new(),
            last_good_ca: None,
            last_fail_ca: None,
            last_fail_server: None,
            probe_request: false,
        }
    }
}

impl TrustMachine {
    fn set(&mut self, s: TrustState, now: Timestamp) {
        self.state = s;
        self.since = Some(now);
    }

    /// Notes what one observation says (before the rules are evaluated).
    pub fn observed(&mut self, obs: &Obs, now: Timestamp) {
        match obs.class {
            Class::Success => {
                if let Some(ca) = &obs.ca {
                    self.last_good_ca = Some(ca.clone());
                }
                if self.state == TrustState::Collapsed {
                    self.ok_since_collapse.insert(obs.client);
                }
            }
            Class::CertFailure(_) => {
                self.last_fail_server = Some(obs.server);
                if obs.ca.is_some() {
                    self.last_fail_ca = obs.ca.clone();
                }
                if matches!(self.state, TrustState::Healthy | TrustState::Recovered) {
                    self.set(TrustState::Degraded, now);
                    self.probe_request = true;
                }
            }
            Class::OtherFailure => {}
        }
    }
}

impl ServiceState {
    /// The trust state machine.
    pub(super) fn evaluate(&mut self, now: Timestamp, ctx: &mut Ctx<'_>) {
        let cfg = ctx.cfg;
        let w = &self.window;
        match self.trust.state {
            TrustState::Degraded if w.n_failing == 0 => self.trust.set(TrustState::Healthy, now),
            TrustState::Degraded
                if w.n_failing as usize >= cfg.min_failing_clients
                    && w.share() >= cfg.min_failure_share =>
            {
                let e = self.collapse_event(now, ctx);
                self.trust.collapsed_at = Some(now);
                self.trust.collapse_prev_ca = self.trust.last_good_ca.clone();
                self.trust.ok_since_collapse.clear();
                self.trust.set(TrustState::Collapsed, now);
                ctx.out.push(e);
            }
            TrustState::Collapsed
                if self.trust.ok_since_collapse.len() >= cfg.recover_min_clients
                    && w.share() < cfg.min_failure_share =>
            {
                let t = &self.trust;
                let e = self.event(
                    now,
                    EventDetail::TrustRecovered(Recovered {
                        collapsed_at: t.collapsed_at.unwrap_or(now),
                        ca_key_id: t.last_good_ca.clone(),
                        previous_ca_key_id: t.collapse_prev_ca.clone(),
                        succeeding_clients: w.n_succeeding,
                        failing_clients: w.n_failing,
                    }),
                );
                self.trust.ok_since_collapse.clear();
                self.trust.set(TrustState::Recovered, now);
                ctx.out.push(e);
            }
            _ => {}
        }
    }

    fn collapse_event(&self, now: Timestamp, ctx: &Ctx<'_>) -> crate::detect::Event {
        let cfg = ctx.cfg;
        let mut failing: Vec<(Timestamp, IpAddr)> = self.window.failing().collect();
        failing.sort();
        // The collapse began with the earliest failure run that started within one window of the
        // detection; a client failing for longer (misconfigured) does not date it.
        let first_failure = failing
            .iter()
            .map(|(t, _)| *t)
            .find(|t| now.since(*t) <= cfg.window_us)
            .or_else(|| failing.first().map(|(t, _)| *t))
            .unwrap_or(now);
        let current = self.trust.last_fail_ca.clone().or_else(|| {
            self.trust
                .last_fail_server
                .and_then(|s| self.servers.get(&s))
                .and_then(|s| s.presented.as_ref())
                .map(|p| p.key.clone())
        });
        let servers: Vec<SocketAddr> = self
            .servers
            .iter()
            .filter(|(_, s)| s.counts.cert_failures > 0)
            .map(|(a, _)| *a)
            .collect();
        let w = &self.window;
        self.event(
            now,
            EventDetail::TrustCollapse(Collapse {
                previous_ca_key_id: self.trust.last_good_ca.clone(),
                current_ca_key_id: current,
                rejecting_side: w.rejecters.side(),
                failing_clients: w.n_failing,
                succeeding_clients: w.n_succeeding,
                failure_share: w.share(),
                clients: failing
                    .iter()
                    .take(cfg.limits.max_listed_clients)
                    .map(|(_, ip)| *ip)
                    .collect(),
                handshakes: w.counts.handshakes,
                cert_failures: w.counts.cert_failures,
                first_failure,
                detection_latency_us: now.since(first_failure),
                servers,
            }),
        )
    }
}
