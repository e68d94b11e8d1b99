//! The issue collector: every config problem with its key path and line. Items are read one
//! by one, and a bad key or value is taken out and the rest read again, so that one mistake
//! never hides the next.

use super::lines::LineIndex;
use super::values::{parse_duration, parse_size, Scalar};
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The key path of the file as a whole, for problems that belong to no one key.
const TOP_LEVEL: &str = "(top level)";

/// One problem in the file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub(crate) path: String,
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Collects issues, resolving each path's line once.
pub(crate) struct Issues<'a> {
    pub(crate) list: Vec<ConfigIssue>,
    lines: &'a LineIndex,
    /// Key paths whose values came from the environment.
    pub(crate) from_env: Vec<String>,
    /// Relative file paths are taken from here: the config file's folder.
    base: &'a Path,
}

impl<'a> Issues<'a> {
    pub(crate) fn new(lines: &'a LineIndex, base: &'a Path) -> Issues<'a> {
        Issues {
            list: Vec::new(),
            lines,
            from_env: Vec::new(),
            base,
        }
    }

    pub(crate) fn file(&self, path: &str) -> PathBuf {
        self.base.join(path)
    }

    pub(crate) fn add(&mut self, path: &str, message: impl Into<String>) {
        let (path, line) = match path {
            "" => (TOP_LEVEL, Some(1)),
            path => (path, self.lines.line(path)),
        };
        self.list.push(ConfigIssue {
            path: path.to_string(),
            line,
            message: message.into(),
        });
    }

    /// Deserialises one item, reporting every failure at its exact nested key; `None` when
    /// there was any.
    pub(crate) fn item<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        let (item, clean) = self.item_repaired(value, path);
        item.filter(|_| clean)
    }

    /// Deserialises one item, reporting every independent failure: after each error the
    /// offending node is taken out and the rest is tried again, so one mistake does not hide
    /// the next. Returns what could be read without the bad parts (`None` if nothing could),
    /// and whether there was no error at all.
    pub(crate) fn item_repaired<T: DeserializeOwned>(
        &mut self,
        mut value: Value,
        path: &str,
    ) -> (Option<T>, bool) {
        // Paths taken out so far, with list indexes as the user wrote them.
        let mut removed: Vec<Vec<Segment>> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_ITEM {
            let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(item) => return (Some(item), removed.is_empty()),
                Err(error) => error,
            };
            let current = segments(error.path());
            let original = original_path(&current, &removed);
            let message = clean_serde_message(&error.into_inner().to_string());
            // A required field we took out ourselves is not another mistake.
            let ours = missing_field(&message).is_some_and(|field| {
                let mut child = original.clone();
                child.push(Segment::Key(field.to_string()));
                removed.contains(&child)
            });
            if !ours {
                self.add(&join_path(path, &original), message);
            }
            if current.is_empty() || !remove_node(&mut value, &current) {
                break;
            }
            removed.push(original);
        }
        (None, false)
    }
}

/// Errors reported for one item at most: enough for any real file, and a bound on the retries.
const MAX_ERRORS_PER_ITEM: usize = 32;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
    use serde_path_to_error::Segment as S;
    path.iter()
        .filter_map(|segment| match segment {
            S::Seq { index } => Some(Segment::Index(*index)),
            S::Map { key } => Some(Segment::Key(key.clone())),
            S::Enum { variant } => Some(Segment::Key(variant.clone())),
            S::Unknown => None,
        })
        .collect()
}

/// `current` with each list index shifted back over the list items removed before it.
fn original_path(current: &[Segment], removed: &[Vec<Segment>]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(current.len());
    for segment in current {
        let Segment::Index(index) = segment else {
            out.push(segment.clone());
            continue;
        };
        let mut gone: Vec<usize> = removed
            .iter()
            .filter(|r| r.len() == out.len() + 1 && r[..out.len()] == out[..])
            .filter_map(|r| match r.last() {
                Some(Segment::Index(i)) => Some(*i),
                _ => None,
            })
            .collect();
        gone.sort_unstable();
        let mut index = *index;
        for i in gone {
            if i <= index {
                index += 1;
            }
        }
        out.push(Segment::Index(index));
    }
    out
}

