//! Building a snapshot from a validated `Config`: upstreams, JWT providers, the Redis store
//! and every route's filters, each carried over from the previous snapshot when its stable
//! key and parameters are unchanged.

use super::{Route, RouteAction, Snapshot};
use crate::config::{Action, Config, FilterRef, FilterSpec};
use crate::discovery::Feed;
use crate::filter::cache::store::CacheStore;
use crate::filter::cache::Cache;
use crate::filter::circuit_breaker::{Breaker, CircuitBreaker};
use crate::filter::jwt::{self, KeySpec, Keys, Provider, RemoteKeys};
use crate::filter::rate_limit::{LocalLimiter, OnStoreError, RateLimit, RedisLimit, StoreChoice};
use crate::filter::{Cors, Filter, FilterStates, Jwt};
use crate::router::Router;
use crate::store::RedisStore;
use crate::telemetry::{ConfigMetrics, UpstreamStateSource};
use crate::upstream::Upstream;
use std::collections::HashMap;
use std::sync::Arc;

/// What building a filter needs besides its spec: the running JWT providers, and the state of
/// the outgoing snapshot's filters to carry over.
pub struct BuildCtx<'a> {
    pub providers: &'a HashMap<String, Arc<jwt::Provider>>,
    pub redis: Option<&'a Arc<RedisStore>>,
    pub metrics: &'a ConfigMetrics,
    /// The upstream of the route being built, if it proxies.
    pub upstream: Option<&'a str>,
    /// Requests to that upstream outside client requests.
    pub fetch: Option<Arc<dyn crate::filter::Fetch>>,
    /// Every circuit breaker built, for the admin API.
    pub breakers: Vec<Arc<Breaker>>,
    /// Every cache store, by owner, for purges.
    pub caches: Vec<(String, Arc<CacheStore>)>,
    pub prev: Option<&'a FilterStates>,
    pub states: &'a mut FilterStates,
}

