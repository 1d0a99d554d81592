//! Replicas that disagree about the CA.
//!
//! Consumes presented CA keys (chains, probes) and the window's per-client, per-server outcomes;
//! produces `ca_changed` (an address now presents another key), `ca_divergence` with its basis —
//! different addresses presenting different keys at once, one address alternating between keys
//! (replicas behind one address), or, over TLS 1.3 where chains are hidden, the same clients
//! succeeding on one replica and rejected on certificate grounds by another (outcome split).
//! Different keys while no client fails on certificate grounds and some client succeeds under
//! more than one of them (it was given both CAs) is a planned rotation (`ca_rotation`, not an
//! incident); failures during it make it a divergence after all. Different keys with no failure
//! and no client seen under two of them wait up to `--rotation-grace` for evidence (over TLS 1.3
//! the new key comes from a probe, before any client can be credited to it); then, disjoint
//! clients and no failure yet, they are a divergence: the leading indicator of the incident (edges
//! that joined through a replica trust only its CA).
//! On the certificate service clients do not verify the server, so there different keys are
//! always a divergence. Only where the servers are replicas of one CloudCore (configured ports, probed targets).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use super::servers::{MAX_REPLACED, PresentedKey, same_ca};
use super::{Ctx, ServiceState};
use crate::base::{KeyId, Timestamp};
use crate::detect::DetectConfig;
use crate::detect::event::{
    CaChange, CaSource, Divergence, DivergenceBasis, EventDetail, Replica, Rotation,
};
use crate::trust::PresentedCa;

/// The divergence last reported.
#[derive(Debug, Default)]
pub(super) struct DivergenceState {
    /// The key set of the divergence last reported (None when the replicas agree).
    pub keys: Option<Vec<KeyId>>,
    /// The key set of a rotation in progress (replicas differ, nobody fails).
    pub rotation: Option<Vec<KeyId>>,
    /// A key set that differs with no evidence yet either way (no failure, no client seen under
    /// two of the keys), and since when.
    pub pending: Option<(Vec<KeyId>, Timestamp)>,
    /// An outcome-split divergence is reported and its evidence still holds.
    pub split_active: bool,
}

/// The strongest outcome split in the window.
struct SplitEvidence {
    /// (replica clients succeed on, replica that rejects them)
    pair: (SocketAddr, SocketAddr),
    /// Clients split across that pair.
    n: u32,
    /// Distinct ok / rejected clients per address.
    ok_clients: HashMap<SocketAddr, u32>,
    bad_clients: HashMap<SocketAddr, u32>,
}

fn distinct_keys(replicas: &[Replica]) -> Vec<KeyId> {
    let set: BTreeSet<KeyId> = replicas
        .iter()
        .filter_map(|r| r.ca_key_id.clone())
        .collect();
    set.into_iter().collect()
}

impl ServiceState {
    /// TLS 1.3 passive divergence: clients that succeed on replica A and are rejected on
    /// certificate grounds by replica B in the window.
    fn split_evidence(&self, now: Timestamp, cfg: &DetectConfig) -> Option<SplitEvidence> {
        let fresh = |t: Option<Timestamp>| t.is_some_and(|t| now.since(t) <= cfg.window_us);
        let mut pairs: HashMap<(SocketAddr, SocketAddr), u32> = HashMap::new();
        let mut ok_clients: HashMap<SocketAddr, u32> = HashMap::new();
        let mut bad_clients: HashMap<SocketAddr, u32> = HashMap::new();
        for c in self.window.clients.values() {
            for p in &c.per_server {
                if fresh(p.ok) {
                    *ok_clients.entry(p.server).or_default() += 1;
                }
                if fresh(p.rejected) {
                    *bad_clients.entry(p.server).or_default() += 1;
                }
            }
            for a in c.per_server.iter().filter(|p| fresh(p.ok)) {
                for b in c
                    .per_server
                    .iter()
                    .filter(|p| fresh(p.rejected) && p.server != a.server)
                {
                    *pairs.entry((a.server, b.server)).or_default() += 1;
                }
            }
        }
        let (pair, n) = pairs
            .into_iter()
            .filter(|(_, n)| *n as usize >= cfg.split_min_clients)
            .max_by_key(|((a, b), n)| (*n, std::cmp::Reverse(*a), std::cmp::Reverse(*b)))?;
        Some(SplitEvidence {
            pair,
            n,
            ok_clients,
            bad_clients,
        })
    }

