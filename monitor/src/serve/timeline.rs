//! Successes and certificate failures per time bucket and CA key id, for the status page.
//!
//! Consumes connection records (on the pipeline thread); produces a bounded series of buckets per
//! service: fixed-width buckets over the last minutes, a bounded number of CA keys per bucket (the
//! rest is counted under `other`).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::base::Timestamp;
use crate::detect::{Class, classify};
use crate::handshake::Connection;

/// Bounds and resolution of the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineLimits {
    /// Bucket width, seconds.
    pub bucket_secs: i64,
    /// Buckets kept (the span shown is `bucket_secs * buckets`).
    pub buckets: usize,
    /// CA keys per bucket; beyond, counted under `other`.
    pub keys_per_bucket: usize,
    /// Services tracked.
    pub services: usize,
}

impl Default for TimelineLimits {
    fn default() -> Self {
        TimelineLimits {
            bucket_secs: 5,
            buckets: 120,
            keys_per_bucket: 8,
            services: 64,
        }
    }
}

/// Counts of one CA key in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeyCounts {
    pub successes: u32,
    pub cert_failures: u32,
    pub other_failures: u32,
}

/// One bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Bucket start, Unix seconds.
    pub start: i64,
    /// Per CA key id (`unknown` when the chain was not visible).
    pub keys: BTreeMap<String, KeyCounts>,
}

/// Per-service timelines.
#[derive(Debug, Default)]
pub struct Timeline {
    limits: TimelineLimits,
    services: BTreeMap<String, VecDeque<Bucket>>,
}

impl Timeline {
    pub fn new(limits: TimelineLimits) -> Self {
        Timeline {
            limits,
            services: BTreeMap::new(),
        }
    }

    /// Counts one connection at its decision time. `fallback_key` names the CA key when the record
    /// has none (e.g. the key a probe saw on that server, for TLS 1.3).
    pub fn observe(&mut self, conn: &Connection, fallback_key: Option<&str>) {
        let Some(class) = classify(conn) else { return };
        let key = conn
            .ca_key_id
            .as_deref()
            .or(conn.client_ca_key_id.as_deref())
            .or(fallback_key)
            .unwrap_or("unknown");
        let limits = self.limits;
        if !self.services.contains_key(&*conn.service) && self.services.len() >= limits.services {
            return;
        }
        let buckets = self.services.entry(conn.service.to_string()).or_default();
        let start = conn.end.micros().div_euclid(1_000_000);
        let start = start - start.rem_euclid(limits.bucket_secs.max(1));
        let bucket = match buckets.back_mut() {
            Some(b) if b.start == start => b,
            Some(b) if b.start > start => {
                // Late record (reordered across threads): the bucket it belongs to, if still kept.
                match buckets.iter_mut().rev().find(|b| b.start == start) {
                    Some(b) => b,
                    None => return,
                }
            }
            _ => {
                buckets.push_back(Bucket {
                    start,
                    keys: BTreeMap::new(),
                });
                while buckets.len() > limits.buckets.max(1) {
                    buckets.pop_front();
                }
                match buckets.back_mut() {
                    Some(b) => b,
                    None => return,
                }
            }
        };
        let key = if bucket.keys.contains_key(key) || bucket.keys.len() < limits.keys_per_bucket {
            key
        } else {
            "other"
        };
        let c = bucket.keys.entry(key.to_string()).or_default();
        match class {
            Class::Success => c.successes += 1,
            Class::CertFailure(_) => c.cert_failures += 1,
            Class::OtherFailure => c.other_failures += 1,
        }
    }

    /// Drops buckets older than the span before `now`.
    pub fn expire(&mut self, now: Timestamp) {
        let span = self
            .limits
            .bucket_secs
            .saturating_mul(self.limits.buckets as i64);
        let oldest = now.micros().div_euclid(1_000_000) - span;
        for b in self.services.values_mut() {
            while b.front().is_some_and(|x| x.start < oldest) {
                b.pop_front();
            }
        }
    }

    pub fn bucket_secs(&self) -> i64 {
        self.limits.bucket_secs
    }

    /// A copy for the state page.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<Bucket>> {
        self.services
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect()
    }
}
