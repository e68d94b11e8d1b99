//! What cache filters report at each scrape: entries, bytes, hits, misses and evictions, by
//! filter (route or named filter).

use super::store::{CacheStats, CacheStore};
use crate::telemetry::{MetricSet, Registered};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// The stores of the running config, read at scrape time; a store a reload dropped drops out.
#[derive(Default)]
pub(crate) struct CacheMetrics(pub Registered<CacheStore>);

type Field = fn(&CacheStats) -> u64;

const GAUGES: [(&str, &str, Field); 2] = [
    ("cache_entries", "Stored entries by cache filter", |s| {
        s.entries
    }),
    ("cache_bytes", "Bytes held by cache filter", |s| s.bytes),
];

const COUNTERS: [(&str, &str, Field); 3] = [
    ("cache_hits", "Requests answered from the cache", |s| s.hits),
    (
        "cache_misses",
        "Cacheable requests that went upstream",
        |s| s.misses,
    ),
    (
        "cache_evictions",
        "Entries evicted to stay within max_size",
        |s| s.evictions,
    ),
];

impl MetricSet for CacheMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats: Vec<(String, CacheStats)> = self
            .0
            .live()
            .into_iter()
            .map(|(name, store)| (name, store.stats()))
            .collect();
        for (name, help, field) in GAUGES {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (filter, s) in &stats {
                ConstGauge::new(field(s) as i64)
                    .encode(metric.encode_family(&[("filter", filter.clone())])?)?;
            }
        }
        for (name, help, field) in COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (filter, s) in &stats {
                ConstCounter::new(field(s))
                    .encode(metric.encode_family(&[("filter", filter.clone())])?)?;
            }
        }
        Ok(())
    }
}
