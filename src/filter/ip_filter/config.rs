//! The `ip_filter` filter's config: its YAML mirror and validation into an [`IpFilterSpec`].

use super::prefixes::{parse_list, parse_prefix};
use super::IpFilterSpec;
use crate::config::issues::{duration_field, Issues};
use crate::config::values::Scalar;
use crate::filter::Refs;
use ipnet::IpNet;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// How often list files are read again when the filter does not say.
const DEFAULT_FILE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpFilterConfig {
    pub(crate) allow: Option<Vec<String>>,
    pub(crate) allow_file: Option<String>,
    pub(crate) deny: Option<Vec<String>>,
    pub(crate) deny_file: Option<String>,
    pub(crate) file_interval: Option<Scalar>,
}

pub(crate) fn compile(
    raw: IpFilterConfig,
    path: &str,
    _refs: &Refs,
    issues: &mut Issues,
) -> Option<IpFilterSpec> {
    let before = issues.list.len();
    if raw.allow.is_none() && raw.allow_file.is_none() && raw.deny.is_none() && raw.deny_file.is_none() {
        issues.add(path, "needs allow, allow_file, deny or deny_file");
    }
    if raw.allow.as_ref().is_some_and(Vec::is_empty) && raw.allow_file.is_none() {
        issues.add(
            &format!("{path}.allow"),
            "an empty allow list would refuse every client; leave it out to let in all but the denied",
        );
    }
    let allow = prefixes(raw.allow.unwrap_or_default(), &format!("{path}.allow"), issues);
    let deny = prefixes(raw.deny.unwrap_or_default(), &format!("{path}.deny"), issues);
    let allow_file = raw
        .allow_file
        .map(|file| list_file(&file, &format!("{path}.allow_file"), issues));
    let deny_file = raw
        .deny_file
        .map(|file| list_file(&file, &format!("{path}.deny_file"), issues));
    let file_interval = duration_field(
        raw.file_interval,
        DEFAULT_FILE_INTERVAL,
        &format!("{path}.file_interval"),
        issues,
    );
    (issues.list.len() == before).then_some(IpFilterSpec {
        allow,
        allow_file,
        deny,
        deny_file,
        file_interval,
    })
}

fn prefixes(items: Vec<String>, path: &str, issues: &mut Issues) -> Vec<IpNet> {
    let mut out = Vec::with_capacity(items.len());
    for (i, text) in items.iter().enumerate() {
        match parse_prefix(text) {
            Ok(net) => out.push(net),
            Err(message) => issues.add(&format!("{path}[{i}]"), message),
        }
    }
    out
}

/// The file's path (relative to the config's folder), after checking that it reads as a list.
fn list_file(file: &str, path: &str, issues: &mut Issues) -> PathBuf {
    let resolved = issues.file(file);
    match std::fs::read_to_string(&resolved) {
        Ok(text) => {
            if let Err(message) = parse_list(&text) {
                issues.add(path, format!("{}: {message}", resolved.display()));
            }
        }
        Err(error) => issues.add(path, format!("cannot read {}: {error}", resolved.display())),
    }
    resolved
}
