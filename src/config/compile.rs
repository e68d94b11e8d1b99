//! Validation and building: raw YAML values → [`Config`]. Every problem is collected with its
//! key path and line; nothing here runs after load.

use super::discovery::compile_discovery;
use super::filters::{compile_filter, compile_jwt_providers, compile_named_filters, FilterRefs};
use super::issues::Issues;
use super::lines::LineIndex;
use super::upstreams::{compile_balance, compile_health, compile_outlier, compile_retries};
use super::values::{interpolate, parse_duration, parse_size};
use super::{raw, ConfigIssue};
use crate::filter::cache::CacheSpec;
use crate::filter::circuit_breaker::BreakerSpec;
use crate::filter::rate_limit::RateLimitSpec;
use crate::filter::{jwt, CorsSpec, Headers};
use crate::router::{HeaderMatcher, HostMatch, MethodSet, PathMatch, RouteMatch};
use crate::snapshot::{Limits, RedirectTarget, Respond, Rewrite, UnderscoreHeaders};
use crate::store::RedisSpec;
use crate::upstream::{Protocol, Timeouts, UpstreamSpec};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use ipnet::IpNet;
use regex::Regex;
use serde_yaml::Value;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A validated configuration: plain data, ready for `Snapshot::build`.
#[derive(Debug, Clone)]
pub struct Config {
    pub workers: Option<usize>,
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener; `None` only when `admin: { address: off }`.
    pub admin: Option<SocketAddr>,
    /// `admin.token`: what every admin request that changes something must present.
    pub admin_token: Option<Arc<str>>,
    pub shutdown_grace: Duration,
    pub access_log: bool,
    /// Poll the config file at this interval and reload when it changes.
    pub watch: Option<Duration>,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpNet>,
    pub upstreams: Vec<UpstreamSpec>,
    pub jwt_providers: Vec<jwt::ProviderSpec>,
    /// `stores.redis`, when configured.
    pub redis: Option<RedisSpec>,
    /// Named filters (top-level `filters:`), in config order.
    pub filters: Vec<(String, FilterSpec)>,
    pub routes: Vec<RouteConfig>,
    /// The file as loaded, `${ENV}` values filled in: shown (redacted) by the admin API.
    pub source: Value,
    /// The text it was parsed from, so a file watcher can tell whether the file changed.
    pub text: Arc<str>,
    /// Key paths whose values came from the environment; treated as secrets.
    pub from_env: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// TLS termination; `None` for plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: Action,
    pub filters: Vec<FilterRef>,
}

/// A validated filter, ready to build.
#[derive(Debug, Clone)]
pub enum FilterSpec {
    Headers(Headers),
    Cors(CorsSpec),
    Jwt(jwt::JwtSpec),
    RateLimit(RateLimitSpec),
    CircuitBreaker(BreakerSpec),
    Cache(CacheSpec),
}

impl FilterSpec {
    /// Built once per route even when named: it works for the route's upstream (a breaker's
    /// state, a cache's background refreshes). A named cache still shares one store.
    pub fn per_route(&self) -> bool {
        matches!(self, FilterSpec::CircuitBreaker(_) | FilterSpec::Cache(_))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            FilterSpec::Headers(_) => "headers",
            FilterSpec::Cors(_) => "cors",
            FilterSpec::Jwt(_) => "jwt",
            FilterSpec::RateLimit(_) => "rate_limit",
            FilterSpec::CircuitBreaker(_) => "circuit_breaker",
            FilterSpec::Cache(_) => "cache",
        }
    }
}

/// A route's filter: its own, or a named one shared with other routes.
#[derive(Debug, Clone)]
pub enum FilterRef {
    Named(String),
    Inline(FilterSpec),
}

#[derive(Debug, Clone)]
pub enum Action {
    Proxy {
        upstream: String,
        rewrite: Rewrite,
    },
    Respond(Respond),
    Redirect {
        status: StatusCode,
        target: RedirectTarget,
    },
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
    let source = value.clone();
    // Whatever of the top level could be read is compiled too, so its errors come as well.
    let Some(top) = issues.item_repaired::<raw::Top>(value, "").0 else {
        return Err(issues.list);
    };

