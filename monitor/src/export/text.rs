//! Events in words: the one-sentence evidence of a detector event and its one-line timeline form.
//!
//! Consumes [`Event`]s; produces the text the JSON records carry (`event.reason`,
//! `trustwatch.evidence`, `message`), the trust timeline of the summary and the live monitor's
//! stderr lines.

use std::fmt::Write as _;

use crate::base::KeyId;
use crate::detect::{DivergenceBasis, Event, EventDetail};

/// Human-readable evidence for an event, one sentence.
pub fn evidence(e: &Event) -> String {
    fn key(k: &Option<KeyId>) -> &str {
        k.as_ref().map_or("unknown", KeyId::short)
    }
    match &e.detail {
        EventDetail::TrustCollapse(c) => format!(
            "{} collapse: {} distinct clients failed on certificate grounds ({} rejecting) in the window, {:.0}% of active clients; \
             first failure {}; last trusted CA key {}, presented CA key {}",
            c.scope.as_str(),
            c.failing_clients,
            c.rejecting_side.as_str(),
            c.failure_share * 100.0,
            c.first_failure.rfc3339(),
            key(&c.previous_ca_key_id),
            key(&c.current_ca_key_id),
        ),
        EventDetail::TrustRecovered(r) => format!(
            "{} clients succeed again (CA key {}), {} still failing; collapsed at {}",
            r.succeeding_clients,
            key(&r.ca_key_id),
            r.failing_clients,
            r.collapsed_at.rfc3339()
        ),
        EventDetail::CaChanged(c) => format!(
            "{} now presents CA key {} (was {}), seen by {}",
            c.server
                .map_or_else(|| "the stored CA".to_string(), |s| s.to_string()),
            c.current_ca_key_id.short(),
            c.previous_ca_key_id.short(),
            c.source.as_str()
        ),
        EventDetail::CaDivergence(d) => {
            let mut s = match d.basis {
                DivergenceBasis::PresentedKeys => "replicas present different CA keys:".to_string(),
                DivergenceBasis::Alternating => {
                    "one address alternates between CA keys:".to_string()
                }
                DivergenceBasis::OutcomeSplit => format!(
                    "{} clients succeed on one replica and are rejected on certificate grounds by another:",
                    d.split_clients
                ),
            };
            for r in &d.replicas {
                let _ = write!(
                    s,
                    " {} [CA {}; {} ok / {} cert-rejected clients]",
                    r.address,
                    key(&r.ca_key_id),
                    r.clients_succeeded,
                    r.clients_rejected
                );
            }
            s
        }
        EventDetail::CaRotation(r) => {
            let mut s = "replicas present different CA keys and clients succeed under each (a planned rotation):".to_string();
            for rep in &r.replicas {
                let _ = write!(
                    s,
                    " {} [CA {}; {} ok clients]",
                    rep.address,
                    key(&rep.ca_key_id),
                    rep.clients_succeeded
                );
            }
            s
        }
        EventDetail::CaInconsistent(i) => {
            let presented = i.presented.key_ids.first().map_or("unknown", KeyId::short);
            let srcs: Vec<&str> = i.disagreements.iter().map(|d| d.source.as_str()).collect();
            format!(
                "{} presents CA key {presented} ({}), which differs from {}",
                i.server
                    .map_or_else(|| "the service".to_string(), |s| s.to_string()),
                i.source.as_str(),
                srcs.join(", ")
            )
        }
    }
}

/// One line for the trust timeline: `<time> <service> <EVENT> <evidence>`.
pub fn timeline_line(e: &Event) -> String {
    format!(
        "{}  {:<10} {:<16} {}",
        e.at.rfc3339(),
        e.service,
        e.name().to_uppercase(),
        evidence(e)
    )
}
