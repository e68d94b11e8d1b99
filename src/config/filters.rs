//! Filters in the config: route `filters:` entries, named filters, and JWT providers.

use super::issues::{named_entries, unknown, Issues};
pub(crate) use crate::filter::{FilterEntry, FilterSpec};
use crate::filter::{Refs, Sharing, ENTRY_KEYS};

/// A route's filter: its own, or a named one shared with other routes.
#[derive(Debug, Clone)]
pub(crate) enum FilterRef {
    Named(String),
    Inline(FilterSpec),
}

/// What filter entries may refer to: named filters (for `use`), JWT providers, stores.
pub(super) struct FilterRefs<'a> {
    /// Named filters defined so far, for `use`.
    pub(crate) named: &'a [(String, FilterSpec)],
    pub(crate) kinds: Refs<'a>,
}

pub(super) fn compile_named_filters(
    map: serde_yaml::Mapping,
    refs: &FilterRefs,
    issues: &mut Issues,
) -> Vec<(String, FilterSpec)> {
    let mut out = Vec::new();
    for (name, path, value) in named_entries(map, "filters", "filter", issues) {
        let Some(entry) = issues.item::<FilterEntry>(value, &path) else {
            continue;
        };
        let refs = FilterRefs {
            named: &[],
            kinds: Refs { ..refs.kinds },
        };
        match compile_filter(entry, &path, &refs, issues) {
            Some(FilterRef::Inline(spec)) => out.push((name, spec)),
            Some(FilterRef::Named(_)) => {
                issues.add(&path, "a named filter cannot itself be a `use`")
            }
            None => {}
        }
    }
    out
}

/// One `filters:` entry.
pub(super) fn compile_filter(
    mut entry: FilterEntry,
    path: &str,
    refs: &FilterRefs,
    issues: &mut Issues,
) -> Option<FilterRef> {
    let known = refs.named;
    if entry.keys_set() != 1 {
        issues.add(
            path,
            format!(
                "a filter entry needs exactly one of {}",
                ENTRY_KEYS.join(", ")
            ),
        );
        return None;
    }
    if let Some(name) = entry.use_name.take() {
        if !known.iter().any(|(known, _)| *known == name) {
            let names = known.iter().map(|(n, _)| n.as_str());
            issues.add(&format!("{path}.use"), unknown("filter", &name, names));
            return None;
        }
        return Some(FilterRef::Named(name));
    }
    entry
        .compile(path, &refs.kinds, issues)
        .map(FilterRef::Inline)
}

/// A `filters:` list at `path` (a route's or a listener's). Kinds that work for a route's
/// upstream (a breaker, a cache) are refused where there is none: `proxies` is false.
pub(super) fn compile_filter_list(
    entries: Vec<FilterEntry>,
    path: &str,
    refs: &FilterRefs,
    proxies: bool,
    issues: &mut Issues,
) -> Vec<FilterRef> {
    entries
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
                if spec.sharing() != Sharing::Shared {
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
        .collect()
}
