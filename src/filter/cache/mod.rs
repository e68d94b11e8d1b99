//! `cache`: a shared HTTP cache (RFC 9111) in front of a route. Fresh stored responses are
//! answered at the gateway; misses go upstream and, when the response may be shared, are kept
//! as they stream back to the client.
//!
//! What may be stored, and for how long, is decided in [`policy`]. Stored responses vary by
//! the request headers their `Vary` names: the URL's key then holds those names, and each
//! variant lives under the URL's key plus the request's values for them.
//!
//! Keys are built in `key`, answers from stored copies (conditionals, ranges) in `serve` and
//! `range`, the store is filled and refreshed in `fill`, and RFC 9213's targeted fields are
//! read in [`targeted`].

pub(crate) mod admin;
pub(super) mod build;
pub(crate) mod config;
mod directives;
mod fill;
mod key;
pub(crate) mod metrics;
pub(crate) mod policy;
mod range;
mod serve;
mod spec;
pub(crate) mod store;
pub(crate) mod targeted;

use key::request_host;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use serve::not_modified;
pub(crate) use key::Purge;
pub(crate) use spec::{Cache, CacheSpec};

use super::{Filter, Flow};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use fill::{entry_key, insert_entry, store_response};
use http::header::{ETAG, IF_NONE_MATCH};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use policy::Directives;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use store::{Entry, FillGuard, Item};

/// What on_request decided, for on_response.
#[derive(Clone)]
enum Pending {
    /// Answered from the cache; the response is complete as it is.
    Hit,
    Bypass,
    /// An unsafe method: a non-error answer invalidates these URL keys, and those of its
    /// `Location` / `Content-Location` on the same host.
    Invalidate {
        url: String,
        scheme: &'static str,
        host: String,
    },
    Miss {
        key: String,
        request: HeaderMap,
        head: bool,
        /// This request fills the key for others waiting on it.
        fill: Option<Arc<FillGuard>>,
        /// A stale copy, for `stale_if_error` and revalidation.
        stale: Option<Arc<Entry>>,
        /// The upstream request carries the stale copy's validators (added here, not by the
        /// client): a 304 refreshes the copy and the client gets it whole.
        revalidating: bool,
        /// A stale copy may stand in for an upstream failure (not when the client asked for
        /// a validated answer).
        fallback: bool,
    },
}

/// What the store holds for a request.
enum Found {
    Entry(Arc<Entry>),
    /// The key's last answer could not be stored: go upstream without coalescing.
    Uncacheable,
    Nothing,
}

const HIT: HeaderValue = HeaderValue::from_static("HIT");
const MISS: HeaderValue = HeaderValue::from_static("MISS");
const BYPASS: HeaderValue = HeaderValue::from_static("BYPASS");
const STALE: HeaderValue = HeaderValue::from_static("STALE");
const REVALIDATED: HeaderValue = HeaderValue::from_static("REVALIDATED");

/// Methods a cache knows to be safe (RFC 9110 §9.2.1); any other method's success
/// invalidates what is stored for its target (RFC 9111 §4.4).
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Adds the stored copy's `ETag` / `Last-Modified` as `If-None-Match` / `If-Modified-Since`
/// unless the client sent conditionals of its own; whether any were added.
fn add_validators(headers: &mut HeaderMap, entry: &Entry) -> bool {
    use http::header::{IF_MODIFIED_SINCE, LAST_MODIFIED};
    if headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE) {
        return false;
    }
    let mut added = false;
    if let Some(etag) = entry.headers.get(ETAG) {
        headers.insert(IF_NONE_MATCH, etag.clone());
        added = true;
    }
    if let Some(modified) = entry.headers.get(LAST_MODIFIED) {
        headers.insert(IF_MODIFIED_SINCE, modified.clone());
        added = true;
    }
    added
}

impl Cache {
    fn lookup(&self, key: &str, request: &HeaderMap, now: tokio::time::Instant) -> Found {
        let item = match self.store.get(key) {
            Some(Item::Vary(names)) => self.store.get(&Self::variant_key(key, &names, request)),
            item => item,
        };
        match item {
            Some(Item::Response(entry)) => Found::Entry(entry),
            Some(Item::Uncacheable(until)) if now < until => Found::Uncacheable,
            _ => Found::Nothing,
        }
    }

    /// Answers from `entry`: `HIT` when fresh, `STALE` when the client's `max-stale` took it.
    fn hit(&self, entry: &Entry, req: &Parts, ctx: &mut RequestCtx) -> Flow {
        self.store.hits.fetch_add(1, Ordering::Relaxed);
        ctx.extensions.insert(Pending::Hit);
        let label = if entry.is_fresh(ctx.started) {
            HIT
        } else {
            STALE
        };
        Flow::Respond(self.serve(entry, req, ctx.started, label))
    }
}

impl Cache {
    /// Within the stale-while-revalidate window, with a way to refresh.
    fn may_revalidate_later(&self, entry: &Entry, now: tokio::time::Instant) -> bool {
        self.fetch.is_some()
            && within_stale_window(
                entry,
                now,
                |cc| cc.stale_while_revalidate,
                self.spec.stale_while_revalidate,
            )
    }

