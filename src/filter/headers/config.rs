//! The `headers` filter's config: its YAML mirror and validation.

use super::{HeaderEdits, Headers};
use crate::config::issues::Issues;
use crate::filter::Refs;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeadersFilter {
    pub(crate) request: Option<Edits>,
    pub(crate) response: Option<Edits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Edits {
    #[serde(default)]
    pub(crate) set: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) add: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

fn header_edits(raw: Edits, path: &str, issues: &mut Issues) -> HeaderEdits {
    let mut edits = HeaderEdits::default();
    let pairs =
        |map: std::collections::BTreeMap<String, String>, key: &str, issues: &mut Issues| {
            let mut out = Vec::new();
            for (name, value) in map {
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    (Ok(name), Ok(value)) => out.push((name, value)),
                    _ => issues.add(
                        &format!("{path}.{key}.{name}"),
                        "invalid header name or value",
                    ),
                }
            }
            out
        };
    edits.set = pairs(raw.set, "set", issues);
    edits.add = pairs(raw.add, "add", issues);
    for (i, name) in raw.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => edits.remove.push(name),
            Err(_) => issues.add(
                &format!("{path}.remove[{i}]"),
                format!("invalid header name {name:?}"),
            ),
        }
    }
    edits
}

pub(crate) fn compile(
    raw: HeadersFilter,
    path: &str,
    _refs: &Refs,
    issues: &mut Issues,
) -> Option<Headers> {
    let before = issues.list.len();
    let headers = Headers {
        request: header_edits(
            raw.request.unwrap_or_default(),
            &format!("{path}.request"),
            issues,
        ),
        response: header_edits(
            raw.response.unwrap_or_default(),
            &format!("{path}.response"),
            issues,
        ),
    };
    (issues.list.len() == before).then_some(headers)
}
