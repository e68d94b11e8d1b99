//! The local limiter: GCRA buckets in sharded maps, swept of idle keys, per gateway process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A rate as configured: `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub(crate) count: u64,
    pub(crate) period: Duration,
}

impl Rate {
    /// `100/s`, `6000/m`, `10/h`, `1000/d`, or a count over a duration: `5/10s`.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || format!("invalid rate {text:?}: expected COUNT/PERIOD, e.g. 100/s or 6000/m");
        let (count, period) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        let period = match period.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            other => crate::config::values::parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 || period.is_zero() {
            return Err(format!("invalid rate {text:?}: must be greater than zero"));
        }
        Ok(Rate { count, period })
    }

    /// Whole requests per second at this rate.
    pub(crate) fn per_second(&self) -> u64 {
        (u128::from(self.count) * 1_000_000_000 / self.period.as_nanos().max(1)) as u64
    }

    /// Time between two requests at the steady rate, in nanoseconds (at least 1).
    pub(crate) fn interval_nanos(&self) -> u64 {
        (self.period.as_nanos() / u128::from(self.count)).max(1) as u64
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub(crate) allowed: bool,
    /// Requests that would pass right now after this one.
    pub(crate) remaining: u64,
    /// Until the bucket is full again (allowed) or the next request may pass (refused).
    pub(crate) wait: Duration,
}

/// The GCRA arithmetic, shared by the local table and the Redis script's callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub(crate) interval: u64,
    /// `burst * interval`: how far ahead of `now` a TAT may run.
    pub(crate) tolerance: u64,
}

impl Gcra {
    pub fn new(rate: Rate, burst: u64) -> Gcra {
        let interval = rate.interval_nanos();
        Gcra {
            interval,
            tolerance: interval.saturating_mul(burst.max(1)),
        }
    }

    /// Decides a request at `now` for a key whose TAT is `tat` (0 for an unknown key);
    /// returns the decision and the key's new TAT.
    pub(crate) fn decide(&self, tat: u64, now: u64) -> (Decision, u64) {
        let start = tat.max(now);
        let next = start + self.interval;
        if next - now <= self.tolerance {
            let remaining = (now + self.tolerance - next) / self.interval;
            let decision = Decision {
                allowed: true,
                remaining,
                wait: Duration::from_nanos(next - now),
            };
            (decision, next)
        } else {
            let decision = Decision {
                allowed: false,
                remaining: 0,
                wait: Duration::from_nanos(next - now - self.tolerance),
            };
            (decision, tat)
        }
    }
}

/// Shards of the key table: a request locks one, chosen by its key's hash.
pub(super) const SHARDS: usize = 64;

/// A full shard looks for expired keys at most this often, so a flood of new keys cannot make
/// every request sweep.
const SWEEP_EVERY_NANOS: u64 = 100_000_000;

/// One cache line pair per shard, so cores working on neighbouring shards do not contend.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    tats: HashMap<u64, u64, foldhash::fast::FixedState>,
    /// The bucket shared by new keys while the shard is full.
    overflow: u64,
    last_sweep: u64,
}

/// The in-memory key table: bounded, sharded, state kept across reloads while the filter's
/// parameters do not change.
pub struct LocalLimiter {
    gcra: Gcra,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Seeded per process: key hashes cannot be predicted, so colliding keys cannot be made.
    pub(super) hasher: foldhash::fast::RandomState,
    /// TATs count from here.
    epoch: tokio::time::Instant,
}

impl LocalLimiter {
    pub fn new(gcra: Gcra, max_keys: usize) -> LocalLimiter {
        LocalLimiter {
            gcra,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: foldhash::fast::RandomState::default(),
            epoch: tokio::time::Instant::now(),
        }
    }

    /// Nanoseconds on the limiter's own clock.
    pub fn now(&self) -> u64 {
        self.at(tokio::time::Instant::now())
    }

    /// `instant` on the limiter's clock.
    pub(crate) fn at(&self, instant: tokio::time::Instant) -> u64 {
        instant.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// One check for the key hashed to `key` at `now` (nanoseconds on any monotonic clock
    /// shared by all callers).
    pub fn check(&self, key: u64, now: u64) -> Decision {
        let mut shard = self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let shard = &mut *shard;
        if let Some(tat) = shard.tats.get_mut(&key) {
            let (decision, next) = self.gcra.decide(*tat, now);
            *tat = next;
            return decision;
        }
        if shard.tats.len() >= self.per_shard
            && now.saturating_sub(shard.last_sweep) >= SWEEP_EVERY_NANOS
        {
            shard.last_sweep = now;
            shard.tats.retain(|_, tat| *tat > now);
        }
        if shard.tats.len() >= self.per_shard {
            let (decision, next) = self.gcra.decide(shard.overflow, now);
            shard.overflow = next;
            return decision;
        }
        let (decision, next) = self.gcra.decide(0, now);
        if decision.allowed {
            shard.tats.insert(key, next);
        }
        decision
    }

    /// Keys tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).tats.len())
            .sum()
    }
}
