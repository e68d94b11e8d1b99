//! An upstream: a named set of endpoints fed by a discovery backend, a balancer over those that
//! take traffic (healthy, see `health.rs`), and pooled client connections to each. `send`
//! performs one exchange with one endpoint and maps every failure onto the error policy.

mod balance;
mod endpoint;
mod exchange;
mod health;
mod outlier;
mod pool;
mod retry;
pub(crate) mod split;
mod stats;

pub use balance::{hash_key, Balancer, HashOn, Strategy, BALANCE_SEED};
pub use endpoint::Endpoint;
pub(crate) use health::{HealthSpec, HealthState};
pub(crate) use outlier::OutlierSpec;
pub(crate) use retry::{RetryBudget, RetryMetrics, RetryOn, RetryPolicy};

use crate::discovery::{DiscoverySpec, EndpointSet, Feed};
use crate::telemetry::{Labels, UpstreamMeter};
use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{watch, Notify};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// TCP connect.
    pub(crate) connect: Duration,
    /// From the request being sent to the response head arriving.
    pub(crate) response: Duration,
    /// Longest pause between two pieces of the response body.
    pub(crate) idle: Duration,
}

/// The settings an upstream is built from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpstreamSpec {
    pub(crate) name: String,
    pub(crate) discovery: DiscoverySpec,
    /// Report the upstream degraded after this long without a successful registry read.
    pub(crate) max_stale: Option<Duration>,
    pub(crate) protocol: Protocol,
    /// TLS to the endpoints; `None` for plaintext.
    pub(crate) tls: Option<crate::tls::UpstreamTls>,
    pub(crate) timeouts: Timeouts,
    pub(crate) balance: Strategy,
    pub(crate) max_idle_per_endpoint: usize,
    pub(crate) retries: Option<RetryPolicy>,
    pub(crate) outlier: Option<OutlierSpec>,
    pub(crate) health: Option<HealthSpec>,
}

/// What of a running upstream a reload keeps when the new config gives its name another spec
/// (or the same). The reload and the state report of `check --diff` both decide by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Carry {
    /// Nothing changed: the upstream is kept whole, its pooled connections and outlier
    /// ejections with it.
    pub(crate) whole: bool,
    /// Discovery is unchanged: its running feed and last known endpoint set are kept.
    pub(crate) discovery: bool,
    /// Health checking is on and unchanged: the endpoints' health records are kept.
    pub(crate) health: bool,
}

impl UpstreamSpec {
    /// What the running upstream built from `old` lends to one built from `self`.
    pub(crate) fn carry_from(&self, old: &UpstreamSpec) -> Carry {
        Carry {
            whole: old == self,
            discovery: old.discovery == self.discovery,
            health: self.health.is_some() && old.health == self.health,
        }
    }
}

pub(crate) struct Upstream {
    pub(crate) name: Arc<str>,
    pub(crate) spec: UpstreamSpec,
    /// Every endpoint discovery lists, healthy or not.
    members: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Balances over the endpoints that take traffic (see [`Upstream::rebalance`]).
    balancer: ArcSwap<Balancer>,
    /// Serialises rebuilding the two above (discovery updates and health changes).
    membership: Mutex<()>,
    /// Too few endpoints are healthy, so all of them take traffic: 0 no, 1 because they are
    /// not checked yet, 2 because checks failed.
    panic: AtomicU8,
    pub(crate) feed: Arc<Feed>,
    workers: usize,
    pub(crate) retry_budget: RetryBudget,
    /// The clock of outlier ejections.
    epoch: std::time::Instant,
    /// Wakes the health checker: new endpoints to check.
    joined: Arc<Notify>,
    /// `upstream_retries_total`, by upstream and reason; lives as long as the process.
    retried: Family<Labels, Counter>,
    /// Exchange latency and errors (`upstream_request_duration_seconds`, `upstream_errors`).
    pub(crate) meter: UpstreamMeter,
    /// Dropped with the upstream; ends its background tasks.
    _stop: watch::Sender<()>,
}

