//! `discovery: { file: { path, format, interval } }`: endpoints listed in a YAML or JSON file
//! that another tool writes, e.g. `["10.0.0.5:8080", { address: "10.0.0.6:8080", weight: 3 }]`.
//! YAML (the default) also reads JSON; `format: json` holds the file to strict JSON.
//!
//! The file is read again every `interval` and compared by content, which also sees atomic
//! renames and the symlink swaps Kubernetes uses for ConfigMaps. A file that cannot be read
//! or parsed keeps the last good set (the error is logged once per change of error); a file
//! that lists no endpoints means none.

use super::backend::{publish, Discovery, EndpointSet, Status};
use super::static_list::{StaticEndpoint, StaticList, DEFAULT_WEIGHT};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileSpec {
    pub(crate) path: PathBuf,
    pub(crate) format: FileFormat,
    pub(crate) interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    Yaml,
    Json,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Address(String),
    Weighted {
        address: String,
        #[serde(default)]
        weight: Option<u32>,
    },
}

/// The endpoints a file's text lists.
pub(crate) fn parse(text: &str, format: FileFormat) -> Result<Vec<StaticEndpoint>, String> {
    let invalid = |e: &dyn std::fmt::Display| format!("not a list of endpoints: {e}");
    let entries: Vec<Entry> = match format {
        _ if text.trim().is_empty() => Vec::new(),
        FileFormat::Yaml => serde_yaml::from_str(text).map_err(|e| invalid(&e))?,
        FileFormat::Json => serde_json::from_str(text).map_err(|e| invalid(&e))?,
    };
    entries
        .into_iter()
        .map(|entry| match entry {
            Entry::Address(address) => StaticEndpoint::parse(&address, DEFAULT_WEIGHT),
            Entry::Weighted { address, weight } => {
                StaticEndpoint::parse(&address, weight.unwrap_or(DEFAULT_WEIGHT).max(1))
            }
        })
        .collect()
}

pub(crate) struct FileList {
    spec: FileSpec,
}

impl FileList {
    pub(crate) fn new(spec: FileSpec) -> FileList {
        FileList { spec }
    }
}

#[async_trait::async_trait]
impl Discovery for FileList {
    async fn run(&self, tx: &watch::Sender<EndpointSet>, status: &Status) {
        let path = &self.spec.path;
        let mut last_text = None;
        let mut last_error = None;
        loop {
            let read = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read: {e}"));
            let outcome = match read {
                Ok(text) if Some(&text) == last_text.as_ref() => Ok(None),
                Ok(text) => parse(&text, self.spec.format).map(|endpoints| Some((text, endpoints))),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(Some((text, endpoints))) => {
                    let (found, failed) = StaticList::new(endpoints).resolve().await;
                    if failed == 0 {
                        status.succeeded();
                        let set: EndpointSet = found.into();
                        tracing::info!(file = %path.display(), endpoints = set.len(), "endpoint file applied");
                        publish(tx, set);
                        last_text = Some(text);
                        last_error = None;
                    } else {
                        status.failed();
                    }
                }
                Ok(None) => status.succeeded(),
                Err(error) => {
                    status.failed();
                    if last_error.as_ref() != Some(&error) {
                        tracing::warn!(file = %path.display(), %error, "endpoint file unusable; keeping the last endpoints");
                        last_error = Some(error);
                    }
                }
            }
            tokio::time::sleep(self.spec.interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_and_json_lists() {
        use FileFormat::{Json, Yaml};
        let yaml = parse(
            "- 10.0.0.5:8080\n- { address: 10.0.0.6:8080, weight: 3 }\n",
            Yaml,
        )
        .unwrap();
        assert_eq!(yaml.len(), 2);
        assert_eq!(yaml[1].weight, 3);
        let text = r#"["10.0.0.5:8080", {"address": "[::1]:80"}]"#;
        assert_eq!(parse(text, Yaml).unwrap()[1].host, "::1");
        assert_eq!(parse(text, Json).unwrap()[1].host, "::1");
        assert!(
            parse("- 10.0.0.5:8080\n", Json).is_err(),
            "YAML in a JSON file"
        );
        assert!(parse("", Json).unwrap().is_empty());
        assert!(parse("{ not: a list }", Yaml).is_err());
        assert!(parse("[\"no-port\"]", Yaml).is_err());
    }
}
