//! What a reload carries over from the running snapshot, decided in one place for both the
//! build and the state report of `check --diff` (`POST /config/plan`): where each filter is
//! built (which keys its state), which running JWT providers, key sets and Redis connection
//! are kept, and, through [`UpstreamSpec::carry_from`], what each upstream keeps. The report
//! reads the running side from the snapshot itself, so it shows what the reload would do.

use super::Snapshot;
use crate::config::{Action, Config, Destination, FilterRef, FilterSpec, MirrorSpec};
use crate::filter::jwt::{KeySpec, Provider, ProviderSpec, RemoteKeys};
use crate::filter::{Sharing, StateKey};
use crate::store::{RedisSpec, RedisStore};
use crate::telemetry::trace::{Exporter, Tracer, TracingSpec};
use crate::upstream::UpstreamSpec;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// How one `filters:` entry at `owner`/`position` is built.
pub(crate) enum Placement<'c> {
    /// The one instance of a shared named filter.
    Shared(&'c str),
    /// An instance of its own, built at this place (which, with the spec, keys its state).
    Own {
        spec: &'c FilterSpec,
        owner: &'c str,
        position: usize,
    },
}

/// Where `entry`, the `position`th of `owner`'s list, is built; `None` for an unknown name
/// (the config check prevents that).
pub(crate) fn place<'c>(
    entry: &'c FilterRef,
    owner: &'c str,
    position: usize,
    named: &'c [(String, FilterSpec)],
) -> Option<Placement<'c>> {
    Some(match entry {
        FilterRef::Named(name) => {
            let (name, spec) = named.iter().find(|(n, _)| n == name)?;
            match spec.sharing() {
                Sharing::Shared => Placement::Shared(name),
                Sharing::PerRouteNamedState => {
                    let (owner, position) = shared_place(name);
                    Placement::Own {
                        spec,
                        owner,
                        position,
                    }
                }
                Sharing::PerRoute => Placement::Own {
                    spec,
                    owner,
                    position,
                },
            }
        }
        FilterRef::Inline(spec) => Placement::Own {
            spec,
            owner,
            position,
        },
    })
}

/// Where a named filter's one instance (or one state) is built: (owner, position).
pub(crate) fn shared_place(name: &str) -> (&str, usize) {
    (name, 0)
}

/// The owner of a listener's filters, named apart from a route of the same name.
pub(crate) fn listener_owner(listener: &str) -> String {
    format!("listener:{listener}")
}

/// A route's mirror's in-flight count, kept while the route's mirror settings are unchanged.
pub(crate) fn mirror_key(route: &str, spec: &MirrorSpec) -> StateKey {
    StateKey {
        kind: "mirror",
        owner: route.to_string(),
        slot: spec.upstream.clone(),
        id: format!("mirror/{route}/{spec:?}"),
    }
}

/// The running provider a new provider spec keeps (with its cache of verified tokens).
pub(crate) fn kept_provider<'s>(
    running: Option<&'s HashMap<String, Arc<Provider>>>,
    spec: &ProviderSpec,
) -> Option<&'s Arc<Provider>> {
    running?.get(&spec.name).filter(|p| p.spec == *spec)
}

/// A running remote key set with the same URL and refresh settings, among `providers`.
pub(crate) fn kept_keys<'s>(
    mut providers: impl Iterator<Item = &'s Arc<Provider>>,
    spec: &ProviderSpec,
) -> Option<&'s Arc<RemoteKeys>> {
    let KeySpec::Remote(jwks) = &spec.keys else {
        return None;
    };
    providers.find_map(|p| p.remote_keys().filter(|remote| remote.spec() == &**jwks))
}

/// The running Redis store a new spec keeps (its connections).
pub(crate) fn kept_redis<'s>(
    running: Option<&'s Arc<RedisStore>>,
    spec: &RedisSpec,
) -> Option<&'s Arc<RedisStore>> {
    running.filter(|store| store.spec == *spec)
}

