//! Building a `compress` filter: the spec and the byte counters of each algorithm.

use super::encode::Tally;
use super::metrics::CompressMetrics;
use super::{Compress, CompressSpec};
use crate::filter::{BuildCtx, Filter};
use std::sync::Arc;

pub(crate) fn build(
    spec: &CompressSpec,
    ctx: &mut BuildCtx,
    _owner: &str,
    _position: usize,
) -> Arc<dyn Filter> {
    let metrics = ctx.metrics.sets.get::<CompressMetrics>();
    let tallies = spec
        .algorithms
        .iter()
        .map(|&algorithm| {
            let labels = vec![("algorithm", algorithm.token().to_string())];
            let tally = Tally {
                bytes_in: metrics.bytes_in.get_or_create(&labels).clone(),
                bytes_out: metrics.bytes_out.get_or_create(&labels).clone(),
            };
            (algorithm, tally)
        })
        .collect();
    Arc::new(Compress {
        spec: spec.clone(),
        tallies,
    })
}