    if top.workers == Some(0) {
        issues.add("workers", "must be at least 1");
    }
    let listeners = compile_listeners(top.listeners, &mut issues);
    let (admin, admin_token) = compile_admin(top.admin, &listeners, &mut issues);
    let watch = match top.reload {
        Some(reload) if reload.watch => Some(duration_field(
            reload.interval,
            Duration::from_secs(2),
            "reload.interval",
            &mut issues,
        )),
        _ => None,
    };
    let shutdown_grace = duration_field(
        top.shutdown_grace,
        Duration::from_secs(30),
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
    let providers = compile_jwt_providers(top.jwt_providers, &mut issues);
    let redis = top
        .stores
        .and_then(|value| compile_stores(value, &mut issues));
    let refs = FilterRefs {
        named: &[],
        providers: &providers,
        redis: redis.is_some(),
    };
    let filters = compile_named_filters(top.filters, &refs, &mut issues);
    let refs = FilterRefs {
        named: &filters,
        ..refs
    };
    let routes = compile_routes(top.routes, &known, &refs, &mut issues);

    if issues.list.is_empty() {
        Ok(Config {
            workers: top.workers,
            listeners,
            admin,
            admin_token,
            shutdown_grace,
            access_log: top.access_log.unwrap_or(true),
            watch,
            limits,
            trusted_proxies,
            upstreams,
            jwt_providers: providers,
            redis,
            filters,
            routes,
            source,
            text: Arc::from(""),
            from_env: issues.from_env,
        })
    } else {
        Err(issues.list)
    }
}

fn compile_listeners(items: Vec<Value>, issues: &mut Issues) -> Vec<ListenerConfig> {
    if items.is_empty() {
        issues.add("listeners", "at least one listener is required");
    }
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut out = Vec::new();
    for (i, value) in items.into_iter().enumerate() {
        let path = format!("listeners[{i}]");
        let Some(raw) = issues.item::<raw::Listener>(value, &path) else {
            continue;
        };
        if !names.insert(raw.name.clone()) {
            issues.add(
                &format!("{path}.name"),
                format!("duplicate listener name {:?}", raw.name),
            );
        }
        let tls = raw
            .tls
            .as_ref()
            .and_then(|tls| compile_listener_tls(tls, &format!("{path}.tls"), issues));
        match raw.address.parse::<SocketAddr>() {
            Ok(address) => {
                // Port 0 is ephemeral: never a clash.
                if address.port() != 0 && !addresses.insert(address) {
                    issues.add(
                        &format!("{path}.address"),
                        format!("address {address} is used by another listener"),
                    );
                }
                out.push(ListenerConfig {
                    name: raw.name,
                    address,
                    tls,
                });
            }
            Err(_) => issues.add(
                &format!("{path}.address"),
                format!(
                    "invalid address {:?}: expected IP:PORT, e.g. 0.0.0.0:8080",
                    raw.address
                ),
            ),
        }
    }
    out
}

fn compile_listener_tls(
    raw: &raw::ListenerTls,
    path: &str,
    issues: &mut Issues,
) -> Option<Arc<rustls::ServerConfig>> {
    if raw.certificates.is_empty() {
        issues.add(
            &format!("{path}.certificates"),
            "needs at least one certificate",
        );
        return None;
    }
    let client_auth_required = match raw.client_auth.as_deref() {
        None | Some("required") => true,
        Some("optional") => false,
        Some(other) => {
            issues.add(
                &format!("{path}.client_auth"),
                format!("unknown client_auth {other:?}: expected required or optional"),
            );
            true
        }
    };
    if raw.client_auth.is_some() && raw.client_ca_file.is_none() {
        issues.add(&format!("{path}.client_auth"), "needs client_ca_file");
    }
    let tls13_only = match raw.min_version.as_ref().map(|v| v.0.as_str()) {
        None | Some("1.2") => false,
        Some("1.3") => true,
        Some(other) => {
            issues.add(
                &format!("{path}.min_version"),
                format!("unknown TLS version {other:?}: expected \"1.2\" or \"1.3\""),
            );
            false
        }
    };
    let spec = crate::tls::ListenerTlsSpec {
        certificates: raw
            .certificates
            .iter()
            .map(|c| (issues.file(&c.cert_file), issues.file(&c.key_file)))
            .collect(),
        client_ca_file: raw.client_ca_file.as_deref().map(|f| issues.file(f)),
        client_auth_required,
        tls13_only,
    };
    match crate::tls::server_config(&spec) {
        Ok(config) => Some(config),
        Err(message) => {
            issues.add(path, message);
            None
        }
    }
}

/// How many of a set of mutually exclusive keys are present.
pub(super) fn count_set(present: &[bool]) -> usize {
    present.iter().filter(|p| **p).count()
}

pub(super) fn duration_field(
    value: Option<raw::Scalar>,
    default: Duration,
    path: &str,
    issues: &mut Issues,
) -> Duration {
    match value {
        None => default,
        Some(raw::Scalar(text)) => match parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                issues.add(path, "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(message) => {
                issues.add(path, message);
                default
            }
        },
    }
}