/// The running trace exporter a new `tracing:` keeps (its queue, task and collector).
pub(crate) fn kept_exporter<'s>(
    running: Option<&'s Arc<Tracer>>,
    spec: &TracingSpec,
) -> Option<&'s Arc<Exporter>> {
    let exporter = &running?.exporter;
    let (otlp, service) = &exporter.key;
    (*otlp == spec.otlp && *service == spec.service_name).then_some(exporter)
}

/// What a reload does to one piece of running state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Kept as it is.
    Carried,
    /// Its place stays but its settings changed: it starts fresh.
    Reset,
    /// Created by the new config.
    New,
    /// Its place is gone.
    Dropped,
}

/// One line of the state report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateFate {
    /// `rate_limit`, `circuit_breaker`, `cache`, `ip_filter`, `mirror`, `connections`,
    /// `discovery`, `health`, `jwt_tokens`, `jwt_keys`, `redis`.
    pub state: String,
    /// The route, named filter, upstream, provider or file it belongs to.
    pub owner: String,
    /// Where in its owner: a filter's position, a breaker's upstream.
    pub slot: String,
    pub fate: Fate,
}

/// What building `config` against `running` would carry and reset, by the keys the build uses.
pub(crate) fn plan(running: &Snapshot, config: &Config) -> Vec<StateFate> {
    let mut out = filter_fates(running, config);
    for spec in &config.upstreams {
        let old = running.upstreams.get(&spec.name).map(|u| &u.spec);
        upstream_fates(old, Some(spec), &mut out);
    }
    for (name, upstream) in &running.upstreams {
        if !config.upstreams.iter().any(|s| s.name == *name) {
            upstream_fates(Some(&upstream.spec), None, &mut out);
        }
    }
    let fate = |kept: bool, was: bool| match (kept, was) {
        (true, _) => Fate::Carried,
        (false, true) => Fate::Reset,
        (false, false) => Fate::New,
    };
    for spec in &config.jwt_providers {
        let was = running.jwt_providers.contains_key(&spec.name);
        let kept = kept_provider(Some(&running.jwt_providers), spec).is_some();
        out.push(line("jwt_tokens", &spec.name, "", fate(kept, was)));
        if matches!(spec.keys, KeySpec::Remote(_)) {
            let was_remote = running
                .jwt_providers
                .get(&spec.name)
                .is_some_and(|p| p.remote_keys().is_some());
            let kept = kept_keys(running.jwt_providers.values(), spec).is_some();
            out.push(line("jwt_keys", &spec.name, "", fate(kept, was_remote)));
        }
    }
    for name in running.jwt_providers.keys() {
        if !config.jwt_providers.iter().any(|s| s.name == *name) {
            out.push(line("jwt_tokens", name, "", Fate::Dropped));
        }
    }
    match (&config.tracing, &running.tracer) {
        (Some(spec), running) => {
            let kept = kept_exporter(running.as_ref(), spec).is_some();
            out.push(line(
                "trace_export",
                "tracing",
                "",
                fate(kept, running.is_some()),
            ));
        }
        (None, Some(_)) => out.push(line("trace_export", "tracing", "", Fate::Dropped)),
        (None, None) => {}
    }
    match (&config.redis, &running.redis) {
        (Some(spec), running) => {
            let kept = kept_redis(running.as_ref(), spec).is_some();
            out.push(line("redis", "redis", "", fate(kept, running.is_some())));
        }
        (None, Some(_)) => out.push(line("redis", "redis", "", Fate::Dropped)),
        (None, None) => {}
    }
    out
}

