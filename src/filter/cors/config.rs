//! The `cors` filter's config: its YAML mirror and validation.

use super::{CorsSpec, OriginMatch};
use crate::config::issues::{methods, optional_duration, Issues};
use crate::config::values::Scalar;
use crate::filter::Refs;
use http::HeaderName;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CorsFilter {
    pub(crate) allow_origins: Vec<String>,
    #[serde(default)]
    pub(crate) allow_methods: Vec<String>,
    #[serde(default)]
    pub(crate) allow_headers: Vec<String>,
    #[serde(default)]
    pub(crate) expose_headers: Vec<String>,
    #[serde(default)]
    pub(crate) allow_credentials: bool,
    pub(crate) max_age: Option<Scalar>,
}

pub(crate) fn compile(
    raw: CorsFilter,
    path: &str,
    _refs: &Refs,
    issues: &mut Issues,
) -> Option<CorsSpec> {
    let before = issues.list.len();
    if raw.allow_origins.is_empty() {
        issues.add(
            &format!("{path}.allow_origins"),
            "needs at least one origin (or \"*\")",
        );
    }
    let mut origins = Vec::new();
    for (i, origin) in raw.allow_origins.iter().enumerate() {
        match OriginMatch::parse(origin) {
            Ok(m) => origins.push(m),
            Err(message) => issues.add(&format!("{path}.allow_origins[{i}]"), message),
        }
    }
    let methods = methods(&raw.allow_methods, &format!("{path}.allow_methods"), issues);
    for (i, name) in raw.allow_headers.iter().enumerate() {
        if name != "*" && HeaderName::from_bytes(name.as_bytes()).is_err() {
            issues.add(
                &format!("{path}.allow_headers[{i}]"),
                format!("invalid header name {name:?}"),
            );
        }
    }
    let mut expose = Vec::new();
    for (i, name) in raw.expose_headers.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => expose.push(header),
            Err(_) => issues.add(
                &format!("{path}.expose_headers[{i}]"),
                format!("invalid header name {name:?}"),
            ),
        }
    }
    let max_age = optional_duration(raw.max_age, &format!("{path}.max_age"), issues);
    let spec = CorsSpec {
        origins,
        methods,
        headers: raw.allow_headers,
        expose,
        credentials: raw.allow_credentials,
        max_age,
    };
    (issues.list.len() == before).then_some(spec)
}