impl Upstream {
    /// Builds the upstream over `feed` and starts its tasks on the runtime behind `handle`.
    /// `prev`, an earlier upstream of the same name, lends its endpoints' health records.
    pub(crate) fn start(
        spec: UpstreamSpec,
        feed: Arc<Feed>,
        prev: Option<&Upstream>,
        workers: usize,
        handle: &tokio::runtime::Handle,
        retried: Family<Labels, Counter>,
        meter: UpstreamMeter,
    ) -> Arc<Upstream> {
        let (stop_tx, stop_rx) = watch::channel(());
        let upstream = Arc::new(Upstream {
            name: spec.name.as_str().into(),
            members: ArcSwap::from_pointee(Vec::new()),
            balancer: ArcSwap::from_pointee(Balancer::new(Vec::new(), spec.balance.clone())),
            membership: Mutex::new(()),
            panic: AtomicU8::new(0),
            spec,
            feed,
            workers,
            retry_budget: RetryBudget::default(),
            epoch: std::time::Instant::now(),
            joined: Arc::new(Notify::new()),
            retried,
            meter,
            _stop: stop_tx,
        });
        let known = prev
            .filter(|p| upstream.spec.carry_from(&p.spec).health)
            .map(|p| p.members.load_full());
        let unknown = upstream.apply(
            &upstream.feed.current(),
            known.as_deref().map(Vec::as_slice),
        );
        let rx = upstream.feed.subscribe();
        handle.spawn(follow(Arc::downgrade(&upstream), rx, stop_rx.clone()));
        if let Some(spec) = upstream.spec.health.clone() {
            let joined = Arc::clone(&upstream.joined);
            // Endpoints whose health is known from the replaced upstream wait for the next
            // round; a reload does not cause a burst of checks.
            let first_round_now = unknown;
            handle.spawn(check_health(
                Arc::downgrade(&upstream),
                spec,
                joined,
                first_round_now,
                stop_rx,
            ));
        }
        upstream
    }

    /// Every endpoint, whether it takes traffic or not.
    pub(crate) fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.members.load().to_vec()
    }

    /// Whether discovery has not heard from its registry for longer than `max_stale`.
    pub(crate) fn is_degraded(&self) -> bool {
        self.spec
            .max_stale
            .is_some_and(|max_stale| self.feed.status.is_stale(max_stale, self.feed.started))
    }

    /// Whether too few endpoints are healthy and traffic goes to all of them.
    pub(crate) fn is_panicking(&self) -> bool {
        self.panic.load(Ordering::Relaxed) != 0
    }

    /// The next endpoint by the upstream's strategy (`key`: the request's hash for consistent
    /// hashing), skipping ejected ones (all ejected: any).
    pub(crate) fn pick(&self) -> Option<Arc<Endpoint>> {
        self.pick_for(None)
    }

    pub(crate) fn pick_for(&self, key: Option<u64>) -> Option<Arc<Endpoint>> {
        let balancer = self.balancer.load();
        let first = balancer.pick(key)?;
        if self.spec.outlier.is_none() {
            return Some(Arc::clone(first));
        }
        let now = self.now();
        if !first.outlier.is_ejected(now) {
            return Some(Arc::clone(first));
        }
        (1..balancer.endpoints().len())
            .filter_map(|_| balancer.pick(None))
            .find(|e| !e.outlier.is_ejected(now))
            .or(Some(first))
            .cloned()
    }

    /// Counts a retry and why it was made.
    pub(crate) fn count_retry(&self, reason: RetryOn) {
        let labels = vec![
            ("upstream", self.name.to_string()),
            ("reason", reason.label()),
        ];
        self.retried.get_or_create(&labels).inc();
    }

    /// For a retry: an endpoint other than `previous` when there is one.
    pub(crate) fn pick_other(&self, previous: SocketAddr) -> Option<Arc<Endpoint>> {
        let count = self.balancer.load().endpoints().len();
        let mut fallback = None;
        for _ in 0..count.max(1) {
            let endpoint = self.pick()?;
            if endpoint.address != previous {
                return Some(endpoint);
            }
            fallback = Some(endpoint);
        }
        fallback
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// One exchange's outcome, for outlier ejection.
    pub(crate) fn record(&self, endpoint: &Endpoint, failed: bool) {
        let Some(spec) = &self.spec.outlier else {
            return;
        };
        if !endpoint.outlier.record(spec, failed) {
            if !failed {
                endpoint.outlier.forgive();
            }
            return;
        }
        let now = self.now();
        let balancer = self.balancer.load();
        let total = balancer.endpoints().len();
        let ejected = balancer
            .endpoints()
            .iter()
            .filter(|e| e.outlier.is_ejected(now))
            .count();
        if (ejected + 1) * 100 > total * spec.max_ejected_percent as usize {
            tracing::debug!(upstream = %self.name, endpoint = %endpoint.address, "not ejected: max_ejected_percent reached");
            return;
        }
        let length = endpoint.outlier.eject(spec, now);
        tracing::warn!(
            upstream = %self.name,
            endpoint = %endpoint.address,
            eject_for_ms = length.as_millis() as u64,
            "endpoint ejected after consecutive failures"
        );
    }

    /// Whether `endpoint` is ejected now (admin API).
    pub(crate) fn is_ejected(&self, endpoint: &Endpoint) -> bool {
        endpoint.outlier.is_ejected(self.now())
    }

    /// Takes `set` as the upstream's endpoints. Endpoints still present keep their state
    /// (pools, outlier record); health records follow the address, also from `lent` (the
    /// endpoints of the upstream this one replaces). Returns whether any endpoint is new.
    fn apply(&self, set: &EndpointSet, lent: Option<&[Arc<Endpoint>]>) -> bool {
        let _guard = self.membership.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.members.load();
        let known: HashMap<SocketAddr, &Arc<Endpoint>> = lent
            .into_iter()
            .flatten()
            .chain(current.iter())
            .map(|e| (e.address, e))
            .collect();
        let mut joined = false;
        let members: Vec<Arc<Endpoint>> = set
            .iter()
            .map(|d| match known.get(&d.address) {
                Some(e) if e.weight == d.weight && lent.is_none() => Arc::clone(e),
                previous => {
                    let endpoint = Endpoint::new(
                        d.address,
                        d.weight,
                        self.workers,
                        self.spec.max_idle_per_endpoint,
                    );
                    match previous {
                        Some(e) => endpoint.health.copy_from(&e.health),
                        None => joined = true,
                    }
                    Arc::new(endpoint)
                }
            })
            .collect();
        self.members.store(Arc::new(members));
        self.rebalance();
        tracing::debug!(upstream = %self.name, endpoints = set.len(), "endpoint set applied");
        joined
    }

    /// Swaps in a balancer over the endpoints that take traffic: the healthy ones, or all of
    /// them when fewer than `panic_threshold` percent are healthy (better to spread the load
    /// than to crush the few). Callers hold `membership`.
    fn rebalance(&self) {
        let members = self.members.load();
        let (routable, panicking) = match &self.spec.health {
            None => (members.to_vec(), false),
            Some(spec) => {
                let healthy: Vec<Arc<Endpoint>> = members
                    .iter()
                    .filter(|e| e.health.state() == HealthState::Healthy)
                    .cloned()
                    .collect();
                let threshold = members.len() * spec.panic_threshold as usize;
                if healthy.len() * 100 < threshold {
                    (members.to_vec(), true)
                } else {
                    (healthy, false)
                }
            }
        };
        // Not yet checked (start-up) is no cause for alarm; failed checks are.
        let alarming = panicking
            && members
                .iter()
                .any(|e| e.health.state() == HealthState::Unhealthy);
        let state = u8::from(panicking) + u8::from(alarming);
        match (self.panic.swap(state, Ordering::Relaxed), state) {
            (0 | 1, 2) => {
                tracing::warn!(upstream = %self.name, endpoints = members.len(), "too few healthy endpoints; balancing over all of them")
            }
            (2, 0) => tracing::info!(upstream = %self.name, "enough endpoints healthy again"),
            _ => {}
        }
        self.balancer
            .store(Arc::new(Balancer::new(routable, self.spec.balance.clone())));
    }
}

