//! Presented CAs against the trusted reference (`--trusted-ca`, the mounted casecret, a CA hash or
//! join token).
//!
//! Consumes every presented CA (chains, probes) and the reference; produces `ca_inconsistent`,
//! once per (server, CA) — and again for everything presented when the reference changes.

use std::net::SocketAddr;

use super::servers::PresentedKey;
use super::{Ctx, ServiceState};
use crate::base::{KeyId, Timestamp};
use crate::detect::event::{CaSource, EventDetail, Inconsistent};
use crate::trust::PresentedCa;

impl ServiceState {
    /// Compares a presented CA with the reference; reports each (address, key) once.
    pub fn check_reference(
        &mut self,
        server: Option<SocketAddr>,
        key: &KeyId,
        ca: &PresentedCa,
        source: CaSource,
        now: Timestamp,
        ctx: &mut Ctx<'_>,
    ) {
        // The reference agrees with most sightings: that is settled before any lookup.
        if !ctx.reference.disagrees(ca) {
            return;
        }
        // A hash-only reference can compare a DER-bearing sighting later: keyed on the hash too.
        let id = (server, key.clone(), ca.der_sha256.clone());
        if self.inconsistent_seen.contains(&id) {
            return;
        }
        let disagreements = ctx.reference.check(ca);
        let limits = &ctx.cfg.limits;
        if self.inconsistent_seen.len() >= limits.max_servers.saturating_mul(limits.max_ca_keys) {
            ctx.stats.inconsistencies_unreported += 1;
            return;
        }
        self.inconsistent_seen.insert(id);
        ctx.out.push(self.event(
            now,
            EventDetail::CaInconsistent(Inconsistent {
                server,
                presented: ca.clone(),
                source,
                disagreements,
            }),
        ));
    }

    /// The reference changed: every presented key is compared again.
    pub fn recheck_reference(&mut self, now: Timestamp, ctx: &mut Ctx<'_>) {
        self.inconsistent_seen.clear();
        let presented: Vec<(SocketAddr, PresentedKey)> = self
            .servers
            .iter()
            .filter_map(|(a, s)| s.presented.clone().map(|p| (*a, p)))
            .collect();
        for (addr, p) in presented {
            self.check_reference(Some(addr), &p.key, &p.ca, p.source, now, ctx);
        }
    }
}