pub(super) fn size_field(
    value: Option<raw::Scalar>,
    default: u64,
    min: u64,
    path: &str,
    issues: &mut Issues,
) -> u64 {
    match value.map(|raw::Scalar(text)| parse_size(&text)) {
        None => default,
        Some(Ok(size)) if size < min => {
            issues.add(path, format!("must be at least {min} bytes"));
            default
        }
        Some(Ok(size)) => size,
        Some(Err(message)) => {
            issues.add(path, message);
            default
        }
    }
}

fn compile_limits(raw: raw::Limits, issues: &mut Issues) -> Limits {
    let d = Limits::default();
    let max_headers = raw.max_headers.unwrap_or(d.max_headers);
    if max_headers == 0 {
        issues.add("limits.max_headers", "must be at least 1");
    }
    let max_connections = raw.max_connections.unwrap_or(d.max_connections);
    if max_connections == 0 {
        issues.add("limits.max_connections", "must be at least 1");
    }
    let headers_with_underscores = match raw.headers_with_underscores.as_deref() {
        None => d.headers_with_underscores,
        Some("reject") => UnderscoreHeaders::Reject,
        Some("drop") => UnderscoreHeaders::Drop,
        Some("allow") => UnderscoreHeaders::Allow,
        Some(other) => {
            issues.add(
                "limits.headers_with_underscores",
                format!("unknown value {other:?}: expected reject, drop or allow"),
            );
            d.headers_with_underscores
        }
    };
    Limits {
        headers_with_underscores,
        max_header_bytes: size_field(
            raw.max_header_bytes,
            d.max_header_bytes as u64,
            1024,
            "limits.max_header_bytes",
            issues,
        ) as usize,
        max_headers,
        max_uri_bytes: size_field(
            raw.max_uri_bytes,
            d.max_uri_bytes as u64,
            256,
            "limits.max_uri_bytes",
            issues,
        ) as usize,
        max_body_bytes: size_field(
            raw.max_body_bytes,
            d.max_body_bytes,
            0,
            "limits.max_body_bytes",
            issues,
        ),
        header_read_timeout: duration_field(
            raw.header_read_timeout,
            d.header_read_timeout,
            "limits.header_read_timeout",
            issues,
        ),
        idle_timeout: duration_field(
            raw.idle_timeout,
            d.idle_timeout,
            "limits.idle_timeout",
            issues,
        ),
        max_connections,
        h2_max_concurrent_streams: raw
            .h2_max_concurrent_streams
            .unwrap_or(d.h2_max_concurrent_streams)
            .max(1),
        h2_max_pending_reset_streams: raw
            .h2_max_pending_reset_streams
            .unwrap_or(d.h2_max_pending_reset_streams),
        h2_max_local_reset_streams: raw
            .h2_max_local_reset_streams
            .unwrap_or(d.h2_max_local_reset_streams),
    }
}