    /// Whether the outcome-split evidence still holds (after expiry).
    pub(super) fn split_holds(&self, now: Timestamp, cfg: &DetectConfig) -> bool {
        self.split_evidence(now, cfg).is_some()
    }

    pub(super) fn check_split(&mut self, now: Timestamp, ctx: &mut Ctx<'_>) {
        if !self.replicas {
            return;
        }
        let Some(SplitEvidence {
            pair: (good, bad),
            n,
            ok_clients,
            bad_clients,
        }) = self.split_evidence(now, ctx.cfg)
        else {
            return;
        };
        self.divergence.split_active = true;
        let replicas = [good, bad]
            .iter()
            .map(|addr| {
                self.replica(
                    *addr,
                    ok_clients.get(addr).copied(),
                    bad_clients.get(addr).copied(),
                    now,
                    ctx.cfg,
                )
            })
            .collect::<Vec<_>>();
        let ca_key_ids = distinct_keys(&replicas);
        ctx.out.push(self.event(
            now,
            EventDetail::CaDivergence(Divergence {
                basis: DivergenceBasis::OutcomeSplit,
                replicas,
                split_clients: n,
                ca_key_ids,
            }),
        ));
    }

    /// One replica as a divergence event shows it; client counts from the window unless given.
    fn replica(
        &self,
        addr: SocketAddr,
        ok: Option<u32>,
        bad: Option<u32>,
        now: Timestamp,
        cfg: &DetectConfig,
    ) -> Replica {
        let s = self.servers.get(&addr);
        let p = self.servers.fresh_key(&addr, now, cfg.window_us);
        let (ok, bad) = match (ok, bad) {
            (None, None) => self.window.clients_on(addr, now, cfg.window_us),
            (ok, bad) => (ok.unwrap_or(0), bad.unwrap_or(0)),
        };
        Replica {
            address: addr,
            ca_key_id: p.map(|p| p.key.clone()),
            ca_source: p.map(|p| p.source),
            successes: s.map_or(0, |s| s.counts.successes),
            cert_failures: s.map_or(0, |s| s.counts.cert_failures),
            clients_succeeded: ok,
            clients_rejected: bad,
        }
    }

    /// A server address presented `ca` (chain, probe): CA change, divergence, inconsistency.
    pub fn present(
        &mut self,
        server: SocketAddr,
        ca: PresentedCa,
        source: CaSource,
        now: Timestamp,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(key) = ca.key_ids.first().cloned() else {
            return;
        };
        if !self.servers.contains(&server) && !self.servers.make_room(ctx.cfg.limits.max_servers) {
            ctx.stats.servers_dropped += 1;
            return;
        }
        self.check_reference(Some(server), &key, &ca, source, now, ctx);
        let window_us = ctx.cfg.window_us;
        let s = self.servers.entry(server);
        let previous = s.presented.take();
        match previous {
            Some(mut p) if same_ca(&p.ca, &ca) => {
                p.last_seen = p.last_seen.max(now);
                if p.ca.der_sha256.is_none() {
                    p.ca.der_sha256 = ca.der_sha256;
                }
                s.presented = Some(p);
                // Differing keys awaiting evidence: this client's success may be it.
                if self.divergence.pending.is_some() {
                    self.check_key_divergence(now, ctx);
                }
                return;
            }
            Some(p) => {
                let back = s
                    .replaced
                    .iter()
                    .any(|(old, seen)| same_ca(old, &ca) && now.since(*seen) <= window_us);
                s.replaced.retain(|(old, _)| !same_ca(old, &ca));
                if s.replaced.len() >= MAX_REPLACED {
                    s.replaced.remove(0);
                }
                s.replaced.push((p.ca.clone(), p.last_seen));
                let prev_key = p.key.clone();
                s.presented = Some(PresentedKey {
                    key: key.clone(),
                    ca,
                    source,
                    last_seen: now,
                });
                if back {
                    let mut keys = vec![prev_key.clone(), key.clone()];
                    keys.sort();
                    let replicas = vec![self.replica(server, None, None, now, ctx.cfg)];
                    self.differing_keys(now, keys, replicas, DivergenceBasis::Alternating, ctx);
                } else {
                    ctx.out.push(self.event(
                        now,
                        EventDetail::CaChanged(CaChange {
                            server: Some(server),
                            previous_ca_key_id: prev_key,
                            current_ca_key_id: key,
                            source,
                        }),
                    ));
                }
            }
            None => {
                s.presented = Some(PresentedKey {
                    key,
                    ca,
                    source,
                    last_seen: now,
                })
            }
        }
        self.check_key_divergence(now, ctx);
    }

