//! Verified tokens remembered per provider, so a repeated token skips the signature check.

use serde_json::Value;
use std::sync::Arc;

/// Recently verified tokens, so a repeated token costs a lookup instead of a signature check
/// (an RS256 verification costs more than a whole proxied request). One shard per worker, so
/// no lock is shared across cores; bounded, oldest first out; an entry is served only while
/// its `exp` is in the future and under the key set it was verified with. Keyed by a hash of
/// the whole token, and the token is compared in full on a hit, so a hash collision can never
/// let a different token through.
pub(crate) struct VerifyCache {
    shards: Box<[std::sync::Mutex<CacheShard>]>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    pub(crate) hits: std::sync::atomic::AtomicU64,
}

struct CacheEntry {
    token: Box<str>,
    claims: Arc<Value>,
    exp: u64,
    key_version: u64,
}

#[derive(Default)]
struct CacheShard {
    entries: std::collections::HashMap<u64, CacheEntry>,
    order: std::collections::VecDeque<u64>,
}

impl VerifyCache {
    pub(crate) fn new(capacity: usize, shards: usize) -> VerifyCache {
        let shards = shards.max(1);
        VerifyCache {
            shards: (0..shards)
                .map(|_| std::sync::Mutex::new(CacheShard::default()))
                .collect(),
            per_shard: (capacity / shards).max(1),
            hasher: foldhash::fast::RandomState::default(),
            hits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn shard(&self) -> std::sync::MutexGuard<'_, CacheShard> {
        let index = crate::worker::index() % self.shards.len();
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries in this worker's shard.
    #[cfg(test)]
    pub(super) fn shard_len(&self) -> usize {
        self.shard().entries.len()
    }

    pub(super) fn get(&self, token: &str, now: u64, key_version: u64) -> Option<Arc<Value>> {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one(token);
        let shard = self.shard();
        let entry = shard.entries.get(&key)?;
        if &*entry.token != token || entry.exp <= now || entry.key_version != key_version {
            return None;
        }
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Arc::clone(&entry.claims))
    }

    pub(super) fn put(&self, token: &str, claims: Arc<Value>, exp: u64, key_version: u64) {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one(token);
        let entry = CacheEntry {
            token: token.into(),
            claims,
            exp,
            key_version,
        };
        let mut shard = self.shard();
        if shard.entries.insert(key, entry).is_none() {
            shard.order.push_back(key);
        }
        while shard.entries.len() > self.per_shard {
            let Some(oldest) = shard.order.pop_front() else {
                break;
            };
            shard.entries.remove(&oldest);
        }
    }
}
