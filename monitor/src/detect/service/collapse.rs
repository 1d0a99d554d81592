//! The trust state machine of a service, with hysteresis.
//!
//! Consumes the window's tallies after every observation and tick; produces one
//! `trust_collapse` per incident and one `trust_recovered`:
//! - **degraded**: some client's latest handshake failed on certificate grounds.
//! - **collapse starts** when at least K distinct clients (`--collapse-clients`) are failing and
//!   they are at least R of the window's clients (`--collapse-share`: scope *total*), or at least
//!   P of them (`--partial-share`: scope *partial* — one replica, or a share of the edges). With
//!   `--collapse-hold` the condition must hold that long first.
//! - When failures started the probes (live), the collapse waits up to `--probe-grace` for their
//!   answer, so that it names the CA the replicas present now.
//! - **it holds** while at least K distinct clients keep failing, whatever the share and however
//!   many others succeed; its scope follows the share (no new event).
//! - **it recovers** once fewer than K clients have been failing for `--recovery-hold`: they
//!   succeeded again or aged out of the window. A steady partial failure therefore stays one
//!   collapse, and the gauge does not flap.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::window::Obs;
use super::{Ctx, ServiceState};
use crate::base::{KeyId, Timestamp};
use crate::detect::classify::Class;
use crate::detect::event::{Collapse, CollapseScope, EventDetail, Recovered};

/// Trust state of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustState {
    Healthy,
    /// Certificate failures in the window, below the collapse rule.
    Degraded,
    Collapsed,
    /// Fewer than K clients failing for the recovery hold, after a collapse.
    Recovered,
}

/// The state and what the events name.
#[derive(Debug)]
pub(super) struct TrustMachine {
    pub state: TrustState,
    pub since: Option<Timestamp>,
    /// While collapsed: total or partial.
    pub scope: Option<CollapseScope>,
    collapsed_at: Option<Timestamp>,
    /// The last CA key with successes when the collapse began.
    collapse_prev_ca: Option<KeyId>,
    /// Since when the collapse condition holds (for `--collapse-hold`).
    rising_since: Option<Timestamp>,
    /// Since when fewer than K clients fail, while collapsed (for `--recovery-hold`).
    falling_since: Option<Timestamp>,
    /// The CA key of the latest success / certificate failure (when known).
    pub last_good_ca: Option<KeyId>,
    last_fail_ca: Option<KeyId>,
    last_fail_server: Option<SocketAddr>,
    /// Failures started since the last probe request was taken.
    pub probe_request: bool,
    /// A probe request was taken and no probe has answered since.
    pub probe_pending_since: Option<Timestamp>,
}

impl Default for TrustMachine {
    fn default() -> Self {
        TrustMachine {
            state: TrustState::Healthy,
            since: None,
            scope: None,
            collapsed_at: None,
            collapse_prev_ca: None,
            rising_since: None,
            falling_since: None,
            last_good_ca: None,
            last_fail_ca: None,
            last_fail_server: None,
            probe_request: false,
            probe_pending_since: None,
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
    /// The scope the window's failures have now, if they make a collapse.
    fn scope(&self, ctx: &Ctx<'_>) -> Option<CollapseScope> {
        let w = &self.window;
        if (w.n_failing as usize) < ctx.cfg.min_failing_clients {
            return None;
        }
        let share = w.share();
        if share >= ctx.cfg.min_failure_share {
            Some(CollapseScope::Total)
        } else if share >= ctx.cfg.partial_share {
            Some(CollapseScope::Partial)
        } else {
            None
        }
    }

    /// The trust state machine.
    pub(super) fn evaluate(&mut self, now: Timestamp, ctx: &mut Ctx<'_>) {
        let cfg = ctx.cfg;
        let failing = self.window.n_failing as usize;
        match self.trust.state {
            TrustState::Collapsed => {
                if failing >= cfg.min_failing_clients {
                    self.trust.falling_since = None;
                    if let Some(scope) = self.scope(ctx) {
                        self.trust.scope = Some(scope);
                    }
                    return;
                }
                let since = *self.trust.falling_since.get_or_insert(now);
                if now.since(since) < cfg.recovery_hold_us {
                    return;
                }
                let t = &self.trust;
                let w = &self.window;
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
                self.trust.scope = None;
                self.trust.falling_since = None;
                self.trust.set(TrustState::Recovered, now);
                ctx.out.push(e);
            }
            TrustState::Degraded => {
                if failing == 0 {
                    self.trust.rising_since = None;
                    self.trust.set(TrustState::Healthy, now);
                    return;
                }
                let Some(scope) = self.scope(ctx) else {
                    self.trust.rising_since = None;
                    return;
                };
                let since = *self.trust.rising_since.get_or_insert(now);
                if now.since(since) < cfg.collapse_hold_us {
                    return;
                }
                // The probes were asked which CA the replicas present now: the event names it.
                if self
                    .trust
                    .probe_pending_since
                    .is_some_and(|asked| now.since(asked) < cfg.probe_grace_us)
                {
                    return;
                }
                let e = self.collapse_event(now, scope, ctx);
                self.trust.collapsed_at = Some(now);
                self.trust.collapse_prev_ca = self.trust.last_good_ca.clone();
                self.trust.scope = Some(scope);
                self.trust.rising_since = None;
                self.trust.set(TrustState::Collapsed, now);
                ctx.out.push(e);
            }
            TrustState::Healthy | TrustState::Recovered => {}
        }
    }

    fn collapse_event(
        &self,
        now: Timestamp,
        scope: CollapseScope,
        ctx: &Ctx<'_>,
    ) -> crate::detect::Event {
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
        // The key the failing server presents: seen since the failures began (a probe or chain
        // after them) it is what the clients reject; else the key the last failure was made under
        // (exact for a visible chain, attributed for TLS 1.3); else whatever it presented last.
        let presented = self
            .trust
            .last_fail_server
            .and_then(|s| self.servers.get(&s))
            .and_then(|s| s.presented.as_ref());
        let current = presented
            .filter(|p| p.last_seen >= first_failure)
            .map(|p| p.key.clone())
            .or_else(|| self.trust.last_fail_ca.clone())
            .or_else(|| presented.map(|p| p.key.clone()));
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
                scope,
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
