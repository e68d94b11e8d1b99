//! Where a route sends its requests: one upstream, or a weighted split across several (a
//! canary). Each target is a whole upstream with its own discovery, balancer, health and
//! retries.
//!
//! A request draws a point on `[0, 2^64)`: the hash of its sticky key when the split has one
//! and the request carries it, else a random number. Targets own consecutive ranges of that
//! line in config order, each as wide as its share of the weights. A key therefore keeps its
//! target while the weights hold, and moving weight between two neighbouring targets moves
//! only the keys in the range that changed hands (5% → 10% moves about 5% of them). The
//! sticky hash is seeded apart from the balancers' consistent hash, so the keys of one target
//! still spread over all its endpoints.

use super::balance::HashOn;
use super::Upstream;
use crate::context::{cookie, RequestCtx};
use crate::telemetry::{encode_family, Labels, MetricSet};
use http::HeaderMap;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::net::IpAddr;
use std::sync::Arc;

pub(crate) struct Target {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) weight: u32,
    /// The end of its range on the split's line (exclusive; the last target's is the end).
    end: u64,
    /// Requests sent to it from this route.
    chosen: Counter,
}

pub(crate) struct Split {
    targets: Box<[Target]>,
    sticky: Option<HashOn>,
}

/// Seeds the sticky hash apart from `hash_key`, the balancers' consistent hash.
const STICKY_SEED: u64 = 0x5bd1_e995_2c6b_8f3a;

impl Split {
    /// A route that proxies to one upstream.
    pub(crate) fn single(upstream: Arc<Upstream>) -> Split {
        Split {
            targets: Box::new([Target {
                upstream,
                weight: 1,
                end: u64::MAX,
                chosen: Counter::default(),
            }]),
            sticky: None,
        }
    }

    /// `targets` in config order with their weights (validated: not all zero); `None` for
    /// none at all, so a split always has a target to index.
    pub(crate) fn new(
        route: &str,
        targets: Vec<(Arc<Upstream>, u32)>,
        sticky: Option<HashOn>,
        metrics: &SplitMetrics,
    ) -> Option<Split> {
        if targets.is_empty() {
            return None;
        }
        let weights: Vec<u32> = targets.iter().map(|(_, weight)| *weight).collect();
        let targets = targets
            .into_iter()
            .zip(range_ends(&weights))
            .map(|((upstream, weight), end)| {
                let labels = vec![
                    ("route", route.to_string()),
                    ("upstream", upstream.name.to_string()),
                ];
                let chosen = metrics.requests.get_or_create(&labels).clone();
                Target {
                    upstream,
                    weight,
                    end,
                    chosen,
                }
            })
            .collect();
        Some(Split { targets, sticky })
    }

    pub(crate) fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub(crate) fn is_split(&self) -> bool {
        self.targets.len() > 1
    }

    /// The target of this request, chosen once: a filter that needs it early (a breaker per
    /// target) and the proxy that sends it agree.
    pub(crate) fn choose(&self, headers: &HeaderMap, ctx: &mut RequestCtx) -> usize {
        if let Some(index) = ctx.target {
            return index;
        }
        let index = if self.targets.len() == 1 {
            0
        } else {
            let point = self
                .sticky
                .as_ref()
                .and_then(|on| key_hash(on, headers, ctx, STICKY_SEED))
                .unwrap_or_else(|| fastrand::u64(..));
            self.index_of(point)
        };
        if self.targets.len() > 1 {
            self.targets[index].chosen.inc();
        }
        ctx.target = Some(index);
        index
    }

    fn index_of(&self, point: u64) -> usize {
        holder(self.targets.iter().map(|t| (t.weight, t.end)), point)
    }

    pub(crate) fn upstream(&self, index: usize) -> &Arc<Upstream> {
        &self.targets[index.min(self.targets.len() - 1)].upstream
    }

    /// A target drawn by weight alone, for requests no client is waiting for.
    pub(crate) fn draw(&self) -> &Arc<Upstream> {
        self.upstream(self.index_of(fastrand::u64(..)))
    }
}

/// Where each weight's range ends on `[0, 2^64)`, the ranges laid end to end in order.
fn range_ends(weights: &[u32]) -> Vec<u64> {
    let total: u128 = weights.iter().map(|w| u128::from(*w)).sum::<u128>().max(1);
    let mut before: u128 = 0;
    weights
        .iter()
        .map(|weight| {
            before += u128::from(*weight);
            ((before << 64) / total).min(u128::from(u64::MAX)) as u64
        })
        .collect()
}

/// The index of the range (weight, end) holding `point`; zero-weight ranges hold none, and
/// the very end belongs to the last range with weight.
fn holder(ranges: impl Iterator<Item = (u32, u64)> + Clone, point: u64) -> usize {
    ranges
        .clone()
        .position(|(weight, end)| weight > 0 && point < end)
        .unwrap_or_else(|| {
            ranges
                .enumerate()
                .filter(|(_, (weight, _))| *weight > 0)
                .last()
                .map_or(0, |(i, _)| i)
        })
}

/// The hash of a request's key (`None` when it lacks the part), with `seed`.
pub(crate) fn key_hash(
    on: &HashOn,
    headers: &HeaderMap,
    ctx: &RequestCtx,
    seed: u64,
) -> Option<u64> {
    let hash = |bytes: &[u8]| {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(seed).hash_one(bytes)
    };
    match on {
        HashOn::Header(name) => Some(hash(headers.get(name)?.as_bytes())),
        HashOn::Cookie(name) => Some(hash(cookie(headers, name)?.as_bytes())),
        HashOn::ClientIp => Some(match ctx.client_ip {
            IpAddr::V4(ip) => hash(&ip.octets()),
            IpAddr::V6(ip) => hash(&ip.octets()),
        }),
        HashOn::Claim(name) => Some(hash(ctx.claim(name)?.as_bytes())),
    }
}

/// What splits report: requests by route and chosen upstream.
#[derive(Default)]
pub(crate) struct SplitMetrics {
    requests: Family<Labels, Counter>,
}

impl MetricSet for SplitMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_family(
            encoder,
            "split_requests",
            "Requests a weighted split sent to each of its upstreams, by route and upstream",
            &self.requests,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(weights: &[u32], point: u64) -> usize {
        let ends = range_ends(weights);
        holder(weights.iter().copied().zip(ends.iter().copied()), point)
    }

    #[test]
    fn ranges_follow_the_weights_and_skip_zero() {
        assert_eq!(index(&[95, 5], 0), 0);
        assert_eq!(index(&[95, 5], u64::MAX), 1);
        assert_eq!(index(&[95, 5], u64::MAX / 100 * 94), 0);
        assert_eq!(index(&[95, 5], u64::MAX / 100 * 96), 1);
        assert_eq!(index(&[0, 5], 0), 1);
        assert_eq!(index(&[5, 0], u64::MAX), 0);
        assert_eq!(index(&[1, 0, 1], u64::MAX / 2 + 1), 2);
        // Scale does not matter: 19:1 is 95:5.
        for point in [0, u64::MAX / 3, u64::MAX / 100 * 95 + 7, u64::MAX] {
            assert_eq!(index(&[19, 1], point), index(&[95, 5], point));
        }
    }
}
