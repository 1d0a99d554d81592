//! The server addresses (replicas) of one service: their window counts and the CA key each one
//! presents (from chains and probes), with the keys it presented before.
//!
//! Bounded by `--max-replicas`: a new address takes the place of one with nothing in the window.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::window::Counts;
use crate::base::{KeyId, Timestamp};
use crate::detect::event::CaSource;
use crate::trust::PresentedCa;

/// The CA key a server address presents.
#[derive(Clone, Debug)]
pub(super) struct PresentedKey {
    pub key: KeyId,
    pub ca: PresentedCa,
    pub source: CaSource,
    pub last_seen: Timestamp,
}

/// Keys kept per address for the alternation check.
pub(super) const MAX_REPLACED: usize = 4;

#[derive(Clone, Debug, Default)]
pub(super) struct ServerStat {
    pub counts: Counts,
    pub presented: Option<PresentedKey>,
    /// Keys this address presented before its current one, with when they were last seen.
    pub replaced: Vec<(PresentedCa, Timestamp)>,
}

/// Whether two sightings are the same CA: the same certificate, or a shared key id.
pub(super) fn same_ca(a: &PresentedCa, b: &PresentedCa) -> bool {
    match (&a.der_sha256, &b.der_sha256) {
        (Some(x), Some(y)) if x == y => return true,
        _ => {}
    }
    a.key_ids.iter().any(|k| b.key_ids.contains(k))
}

/// Every server address of a service.
#[derive(Debug, Default)]
pub(super) struct Servers(BTreeMap<SocketAddr, ServerStat>);

impl Servers {
    pub fn get(&self, addr: &SocketAddr) -> Option<&ServerStat> {
        self.0.get(addr)
    }
    pub fn get_mut(&mut self, addr: &SocketAddr) -> Option<&mut ServerStat> {
        self.0.get_mut(addr)
    }
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.0.contains_key(addr)
    }
    pub fn entry(&mut self, addr: SocketAddr) -> &mut ServerStat {
        self.0.entry(addr).or_default()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&SocketAddr, &ServerStat)> {
        self.0.iter()
    }

    /// Room for one more address under `max`: evicts an address with nothing in the window (only
    /// its last presented key is lost); false when every address is in use.
    pub fn make_room(&mut self, max: usize) -> bool {
        if self.0.len() < max {
            return true;
        }
        let idle = self
            .0
            .iter()
            .filter(|(_, s)| s.counts.is_zero())
            .min_by_key(|(_, s)| s.presented.as_ref().map(|p| p.last_seen));
        match idle.map(|(a, _)| *a) {
            Some(a) => {
                self.0.remove(&a);
                true
            }
            None => false,
        }
    }

    /// The key `addr` presents, if it was seen within `window_us` of `now`.
    pub fn fresh_key(
        &self,
        addr: &SocketAddr,
        now: Timestamp,
        window_us: i64,
    ) -> Option<&PresentedKey> {
        self.0
            .get(addr)
            .and_then(|s| s.presented.as_ref())
            .filter(|p| now.since(p.last_seen) <= window_us)
    }

    /// Presented keys seen within `window_us` of `now`, by address.
    pub fn fresh(&self, now: Timestamp, window_us: i64) -> Vec<(SocketAddr, &PresentedKey)> {
        self.0
            .iter()
            .filter_map(|(a, s)| s.presented.as_ref().map(|p| (*a, p)))
            .filter(|(_, p)| now.since(p.last_seen) <= window_us)
            .collect()
    }

    /// Some address presented another key within `window_us` of `now` (alternation evidence).
    pub fn replaced_recently(&self, now: Timestamp, window_us: i64) -> bool {
        self.0
            .values()
            .any(|s| s.replaced.iter().any(|(_, t)| now.since(*t) <= window_us))
    }
}
