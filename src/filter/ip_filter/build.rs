//! Building an `ip_filter`: inline prefixes become range sets; a list file is watched by one
//! task per path and interval, carried over reloads while both stay the same.

use super::list_file::ListFile;
use super::metrics::IpFilterMetrics;
use super::prefixes::PrefixSet;
use super::{IpFilter, IpFilterSpec, Lists};
use crate::filter::{BuildCtx, Filter, StateKey};
use std::path::Path;
use std::sync::Arc;

/// The runtime filter for `spec` at `owner` (route or named filter).
pub(crate) fn build(
    spec: &IpFilterSpec,
    ctx: &mut BuildCtx,
    owner: &str,
    _position: usize,
) -> Arc<dyn Filter> {
    let metrics = ctx.metrics.sets.get::<IpFilterMetrics>();
    let mut lists = |inline: &[ipnet::IpNet], file: Option<&Path>| Lists {
        inline: PrefixSet::new(inline),
        file: file.map(|path| {
            let failures = metrics
                .list_failures
                .get_or_create(&vec![("file", path.display().to_string())])
                .clone();
            let list = ctx
                .states
                .carry(ctx.prev, file_key(spec, path), || ListFile::new(path, failures));
            list.watch(spec.file_interval, ctx.control);
            list
        }),
    };
    let deny = lists(&spec.deny, spec.deny_file.as_deref());
    let allow = spec
        .allows_only_listed()
        .then(|| lists(&spec.allow, spec.allow_file.as_deref()));
    let counter = |reason: &str| {
        metrics
            .refused
            .get_or_create(&vec![("filter", owner.to_string()), ("reason", reason.to_string())])
            .clone()
    };
    Arc::new(IpFilter {
        deny,
        allow,
        denied: counter("deny"),
        not_allowed: counter("not_allowed"),
    })
}

/// The keys of the list files the filter watches.
pub(crate) fn state_keys(spec: &IpFilterSpec) -> Vec<StateKey> {
    let allow = spec.allows_only_listed().then_some(spec.allow_file.as_deref());
    [spec.deny_file.as_deref(), allow.flatten()]
        .into_iter()
        .flatten()
        .map(|path| file_key(spec, path))
        .collect()
}

/// A list file's key: one watcher (and last good list) per path and interval, whichever
/// filters read it.
fn file_key(spec: &IpFilterSpec, path: &Path) -> StateKey {
    StateKey {
        kind: "ip_filter",
        owner: path.display().to_string(),
        slot: "file".to_string(),
        id: format!("ip_filter/file/{}/{:?}", path.display(), spec.file_interval),
    }
}