/// Builds the runtime snapshot of `config`. Upstreams whose settings equal those in `prev`
/// are carried over whole (pools, endpoints, discovery task); the others start fresh on the
/// runtime behind `handle`.
pub fn build(
    config: &Config,
    prev: Option<&Snapshot>,
    generation: u64,
    workers: usize,
    handle: &tokio::runtime::Handle,
    metrics: &ConfigMetrics,
) -> Snapshot {
    let mut upstreams = HashMap::new();
    for spec in &config.upstreams {
        let previous = prev.and_then(|p| p.upstreams.get(&spec.name));
        let upstream = match previous {
            Some(upstream) if upstream.spec == *spec => Arc::clone(upstream),
            _ => {
                // Unchanged discovery keeps its running feed (and last known set).
                let feed = previous
                    .map(|u| &u.feed)
                    .filter(|feed| feed.spec == spec.discovery)
                    .cloned()
                    .unwrap_or_else(|| Feed::start(spec.discovery.clone(), handle));
                if prev.is_some() {
                    tracing::info!(upstream = %spec.name, "upstream (re)started with fresh connections");
                }
                let upstream =
                    Upstream::start(spec.clone(), feed, previous.map(|u| &**u), workers, handle);
                let stats: Arc<dyn UpstreamStateSource> = upstream.clone();
                metrics.upstreams.register(&spec.name, &stats);
                upstream
            }
        };
        upstreams.insert(spec.name.clone(), upstream);
    }
    let jwt_providers = build_jwt_providers(config, prev, handle);
    let redis = config.redis.as_ref().and_then(|spec| {
        prev.and_then(|p| p.redis.as_ref())
            .filter(|store| store.spec == *spec)
            .cloned()
            .or_else(|| RedisStore::start(spec.clone(), workers, handle))
    });
    let mut filter_states = FilterStates::default();
    let mut build = BuildCtx {
        providers: &jwt_providers,
        redis: redis.as_ref(),
        metrics,
        prev: prev.map(|p| &p.filter_states),
        states: &mut filter_states,
        upstream: None,
        fetch: None,
        breakers: Vec::new(),
        caches: Vec::new(),
    };
    // A named filter is one instance, shared by every route that uses it (a named rate limit
    // is one budget across those routes); a per-route kind is built for each route.
    // name → (spec, the shared instance unless built per route)
    type Named<'c> = HashMap<&'c str, (&'c FilterSpec, Option<Arc<dyn Filter>>)>;
    let named: Named = config
        .filters
        .iter()
        .map(|(name, spec)| {
            let shared = (!spec.per_route()).then(|| build_filter(spec, &mut build, name, 0));
            (name.as_str(), (spec, shared))
        })
        .collect();
    let mut routes = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let action = match &route.action {
            Action::Proxy { upstream, rewrite } => match upstreams.get(upstream) {
                Some(upstream) => RouteAction::Proxy {
                    upstream: Arc::clone(upstream),
                    rewrite: rewrite.clone(),
                },
                None => continue,
            },
            Action::Respond(respond) => RouteAction::Respond(respond.clone()),
            Action::Redirect { status, target } => RouteAction::Redirect {
                status: *status,
                target: target.clone(),
            },
        };
        build.upstream = match &route.action {
            Action::Proxy { upstream, .. } => Some(upstream.as_str()),
            _ => None,
        };
        build.fetch = match &action {
            RouteAction::Proxy { upstream, rewrite } => Some(Arc::new(
                crate::proxy::Background::new(Arc::clone(upstream), rewrite.clone()),
            )),
            _ => None,
        };
        let mut filters = Vec::with_capacity(route.filters.len());
        for (position, filter) in route.filters.iter().enumerate() {
            let built = match filter {
                FilterRef::Named(name) => match named.get(name.as_str()) {
                    Some((_, Some(shared))) => Arc::clone(shared),
                    // A named cache is one store, kept under the filter's name, shared by
                    // its routes; a named breaker is each route's own.
                    Some((spec @ FilterSpec::Cache(_), None)) => {
                        build_filter(spec, &mut build, name, 0)
                    }
                    Some((spec, None)) => build_filter(spec, &mut build, &route.name, position),
                    None => continue,
                },
                FilterRef::Inline(spec) => build_filter(spec, &mut build, &route.name, position),
            };
            filters.push(built);
        }
        let compiled = Route {
            name: route.name.as_str().into(),
            action,
            filters,
        };
        routes.push((route.matcher.clone(), Arc::new(compiled)));
    }
    let breakers = std::mem::take(&mut build.breakers);
    let caches = std::mem::take(&mut build.caches);
    Snapshot {
        generation,
        router: Router::new(routes),
        breakers,
        caches,
        upstreams,
        jwt_providers,
        filter_states,
        redis,
        limits: config.limits,
        trusted_proxies: config.trusted_proxies.clone(),
        access_log: config.access_log,
        no_route_label: Arc::from("(none)"),
        listener_tls: config
            .listeners
            .iter()
            .filter_map(|l| Some((l.name.clone(), Arc::clone(l.tls.as_ref()?))))
            .collect(),
    }
}

/// JWT providers whose spec is unchanged are carried over (with their cache of verified
/// tokens); a remote key set is carried over whenever its URL and refresh settings are, so a
/// reload never has to wait for keys again.
fn build_jwt_providers(
    config: &Config,
    prev: Option<&Snapshot>,
    handle: &tokio::runtime::Handle,
) -> HashMap<String, Arc<Provider>> {
    let mut out = HashMap::new();
    for spec in &config.jwt_providers {
        let previous = prev.map(|p| &p.jwt_providers);
        if let Some(same) = previous
            .and_then(|p| p.get(&spec.name))
            .filter(|p| p.spec == *spec)
        {
            out.insert(spec.name.clone(), Arc::clone(same));
            continue;
        }
        let keys = match &spec.keys {
            KeySpec::Fixed { ring, .. } => Keys::Fixed(Arc::clone(ring)),
            KeySpec::Remote(jwks) => {
                let running = out
                    .values()
                    .chain(previous.into_iter().flat_map(|p| p.values()))
                    .filter_map(|p: &Arc<Provider>| p.remote_keys())
                    .find(|remote| remote.spec() == &**jwks)
                    .cloned();
                Keys::Remote(running.unwrap_or_else(|| RemoteKeys::start((**jwks).clone(), handle)))
            }
        };
        out.insert(
            spec.name.clone(),
            Arc::new(Provider::new(spec.clone(), keys)),
        );
    }
    out
}

