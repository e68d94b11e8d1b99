//! Picking an endpoint. Everything is computed once per endpoint-set change, so a pick is a
//! few loads:
//! - `round_robin`: a schedule from the smooth weighted algorithm (nginx's): one atomic
//!   increment and one index; heavy endpoints are spread out rather than picked in bursts.
//! - `random`: a random slot of the same schedule (so weights hold).
//! - `least_request`: power of two choices: two distinct weighted random candidates, the one
//!   with fewer requests in flight per unit of weight wins. Distinct, so that with few
//!   endpoints a busy one is not picked just because it was drawn twice.
//! - `consistent_hash`: a ring of points per endpoint (in proportion to weight); a key goes
//!   to the first point at or after its hash, so removing one of N endpoints moves about 1/N
//!   of the keys. Requests without a key fall back to round robin.

use super::Endpoint;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

/// Which endpoint a request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    Random,
    LeastRequest,
    ConsistentHash(HashOn),
}

/// What a consistent-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(http::HeaderName),
    Cookie(String),
    ClientIp,
    Claim(String),
}

/// Ring points per unit of weight.
const POINTS_PER_WEIGHT: u32 = 160;
/// Most points per endpoint, whatever its weight.
const MAX_POINTS: u32 = 16_000;

pub struct Balancer {
    endpoints: Vec<Arc<Endpoint>>,
    strategy: Strategy,
    schedule: Box<[u32]>,
    next: AtomicUsize,
    /// (point, endpoint index), sorted by point; consistent hashing only.
    ring: Box<[(u64, u32)]>,
}

impl Balancer {
    pub fn new(endpoints: Vec<Arc<Endpoint>>, strategy: Strategy) -> Balancer {
        let schedule = smooth_schedule(&endpoints.iter().map(|e| e.weight).collect::<Vec<_>>());
        let ring = match strategy {
            Strategy::ConsistentHash(_) => ring(&endpoints),
            _ => Box::new([]),
        };
        Balancer {
            endpoints,
            strategy,
            schedule,
            next: AtomicUsize::new(0),
            ring,
        }
    }

    pub(crate) fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// `key`: the request's hash for consistent hashing (ignored by the others).
    pub fn pick(&self, key: Option<u64>) -> Option<&Arc<Endpoint>> {
        if self.schedule.is_empty() {
            return None;
        }
        match (&self.strategy, key) {
            (Strategy::RoundRobin, _) | (Strategy::ConsistentHash(_), None) => self.next_in_turn(),
            (Strategy::Random, _) => self.random(),
            (Strategy::LeastRequest, _) => {
                let (a, b) = self.two_candidates()?;
                // Fewer in flight per unit of weight wins: a/wa <= b/wb.
                let load = |e: &Endpoint| e.in_flight.load(Ordering::Relaxed) as u64;
                if load(a) * u64::from(b.weight) <= load(b) * u64::from(a.weight) {
                    Some(a)
                } else {
                    Some(b)
                }
            }
            (Strategy::ConsistentHash(_), Some(key)) => {
                let at = self.ring.partition_point(|(point, _)| *point < key);
                let (_, index) = self.ring.get(at).or_else(|| self.ring.first())?;
                self.endpoints.get(*index as usize)
            }
        }
    }

    fn next_in_turn(&self) -> Option<&Arc<Endpoint>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let index = self.schedule[n % self.schedule.len()];
        self.endpoints.get(index as usize)
    }

    /// A weighted random endpoint, and another one found from a random slot of the
    /// schedule onwards (the same one only when it is alone).
    fn two_candidates(&self) -> Option<(&Arc<Endpoint>, &Arc<Endpoint>)> {
        let len = self.schedule.len();
        let first = self.schedule[fastrand::usize(..len)];
        let start = fastrand::usize(..len);
        let second = (0..len)
            .map(|step| self.schedule[(start + step) % len])
            .find(|&index| index != first)
            .unwrap_or(first);
        Some((
            self.endpoints.get(first as usize)?,
            self.endpoints.get(second as usize)?,
        ))
    }

    fn random(&self) -> Option<&Arc<Endpoint>> {
        let index = self.schedule[fastrand::usize(..self.schedule.len())];
        self.endpoints.get(index as usize)
    }
}

/// The seed of the consistent hash's key hashing.
pub const BALANCE_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hash of a consistent-hashing key; fixed, so every worker and replica agrees.
pub fn hash_key(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(BALANCE_SEED).hash_one(bytes)
}

