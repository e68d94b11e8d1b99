//! Routes: match criteria, the action (proxy with its rewrite, respond, redirect) and the
//! filters each route runs.

use super::filters::{compile_filter_list, FilterRef, FilterRefs};
use super::issues::{count_set, methods, Issues};
use super::raw;
use super::traffic::{
    compile_destination, compile_fallback, compile_mirror, compile_respond, Destination,
    FallbackSpec, MirrorSpec,
};
use crate::router::{Condition, HostMatch, MethodSet, PathMatch, RouteMatch, ValueMatch};
use crate::snapshot::{RedirectTarget, Respond, Rewrite};
use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use serde_yaml::Value;
use std::collections::HashSet;

const DEFAULT_REDIRECT_STATUS: u16 = 302;

#[derive(Debug, Clone)]
pub(crate) struct RouteConfig {
    pub(crate) name: String,
    pub(crate) matcher: RouteMatch,
    pub(crate) action: Action,
    pub(crate) filters: Vec<FilterRef>,
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    Proxy(Box<Proxy>),
    Respond(Respond),
    Redirect {
        status: StatusCode,
        target: RedirectTarget,
    },
}

/// What a proxying route does: where it sends requests, how it rewrites them, and what
/// answers when that fails.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    pub(crate) destination: Destination,
    pub(crate) rewrite: Rewrite,
    pub(crate) fallback: Option<FallbackSpec>,
    pub(crate) mirror: Option<MirrorSpec>,
}

pub(super) fn compile_routes(
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
        let action = compile_action(&raw, &matcher, upstreams, refs, &path, issues);
        let proxies = raw.upstream.is_some();
        let filters = compile_filter_list(
            std::mem::take(&mut raw.filters),
            &path,
            refs,
            proxies,
            issues,
        );
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
        for method in methods(list, &format!("{path}.methods"), issues) {
            set.insert(method);
        }
        set
    });
    let mut conditions = Vec::new();
    for (key, list) in [
        ("headers", &raw.headers),
        ("cookies", &raw.cookies),
        ("query", &raw.query),
    ] {
        for (i, field) in list.iter().enumerate() {
            let fpath = format!("{path}.{key}[{i}]");
            if let Some(condition) = compile_condition(key, field, &fpath, issues) {
                conditions.push(condition);
            }
        }
    }
    (issues.list.len() == before).then_some(RouteMatch {
        host,
        path: path_match,
        methods,
        conditions,
    })
}

/// One entry of `headers`, `cookies` or `query` (`key`).
fn compile_condition(
    key: &str,
    field: &raw::FieldMatch,
    path: &str,
    issues: &mut Issues,
) -> Option<Condition> {
    let want = match (&field.value, &field.regex) {
        (Some(_), Some(_)) => {
            issues.add(path, "use either value or regex, not both");
            return None;
        }
        (Some(value), None) => {
            if key == "headers" && HeaderValue::from_str(value).is_err() {
                issues.add(&format!("{path}.value"), "invalid header value");
                return None;
            }
            ValueMatch::Exact(value.as_bytes().into())
        }
        (None, Some(pattern)) => match anchored_regex(pattern) {
            Ok(regex) => ValueMatch::Regex(regex),
            Err(e) => {
                issues.add(&format!("{path}.regex"), e);
                return None;
            }
        },
        (None, None) => ValueMatch::Present,
    };
    let name = field.name.as_str();
    let invalid = |what: &str, issues: &mut Issues| {
        issues.add(
            &format!("{path}.name"),
            format!("invalid {what} name {name:?}"),
        );
    };
    match key {
        "headers" => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => return Some(Condition::Header(header, want)),
            Err(_) => invalid("header", issues),
        },
        // A cookie name is an RFC 9110 token: no separators, spaces or `=`.
        "cookies" if !name.is_empty() && name.bytes().all(is_token_byte) => {
            return Some(Condition::Cookie(name.into(), want));
        }
        "cookies" => invalid("cookie", issues),
        _ if !name.is_empty() => return Some(Condition::Query(name.into(), want)),
        _ => invalid("query parameter", issues),
    }
    None
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
    refs: &FilterRefs,
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
    for (key, given) in [
        ("rewrite", raw.rewrite.is_some()),
        ("fallback", raw.fallback.is_some()),
        ("mirror", raw.mirror.is_some()),
    ] {
        if given && raw.upstream.is_none() {
            issues.add(
                &format!("{path}.{key}"),
                format!("{key} applies only to routes with an upstream"),
            );
        }
    }
    if let Some(upstream) = &raw.upstream {
        let destination = compile_destination(upstream, &raw.name, upstreams, path, issues);
        let rewrite = raw
            .rewrite
            .as_ref()
            .map(|r| compile_rewrite(r, matcher, &format!("{path}.rewrite"), issues))
            .unwrap_or_default();
        let fallback = raw.fallback.as_ref().and_then(|f| {
            compile_fallback(
                f,
                &destination,
                refs.kinds.upstreams,
                &format!("{path}.fallback"),
                issues,
            )
        });
        let mirror = raw.mirror.as_ref().map(|m| {
            compile_mirror(
                m,
                &destination,
                refs.kinds.upstreams,
                &format!("{path}.mirror"),
                issues,
            )
        });
        return Some(Action::Proxy(Box::new(Proxy {
            destination,
            rewrite,
            fallback,
            mirror,
        })));
    }
    if let Some(respond) = &raw.respond {
        let rpath = format!("{path}.respond");
        return Some(Action::Respond(compile_respond(respond, &rpath, issues)));
    }
    let redirect = raw.redirect.as_ref()?;
    let rpath = format!("{path}.redirect");
    let status = match redirect.status.unwrap_or(DEFAULT_REDIRECT_STATUS) {
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
