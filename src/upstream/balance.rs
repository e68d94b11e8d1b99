//! Picking an endpoint. Weighted round robin over a schedule computed once per endpoint-set
//! change with the smooth weighted algorithm (nginx's), so a pick is one atomic increment and
//! one index, and heavy endpoints are spread out rather than picked in bursts.

use super::Endpoint;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

pub struct RoundRobin {
    endpoints: Vec<Arc<Endpoint>>,
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> RoundRobin {
        let schedule = smooth_schedule(&endpoints.iter().map(|e| e.weight).collect::<Vec<_>>());
        RoundRobin {
            endpoints,
            schedule,
            next: AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn pick(&self) -> Option<&Arc<Endpoint>> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let index = self.schedule[n % self.schedule.len()];
        self.endpoints.get(index as usize)
    }
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
