//! Connections per client address at accept: how many each peer holds open
//! (`limits.max_connections_per_ip`) and how fast it opens new ones
//! (`limits.connection_rate_per_ip`), so one client cannot take every `max_connections`
//! slot. One table for the process, sharded by address: an accept locks one shard briefly;
//! requests never touch it.

use crate::filter::rate_limit::Gcra;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

const SHARDS: usize = 64;

/// Addresses a shard tracks at most. Past it, a sweep drops addresses with nothing open and
/// no rate debt; if none can go, new addresses are admitted without rate tracking rather
/// than refused (a flood of addresses must not lock out everyone else).
const MAX_PER_SHARD: usize = 16_384;

/// A full shard sweeps at most this often, so a flood of new addresses cannot make every
/// accept walk the whole shard.
const SWEEP_EVERY_NANOS: u64 = 100_000_000;

/// The per-address limits in force at an accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PerIpLimits {
    pub(crate) max_open: Option<u32>,
    pub(crate) rate: Option<Gcra>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PerIpRefusal {
    /// The address holds `max_connections_per_ip` already.
    Open,
    /// The address opens connections faster than `connection_rate_per_ip`.
    Rate,
}

#[derive(Default, Clone, Copy)]
struct Entry {
    open: u32,
    /// GCRA theoretical arrival time, in nanoseconds on the table's clock.
    tat: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<IpAddr, Entry>,
    last_sweep: u64,
}

pub(crate) struct PerIpTable {
    shards: Box<[Mutex<Shard>]>,
    /// Seeded per process, so addresses that share a shard cannot be chosen from outside.
    hasher: foldhash::fast::RandomState,
    epoch: Instant,
}

impl Default for PerIpTable {
    fn default() -> Self {
        PerIpTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            epoch: Instant::now(),
        }
    }
}

impl PerIpTable {
    /// Counts a new connection from `ip`, or says why it must be refused. The slot gives the
    /// count back when dropped.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: PerIpLimits,
    ) -> Result<PerIpSlot, PerIpRefusal> {
        let ip = ip.to_canonical();
        let now = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64;
        let mut shard = self.shard(ip);
        let known = shard.entries.contains_key(&ip);
        if shard.entries.len() >= MAX_PER_SHARD
            && !known
            && now.saturating_sub(shard.last_sweep) >= SWEEP_EVERY_NANOS
        {
            shard.last_sweep = now;
            shard
                .entries
                .retain(|_, entry| entry.open > 0 || entry.tat > now);
        }
        let tracked = known || shard.entries.len() < MAX_PER_SHARD;
        let mut entry = shard.entries.get(&ip).copied().unwrap_or_default();
        if limits.max_open.is_some_and(|max| entry.open >= max) {
            return Err(PerIpRefusal::Open);
        }
        if let (Some(gcra), true) = (limits.rate, tracked) {
            let (decision, tat) = gcra.decide(entry.tat, now);
            if !decision.allowed {
                return Err(PerIpRefusal::Rate);
            }
            entry.tat = tat;
        }
        entry.open += 1;
        if tracked {
            shard.entries.insert(ip, entry);
        }
        Ok(PerIpSlot {
            table: Arc::clone(self),
            ip: tracked.then_some(ip),
        })
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        let at = self.hasher.hash_one(ip) as usize % SHARDS;
        self.shards[at].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open from `ip` (for tests).
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> u32 {
        self.shard(ip).entries.get(&ip).map_or(0, |e| e.open)
    }
}

/// One admitted connection's place in its address's count.
pub(crate) struct PerIpSlot {
    table: Arc<PerIpTable>,
    /// `None` when the table was full and the address is not tracked.
    ip: Option<IpAddr>,
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else {
            return;
        };
        let now = Instant::now()
            .saturating_duration_since(self.table.epoch)
            .as_nanos() as u64;
        let mut shard = self.table.shard(ip);
        if let Some(entry) = shard.entries.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && entry.tat <= now {
                shard.entries.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::rate_limit::Rate;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn open_connections_are_counted_per_address_and_given_back() {
        let table = Arc::new(PerIpTable::default());
        let limits = PerIpLimits {
            max_open: Some(2),
            rate: None,
        };
        let a = table.admit(ip("10.0.0.1"), limits).unwrap();
        let _b = table.admit(ip("::ffff:10.0.0.1"), limits).unwrap();
        assert_eq!(
            table.admit(ip("10.0.0.1"), limits).err(),
            Some(PerIpRefusal::Open)
        );
        assert!(table.admit(ip("10.0.0.2"), limits).is_ok());
        drop(a);
        assert_eq!(table.open(ip("10.0.0.1")), 1);
        assert!(table.admit(ip("10.0.0.1"), limits).is_ok());
    }

    #[test]
    fn new_connections_are_rate_limited_per_address() {
        let table = Arc::new(PerIpTable::default());
        let limits = PerIpLimits {
            max_open: None,
            rate: Some(Gcra::new(Rate::parse("1/m").unwrap(), 2)),
        };
        let _a = table.admit(ip("10.0.0.1"), limits).unwrap();
        drop(table.admit(ip("10.0.0.1"), limits).unwrap());
        assert_eq!(
            table.admit(ip("10.0.0.1"), limits).err(),
            Some(PerIpRefusal::Rate)
        );
        assert!(table.admit(ip("10.0.0.2"), limits).is_ok());
    }
}
