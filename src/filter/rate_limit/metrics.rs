//! What rate limits report: their decisions, and checks their shared store could not answer.

use crate::telemetry::{encode_family, Labels, MetricSet};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Default)]
pub(crate) struct RateLimitMetrics {
    /// By filter owner and result.
    pub(crate) decisions: Family<Labels, Counter>,
    /// By filter owner and the `on_store_error` mode applied.
    pub(crate) store_failures: Family<Labels, Counter>,
}

/// One filter's decision counters, made when it is built: a request only increments one.
pub(crate) struct Decisions {
    pub(crate) allowed: Counter,
    pub(crate) limited: Counter,
    /// The key was missing (`on_missing_key: skip` or `reject`).
    pub(crate) no_key: Counter,
    /// The shared store failed and `on_store_error` decided without it (`fail_open`,
    /// `fail_closed`); with `local`, the local decision is counted instead.
    pub(crate) store_error: Counter,
}

impl RateLimitMetrics {
    pub(crate) fn decisions(&self, filter: &str) -> Decisions {
        let counter = |result: &str| {
            let labels = vec![("filter", filter.to_string()), ("result", result.to_string())];
            self.decisions.get_or_create(&labels).clone()
        };
        Decisions {
            allowed: counter("allowed"),
            limited: counter("limited"),
            no_key: counter("no_key"),
            store_error: counter("store_error"),
        }
    }
}

impl MetricSet for RateLimitMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "rate_limit_decisions",
            "Rate-limit decisions by filter and result (allowed, limited, no_key, store_error)",
            &self.decisions,
        )?;
        encode_family(
            encoder,
            "rate_limit_store_failures",
            "Rate-limit checks the shared store could not answer, by filter and on_store_error mode",
            &self.store_failures,
        )
    }
}