fn compile_trusted(items: &[String], issues: &mut Issues) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, text) in items.iter().enumerate() {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => out.push(net),
            Err(_) => issues.add(
                &format!("trusted_proxies[{i}]"),
                format!("invalid CIDR {text:?}: expected e.g. 10.0.0.0/8 or 192.0.2.1"),
            ),
        }
    }
    out
}

fn compile_upstreams(map: serde_yaml::Mapping, issues: &mut Issues) -> Vec<UpstreamSpec> {
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(name) = key.as_str().map(str::to_string) else {
            issues.add("upstreams", "upstream names must be strings");
            continue;
        };
        let path = format!("upstreams.{name}");
        let Some(raw) = issues.item::<raw::Upstream>(value, &path) else {
            continue;
        };
        let Some((discovery, max_stale)) =
            compile_discovery(raw.discovery, &format!("{path}.discovery"), issues)
        else {
            continue;
        };
        let balance = compile_balance(raw.balance, &format!("{path}.balance"), issues);
        let protocol = match raw.protocol.as_deref() {
            None | Some("http1") => Protocol::Http1,
            Some("http2") => Protocol::Http2,
            Some(other) => {
                issues.add(
                    &format!("{path}.protocol"),
                    format!("unknown protocol {other:?}: expected http1 or http2"),
                );
                Protocol::Http1
            }
        };
        let timeouts = Timeouts {
            connect: duration_field(
                raw.timeouts.connect,
                Duration::from_secs(5),
                &format!("{path}.timeouts.connect"),
                issues,
            ),
            response: duration_field(
                raw.timeouts.response,
                Duration::from_secs(60),
                &format!("{path}.timeouts.response"),
                issues,
            ),
            idle: duration_field(
                raw.timeouts.idle,
                Duration::from_secs(60),
                &format!("{path}.timeouts.idle"),
                issues,
            ),
        };
        let tls = match &raw.tls {
            None | Some(raw::UpstreamTls::Enabled(false)) => None,
            Some(raw::UpstreamTls::Enabled(true)) => Some((None, None)),
            Some(raw::UpstreamTls::Detailed(d)) => {
                Some((d.ca_file.as_deref(), d.server_name.as_deref()))
            }
        }
        .and_then(|(ca, name)| {
            let ca = ca.map(|f| issues.file(f));
            crate::tls::UpstreamTls::new(ca, name, protocol == Protocol::Http2)
                .map_err(|message| issues.add(&format!("{path}.tls"), message))
                .ok()
        });
        let retries = raw
            .retries
            .and_then(|r| compile_retries(r, &format!("{path}.retries"), issues));
        let outlier = raw
            .outlier
            .and_then(|o| compile_outlier(o, &format!("{path}.outlier"), issues));
        let health = raw
            .health_check
            .and_then(|h| compile_health(h, &format!("{path}.health_check"), issues));
        out.push(UpstreamSpec {
            name,
            discovery,
            max_stale,
            protocol,
            tls,
            timeouts,
            balance,
            max_idle_per_endpoint: raw.pool.max_idle_per_endpoint.unwrap_or(128),
            retries,
            outlier,
            health,
        });
    }
    out
}

fn compile_routes(
    items: Vec<Value>,
    upstreams: &[&str],
    refs: &FilterRefs,
    issues: &mut Issues,
) -> Vec<RouteConfig> {
    if items.is_empty() {
        issues.add("routes", "at least one route is required");
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, value) in items.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(mut raw) = issues.item::<raw::Route>(value, &path) else {
            continue;
        };
        if raw.name.is_empty() {
            issues.add(&format!("{path}.name"), "must not be empty");
        } else if !names.insert(raw.name.clone()) {
            issues.add(
                &format!("{path}.name"),
                format!("duplicate route name {:?}", raw.name),
            );
        }
        let matcher = compile_match(&raw.matcher, &format!("{path}.match"), issues);
        let action = compile_action(&raw, &matcher, upstreams, &path, issues);
        let proxies = raw.upstream.is_some();
        let filters: Vec<FilterRef> = std::mem::take(&mut raw.filters)
            .into_iter()
            .enumerate()
            .filter_map(|(i, entry)| {
                let path = format!("{path}.filters[{i}]");
                let filter = compile_filter(entry, &path, refs, issues)?;
                let spec = match &filter {
                    FilterRef::Inline(spec) => Some(spec),
                    FilterRef::Named(name) => refs
                        .named
                        .iter()
                        .find(|(known, _)| known == name)
                        .map(|(_, spec)| spec),
                };
                if let (Some(spec), false) = (spec, proxies) {
                    if spec.per_route() {
                        let message = match &filter {
                            FilterRef::Named(name) => format!(
                                "{} filter {name:?} needs a route with an upstream",
                                spec.kind()
                            ),
                            FilterRef::Inline(_) => {
                                format!("{} needs a route with an upstream", spec.kind())
                            }
                        };
                        issues.add(&path, message);
                    }
                }
                Some(filter)
            })
            .collect();
        if let (Some(matcher), Some(action)) = (matcher, action) {
            out.push(RouteConfig {
                name: raw.name,
                matcher,
                action,
                filters,
            });
        }
    }
    out
}