fn ring(endpoints: &[Arc<Endpoint>]) -> Box<[(u64, u32)]> {
    let mut ring = Vec::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let points = endpoint
            .weight
            .max(1)
            .saturating_mul(POINTS_PER_WEIGHT)
            .min(MAX_POINTS);
        let address = endpoint.address.to_string();
        for point in 0..points {
            let label = format!("{address}#{point}");
            ring.push((hash_key(label.as_bytes()), index as u32));
        }
    }
    ring.sort_unstable();
    ring.into_boxed_slice()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    if weights.is_empty() {
        return Box::new([]);
    }
    let divisor = weights
        .iter()
        .fold(0u64, |g, w| gcd(g, u64::from((*w).max(1))));
    let mut reduced: Vec<u64> = weights
        .iter()
        .map(|w| u64::from((*w).max(1)) / divisor)
        .collect();
    let total: u64 = reduced.iter().sum();
    if total > MAX_SCHEDULE {
        for w in &mut reduced {
            *w = (*w * MAX_SCHEDULE / total).max(1);
        }
    }
    let total: i64 = reduced.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; reduced.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in reduced.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let address = format!("10.0.0.{}:80", i + 1).parse().unwrap();
                Arc::new(Endpoint::new(address, *w, 1, 1))
            })
            .collect()
    }

    fn shares(balancer: &Balancer, picks: usize, key: impl Fn(usize) -> Option<u64>) -> Vec<f64> {
        let mut counts = vec![0usize; balancer.endpoints().len()];
        for i in 0..picks {
            let picked = balancer.pick(key(i)).unwrap();
            let index = balancer
                .endpoints()
                .iter()
                .position(|e| Arc::ptr_eq(e, picked))
                .unwrap();
            counts[index] += 1;
        }
        counts.iter().map(|c| *c as f64 / picks as f64).collect()
    }

    #[test]
    fn weights_hold_within_five_percent_for_every_strategy() {
        let weights = [5, 3, 1, 1];
        // A fixed seed: the random strategies are checked on one known sequence.
        fastrand::seed(7);
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::LeastRequest,
        ] {
            let balancer = Balancer::new(endpoints(&weights), strategy.clone());
            let got = shares(&balancer, 10_000, |_| None);
            for (share, weight) in got.iter().zip(weights) {
                let want = f64::from(weight) / 10.0;
                assert!(
                    (share - want).abs() <= 0.05 * want.max(0.1),
                    "{strategy:?}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn least_request_prefers_the_less_busy() {
        fastrand::seed(11);
        let balancer = Balancer::new(endpoints(&[1, 1]), Strategy::LeastRequest);
        balancer.endpoints()[0]
            .in_flight
            .store(10, Ordering::Relaxed);
        let got = shares(&balancer, 10_000, |_| None);
        // The candidates are always the two endpoints: the busy one never wins.
        assert_eq!(got[0], 0.0, "{got:?}");
        // Among many, it is drawn as one of two candidates, and then loses.
        let balancer = Balancer::new(endpoints(&[1; 8]), Strategy::LeastRequest);
        balancer.endpoints()[0]
            .in_flight
            .store(10, Ordering::Relaxed);
        let got = shares(&balancer, 10_000, |_| None);
        assert_eq!(got[0], 0.0, "{got:?}");
    }

    #[test]
    fn consistent_hashing_moves_only_the_removed_endpoints_keys() {
        let all = endpoints(&[1; 10]);
        let strategy = Strategy::ConsistentHash(HashOn::ClientIp);
        let before = Balancer::new(all.clone(), strategy.clone());
        let after = Balancer::new(all[1..].to_vec(), strategy);
        let keys: Vec<u64> = (0..10_000u32).map(|k| hash_key(&k.to_be_bytes())).collect();
        let mut moved = 0;
        for key in &keys {
            let was = before.pick(Some(*key)).unwrap();
            let now = after.pick(Some(*key)).unwrap();
            if Arc::ptr_eq(was, &all[0]) {
                moved += 1;
            } else {
                assert!(Arc::ptr_eq(was, now), "a key of a remaining endpoint moved");
            }
        }
        // About 1/N of the keys were on the removed endpoint, and only those moved.
        let share = moved as f64 / keys.len() as f64;
        assert!((0.05..=0.15).contains(&share), "{share}");
        // The same key always lands on the same endpoint; weights shape the ring.
        let weighted = Balancer::new(
            endpoints(&[3, 1]),
            Strategy::ConsistentHash(HashOn::ClientIp),
        );
        let got = shares(&weighted, 10_000, |i| {
            Some(hash_key(&(i as u32).to_be_bytes()))
        });
        assert!((got[0] - 0.75).abs() < 0.06, "{got:?}");
    }

    #[test]
    fn schedule_respects_weights_and_interleaves() {
        let s = smooth_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 5);
        // Smooth: the heavy endpoint never takes more than 3 picks in a row.
        assert!(!s.windows(4).any(|w| w.iter().all(|i| *i == 0)));
        assert_eq!(&*smooth_schedule(&[2, 2]), &[0, 1]);
        assert!(smooth_schedule(&[]).is_empty());
    }

    #[test]
    fn large_weights_are_scaled() {
        let s = smooth_schedule(&[100_000, 1]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 1);
        assert!(s.contains(&1));
    }
}
