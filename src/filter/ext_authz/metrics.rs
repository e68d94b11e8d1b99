//! What ext_authz reports: decisions by kind, and how long the service took.

use crate::telemetry::{encode_family, Labels, MetricSet};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds, in seconds, of the service latency buckets.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub(crate) struct ExtAuthzMetrics {
    /// By filter owner and decision: `allowed`, `denied`, `cached`, `error_denied`,
    /// `error_allowed`.
    pub(crate) decisions: Family<Labels, Counter>,
    /// By filter owner: time to the service's answer (or the timeout).
    pub(crate) latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for ExtAuthzMetrics {
    fn default() -> Self {
        ExtAuthzMetrics {
            decisions: Family::default(),
            latency: Family::new_with_constructor(histogram),
        }
    }
}

impl MetricSet for ExtAuthzMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "ext_authz_decisions",
            "ext_authz decisions by filter and kind (allowed, denied, cached, error_denied, error_allowed)",
            &self.decisions,
        )?;
        encode_family(
            encoder,
            "ext_authz_duration_seconds",
            "Time the authorization service took to answer, by filter",
            &self.latency,
        )
    }
}
