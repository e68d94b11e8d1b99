//! Metrics of the running config's parts: upstreams registered by name and read at scrape
//! time, and the metric sets filter kinds define in their own folders.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::sync::{Arc, Mutex};

/// Named parts of the running config (upstreams, caches), read at scrape time and not kept
/// alive by the registry: parts of an old config drop out when they are freed.
pub(crate) struct Registered<T: ?Sized>(Arc<Mutex<Vec<Named<T>>>>);

/// A registered part's name and a reference that does not keep it alive.
type Named<T> = (String, std::sync::Weak<T>);

impl<T: ?Sized> Clone for Registered<T> {
    fn clone(&self) -> Self {
        Registered(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> Default for Registered<T> {
    fn default() -> Self {
        Registered(Arc::default())
    }
}

impl<T: ?Sized> std::fmt::Debug for Registered<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registered")
    }
}

impl<T: ?Sized> Registered<T> {
    /// Adds `item` under `name`; an item already listed (carried over a reload) is not added
    /// twice.
    pub(crate) fn register(&self, name: &str, item: &Arc<T>) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|(_, weak)| weak.strong_count() > 0);
        let known = list
            .iter()
            .any(|(_, weak)| std::ptr::addr_eq(weak.as_ptr(), Arc::as_ptr(item)));
        if !known {
            list.push((name.to_string(), Arc::downgrade(item)));
        }
    }

    /// The live items; of several under one name, the latest registered (the one a reload
    /// replaced may live on while its last requests finish).
    pub(crate) fn live(&self) -> Vec<(String, Arc<T>)> {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, Arc<T>)> = Vec::with_capacity(list.len());
        for (name, weak) in list.iter() {
            let Some(item) = weak.upgrade() else {
                continue;
            };
            match out.iter_mut().find(|(known, _)| known == name) {
                Some(slot) => slot.1 = item,
                None => out.push((name.clone(), item)),
            }
        }
        out
    }
}

/// What an upstream reports: its discovery's progress and its endpoints' health.
pub(crate) struct UpstreamState {
    /// Unix seconds of the last successful registry read.
    pub(crate) discovery_last_success: Option<f64>,
    pub(crate) discovery_errors: u64,
    /// Endpoint address and whether it passes health checks (health-checked upstreams only).
    pub(crate) endpoint_health: Vec<(String, bool)>,
}

pub(crate) trait UpstreamStateSource: Send + Sync {
    fn upstream_state(&self) -> UpstreamState;
}

/// The upstreams of the running config, by name.
pub(crate) type UpstreamRegistry = Registered<dyn UpstreamStateSource>;

impl Collector for UpstreamRegistry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats: Vec<(String, UpstreamState)> = self
            .live()
            .into_iter()
            .map(|(name, upstream)| (name, upstream.upstream_state()))
            .collect();
        let mut metric = encoder.encode_descriptor(
            "discovery_last_success_timestamp",
            "Unix time of the last successful read of each upstream's registry",
            None,
            MetricType::Gauge,
        )?;
        for (upstream, s) in &stats {
            if let Some(time) = s.discovery_last_success {
                prometheus_client::metrics::gauge::ConstGauge::new(time)
                    .encode(metric.encode_family(&[("upstream", upstream.clone())])?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "discovery_errors",
            "Failed reads of each upstream's registry (the last endpoints were kept)",
            None,
            MetricType::Counter,
        )?;
        for (upstream, s) in &stats {
            ConstCounter::new(s.discovery_errors)
                .encode(metric.encode_family(&[("upstream", upstream.clone())])?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "upstream_endpoint_healthy",
            "1 when an endpoint passes its active health checks, by upstream and endpoint",
            None,
            MetricType::Gauge,
        )?;
        for (upstream, s) in &stats {
            for (endpoint, healthy) in &s.endpoint_health {
                let labels = [
                    ("upstream", upstream.clone()),
                    ("endpoint", endpoint.clone()),
                ];
                prometheus_client::metrics::gauge::ConstGauge::new(i64::from(*healthy))
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Metric families a part of the gateway defines next to its code (a filter kind's
/// `metrics.rs`): made on first use, kept for the life of the process so that series survive
/// reloads, and encoded at every scrape.
pub(crate) trait MetricSet: Default + Send + Sync + 'static {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error>;
}

/// A [`MetricSet`] with its type erased, so sets of every kind share one list.
trait AnySet: Send + Sync {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error>;
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

impl<T: MetricSet> AnySet for T {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        MetricSet::encode(self, encoder)
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// One of each [`MetricSet`] type, registered with the process's registry as one collector.
#[derive(Clone, Default)]
pub(crate) struct MetricSets(Arc<Mutex<Vec<TypedSet>>>);

/// A set and the type it was made as.
type TypedSet = (std::any::TypeId, Arc<dyn AnySet>);

impl std::fmt::Debug for MetricSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricSets")
    }
}

impl MetricSets {
    /// The set of type `T`, made the first time it is asked for. Called when filters are
    /// built, never per request.
    pub(crate) fn get<T: MetricSet>(&self) -> Arc<T> {
        let mut sets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let id = std::any::TypeId::of::<T>();
        let found = sets
            .iter()
            .find(|(known, _)| *known == id)
            .and_then(|(_, set)| Arc::clone(set).into_any().downcast::<T>().ok());
        found.unwrap_or_else(|| {
            let set = Arc::new(T::default());
            sets.push((id, Arc::clone(&set) as Arc<dyn AnySet>));
            set
        })
    }
}

impl Collector for MetricSets {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sets: Vec<Arc<dyn AnySet>> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, set)| Arc::clone(set))
            .collect();
        for set in sets {
            set.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// Encodes `family` under `name` with `help`, for [`MetricSet`]s.
pub(crate) fn encode_family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    family: &M,
) -> Result<(), std::fmt::Error> {
    family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)
}
