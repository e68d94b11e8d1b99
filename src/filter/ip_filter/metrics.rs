//! What ip_filter reports: refused requests, and list files that could not be applied.

use crate::telemetry::{encode_family, Labels, MetricSet};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Default)]
pub(crate) struct IpFilterMetrics {
    /// By filter owner and reason (`deny`: on a deny list; `not_allowed`: on no allow list).
    pub(crate) refused: Family<Labels, Counter>,
    /// By file.
    pub(crate) list_failures: Family<Labels, Counter>,
}

impl MetricSet for IpFilterMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "ip_filter_refused",
            "Requests ip_filter refused, by filter and reason (deny, not_allowed)",
            &self.refused,
        )?;
        encode_family(
            encoder,
            "ip_filter_list_failures",
            "Reads of an ip_filter list file that were not applied (unreadable, or a bad line); the last good list stayed",
            &self.list_failures,
        )
    }
}