fn compile_match(raw: &raw::Match, path: &str, issues: &mut Issues) -> Option<RouteMatch> {
    let before = issues.list.len();
    let host = match raw.host.as_deref() {
        None | Some("*") => HostMatch::Any,
        Some(host) => {
            let host = host.to_ascii_lowercase();
            let bare = host.strip_prefix("*.").unwrap_or(&host);
            let valid = !bare.is_empty()
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                issues.add(
                    &format!("{path}.host"),
                    format!("invalid host {host:?}: expected a name like api.example.com or *.example.com (no port)"),
                );
            }
            match host.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_string()),
                None => HostMatch::Exact(host),
            }
        }
    };
    let given = count_set(&[
        raw.path.is_some(),
        raw.path_prefix.is_some(),
        raw.path_regex.is_some(),
    ]);
    if given > 1 {
        issues.add(path, "use only one of path, path_prefix and path_regex");
    }
    let check_slash = |p: &str, key: &str, issues: &mut Issues| {
        if !p.starts_with('/') {
            issues.add(
                &format!("{path}.{key}"),
                format!("{p:?} must start with \"/\""),
            );
        }
    };
    let path_match = if let Some(exact) = &raw.path {
        check_slash(exact, "path", issues);
        PathMatch::Exact(exact.clone())
    } else if let Some(prefix) = &raw.path_prefix {
        check_slash(prefix, "path_prefix", issues);
        PathMatch::prefix(prefix)
    } else if let Some(pattern) = &raw.path_regex {
        match anchored_regex(pattern) {
            Ok(regex) => PathMatch::Regex(regex),
            Err(e) => {
                issues.add(&format!("{path}.path_regex"), e);
                PathMatch::prefix("/")
            }
        }
    } else {
        PathMatch::prefix("/")
    };
    let methods = raw.methods.as_ref().map(|list| {
        let mut set = MethodSet::default();
        if list.is_empty() {
            issues.add(
                &format!("{path}.methods"),
                "must list at least one method (omit it to match all)",
            );
        }
        for (i, name) in list.iter().enumerate() {
            match Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
                Ok(method) => set.insert(method),
                Err(_) => issues.add(
                    &format!("{path}.methods[{i}]"),
                    format!("invalid method {name:?}"),
                ),
            }
        }
        set
    });
    let mut headers = Vec::new();
    for (i, h) in raw.headers.iter().enumerate() {
        let hpath = format!("{path}.headers[{i}]");
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            issues.add(
                &format!("{hpath}.name"),
                format!("invalid header name {:?}", h.name),
            );
            continue;
        };
        match (&h.value, &h.regex) {
            (Some(_), Some(_)) => issues.add(&hpath, "use either value or regex, not both"),
            (Some(value), None) => match HeaderValue::from_str(value) {
                Ok(value) => headers.push(HeaderMatcher::Exact(name, value)),
                Err(_) => issues.add(&format!("{hpath}.value"), "invalid header value"),
            },
            (None, Some(pattern)) => match anchored_regex(pattern) {
                Ok(regex) => headers.push(HeaderMatcher::Regex(name, regex)),
                Err(e) => issues.add(&format!("{hpath}.regex"), e),
            },
            (None, None) => headers.push(HeaderMatcher::Present(name)),
        }
    }
    (issues.list.len() == before).then_some(RouteMatch {
        host,
        path: path_match,
        methods,
        headers,
    })
}