/// Filter state (and mirrors' counts): the new config's keys against the running snapshot's.
fn filter_fates(running: &Snapshot, config: &Config) -> Vec<StateFate> {
    let mut new: Vec<StateKey> = Vec::new();
    let mut add = |placement: Option<Placement>, upstreams: &[&str]| {
        if let Some(Placement::Own {
            spec,
            owner,
            position,
        }) = placement
        {
            new.extend(spec.state_keys(owner, position, upstreams));
        }
    };
    for (name, spec) in &config.filters {
        if spec.sharing() == Sharing::Shared {
            let (owner, position) = shared_place(name);
            let own = Placement::Own {
                spec,
                owner,
                position,
            };
            add(Some(own), &[]);
        }
    }
    let mut mirrors = Vec::new();
    for route in &config.routes {
        let upstreams: Vec<&str> = match &route.action {
            Action::Proxy(proxy) => {
                if let Some(mirror) = &proxy.mirror {
                    mirrors.push(mirror_key(&route.name, mirror));
                }
                match &proxy.destination {
                    Destination::Upstream(name) => vec![name.as_str()],
                    Destination::Split { targets, .. } => {
                        targets.iter().map(|(name, _)| name.as_str()).collect()
                    }
                }
            }
            _ => Vec::new(),
        };
        for (position, entry) in route.filters.iter().enumerate() {
            add(
                place(entry, &route.name, position, &config.filters),
                &upstreams,
            );
        }
    }
    for listener in &config.listeners {
        let owner = listener_owner(&listener.name);
        for (position, entry) in listener.filters.iter().enumerate() {
            add(place(entry, &owner, position, &config.filters), &[]);
        }
    }
    new.extend(mirrors);
    let old: Vec<&StateKey> = running.filter_states.keys().collect();
    let same_place =
        |a: &StateKey, b: &StateKey| a.kind == b.kind && a.owner == b.owner && a.slot == b.slot;
    let mut out: Vec<StateFate> = Vec::new();
    for key in &new {
        let fate = if old.iter().any(|o| o.id == key.id) {
            Fate::Carried
        } else if old.iter().any(|o| same_place(o, key)) {
            Fate::Reset
        } else {
            Fate::New
        };
        let entry = line(key.kind, &key.owner, &key.slot, fate);
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    for key in old {
        if !new.iter().any(|n| same_place(n, key)) {
            out.push(line(key.kind, &key.owner, &key.slot, Fate::Dropped));
        }
    }
    out
}

/// An upstream's pooled connections (with ejections), discovery feed and health records.
fn upstream_fates(
    old: Option<&UpstreamSpec>,
    new: Option<&UpstreamSpec>,
    out: &mut Vec<StateFate>,
) {
    let Some(name) = new.or(old).map(|s| s.name.as_str()) else {
        return;
    };
    let health_on = |s: Option<&UpstreamSpec>| s.is_some_and(|s| s.health.is_some());
    let (connections, discovery, health) = match (old, new) {
        (Some(old), Some(new)) => {
            let carry = new.carry_from(old);
            let kept = |kept: bool| if kept { Fate::Carried } else { Fate::Reset };
            let health = match (health_on(Some(old)), health_on(Some(new))) {
                (_, true) if carry.health => Some(Fate::Carried),
                (true, true) => Some(Fate::Reset),
                (false, true) => Some(Fate::New),
                (true, false) => Some(Fate::Dropped),
                (false, false) => None,
            };
            (kept(carry.whole), kept(carry.discovery), health)
        }
        (None, _) => (Fate::New, Fate::New, health_on(new).then_some(Fate::New)),
        (_, None) => (
            Fate::Dropped,
            Fate::Dropped,
            health_on(old).then_some(Fate::Dropped),
        ),
    };
    out.push(line("connections", name, "", connections));
    out.push(line("discovery", name, "", discovery));
    if let Some(health) = health {
        out.push(line("health", name, "", health));
    }
}

fn line(state: &str, owner: &str, slot: &str, fate: Fate) -> StateFate {
    StateFate {
        state: state.to_string(),
        owner: owner.to_string(),
        slot: slot.to_string(),
        fate,
    }
}