/// Applies each endpoint set the discovery backend publishes, until the upstream is dropped.
async fn follow(
    upstream: Weak<Upstream>,
    mut rx: watch::Receiver<EndpointSet>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        let set = rx.borrow_and_update().clone();
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        if upstream.apply(&set, None) && upstream.spec.health.is_some() {
            upstream.joined.notify_one();
        }
    }
}

/// Checks every endpoint each round, and new ones as soon as they join, until the upstream
/// is dropped.
async fn check_health(
    upstream: Weak<Upstream>,
    spec: HealthSpec,
    joined: Arc<Notify>,
    first_round_now: bool,
    mut stop: watch::Receiver<()>,
) {
    let mut round_now = first_round_now;
    loop {
        if !round_now {
            tokio::select! {
                _ = tokio::time::sleep(spec.next_round()) => {}
                _ = joined.notified() => {}
                _ = stop.changed() => return,
            }
        }
        round_now = false;
        let Some(live) = upstream.upgrade() else {
            return;
        };
        let mut checks = tokio::task::JoinSet::new();
        for endpoint in live.endpoints() {
            let (live, spec) = (Arc::clone(&live), spec.clone());
            checks.spawn(async move {
                let outcome = live.probe(&endpoint, &spec).await;
                (endpoint, outcome)
            });
        }
        // Each change is applied as soon as it is known, not after the round's slowest check
        // (which may take up to `timeout`).
        while let Some(Ok((endpoint, outcome))) = checks.join_next().await {
            let passed = matches!(outcome, Ok(status) if spec.passes(status));
            if let Some(state) = endpoint.health.record(&spec, passed) {
                let reason = match &outcome {
                    Ok(status) => status.as_str().to_string(),
                    Err(error) => error.clone(),
                };
                tracing::info!(upstream = %live.name, endpoint = %endpoint.address, state = state.as_str(), %reason, "endpoint health changed");
                let _guard = live.membership.lock().unwrap_or_else(|e| e.into_inner());
                live.rebalance();
            }
        }
    }
}
