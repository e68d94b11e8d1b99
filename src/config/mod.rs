//! `gateway.yaml` → validated [`Config`].
//!
//! Three steps, all at load time and never on the request path: the text is parsed into YAML
//! values and `${ENV}` references are filled in; each section item is deserialised into the
//! serde mirror in [`raw`]; [`compile`] and a file per section check values and
//! cross-references and produce plain, ready-to-use settings. Every problem found is
//! collected, with its key path and line, so a user fixes a file in one pass. Nothing here
//! builds what runs: the runtime snapshot is built from a `Config` in `snapshot/build.rs`.

mod compile;
pub mod diff;
mod discovery;
mod filters;
pub(crate) mod issues;
mod lines;
mod listeners;
pub(crate) mod raw;
mod redact;
mod routes;
mod stores;
mod traces;
mod traffic;
mod upstreams;
pub(crate) mod values;

pub use compile::Config;
pub(crate) use filters::{FilterRef, FilterSpec};
pub use issues::ConfigIssue;
pub(crate) use routes::{Action, Proxy, RouteConfig};
pub(crate) use traffic::{Destination, FallbackAnswer, FallbackSpec, MirrorSpec};

use crate::router::{Condition, HostMatch, PathMatch, ValueMatch};
use std::path::Path;
use std::sync::Arc;

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

impl Config {
    /// One row per route, for `portcullis check`: name, match criteria, action, filters.
    pub fn route_table(&self) -> Vec<[String; 4]> {
        self.routes
            .iter()
            .map(|route| {
                [
                    route.name.clone(),
                    route.describe_match(),
                    route.describe_action(),
                    route.describe_filters(),
                ]
            })
            .collect()
    }

    /// How many routes, upstreams and listeners the config has.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.routes.len(),
            self.upstreams.len(),
            self.listeners.len(),
        )
    }
}

impl RouteConfig {
    /// The match criteria in one line, e.g. `host=api.example.com prefix=/users methods=GET`.
    pub(crate) fn describe_match(&self) -> String {
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
        parts.extend(m.conditions.iter().map(describe_condition));
        parts.join(" ")
    }

    /// The filters in order, e.g. `headers,use:cors-public`; `-` for none.
    pub(crate) fn describe_filters(&self) -> String {
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
    pub(crate) fn describe_action(&self) -> String {
        match &self.action {
            Action::Proxy(proxy) => describe_proxy(proxy),
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
    parse_in(&text, &path.display().to_string(), env, &folder_of(path))
}

/// The folder relative paths in the config file at `path` are taken from.
pub(crate) fn folder_of(path: &Path) -> std::path::PathBuf {
    let folder = path.parent().unwrap_or(Path::new(""));
    std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf())
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
pub(crate) fn parse_in(
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

/// `upstream users`, or `split v1:95,v2:5 sticky cookie:user`, then ` fallback …`.
fn describe_proxy(proxy: &Proxy) -> String {
    let fallback = match &proxy.fallback {
        None => String::new(),
        Some(FallbackSpec {
            answer: FallbackAnswer::Respond(r),
            ..
        }) => {
            format!(" fallback respond {}", r.status.as_u16())
        }
        Some(FallbackSpec {
            answer: FallbackAnswer::Upstream(name),
            ..
        }) => {
            format!(" fallback upstream {name}")
        }
    };
    let mirror = match &proxy.mirror {
        None => String::new(),
        Some(m) => format!(" mirror {} {}%", m.upstream, m.fraction * 100.0),
    };
    format!(
        "{}{mirror}{fallback}",
        describe_destination(&proxy.destination)
    )
}

fn describe_destination(destination: &Destination) -> String {
    use crate::upstream::HashOn;
    match destination {
        Destination::Upstream(name) => format!("upstream {name}"),
        Destination::Split { targets, sticky } => {
            let shares: Vec<String> = targets
                .iter()
                .map(|(name, weight)| format!("{name}:{weight}"))
                .collect();
            let sticky = match sticky {
                None => String::new(),
                Some(HashOn::Header(name)) => format!(" sticky header:{name}"),
                Some(HashOn::Cookie(name)) => format!(" sticky cookie:{name}"),
                Some(HashOn::Claim(name)) => format!(" sticky claim:{name}"),
                Some(HashOn::ClientIp) => " sticky client_ip".to_string(),
            };
            format!("split {}{sticky}", shares.join(","))
        }
    }
}

/// `header:x-canary=1`, `cookie:canary`, `query:v~[0-9]+` (present, exact, regex).
fn describe_condition(condition: &Condition) -> String {
    let (kind, name, want) = match condition {
        Condition::Header(name, want) => ("header", name.as_str(), want),
        Condition::Cookie(name, want) => ("cookie", &**name, want),
        Condition::Query(name, want) => ("query", &**name, want),
    };
    match want {
        ValueMatch::Present => format!("{kind}:{name}"),
        ValueMatch::Exact(value) => format!("{kind}:{name}={}", String::from_utf8_lossy(value)),
        ValueMatch::Regex(regex) => {
            let pattern = regex.as_str();
            let inner = pattern
                .strip_prefix("^(?:")
                .and_then(|p| p.strip_suffix(")$"))
                .unwrap_or(pattern);
            format!("{kind}:{name}~{inner}")
        }
    }
}