    /// Removes every response stored for `url` (all variants and key parts), and for the
    /// `Location` and `Content-Location` of `response` when they are on the same `host`.
    fn invalidate(&self, url: String, scheme: &str, host: &str, response: &HeaderMap) {
        let mut urls = vec![url];
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            let Some(target) = response
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_host = target
                .authority()
                .is_none_or(|a| a.as_str().eq_ignore_ascii_case(host));
            if same_host && target.path().starts_with('/') {
                let scheme = target.scheme_str().unwrap_or(scheme);
                urls.push(self.url_key(scheme, host, target.path(), target.query()));
            }
        }
        let removed: usize = urls.iter().map(|url| self.store.invalidate_url(url)).sum();
        tracing::debug!(removed, "cache entries invalidated by an unsafe request");
    }

    /// Within the stale-if-error window.
    fn may_serve_stale(&self, entry: &Entry, now: tokio::time::Instant) -> bool {
        within_stale_window(entry, now, |cc| cc.stale_if_error, self.spec.stale_if_error)
    }
}

/// Whether `entry` is less than a window past its freshness, the window being the
/// response's own directive (`own`), else the route's. Never when the response forbids a
/// shared cache to use it stale: `must-revalidate`, `proxy-revalidate`, `s-maxage` (RFC 9111
/// §5.2.2.10) or `no-cache` (it must be revalidated before every use).
fn within_stale_window(
    entry: &Entry,
    now: tokio::time::Instant,
    own: fn(&Directives) -> Option<u64>,
    route: Option<Duration>,
) -> bool {
    if never_stale(entry) {
        return false;
    }
    let window = own(&entry.directives).map(Duration::from_secs).or(route);
    window.is_some_and(|window| entry.age(now) < entry.freshness + window)
}

/// Whether `entry` may answer a request with these directives without asking the upstream
/// (RFC 9111 §4.2, §5.2.1): fresh, or stale within the client's `max-stale` unless the
/// response forbids stale use; no older than its `max-age`; fresh for its `min-fresh`.
fn acceptable(entry: &Entry, cc: &Directives, now: tokio::time::Instant) -> bool {
    let age = entry.age(now);
    let fresh = entry.is_fresh(now);
    let stale_ok = || {
        cc.max_stale.is_some_and(|max| {
            !never_stale(entry) && age.saturating_sub(entry.freshness) <= Duration::from_secs(max)
        })
    };
    (fresh || stale_ok())
        && cc.max_age.is_none_or(|max| age <= Duration::from_secs(max))
        && cc
            .min_fresh
            .is_none_or(|min| entry.freshness.saturating_sub(age) >= Duration::from_secs(min))
}

/// Whether a stored response must never be used stale by a shared cache.
fn forbids_stale(cc: &Directives) -> bool {
    cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache
}

/// Whether `entry` is never used without revalidation once stale: its directives forbid it,
/// or it was stored only for its validators.
fn never_stale(entry: &Entry) -> bool {
    entry.freshness.is_zero() || forbids_stale(&entry.directives)
}

#[async_trait::async_trait]
impl Filter for Cache {
    fn kind(&self) -> &'static str {
        "cache"
    }

    async fn on_request(&self, req: &mut Parts, ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        let head = req.method == Method::HEAD;
        if !is_safe(&req.method) {
            let host = request_host(req).to_string();
            let url = self.url_key(ctx.scheme, &host, req.uri.path(), req.uri.query());
            ctx.extensions.insert(Pending::Invalidate {
                url,
                scheme: ctx.scheme,
                host,
            });
            return Ok(Flow::Continue);
        }
        let cc = Directives::of(&req.headers);
        if !(req.method == Method::GET || head) || cc.no_store {
            ctx.extensions.insert(Pending::Bypass);
            return Ok(Flow::Continue);
        }
        let Some(key) = self.key(req, ctx) else {
            ctx.extensions.insert(Pending::Bypass);
            return Ok(Flow::Continue);
        };
        // A client asking for a validated answer (no-cache, max-age=0): the stored copy is
        // revalidated before use, never served as it is (RFC 9111 §5.2.1.4).
        let wants_validated = cc.no_cache || cc.max_age == Some(0);
        let now = ctx.started;
        let usable = |entry: &Entry| !wants_validated && acceptable(entry, &cc, now);
        let mut stale = None;
        let found = self.lookup(&key, &req.headers, now);
        let coalesce = !matches!(found, Found::Uncacheable);
        if let Found::Entry(entry) = found {
            if usable(&entry) {
                return Ok(self.hit(&entry, req, ctx));
            }
            if !wants_validated && self.may_revalidate_later(&entry, now) {
                self.refresh_in_background(&key, req);
                ctx.extensions.insert(Pending::Hit);
                return Ok(Flow::Respond(self.serve(&entry, req, now, STALE)));
            }
            stale = Some(entry);
        }
        // only-if-cached: nothing stored is acceptable, and the upstream is not asked.
        if cc.only_if_cached {
            ctx.extensions.insert(Pending::Hit);
            let mut response = crate::error::error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "not in cache",
                &ctx.request_id,
                false,
            );
            response
                .headers_mut()
                .insert(self.spec.status_header.clone(), MISS);
            return Ok(Flow::Respond(response));
        }
        // Coalescing: one miss per key goes upstream; the others wait for its entry (unless
        // the key's answers lately could not be stored).
        let fill = match coalesce.then(|| self.store.begin_fill(&key)) {
            None => None,
            Some(Ok(guard)) => Some(Arc::new(guard)),
            Some(Err(mut filled)) => {
                let _ = tokio::time::timeout(self.spec.lock_timeout, filled.changed()).await;
                if let Found::Entry(entry) = self.lookup(&key, &req.headers, now) {
                    if usable(&entry) {
                        return Ok(self.hit(&entry, req, ctx));
                    }
                }
                None
            }
        };
        self.store.misses.fetch_add(1, Ordering::Relaxed);
        let request = req.headers.clone();
        let revalidating = stale
            .as_ref()
            .is_some_and(|entry| add_validators(&mut req.headers, entry));
        ctx.extensions.insert(Pending::Miss {
            key,
            request,
            head,
            fill,
            stale,
            revalidating,
            fallback: !wants_validated,
        });
        Ok(Flow::Continue)
    }

    async fn on_response(
        &self,
        res: &mut Response<Body>,
        ctx: &mut RequestCtx,
    ) -> Result<(), ProxyError> {
        self.answer(res, ctx);
        self.spec.strip_targeted(res.headers_mut());
        if let Some(trace) = ctx.trace.as_deref_mut() {
            trace.cache = res.headers().get(&self.spec.status_header).cloned();
        }
        Ok(())
    }
}

