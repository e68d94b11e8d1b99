//! Building a snapshot from a validated `Config`: upstreams, JWT providers, the Redis store
//! and every route's filters, each carried over from the previous snapshot when its stable
//! key and parameters are unchanged.

use super::carry::{self, Placement};
use super::{Fallback, FallbackTarget, Mirror, Rewrite, Route, RouteAction, Snapshot};
use crate::config::{
    Action, Config, Destination, FallbackAnswer, FallbackSpec, FilterRef, MirrorSpec,
};
use crate::discovery::Feed;
use crate::filter::jwt::{KeySpec, Keys, Provider, RemoteKeys};
use crate::filter::{BuildCtx, Exposed, Fetch, Filter, FilterStates, Sharing};
use crate::proxy::{FallbackMetrics, MirrorMetrics};
use crate::router::Router;
use crate::store::RedisStore;
use crate::telemetry::trace::{Exporter, TraceMetrics, Tracer};
use crate::telemetry::{ConfigMetrics, UpstreamStateSource};
use crate::upstream::split::{Split, SplitMetrics};
use crate::upstream::{RetryMetrics, Upstream};
use std::collections::HashMap;
use std::sync::Arc;

/// The `route` label of requests that matched no route.
const NO_ROUTE: &str = "(none)";

/// Builds the runtime snapshot of `config`. Upstreams whose settings equal those in `prev`
/// are carried over whole (pools, endpoints, discovery task); the others start fresh on the
/// runtime behind `handle`.
pub(crate) fn build(
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
        let carry = previous.map(|u| spec.carry_from(&u.spec));
        let upstream = match previous {
            Some(upstream) if carry.is_some_and(|c| c.whole) => Arc::clone(upstream),
            _ => {
                let feed = previous
                    .filter(|_| carry.is_some_and(|c| c.discovery))
                    .map(|u| &u.feed)
                    .cloned()
                    .unwrap_or_else(|| Feed::start(spec.discovery.clone(), handle));
                if prev.is_some() {
                    tracing::info!(upstream = %spec.name, "upstream (re)started with fresh connections");
                }
                let retried = metrics.sets.get::<RetryMetrics>().retried.clone();
                let previous = previous.map(|u| &**u);
                let upstream = Upstream::start(
                    spec.clone(),
                    feed,
                    previous,
                    workers,
                    handle,
                    retried,
                    metrics.requests.upstream(&spec.name),
                );
                let stats: Arc<dyn UpstreamStateSource> = upstream.clone();
                metrics.upstreams.register(&spec.name, &stats);
                upstream
            }
        };
        upstreams.insert(spec.name.clone(), upstream);
    }
    let jwt_providers = build_jwt_providers(config, prev, handle);
    let redis = config.redis.as_ref().and_then(|spec| {
        carry::kept_redis(prev.and_then(|p| p.redis.as_ref()), spec)
            .cloned()
            .or_else(|| RedisStore::start(spec.clone(), workers, handle))
    });
    let mut filter_states = FilterStates::default();
    let fetch_to = |name: &str| {
        upstreams.get(name).map(|upstream| {
            Arc::new(crate::proxy::Background::new(
                Arc::new(Split::single(Arc::clone(upstream))),
                Rewrite::default(),
            )) as Arc<dyn Fetch>
        })
    };
    let split_metrics = metrics.sets.get::<SplitMetrics>();
    let fallback_metrics = metrics.sets.get::<FallbackMetrics>();
    let mirror_metrics = metrics.sets.get::<MirrorMetrics>();
    let mut build = BuildCtx {
        providers: &jwt_providers,
        redis: redis.as_ref(),
        metrics,
        control: handle,
        prev: prev.map(|p| &p.filter_states),
        states: &mut filter_states,
        split: None,
        fetch: None,
        fetch_to: &fetch_to,
        exposed: Exposed::default(),
    };
    // A shared named filter is one instance for every route that uses it (a named rate limit
    // is one budget across those routes); the other kinds are built where they are used.
    let shared: Shared = config
        .filters
        .iter()
        .filter(|(_, spec)| spec.sharing() == Sharing::Shared)
        .map(|(name, spec)| {
            let (owner, position) = carry::shared_place(name);
            (name.as_str(), spec.build(&mut build, owner, position))
        })
        .collect();
    let mut routes = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let action = match &route.action {
            Action::Proxy(proxy) => {
                let fallback = match &proxy.fallback {
                    None => None,
                    Some(spec) => match build_fallback(spec, &upstreams, &fallback_metrics) {
                        Some(fallback) => Some(Box::new(fallback)),
                        None => continue,
                    },
                };
                let Some(split) =
                    build_split(&proxy.destination, &route.name, &upstreams, &split_metrics)
                else {
                    continue;
                };
                let mirror = match &proxy.mirror {
                    None => None,
                    Some(spec) => {
                        let mirror = build_mirror(
                            spec,
                            &route.name,
                            &proxy.rewrite,
                            &upstreams,
                            &mirror_metrics,
                            prev.map(|p| &p.filter_states),
                            build.states,
                        );
                        match mirror {
                            Some(mirror) => Some(Box::new(mirror)),
                            None => continue,
                        }
                    }
                };
                RouteAction::Proxy {
                    split: Arc::new(split),
                    rewrite: proxy.rewrite.clone(),
                    fallback,
                    mirror,
                }
            }
            Action::Respond(respond) => RouteAction::Respond(respond.clone()),
            Action::Redirect { status, target } => RouteAction::Redirect {
                status: *status,
                target: target.clone(),
            },
        };
        build.split = match &action {
            RouteAction::Proxy { split, .. } => Some(Arc::clone(split)),
            _ => None,
        };
        build.fetch = match &action {
            RouteAction::Proxy { split, rewrite, .. } => Some(Arc::new(
                crate::proxy::Background::new(Arc::clone(split), rewrite.clone()),
            )),
            _ => None,
        };
        let filters = build_list(&route.filters, &route.name, config, &shared, &mut build);
        let body_limit = filters.iter().filter_map(|f| f.reads_body()).max();
        let compiled = Route {
            name: route.name.as_str().into(),
            meter: metrics.requests.route(&route.name),
            action,
            filters,
            body_limit,
        };
        routes.push((route.matcher.clone(), Arc::new(compiled)));
    }
    build.split = None;
    build.fetch = None;
    let listener_filters: HashMap<String, Vec<Arc<dyn Filter>>> = config
        .listeners
        .iter()
        .filter(|listener| !listener.filters.is_empty())
        .map(|listener| {
            let owner = carry::listener_owner(&listener.name);
            let filters = build_list(&listener.filters, &owner, config, &shared, &mut build);
            (listener.name.clone(), filters)
        })
        .collect();
    let exposed = std::mem::take(&mut build.exposed);
    Snapshot {
        generation,
        router: Router::new(routes),
        exposed,
        listener_filters,
        upstreams,
        jwt_providers,
        filter_states,
        redis,
        limits: config.limits,
        trusted_proxies: config.trusted_proxies.clone(),
        access_log: config.access_log,
        tracer: build_tracer(config, prev, workers, handle, metrics),
        no_route: metrics.requests.route(NO_ROUTE),
        listener_tls: config
            .listeners
            .iter()
            .filter_map(|l| Some((l.name.clone(), Arc::clone(l.tls.as_ref()?))))
            .collect(),
    }
}