/// Compiles a regex that must match the whole input; the error is one line.
fn anchored_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .unwrap_or(text.as_str())
            .to_string();
        format!("invalid regex {pattern:?}: {reason}")
    })
}

fn compile_action(
    raw: &raw::Route,
    matcher: &Option<RouteMatch>,
    upstreams: &[&str],
    path: &str,
    issues: &mut Issues,
) -> Option<Action> {
    let given = count_set(&[
        raw.upstream.is_some(),
        raw.respond.is_some(),
        raw.redirect.is_some(),
    ]);
    if given != 1 {
        issues.add(
            path,
            format!(
                "route {:?} needs exactly one of upstream, respond or redirect",
                raw.name
            ),
        );
        return None;
    }
    if raw.rewrite.is_some() && raw.upstream.is_none() {
        issues.add(
            &format!("{path}.rewrite"),
            "rewrite applies only to routes with an upstream",
        );
    }
    if let Some(upstream) = &raw.upstream {
        if !upstreams.contains(&upstream.as_str()) {
            let known = if upstreams.is_empty() {
                "none defined".to_string()
            } else {
                upstreams.join(", ")
            };
            issues.add(
                &format!("{path}.upstream"),
                format!(
                    "route {:?} names unknown upstream {upstream:?} (known: {known})",
                    raw.name
                ),
            );
        }
        let rewrite = raw
            .rewrite
            .as_ref()
            .map(|r| compile_rewrite(r, matcher, &format!("{path}.rewrite"), issues))
            .unwrap_or_default();
        return Some(Action::Proxy {
            upstream: upstream.clone(),
            rewrite,
        });
    }
    if let Some(respond) = &raw.respond {
        let rpath = format!("{path}.respond");
        let status = match StatusCode::from_u16(respond.status) {
            Ok(status) if status.as_u16() >= 200 => status,
            _ => {
                issues.add(
                    &format!("{rpath}.status"),
                    format!("invalid status {}: expected 200-599", respond.status),
                );
                StatusCode::OK
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &respond.headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => issues.add(
                    &format!("{rpath}.headers.{name}"),
                    "invalid header name or value",
                ),
            }
        }
        return Some(Action::Respond(Respond {
            status,
            headers,
            body: Bytes::from(respond.body.clone()),
        }));
    }
    let redirect = raw.redirect.as_ref()?;
    let rpath = format!("{path}.redirect");
    let status = match redirect.status.unwrap_or(302) {
        code @ (301 | 302 | 303 | 307 | 308) => {
            StatusCode::from_u16(code).unwrap_or(StatusCode::FOUND)
        }
        other => {
            issues.add(
                &format!("{rpath}.status"),
                format!("invalid redirect status {other}: expected 301, 302, 303, 307 or 308"),
            );
            StatusCode::FOUND
        }
    };
    let target = match (&redirect.location, redirect.scheme.as_deref()) {
        (Some(location), None) => match HeaderValue::from_str(location) {
            Ok(value) => RedirectTarget::Location(value),
            Err(_) => {
                issues.add(&format!("{rpath}.location"), "invalid location");
                return None;
            }
        },
        (None, Some("https")) => RedirectTarget::Scheme("https"),
        (None, Some("http")) => RedirectTarget::Scheme("http"),
        (None, Some(other)) => {
            issues.add(
                &format!("{rpath}.scheme"),
                format!("invalid scheme {other:?}: expected http or https"),
            );
            return None;
        }
        _ => {
            issues.add(&rpath, "needs exactly one of location or scheme");
            return None;
        }
    };
    Some(Action::Redirect { status, target })
}

const DEFAULT_ADMIN_PORT: u16 = 9901;

