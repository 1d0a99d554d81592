//! The certificate cache: each distinct DER is parsed once.
//!
//! Consumes DER slices; produces [`Presented`] values (an `Arc` clone on a hit). Keyed by the DER
//! itself in an LRU map (foldhash over the bytes, equality by comparison), bounded by a number of
//! entries and by bytes (the DER, the parsed fields and their JSON rendering, estimated when an
//! entry is added); DER larger than [`MAX_CACHED_DER`] is parsed every time rather than kept.
//!
//! In front of the map, a few slots remember the certificates most recently returned with the
//! hash the map filed them under: a certificate presented again (a server's chain, an edge's
//! reconnection) is recognised by comparing its bytes, without hashing them, and its entry is
//! refreshed as a lookup would. A slot only ever holds an entry of the map (an eviction clears
//! it), so what `get` returns, counts and evicts is what the map alone would give.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashlink::linked_hash_map::RawEntryMut;
use hashlink::{DefaultHashBuilder, LruCache};

use super::{CertInfo, Presented, parse};
use crate::stats::Stats;

/// Slots of recently returned certificates.
const RECENT: usize = 8;

/// A recently returned certificate: its map entry's hash and key address, to refresh it.
struct Recent {
    info: Arc<CertInfo>,
    hash: u64,
    key: usize,
}

/// The slot a DER may be remembered in: its length and last byte (a signature's).
fn slot(der: &[u8]) -> usize {
    (der.len() ^ usize::from(der.last().copied().unwrap_or(0))) % RECENT
}

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
    /// The map's hasher (a copy hashes alike).
    hasher: DefaultHashBuilder,
    recent: [Option<Recent>; RECENT],
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
        let hasher = DefaultHashBuilder::default();
        CertCache {
            map: LruCache::with_hasher(capacity.max(1), hasher),
            hasher,
            recent: Default::default(),
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
        if let Some(p) = self.recent_hit(der) {
            self.counters.hits += 1;
            return p;
        }
        let hash = self.hasher.hash_one(der);
        let presented = match self.map.raw_entry_mut().from_key_hashed_nocheck(hash, der) {
            RawEntryMut::Occupied(mut entry) => {
                entry.to_back();
                self.counters.hits += 1;
                let key = entry.key().as_ptr() as usize;
                let p = entry.get().0.clone();
                self.remember(der, &p, hash, key);
                p
            }
            RawEntryMut::Vacant(_) => {
                let p = parse(der);
                let cost = entry_cost(der, &p);
                if der.len() <= MAX_CACHED_DER && cost <= self.max_bytes {
                    while self.bytes + cost > self.max_bytes && self.evict_lru() {}
                    if self.map.len() == self.map.capacity() {
                        self.evict_lru();
                    }
                    self.bytes += cost;
                    let key: Box<[u8]> = der.into();
                    self.remember(der, &p, hash, key.as_ptr() as usize);
                    self.map.insert(key, (p.clone(), cost));
                }
                p
            }
        };
        if matches!(presented, Presented::Malformed { .. }) {
            self.counters.malformed += 1;
        }
        presented
    }

    /// `der` answered from its slot, when the slot holds it: the map entry is refreshed by its
    /// hash and key address, with no hashing and no second comparison.
    fn recent_hit(&mut self, der: &[u8]) -> Option<Presented> {
        let at = slot(der);
        let r = self.recent[at].as_ref()?;
        if *r.info.der != *der {
            return None;
        }
        let (hash, key) = (r.hash, r.key);
        match self
            .map
            .raw_entry_mut()
            .from_hash(hash, |k| k.as_ptr() as usize == key)
        {
            RawEntryMut::Occupied(mut entry) => {
                entry.to_back();
                Some(entry.get().0.clone())
            }
            // Not reached (an eviction clears the slot); answered by the map if it were.
            RawEntryMut::Vacant(_) => {
                self.recent[at] = None;
                None
            }
        }
    }

    /// Remembers a parsed certificate of the map in its slot.
    fn remember(&mut self, der: &[u8], p: &Presented, hash: u64, key: usize) {
        if let Presented::Parsed(info) = p {
            self.recent[slot(der)] = Some(Recent {
                info: info.clone(),
                hash,
                key,
            });
        }
    }

    /// Evicts the least recently used entry, and its slot; false when the map is empty.
    fn evict_lru(&mut self) -> bool {
        let Some((_, (p, cost))) = self.map.remove_lru() else {
            return false;
        };
        self.bytes -= cost;
        if let Presented::Parsed(info) = &p {
            for r in &mut self.recent {
                if r.as_ref().is_some_and(|r| Arc::ptr_eq(&r.info, info)) {
                    *r = None;
                }
            }
        }
        true
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