/// The tracer of `config`, its exporter (queue and task) carried over while the collector
/// settings and service name are unchanged.
fn build_tracer(
    config: &Config,
    prev: Option<&Snapshot>,
    workers: usize,
    handle: &tokio::runtime::Handle,
    metrics: &ConfigMetrics,
) -> Option<Arc<Tracer>> {
    let spec = config.tracing.as_ref()?;
    let running = prev.and_then(|p| p.tracer.as_ref());
    let exporter = match carry::kept_exporter(running, spec) {
        Some(exporter) => Arc::clone(exporter),
        None => {
            let metrics = metrics.sets.get::<TraceMetrics>();
            Exporter::start(&spec.otlp, &spec.service_name, &metrics, workers, handle)
        }
    };
    Some(Arc::new(Tracer::new(spec.clone(), exporter)))
}

/// The running split of a route's destination; `None` if an upstream is missing (the config
/// check prevents that).
fn build_split(
    destination: &Destination,
    route: &str,
    upstreams: &HashMap<String, Arc<Upstream>>,
    metrics: &SplitMetrics,
) -> Option<Split> {
    match destination {
        Destination::Upstream(name) => Some(Split::single(Arc::clone(upstreams.get(name)?))),
        Destination::Split { targets, sticky } => {
            let targets = targets
                .iter()
                .map(|(name, weight)| Some((Arc::clone(upstreams.get(name)?), *weight)))
                .collect::<Option<Vec<_>>>()?;
            Split::new(route, targets, sticky.clone(), metrics)
        }
    }
}

