//! `gateway.yaml` → validated [`Config`].
//!
//! Three steps, all at load time and never on the request path: the text is parsed into YAML
//! values and `${ENV}` references are filled in; each section item is deserialised into the
//! serde mirror in [`raw`]; [`compile`] checks values and cross-references and builds plain,
//! ready-to-use settings. Every problem found is collected, with its key path and line, so a
//! user fixes a file in one pass. The runtime snapshot is built from a `Config` in `snapshot.rs`.

mod compile;
mod discovery;
mod filters;
mod issues;
mod lines;
pub mod raw;
mod upstreams;
mod values;

pub use compile::{Action, BuildCtx, Config, FilterRef, FilterSpec, ListenerConfig, RouteConfig};
pub use values::{parse_duration, parse_size};

use crate::discovery::Feed;
use crate::filter::jwt::{KeySpec, Keys, Provider, RemoteKeys};
use crate::filter::{Filter, FilterStates};
use crate::router::{HostMatch, PathMatch, Router};
use crate::snapshot::{Route, RouteAction, Snapshot};
use crate::store::RedisStore;
use crate::telemetry::{ConfigMetrics, UpstreamStateSource};
use crate::upstream::Upstream;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// One problem in the file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} is empty: it needs at least one listener and one route")]
    Empty { path: String },
    #[error("{path}: YAML syntax error: {reason}")]
    Syntax { path: String, reason: String },
    #[error("{}", issues_text(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn issues_text(issues: &[ConfigIssue]) -> String {
    let mut text = format!(
        "{} error{} in config:",
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    );
    for issue in issues {
        text.push_str("\n  ");
        text.push_str(&issue.to_string());
    }
    text
}

impl ConfigError {
    /// The individual problems, for callers that report them as data (e.g. JSON).
    pub fn issues(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(issues) => issues.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

impl RouteConfig {
    /// The match criteria in one line, e.g. `host=api.example.com prefix=/users methods=GET`.
    pub fn describe_match(&self) -> String {
        let m = &self.matcher;
        let mut parts = Vec::new();
        match &m.host {
            HostMatch::Any => {}
            HostMatch::Exact(host) => parts.push(format!("host={host}")),
            HostMatch::Suffix(suffix) => parts.push(format!("host=*{suffix}")),
        }
        parts.push(match &m.path {
            PathMatch::Exact(path) => format!("path={path}"),
            PathMatch::Prefix(prefix) => format!("prefix={prefix}"),
            PathMatch::Regex(regex) => format!("regex={}", regex.as_str()),
        });
        if let Some(methods) = &m.methods {
            let names: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
            parts.push(format!("methods={}", names.join(",")));
        }
        if !m.headers.is_empty() {
            parts.push(format!("headers={}", m.headers.len()));
        }
        parts.join(" ")
    }

    /// The filters in order, e.g. `headers,use:cors-public`; `-` for none.
    pub fn describe_filters(&self) -> String {
        if self.filters.is_empty() {
            return "-".into();
        }
        let names: Vec<String> = self
            .filters
            .iter()
            .map(|f| match f {
                FilterRef::Named(name) => format!("use:{name}"),
                FilterRef::Inline(spec) => spec.kind().to_string(),
            })
            .collect();
        names.join(",")
    }

    /// What the route does, e.g. `upstream users`, `respond 200`.
    pub fn describe_action(&self) -> String {
        match &self.action {
            Action::Proxy { upstream, .. } => format!("upstream {upstream}"),
            Action::Respond(respond) => format!("respond {}", respond.status.as_u16()),
            Action::Redirect { status, .. } => format!("redirect {}", status.as_u16()),
        }
    }
}

/// Where `${NAME}` in a config is looked up: the process environment, unless the program
/// that embeds the gateway gives another source.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment as an [`Env`].
pub fn process_env() -> Env {
    Arc::new(|name| std::env::var(name).ok())
}

/// Reads and validates a config file, with `${NAME}` from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// Reads and validates a config file, with `${NAME}` from `env`. Relative paths in it
/// (certificates, CA files, key files, discovery files) are relative to the file's own
/// folder, whatever the working directory.
pub fn load_with(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let folder = path.parent().unwrap_or(Path::new(""));
    let base = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
    parse_in(&text, &path.display().to_string(), env, &base)
}

/// Validates config text; `origin` names it in messages, `env` resolves `${NAME}`.
pub fn parse(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    parse_in(text, origin, env, Path::new("."))
}

/// Like [`parse`], with relative file paths (certificates) taken from `base`.
pub fn parse_in(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base: &Path,
) -> Result<Config, ConfigError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: origin.to_string(),
        reason: e.to_string(),
    })?;
    if value.is_null() {
        return Err(ConfigError::Empty {
            path: origin.to_string(),
        });
    }
    let lines = lines::LineIndex::build(text);
    let mut config = compile::compile(value, &lines, env, base).map_err(ConfigError::Invalid)?;
    config.text = Arc::from(text);
    Ok(config)
}

/// Builds the runtime snapshot of `config`. Upstreams whose settings equal those in `prev`
/// are carried over whole (pools, endpoints, discovery task); the others start fresh on the
/// runtime behind `handle`.
pub fn build_snapshot(
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
            let shared = (!spec.per_route()).then(|| spec.build(&mut build, name, 0));
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
                    Some((spec @ FilterSpec::Cache(_), None)) => spec.build(&mut build, name, 0),
                    Some((spec, None)) => spec.build(&mut build, &route.name, position),
                    None => continue,
                },
                FilterRef::Inline(spec) => spec.build(&mut build, &route.name, position),
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
