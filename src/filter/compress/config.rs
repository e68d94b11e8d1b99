//! The `compress` filter's config: its YAML mirror and validation into a [`CompressSpec`].

use super::encode::Levels;
use super::{Algorithm, CompressSpec};
use crate::config::issues::{size_field, Issues};
use crate::config::values::Scalar;
use crate::filter::Refs;
use serde::Deserialize;

/// zstd first (at level 1 both the fastest and the smallest on JSON), then brotli, then gzip
/// (everyone has it).
const DEFAULT_ALGORITHMS: [Algorithm; 3] = [Algorithm::Zstd, Algorithm::Brotli, Algorithm::Gzip];
/// Smaller bodies gain too little to pay for the encoder (Traefik's default).
const DEFAULT_MIN_SIZE: u64 = 1024;
/// Text formats; images, video and archives are compressed already.
const DEFAULT_TYPES: [&str; 9] = [
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "image/svg+xml",
    "application/x-ndjson",
];
/// Levels chosen for CPU at the edge (`cargo bench --bench compress`, 16 KiB JSON): level 1
/// of each comes to 12–16% of the body in 40–85 µs; the next levels worth having cost 1.5–3x
/// the CPU for 2–3 points.
const DEFAULT_LEVELS: Levels = Levels {
    gzip: 1,
    brotli: 1,
    zstd: 1,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompressFilter {
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) min_size: Option<Scalar>,
    pub(crate) types: Option<Vec<String>>,
    pub(crate) levels: Option<LevelsConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LevelsConfig {
    pub(crate) gzip: Option<u32>,
    pub(crate) br: Option<u32>,
    pub(crate) zstd: Option<i32>,
}

pub(crate) fn compile(
    raw: CompressFilter,
    path: &str,
    _refs: &Refs,
    issues: &mut Issues,
) -> Option<CompressSpec> {
    let before = issues.list.len();
    let algorithms = match raw.algorithms {
        None => DEFAULT_ALGORITHMS.to_vec(),
        Some(names) => {
            if names.is_empty() {
                issues.add(&format!("{path}.algorithms"), "needs at least one of br, zstd, gzip");
            }
            let mut out = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match Algorithm::from_token(name) {
                    Some(a) if out.contains(&a) => {
                        issues.add(&format!("{path}.algorithms[{i}]"), format!("{name} is listed twice"))
                    }
                    Some(a) => out.push(a),
                    None => issues.add(
                        &format!("{path}.algorithms[{i}]"),
                        format!("unknown algorithm {name:?}: expected br, zstd or gzip"),
                    ),
                }
            }
            out
        }
    };
    let min_size = size_field(raw.min_size, DEFAULT_MIN_SIZE, 0, &format!("{path}.min_size"), issues);
    let types: Vec<String> = match raw.types {
        None => DEFAULT_TYPES.map(str::to_string).to_vec(),
        Some(types) => types.into_iter().map(|t| t.trim().to_ascii_lowercase()).collect(),
    };
    for (i, pattern) in types.iter().enumerate() {
        let valid = pattern
            .split_once('/')
            .is_some_and(|(kind, sub)| !kind.is_empty() && kind != "*" && !sub.is_empty());
        if !valid {
            issues.add(
                &format!("{path}.types[{i}]"),
                format!("{pattern:?} is not a media type, range or suffix: e.g. text/html, text/*, application/*+json"),
            );
        }
    }
    let raw_levels = raw.levels.unwrap_or(LevelsConfig { gzip: None, br: None, zstd: None });
    let levels = Levels {
        gzip: raw_levels.gzip.unwrap_or(DEFAULT_LEVELS.gzip),
        brotli: raw_levels.br.unwrap_or(DEFAULT_LEVELS.brotli),
        zstd: raw_levels.zstd.unwrap_or(DEFAULT_LEVELS.zstd),
    };
    for (key, ok, range) in [
        ("gzip", (1..=9).contains(&levels.gzip), "1 to 9"),
        ("br", levels.brotli <= 11, "0 to 11"),
        ("zstd", (1..=19).contains(&levels.zstd), "1 to 19"),
    ] {
        if !ok {
            issues.add(&format!("{path}.levels.{key}"), format!("must be {range}"));
        }
    }
    (issues.list.len() == before).then_some(CompressSpec {
        algorithms,
        min_size,
        types,
        levels,
    })
}