/// `outer.inner` as error messages write key paths (`routes[2].match.path`).
fn join_path(outer: &str, inner: &[Segment]) -> String {
    let mut out = outer.to_string();
    for segment in inner {
        match segment {
            Segment::Key(key) if out.is_empty() => out.push_str(key),
            Segment::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// Takes the node at `path` out of `value`; whether there was one.
fn remove_node(value: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Key(key), Value::Mapping(map)) => map.get_mut(key.as_str()),
            (Segment::Index(index), Value::Sequence(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node) {
        (Segment::Key(key), Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
        (Segment::Index(index), Value::Sequence(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

/// The field a "missing field `x`" message names.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// serde_yaml appends its own position (relative to a detached value, so wrong here).
fn clean_serde_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(cut) => message[..cut].to_string(),
        None => message.to_string(),
    }
}

/// How many of a set of mutually exclusive keys are present.
pub(crate) fn count_set(present: &[bool]) -> usize {
    present.iter().filter(|p| **p).count()
}

pub(crate) fn duration_field(
    value: Option<Scalar>,
    default: Duration,
    path: &str,
    issues: &mut Issues,
) -> Duration {
    match value {
        None => default,
        Some(Scalar(text)) => match parse_duration(&text) {
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

/// A duration that may be left out (`None`: the feature it sets is off); zero is refused like
/// any unparsable value.
pub(crate) fn optional_duration(
    value: Option<Scalar>,
    path: &str,
    issues: &mut Issues,
) -> Option<Duration> {
    value.map(|value| duration_field(Some(value), Duration::ZERO, path, issues))
}

pub(crate) fn size_field(
    value: Option<Scalar>,
    default: u64,
    min: u64,
    path: &str,
    issues: &mut Issues,
) -> u64 {
    match value.map(|Scalar(text)| parse_size(&text)) {
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

/// A section of named items (`upstreams:`, `filters:`, `jwt_providers:`): each name with its
/// key path (`SECTION.NAME`) and value. A name that is not a string is reported and skipped.
pub(crate) fn named_entries(
    map: serde_yaml::Mapping,
    section: &str,
    what: &str,
    issues: &mut Issues,
) -> Vec<(String, String, Value)> {
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        match key.as_str() {
            Some(name) => out.push((name.to_string(), format!("{section}.{name}"), value)),
            None => issues.add(section, format!("{what} names must be strings")),
        }
    }
    out
}

/// HTTP methods from a list at `path` (any case); an invalid one is reported by index.
pub(crate) fn methods(names: &[String], path: &str, issues: &mut Issues) -> Vec<http::Method> {
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        match http::Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
            Ok(method) => out.push(method),
            Err(_) => issues.add(&format!("{path}[{i}]"), format!("invalid method {name:?}")),
        }
    }
    out
}

/// "unknown THING "NAME" (known: a, b)", or "(known: none defined)".
pub(crate) fn unknown<'n>(
    thing: &str,
    name: &str,
    known: impl IntoIterator<Item = &'n str>,
) -> String {
    let known: Vec<&str> = known.into_iter().collect();
    let list = if known.is_empty() {
        "none defined".to_string()
    } else {
        known.join(", ")
    };
    format!("unknown {thing} {name:?} (known: {list})")
}

/// One word from a fixed set: `default` when absent; another word is reported as "unknown
/// WHAT "X": expected a, b or c" and read as `default`.
pub(crate) fn one_of<T: Copy>(
    value: Option<&str>,
    what: &str,
    choices: &[(&str, T)],
    default: T,
    path: &str,
    issues: &mut Issues,
) -> T {
    let Some(word) = value else {
        return default;
    };
    if let Some((_, chosen)) = choices.iter().find(|(name, _)| *name == word) {
        return *chosen;
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    issues.add(
        path,
        format!("unknown {what} {word:?}: expected {expected}"),
    );
    default
}

/// TLS for the gateway's own client to an `https` service (a registry, a trace collector):
/// the public roots, or the CA bundle at `ca_file` (key path `path`), which only an `https`
/// address may have.
pub(crate) fn https_client_tls(
    https: bool,
    ca_file: Option<&str>,
    path: &str,
    issues: &mut Issues,
) -> Option<crate::tls::UpstreamTls> {
    if !https {
        if ca_file.is_some() {
            issues.add(path, "only used with https endpoints");
        }
        return None;
    }
    let ca = ca_file.map(|f| issues.file(f));
    crate::tls::UpstreamTls::new(ca, None, false)
        .map_err(|message| issues.add(path, message))
        .ok()
}
