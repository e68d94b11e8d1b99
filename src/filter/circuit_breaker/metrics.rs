//! What circuit breakers report: their state and transitions, by route and upstream.

use crate::telemetry::{encode_family, Labels, MetricSet};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Default)]
pub(crate) struct BreakerMetrics {
    /// 0 closed, 1 open, 2 half-open, by route and upstream.
    pub(crate) state: Family<Labels, Gauge>,
    /// Transitions into each state, by route, upstream and state.
    pub(crate) transitions: Family<Labels, Counter>,
}

impl MetricSet for BreakerMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "circuit_breaker_state",
            "Circuit breaker state by route and upstream: 0 closed, 1 open, 2 half-open",
            &self.state,
        )?;
        encode_family(
            encoder,
            "circuit_breaker_transitions",
            "Circuit breaker transitions by route, upstream and new state",
            &self.transitions,
        )
    }
}