    /// Different addresses presenting different CA keys at the same time (within the window).
    pub(super) fn check_key_divergence(&mut self, now: Timestamp, ctx: &mut Ctx<'_>) {
        if !self.replicas {
            return;
        }
        let window_us = ctx.cfg.window_us;
        let fresh: Vec<(SocketAddr, &PresentedKey)> = self.servers.fresh(now, window_us);
        let mut groups: Vec<&PresentedKey> = Vec::new();
        for (_, p) in &fresh {
            if !groups.iter().any(|g| same_ca(&g.ca, &p.ca)) {
                groups.push(p);
            }
        }
        if groups.len() < 2 {
            if !self.servers.replaced_recently(now, window_us) {
                if self.divergence.keys.as_ref().is_some_and(|k| k.len() >= 2) {
                    self.divergence.keys = None;
                }
                self.divergence.rotation = None;
            }
            return;
        }
        let mut keys: Vec<KeyId> = groups.iter().map(|g| g.key.clone()).collect();
        keys.sort();
        let addrs: Vec<SocketAddr> = fresh.iter().map(|(a, _)| *a).collect();
        let replicas = addrs
            .into_iter()
            .map(|a| self.replica(a, None, None, now, ctx.cfg))
            .collect();
        self.differing_keys(now, keys, replicas, DivergenceBasis::PresentedKeys, ctx);
    }

    /// Replicas present `keys`: a planned rotation while nobody fails on certificate grounds and
    /// some client trusts several of them, else a divergence. Each key set is reported once; a
    /// rotation that starts failing is then reported as the divergence it turned out to be.
    fn differing_keys(
        &mut self,
        now: Timestamp,
        keys: Vec<KeyId>,
        replicas: Vec<Replica>,
        basis: DivergenceBasis,
        ctx: &mut Ctx<'_>,
    ) {
        if self.divergence.keys.as_ref() == Some(&keys) {
            return;
        }
        let window_us = ctx.cfg.window_us;
        let failures = self.window.n_failing > 0 || self.window.counts.cert_failures > 0;
        if self.clients_verify && !failures {
            if self.divergence.rotation.as_ref() == Some(&keys) {
                return;
            }
            if self.window.a_client_trusts_several(&keys, now, window_us) {
                self.divergence.pending = None;
                self.divergence.rotation = Some(keys.clone());
                ctx.out.push(self.event(
                    now,
                    EventDetail::CaRotation(Rotation {
                        replicas,
                        ca_key_ids: keys,
                    }),
                ));
                return;
            }
            // No evidence yet either way (over TLS 1.3 a new key is learned from a probe before
            // any client can be credited to it): wait for clients, up to the grace.
            let since = match &self.divergence.pending {
                Some((pending, since)) if *pending == keys => *since,
                _ => {
                    self.divergence.pending = Some((keys.clone(), now));
                    now
                }
            };
            if now.since(since) < ctx.cfg.rotation_grace_us {
                return;
            }
        }
        self.divergence.pending = None;
        self.divergence.rotation = None;
        self.divergence.keys = Some(keys.clone());
        ctx.out.push(self.event(
            now,
            EventDetail::CaDivergence(Divergence {
                basis,
                replicas,
                split_clients: 0,
                ca_key_ids: keys,
            }),
        ));
    }
}
