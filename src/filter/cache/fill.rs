//! Filling the store: answers kept as they stream to the client, copies refreshed by a 304,
//! and refetches in the background.

use super::policy::NotStored;
use super::store::{CacheStore, Entry, FillGuard, Item};
use super::policy;
use super::spec::{Cache, CacheSpec};
use crate::body::{Body, Recording};
use http::header::{AGE, ETAG, VARY};
use http::request::Parts;
use http::{HeaderMap, HeaderName, Response};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Fields a 304 never changes in the stored response (RFC 9111 §3.2): those that describe the
/// stored body as it is (its length, coding and range, its framing), and `Set-Cookie`, which
/// belongs to the one client that got the 304.
const KEPT_ON_304: [HeaderName; 5] = [
    http::header::CONTENT_LENGTH,
    http::header::CONTENT_ENCODING,
    http::header::CONTENT_RANGE,
    http::header::TRANSFER_ENCODING,
    http::header::SET_COOKIE,
];

impl Cache {
    /// The stored copy with the headers of a 304 that confirmed it (RFC 9111 §4.3.4), fresh
    /// again from now, and whether it may stay stored (the 304 may have said `no-store`).
    pub(super) fn refresh(
        &self,
        entry: &Entry,
        not_modified: &HeaderMap,
        request: &HeaderMap,
    ) -> (Entry, bool) {
        let mut headers = entry.headers.clone();
        for name in not_modified.keys() {
            if KEPT_ON_304.contains(name) || name == self.spec.status_header {
                continue;
            }
            // A different entity tag does not describe the stored body: keep the stored one.
            if name == ETAG && entry.headers.contains_key(ETAG) {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.remove(AGE);
        let rules = self.spec.rules(&headers);
        let stored = policy::storable(
            false,
            request,
            entry.status,
            &headers,
            &rules,
            &self.spec.lifetimes,
        );
        let freshness = stored.unwrap_or(Duration::ZERO);
        // The 304 is the origin's newer word: the entry is as old as it says (an invalid
        // `Age` makes it stale at once).
        let initial_age = policy::initial_age(not_modified, SystemTime::now()).unwrap_or(freshness);
        let refreshed = Entry {
            status: entry.status,
            initial_age,
            headers,
            body: entry.body.clone(),
            stored: tokio::time::Instant::now(),
            freshness,
            directives: rules.directives,
        };
        (refreshed, stored.is_ok())
    }

    /// Fetches `key` again in the background, once however many requests find it stale.
    pub(super) fn refresh_in_background(&self, key: &str, req: &Parts) {
        let (Some(fetch), Ok(fill)) = (&self.fetch, self.store.begin_fill(key)) else {
            return;
        };
        let fetch = Arc::clone(fetch);
        let spec = Arc::clone(&self.spec);
        let store = Arc::clone(&self.store);
        let key = key.to_string();
        let mut parts = http::Request::new(()).into_parts().0;
        parts.uri = req.uri.clone();
        parts.headers = req.headers.clone();
        tokio::spawn(async move {
            let request = parts.headers.clone();
            match fetch.fetch(parts, bytes::Bytes::new()).await {
                Ok(mut response) => {
                    let status = response.status();
                    store_response(
                        &spec,
                        &store,
                        key,
                        request,
                        false,
                        Some(Arc::new(fill)),
                        &mut response,
                    );
                    // Reading the body to its end is what stores it.
                    let read = http_body_util::BodyExt::collect(response.into_body()).await;
                    tracing::debug!(%status, complete = read.is_ok(), "cache refreshed in the background");
                }
                Err(error) => tracing::debug!(%error, "background cache refresh failed"),
            }
        });
    }
}

/// How long misses for a key whose answer could not be stored skip coalescing.
const UNCACHEABLE_FOR: Duration = Duration::from_secs(30);

/// Whether `res` may be stored, with its freshness and the age it arrived with.
fn verdict(
    spec: &CacheSpec,
    request: &HeaderMap,
    head: bool,
    res: &Response<Body>,
    rules: &policy::Rules,
) -> Result<(Duration, Duration), NotStored> {
    let freshness = policy::storable(
        head,
        request,
        res.status(),
        res.headers(),
        rules,
        &spec.lifetimes,
    )?;
    let too_large = res
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > spec.max_object_size);
    if too_large {
        return Err(NotStored::TooLarge);
    }
    // The age it arrived with counts: a response already past its freshness is not stored
    // (one stored only for its validators has none to lose).
    match policy::initial_age(res.headers(), SystemTime::now()) {
        Some(age) if age < freshness || freshness.is_zero() => Ok((freshness, age)),
        _ => Err(NotStored::StaleOnArrival),
    }
}

/// Keeps `res` (as it streams on) when RFC 9111 allows: its body is recorded and, once whole,
/// stored under `key` (or its variant). `fill` is released when the entry is in or given up.
pub(super) fn store_response(
    spec: &CacheSpec,
    store: &Arc<CacheStore>,
    key: String,
    request: HeaderMap,
    head: bool,
    fill: Option<Arc<FillGuard>>,
    res: &mut Response<Body>,
) {
    let rules = spec.rules(res.headers());
    let (freshness, initial_age) = match verdict(spec, &request, head, res, &rules) {
        Ok(verdict) => verdict,
        Err(reason) => {
            tracing::trace!(key = %key, ?reason, "not stored");
            // The request that filled the key says so for a while, so that the next misses
            // do not queue behind each other for an answer that will not be stored.
            let holds_answers = matches!(store.get(&key), Some(Item::Response(_) | Item::Vary(_)));
            if fill.is_some() && reason.is_the_responses() && !holds_answers {
                let until = tokio::time::Instant::now() + UNCACHEABLE_FOR;
                store.insert(key, Item::Uncacheable(until));
            }
            return;
        }
    };
    let mut headers = res.headers().clone();
    headers.remove(AGE);
    headers.remove(&spec.status_header);
    let status = res.status();
    let store = Arc::clone(store);
    let done = Box::new(move |body: bytes::Bytes| {
        // Waiters wake once the entry is in (the guard goes with this closure).
        let _fill = fill;
        let entry = Arc::new(Entry {
            status,
            headers,
            body,
            stored: tokio::time::Instant::now(),
            initial_age,
            freshness,
            directives: rules.directives,
        });
        insert_entry(&store, key, &request, entry);
    });
    let body = std::mem::replace(res.body_mut(), Body::Empty);
    *res.body_mut() = Recording::wrap(body, spec.max_object_size as usize, done);
}

/// The request headers a response's `Vary` names.
fn vary_names(response: &HeaderMap) -> Vec<HeaderName> {
    response
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Where a response with `headers`, answering a request with `request` headers, is stored:
/// the URL's `key`, or its variant when the response varies.
pub(super) fn entry_key(key: &str, headers: &HeaderMap, request: &HeaderMap) -> String {
    let vary = vary_names(headers);
    if vary.is_empty() {
        key.to_string()
    } else {
        Cache::variant_key(key, &vary, request)
    }
}

/// Stores `entry` under the URL's `key`, or under its variant with the URL's key naming the
/// headers that select it.
pub(super) fn insert_entry(
    store: &CacheStore,
    key: String,
    request: &HeaderMap,
    entry: Arc<Entry>,
) {
    let vary = vary_names(&entry.headers);
    if vary.is_empty() {
        store.insert(key, Item::Response(entry));
    } else {
        let variant = Cache::variant_key(&key, &vary, request);
        store.insert(key, Item::Vary(vary.into()));
        store.insert(variant, Item::Response(entry));
    }
}