/// `owner` and `position`: where the filter sits (route or named filter, index in its
/// list), which with its parameters identifies state to carry over a reload.
fn build_filter(
    spec: &FilterSpec,
    ctx: &mut BuildCtx,
    owner: &str,
    position: usize,
) -> Arc<dyn Filter> {
    let providers = ctx.providers;
    match spec {
        FilterSpec::Cache(spec) => {
            // One store per filter and size: other changes (ttl, key) keep the entries.
            let key = format!("cache/{owner}/{position}/{}", spec.max_size);
            let store = ctx
                .states
                .carry(ctx.prev, key, || CacheStore::new(spec.max_size));
            let stats: Arc<dyn crate::telemetry::CacheStatsSource> = store.clone();
            ctx.metrics.caches.register(owner, &stats);
            if !ctx
                .caches
                .iter()
                .any(|(_, known)| Arc::ptr_eq(known, &store))
            {
                ctx.caches.push((owner.to_string(), Arc::clone(&store)));
            }
            Arc::new(Cache::new(spec.clone(), store, ctx.fetch.clone(), owner))
        }
        FilterSpec::CircuitBreaker(spec) => {
            let upstream = ctx.upstream.unwrap_or("-");
            let key = format!("circuit_breaker/{owner}/{upstream}/{spec:?}");
            let metrics = ctx.metrics;
            let breaker = ctx.states.carry(ctx.prev, key, || {
                Breaker::new(owner, upstream, spec.clone(), metrics)
            });
            ctx.breakers.push(Arc::clone(&breaker));
            Arc::new(CircuitBreaker { breaker })
        }
        FilterSpec::RateLimit(spec) => {
            let key = format!("rate_limit/{owner}/{position}/{spec:?}");
            let limiter = ctx.states.carry(ctx.prev, key, || {
                LocalLimiter::new(spec.local_gcra(), spec.max_keys)
            });
            let redis = match (spec.store, ctx.redis) {
                (StoreChoice::Redis { on_error, .. }, Some(store)) => {
                    let mode = match on_error {
                        OnStoreError::FailOpen => "fail_open",
                        OnStoreError::FailClosed => "fail_closed",
                        OnStoreError::Local => "local",
                    };
                    let labels = vec![("filter", owner.to_string()), ("mode", mode.to_string())];
                    Some(RedisLimit {
                        store: Arc::clone(store),
                        prefix: format!(
                            "portcullis:rl:{owner}:{position}:{}/{}ms:{}",
                            spec.rate.count,
                            spec.rate.period.as_millis(),
                            spec.burst
                        ),
                        on_error,
                        failures: ctx
                            .metrics
                            .rate_limit_store_failures
                            .get_or_create(&labels)
                            .clone(),
                    })
                }
                _ => None,
            };
            Arc::new(RateLimit::new(spec.clone(), limiter, redis, owner))
        }
        FilterSpec::Headers(headers) => Arc::new(headers.clone()),
        FilterSpec::Cors(spec) => Arc::new(Cors::new(spec.clone())),
        FilterSpec::Jwt(spec) => {
            // Validation made sure every name is defined.
            let chosen: Vec<Arc<jwt::Provider>> = spec
                .providers
                .iter()
                .filter_map(|name| providers.get(name).cloned())
                .collect();
            Arc::new(Jwt {
                sources: Jwt::token_sources(&chosen),
                providers: chosen,
                require_scopes: spec.require_scopes.clone(),
                require_claims: spec.require_claims.clone(),
                forward_claims: spec.forward_claims.clone(),
                forward_token: spec.forward_token,
            })
        }
    }
}
