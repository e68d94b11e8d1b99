//! What rate limits report: checks their shared store could not answer.

use crate::telemetry::{encode_family, Labels, MetricSet};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Default)]
pub(crate) struct RateLimitMetrics {
    /// By filter owner and the `on_store_error` mode applied.
    pub(crate) store_failures: Family<Labels, Counter>,
}

impl MetricSet for RateLimitMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "rate_limit_store_failures",
            "Rate-limit checks the shared store could not answer, by filter and on_store_error mode",
            &self.store_failures,
        )
    }
}
