//! The certificate cache: each distinct DER is parsed once.
//!
//! Consumes DER slices; produces [`Presented`] values (an `Arc` clone on a hit). Keyed by the DER
//! itself in an LRU map (foldhash over the bytes, equality by comparison), bounded by a number of
//! entries and by bytes (the DER, the parsed fields and their JSON rendering, estimated when an
//! entry is added); DER larger than [`MAX_CACHED_DER`] is parsed every time rather than kept.

use hashlink::LruCache;

use super::{Presented, parse};
use crate::stats::Stats;

/// Certificates larger than this are not kept in the cache (bounds its memory at
/// `capacity × MAX_CACHED_DER`).
pub const MAX_CACHED_DER: usize = 64 * 1024;

/// Counters of the certificate stage since they were last taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CertCounters {
    /// Certificates presented (every `get`).
    pub certificates: u64,
    /// Presentations of unparseable DER.
    pub malformed: u64,
    /// Presentations answered from the cache.
    pub hits: u64,
}

/// Parsed certificates by DER, least recently used evicted first.
pub struct CertCache {
    map: LruCache<Box<[u8]>, (Presented, usize)>,
    counters: CertCounters,
    /// Bytes charged for the entries, at most `max_bytes`.
    bytes: usize,
    max_bytes: usize,
}

/// What an entry costs: its DER three times (the key, the parsed copy's own DER, and its hashes
/// and names, of the same order), the parsed fields, and room for the exporter's three JSON
/// renderings of those fields (as a chain entry, as a client leaf, as a server leaf).
fn entry_cost(der: &[u8], p: &Presented) -> usize {
    let fields = match p {
        Presented::Parsed(c) => {
            std::mem::size_of::<super::CertInfo>()
                + c.subject.len()
                + c.issuer.len()
                + c.sans.iter().map(|s| s.len() + 24).sum::<usize>()
                + 256
        }
        Presented::Malformed { .. } => 128,
    };
    2 * der.len() + 4 * fields + 64
}

impl std::fmt::Debug for CertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertCache")
            .field("len", &self.map.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl CertCache {
    /// A cache holding at most `capacity` (≥ 1) distinct certificates and `max_bytes` of them.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        CertCache {
            map: LruCache::new(capacity.max(1)),
            counters: CertCounters::default(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Bytes charged for the cached certificates.
    pub fn heap_bytes(&self) -> usize {
        self.bytes
    }

    /// The parsed form of `der`, from the cache or parsed now. Counts into the cache's own
    /// counters (see [`CertCache::take_counters`]) so it can be called while `Stats` is borrowed.
    pub fn get(&mut self, der: &[u8]) -> Presented {
        self.counters.certificates += 1;
        let presented = if let Some((p, _)) = self.map.get(der) {
            self.counters.hits += 1;
            p.clone()
        } else {
            let p = parse(der);
            let cost = entry_cost(der, &p);
            if der.len() <= MAX_CACHED_DER && cost <= self.max_bytes {
                while self.bytes + cost > self.max_bytes
                    && let Some((_, (_, c))) = self.map.remove_lru()
                {
                    self.bytes -= c;
                }
                if self.map.len() == self.map.capacity()
                    && let Some((_, (_, c))) = self.map.remove_lru()
                {
                    self.bytes -= c;
                }
                self.bytes += cost;
                self.map.insert(der.into(), (p.clone(), cost));
            }
            p
        };
        if matches!(presented, Presented::Malformed { .. }) {
            self.counters.malformed += 1;
        }
        presented
    }

    /// [`CertCache::get`] that counts straight into `stats`.
    pub fn get_counted(&mut self, der: &[u8], stats: &mut Stats) -> Presented {
        let p = self.get(der);
        self.take_counters(stats);
        p
    }

    /// Adds the counters since the last call to `stats` (`certificates`, `malformed_certificates`,
    /// `cert_cache_hits`) and resets them.
    pub fn take_counters(&mut self, stats: &mut Stats) {
        let c = std::mem::take(&mut self.counters);
        stats.certificates += c.certificates;
        stats.malformed_certificates += c.malformed;
        stats.cert_cache_hits += c.hits;
    }

    /// Counters since the last [`CertCache::take_counters`].
    pub fn counters(&self) -> CertCounters {
        self.counters
    }

    /// Distinct certificates currently cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