/// A route's running fallback; `None` if its upstream is missing (the config check prevents
/// that).
fn build_fallback(
    spec: &FallbackSpec,
    upstreams: &HashMap<String, Arc<Upstream>>,
    metrics: &FallbackMetrics,
) -> Option<Fallback> {
    let answer = match &spec.answer {
        FallbackAnswer::Respond(respond) => FallbackTarget::Respond(respond.clone()),
        FallbackAnswer::Upstream(name) => {
            FallbackTarget::Upstream(Arc::clone(upstreams.get(name)?))
        }
    };
    Some(Fallback {
        answer,
        statuses: spec.statuses.clone().into_boxed_slice(),
        counted: metrics.answered.clone(),
    })
}

/// A route's running mirror, its in-flight count carried over from `prev` while the route's
/// mirror settings are unchanged; `None` if its upstream is missing.
fn build_mirror(
    spec: &MirrorSpec,
    route: &str,
    rewrite: &Rewrite,
    upstreams: &HashMap<String, Arc<Upstream>>,
    metrics: &MirrorMetrics,
    prev: Option<&FilterStates>,
    states: &mut FilterStates,
) -> Option<Mirror> {
    let upstream = Arc::clone(upstreams.get(&spec.upstream)?);
    // The copy's Host is set per request (with the suffix); the path rewrite applies as is.
    let path_only = Rewrite {
        host: None,
        ..rewrite.clone()
    };
    let fetch = Arc::new(crate::proxy::Background::new(
        Arc::new(Split::single(upstream)),
        path_only,
    ));
    let state = states.carry(prev, carry::mirror_key(route, spec), || {
        metrics.state(route, spec.max_in_flight)
    });
    Some(Mirror {
        fetch,
        fraction: spec.fraction,
        max_body: spec.max_body,
        header: spec.header.clone(),
        host: rewrite.host.clone(),
        host_suffix: spec.host_suffix.clone(),
        state,
    })
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
        if let Some(same) = carry::kept_provider(previous, spec) {
            out.insert(spec.name.clone(), Arc::clone(same));
            continue;
        }
        let keys = match &spec.keys {
            KeySpec::Fixed { ring, .. } => Keys::Fixed(Arc::clone(ring)),
            KeySpec::Remote(jwks) => {
                let providers = out
                    .values()
                    .chain(previous.into_iter().flat_map(|p| p.values()));
                let running = carry::kept_keys(providers, spec).cloned();
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

/// The instances of shared named filters, by name.
type Shared<'c> = HashMap<&'c str, Arc<dyn Filter>>;

/// The runtime filters of one `filters:` list (a route's or a listener's) at `owner`.
fn build_list(
    list: &[FilterRef],
    owner: &str,
    config: &Config,
    shared: &Shared,
    build: &mut BuildCtx,
) -> Vec<Arc<dyn Filter>> {
    let mut filters = Vec::with_capacity(list.len());
    for (position, entry) in list.iter().enumerate() {
        let built = match carry::place(entry, owner, position, &config.filters) {
            Some(Placement::Shared(name)) => match shared.get(name) {
                Some(filter) => Arc::clone(filter),
                None => continue,
            },
            Some(Placement::Own {
                spec,
                owner,
                position,
            }) => spec.build(build, owner, position),
            None => continue,
        };
        filters.push(built);
    }
    filters
}