impl Cache {
    /// Labels the answer, and stores, refreshes, invalidates or replaces it as on_request
    /// planned.
    fn answer(&self, res: &mut Response<Body>, ctx: &mut RequestCtx) {
        let label = self.spec.status_header.clone();
        let (key, request, head, fill, stale, revalidating, fallback) =
            match ctx.extensions.remove::<Pending>() {
                Some(Pending::Hit) => return,
                Some(Pending::Miss {
                    key,
                    request,
                    head,
                    fill,
                    stale,
                    revalidating,
                    fallback,
                }) => (key, request, head, fill, stale, revalidating, fallback),
                Some(Pending::Invalidate { url, scheme, host }) => {
                    let succeeded = res.status().is_success() || res.status().is_redirection();
                    if succeeded && ctx.error.is_none() {
                        self.invalidate(url, scheme, &host, res.headers());
                    }
                    res.headers_mut().insert(label, BYPASS);
                    return;
                }
                Some(Pending::Bypass) | None => {
                    res.headers_mut().insert(label, BYPASS);
                    return;
                }
            };
        // The upstream failed (or an open breaker answered): a stale copy still within its
        // stale-if-error window is better than an error.
        // A route's fallback answer stands for a failure too: a stale copy comes first.
        let failed =
            ctx.error.is_some() || ctx.fallback.is_some() || res.status().is_server_error();
        if let (true, Some(entry)) = (failed, &stale) {
            if fallback && self.may_serve_stale(entry, ctx.started) {
                let parts = serve::request_parts(request, head);
                *res = self.serve(entry, &parts, ctx.started, STALE);
                ctx.fallback = None;
                return;
            }
            // A copy that must be revalidated could not be: the client gets an error, never
            // the stale copy (RFC 9111 §4.2.4, §5.2.2.2 suggest 504).
            if ctx.error.is_some() && forbids_stale(&entry.directives) {
                *res = crate::error::error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "stored response could not be revalidated",
                    &ctx.request_id,
                    false,
                );
            }
        }
        if let (true, Some(entry), StatusCode::NOT_MODIFIED) = (revalidating, &stale, res.status())
        {
            let (refreshed, keep) = self.refresh(entry, res.headers(), &request);
            let parts = serve::request_parts(request, head);
            let cookies: Vec<HeaderValue> = res
                .headers()
                .get_all(http::header::SET_COOKIE)
                .iter()
                .cloned()
                .collect();
            *res = self.serve(&refreshed, &parts, ctx.started, REVALIDATED);
            // Cookies the 304 sets are this client's alone: sent on, never stored.
            for cookie in cookies {
                res.headers_mut().append(http::header::SET_COOKIE, cookie);
            }
            if keep {
                insert_entry(&self.store, key, &parts.headers, Arc::new(refreshed));
            } else {
                self.store
                    .remove(&entry_key(&key, &entry.headers, &parts.headers));
            }
            drop(fill);
            return;
        }
        res.headers_mut().insert(label.clone(), MISS);
        // Errors made by the gateway itself (502, 504 …) and fallback answers are not the
        // upstream's answers.
        if ctx.error.is_some() || ctx.fallback.is_some() {
            return;
        }
        store_response(&self.spec, &self.store, key, request, head, fill, res);
    }
}
