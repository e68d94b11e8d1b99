//! What compress reports: bytes into and out of each algorithm.

use crate::telemetry::{encode_family, Labels, MetricSet};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Default)]
pub(crate) struct CompressMetrics {
    /// By algorithm (`br`, `zstd`, `gzip`).
    pub(crate) bytes_in: Family<Labels, Counter>,
    pub(crate) bytes_out: Family<Labels, Counter>,
}

impl MetricSet for CompressMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "compress_bytes_in",
            "Response body bytes compressed, by algorithm",
            &self.bytes_in,
        )?;
        encode_family(
            encoder,
            "compress_bytes_out",
            "Compressed bytes sent, by algorithm",
            &self.bytes_out,
        )
    }
}
