//! The top level: raw YAML values → [`Config`], each section handed to its own file
//! (`listeners`, `upstreams`, `filters`, `routes`, `stores`). Every problem is collected with
//! its key path and line; nothing here runs after load.

use super::filters::{compile_named_filters, FilterRefs, FilterSpec};
use super::issues::ConfigIssue;
use super::issues::{duration_field, Issues};
use super::lines::LineIndex;
use super::listeners::{
    compile_admin, compile_limits, compile_listener_filters, compile_listeners, compile_trusted,
    ListenerConfig,
};
use super::raw;
use super::routes::{compile_routes, RouteConfig};
use super::stores::compile_stores;
use super::traces::compile_tracing;
use super::upstreams::compile_upstreams;
use super::values::interpolate;
use crate::filter::jwt;
use crate::filter::Refs;
use crate::snapshot::Limits;
use crate::store::RedisSpec;
use crate::telemetry::trace::TracingSpec;
use crate::upstream::UpstreamSpec;
use ipnet::IpNet;
use serde_yaml::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often a watched config file is checked for changes.
const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How long in-flight requests get to finish on shutdown.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_ACCESS_LOG: bool = true;

/// A validated configuration: plain data, ready for `Snapshot::build`.
#[derive(Debug, Clone)]
pub struct Config {
    pub workers: Option<usize>,
    pub(crate) listeners: Vec<ListenerConfig>,
    /// The admin listener; `None` only when `admin: { address: off }`.
    pub(crate) admin: Option<SocketAddr>,
    /// `admin.token`: what every admin request that changes something must present.
    pub(crate) admin_token: Option<Arc<str>>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) access_log: bool,
    /// Poll the config file at this interval and reload when it changes.
    pub(crate) watch: Option<Duration>,
    pub(crate) limits: Limits,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) upstreams: Vec<UpstreamSpec>,
    pub(crate) jwt_providers: Vec<jwt::ProviderSpec>,
    /// `stores.redis`, when configured.
    pub(crate) redis: Option<RedisSpec>,
    /// Named filters (top-level `filters:`), in config order.
    pub(crate) filters: Vec<(String, FilterSpec)>,
    pub(crate) routes: Vec<RouteConfig>,
    /// `tracing:`, when set.
    pub(crate) tracing: Option<TracingSpec>,
    /// The file as loaded, `${ENV}` values filled in: shown (redacted) by the admin API.
    pub(crate) source: Value,
    /// The text it was parsed from, so a file watcher can tell whether the file changed.
    pub(crate) text: Arc<str>,
    /// Key paths whose values came from the environment; treated as secrets.
    pub(crate) from_env: Vec<String>,
}

fn interpolate_tree(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Issues,
) {
    match value {
        Value::String(text) if text.contains('$') => match interpolate(text, env) {
            Ok(done) => {
                if done != *text {
                    issues.from_env.push(path.to_string());
                }
                *text = done;
            }
            Err(message) => issues.add(path, message),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{i}]"), env, issues);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key.as_str().unwrap_or("?");
                let child = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                interpolate_tree(item, &child, env, issues);
            }
        }
        _ => {}
    }
}

pub(super) fn compile(
    mut value: Value,
    lines: &LineIndex,
    env: &dyn Fn(&str) -> Option<String>,
    base: &Path,
) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Issues::new(lines, base);
    interpolate_tree(&mut value, "", env, &mut issues);
    if !value.is_mapping() {
        let found = super::values::kind_of(&value);
        issues.add(
            "",
            format!(
                "expected a mapping of sections (listeners, upstreams, routes …), found {found}"
            ),
        );
        return Err(issues.list);
    }
    let source = value.clone();
    // Whatever of the top level could be read is compiled too, so its errors come as well.
    let Some(top) = issues.item_repaired::<raw::Top>(value, "").0 else {
        return Err(issues.list);
    };

    if top.workers == Some(0) {
        issues.add("workers", "must be at least 1");
    }
    let (mut listeners, listener_filters) = compile_listeners(top.listeners, &mut issues);
    let (admin, admin_token) = compile_admin(top.admin, &listeners, &mut issues);
    let watch = match top.reload {
        Some(reload) if reload.watch => Some(duration_field(
            reload.interval,
            DEFAULT_WATCH_INTERVAL,
            "reload.interval",
            &mut issues,
        )),
        _ => None,
    };
    let shutdown_grace = duration_field(
        top.shutdown_grace,
        DEFAULT_SHUTDOWN_GRACE,
        "shutdown_grace",
        &mut issues,
    );
    let limits = match top.limits {
        Some(value) => issues
            .item::<raw::Limits>(value, "limits")
            .map(|raw| compile_limits(raw, &mut issues))
            .unwrap_or_default(),
        None => Limits::default(),
    };
    let trusted_proxies = compile_trusted(&top.trusted_proxies, &mut issues);
    // Names count as known even when their definition has errors: one mistake, one message.
    let declared: Vec<String> = top
        .upstreams
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let known: Vec<&str> = declared.iter().map(String::as_str).collect();
    let upstreams = compile_upstreams(top.upstreams, &mut issues);
    let providers = jwt::config::compile_providers(top.jwt_providers, &mut issues);
    let redis = top
        .stores
        .and_then(|value| compile_stores(value, &mut issues));
    let refs = FilterRefs {
        named: &[],
        kinds: Refs {
            providers: &providers,
            upstreams: &upstreams,
            redis: redis.is_some(),
        },
    };
    let filters = compile_named_filters(top.filters, &refs, &mut issues);
    let refs = FilterRefs {
        named: &filters,
        ..refs
    };
    compile_listener_filters(&mut listeners, listener_filters, &refs, &mut issues);
    let routes = compile_routes(top.routes, &known, &refs, &mut issues);
    let tracing = top
        .tracing
        .and_then(|value| compile_tracing(value, &mut issues));

    if issues.list.is_empty() {
        Ok(Config {
            workers: top.workers,
            listeners,
            admin,
            admin_token,
            shutdown_grace,
            access_log: top.access_log.unwrap_or(DEFAULT_ACCESS_LOG),
            watch,
            limits,
            trusted_proxies,
            upstreams,
            jwt_providers: providers,
            redis,
            filters,
            routes,
            tracing,
            source,
            text: Arc::from(""),
            from_env: issues.from_env,
        })
    } else {
        Err(issues.list)
    }
}