/// Shortest `admin.token` accepted: long enough that guessing it over the network is hopeless.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// `admin:`: the address (default loopback) and the token. An address other hosts can reach
/// needs a token, unless `insecure: true` says the network itself is trusted.
fn compile_admin(
    raw: Option<raw::Admin>,
    listeners: &[ListenerConfig],
    issues: &mut Issues,
) -> (Option<SocketAddr>, Option<Arc<str>>) {
    let default = SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT));
    let Some(raw) = raw else {
        return (Some(default), None);
    };
    let address = match raw.address.as_deref() {
        None => Some(default),
        Some("off") => None,
        Some(text) => {
            match text.parse::<SocketAddr>() {
                Ok(address)
                    if address.port() != 0 && listeners.iter().any(|l| l.address == address) =>
                {
                    issues.add(
                        "admin.address",
                        format!("{address} is also a listener's address"),
                    );
                    None
                }
                Ok(address) => Some(address),
                Err(_) => {
                    issues.add(
                    "admin.address",
                    format!("invalid address {text:?}: expected IP:PORT, e.g. 127.0.0.1:9901, or off"),
                );
                    None
                }
            }
        }
    };
    let token_given = raw.token.is_some();
    let token = match raw.token {
        Some(token) if token.len() < MIN_ADMIN_TOKEN_LEN => {
            issues.add(
                "admin.token",
                format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
            );
            None
        }
        token => token.map(Arc::from),
    };
    if let Some(address) = address {
        if !address.ip().is_loopback() && !token_given && !raw.insecure {
            issues.add(
                "admin.address",
                format!("{address} is reachable from other hosts: set admin.token (e.g. token: ${{ADMIN_TOKEN}}), or admin.insecure: true on a trusted network"),
            );
        }
    }
    (address, token)
}

fn compile_rewrite(
    raw: &raw::Rewrite,
    matcher: &Option<RouteMatch>,
    path: &str,
    issues: &mut Issues,
) -> Rewrite {
    let mut rewrite = Rewrite::default();
    if raw.strip_prefix.is_some() && raw.replace_prefix.is_some() {
        issues.add(path, "use either strip_prefix or replace_prefix, not both");
    }
    if let Some(prefix) = &raw.strip_prefix {
        if !prefix.starts_with('/') {
            issues.add(
                &format!("{path}.strip_prefix"),
                format!("{prefix:?} must start with \"/\""),
            );
        }
        rewrite.strip_prefix = Some(prefix.trim_end_matches('/').to_string());
    }
    if let Some(replacement) = &raw.replace_prefix {
        if !replacement.starts_with('/') {
            issues.add(
                &format!("{path}.replace_prefix"),
                format!("{replacement:?} must start with \"/\""),
            );
        }
        match matcher.as_ref().map(|m| &m.path) {
            Some(PathMatch::Prefix(prefix)) => {
                rewrite.replace_prefix = Some((prefix.clone(), replacement.clone()));
            }
            Some(_) => issues.add(
                &format!("{path}.replace_prefix"),
                "needs a route that matches with path_prefix",
            ),
            None => {}
        }
    }
    if let Some(host) = &raw.host {
        match HeaderValue::from_str(host) {
            Ok(value) if !host.is_empty() => rewrite.host = Some(value),
            _ => issues.add(&format!("{path}.host"), format!("invalid host {host:?}")),
        }
    }
    rewrite
}

fn compile_stores(value: Value, issues: &mut Issues) -> Option<RedisSpec> {
    let stores = issues.item::<raw::Stores>(value, "stores")?;
    let raw = stores.redis?;
    let before = issues.list.len();
    if redis::Client::open(raw.url.as_str()).is_err() {
        issues.add(
            "stores.redis.url",
            format!(
                "{:?} is not a Redis URL (redis://[user:password@]host[:port][/db])",
                raw.url
            ),
        );
    }
    let timeout = duration_field(
        raw.timeout,
        Duration::from_millis(20),
        "stores.redis.timeout",
        issues,
    );
    if raw.pool_size == Some(0) {
        issues.add("stores.redis.pool_size", "must be at least 1");
    }
    (issues.list.len() == before).then(|| RedisSpec {
        url: raw.url,
        timeout,
        pool_size: raw.pool_size.unwrap_or(2),
    })
}
