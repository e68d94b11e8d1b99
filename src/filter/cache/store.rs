//! The in-memory store: a concurrent cache bounded in bytes (quick_cache, with a weigher that
//! counts each entry's body, headers and key). One per `cache` filter, carried over reloads.

use super::policy::Directives;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A stored response.
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    /// As received, minus `Age` (computed when served).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// When it was stored (the cache's clock) and how old it already was then.
    pub(crate) stored: tokio::time::Instant,
    pub(crate) initial_age: Duration,
    /// Zero for a response stored only for its validators: every use revalidates it.
    pub(crate) freshness: Duration,
    /// Its caching directives (from `Cache-Control` or the targeted field that overrides it).
    pub(crate) directives: Directives,
}

impl Entry {
    pub(crate) fn age(&self, now: tokio::time::Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored)
    }

    pub(crate) fn is_fresh(&self, now: tokio::time::Instant) -> bool {
        self.age(now) < self.freshness
    }

    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        (self.body.len() + headers + 128) as u64
    }
}

/// What a key holds: a response, or (under the URL's key when the response varies) the
/// names of the request headers that select among stored variants, or a note that its last
/// answer could not be stored.
#[derive(Clone)]
pub(crate) enum Item {
    Response(Arc<Entry>),
    Vary(Arc<[HeaderName]>),
    /// Until then, misses for the key go upstream at once instead of waiting for each other:
    /// an answer that cannot be stored would only make them queue. An answer that can be
    /// stored replaces it.
    Uncacheable(tokio::time::Instant),
}

#[derive(Clone)]
struct Weigher;

impl quick_cache::Weighter<String, Item> for Weigher {
    fn weight(&self, key: &String, item: &Item) -> u64 {
        let value = match item {
            Item::Response(entry) => entry.weight(),
            Item::Vary(names) => 64 + names.iter().map(|n| n.as_str().len()).sum::<usize>() as u64,
            Item::Uncacheable(_) => 32,
        };
        value + key.len() as u64
    }
}

/// Every key stored for a URL, under the URL's own key (owner, host, path and query), so
/// that invalidating a URL finds its variants and key parts without scanning the store.
type UrlIndex = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// The URL part of a key: up to the first key part (`\u{1f}`) or variant (`\u{1e}`) after the
/// owner.
fn url_of(key: &str) -> &str {
    let owner_end = key.find('\u{1f}').map_or(key.len(), |at| at + 1);
    let end = key[owner_end..]
        .find(['\u{1f}', '\u{1e}'])
        .map_or(key.len(), |at| owner_end + at);
    &key[..end]
}

fn unindex(index: &UrlIndex, key: &str) {
    let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
    let url = url_of(key);
    if let Some(keys) = index.get_mut(url) {
        keys.retain(|k| k != key);
        if keys.is_empty() {
            index.remove(url);
        }
    }
}

/// Counts evictions for `/metrics` and keeps the URL index in step.
#[derive(Clone, Default)]
struct Evictions {
    count: Arc<AtomicU64>,
    index: UrlIndex,
}

impl quick_cache::Lifecycle<String, Item> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut Self::RequestState, key: String, _item: Item) {
        self.count.fetch_add(1, Ordering::Relaxed);
        unindex(&self.index, &key);
    }
}

/// Held by the one request filling a key; dropping it wakes the requests waiting for it.
pub(crate) struct FillGuard {
    key: String,
    filling: Arc<Mutex<HashMap<String, watch::Receiver<()>>>>,
    _sender: watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut filling = self.filling.lock().unwrap_or_else(|e| e.into_inner());
        filling.remove(&self.key);
    }
}

pub(crate) struct CacheStore {
    items: quick_cache::sync::Cache<String, Item, Weigher, foldhash::fast::RandomState, Evictions>,
    evictions: Evictions,
    /// Keys being fetched by one request while others wait (request coalescing).
    filling: Arc<Mutex<HashMap<String, watch::Receiver<()>>>>,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

impl CacheStore {
    pub(crate) fn new(max_size: u64) -> CacheStore {
        let evictions = Evictions::default();
        // quick_cache sizes its tables from an item estimate: assume 4 KiB per entry.
        let estimated = (max_size / 4096).clamp(16, 1 << 20) as usize;
        CacheStore {
            items: quick_cache::sync::Cache::with(
                estimated,
                max_size,
                Weigher,
                foldhash::fast::RandomState::default(),
                evictions.clone(),
            ),
            evictions,
            filling: Arc::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The first miss for `key` fills it (`Ok`, holding the guard until the entry is stored
    /// or given up); later ones wait for that (`Err`, a receiver that wakes when the guard
    /// goes).
    pub(crate) fn begin_fill(&self, key: &str) -> Result<FillGuard, watch::Receiver<()>> {
        let mut filling = self.filling.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiting) = filling.get(key) {
            if waiting.has_changed().is_ok() {
                return Err(waiting.clone());
            }
        }
        let (sender, receiver) = watch::channel(());
        filling.insert(key.to_string(), receiver);
        Ok(FillGuard {
            key: key.to_string(),
            filling: Arc::clone(&self.filling),
            _sender: sender,
        })
    }

    pub(crate) fn get(&self, key: &str) -> Option<Item> {
        self.items.get(key)
    }

    /// Stores `item`. The index is updated after the store, never while holding its lock,
    /// so its lock and the store's are never taken in opposite orders.
    pub(crate) fn insert(&self, key: String, item: Item) {
        let url = url_of(&key).to_string();
        self.items.insert(key.clone(), item);
        let mut index = self
            .evictions
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let keys = index.entry(url).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    pub(crate) fn remove(&self, key: &str) -> bool {
        unindex(&self.evictions.index, key);
        self.items.remove(key).is_some()
    }

    /// Removes everything stored for the URL key `url`; how many entries.
    pub(crate) fn invalidate_url(&self, url: &str) -> usize {
        let keys = {
            let mut index = self
                .evictions
                .index
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            index.remove(url).unwrap_or_default()
        };
        keys.iter()
            .filter(|key| self.items.remove(*key).is_some())
            .count()
    }

    /// Removes every entry whose key satisfies `purge`; how many.
    pub(crate) fn remove_where(&self, purge: impl Fn(&str) -> bool) -> usize {
        let keys: Vec<String> = self
            .items
            .iter()
            .filter(|(key, _)| purge(key))
            .map(|(key, _)| key)
            .collect();
        keys.iter().filter(|key| self.remove(key)).count()
    }

    pub(crate) fn entries(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.items.weight()
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.count.load(Ordering::Relaxed)
    }
}

impl CacheStore {
    /// What the store reports to metrics.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries() as u64,
            bytes: self.bytes(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions(),
        }
    }
}

/// What a response cache reports.
pub(crate) struct CacheStats {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) evictions: u64,
}
