//! `stores:`: shared state outside the gateway (Redis).

use super::issues::{duration_field, Issues};
use super::raw;
use crate::store::RedisSpec;
use serde_yaml::Value;
use std::time::Duration;

/// A Redis answer slower than this counts as a store failure: a limit check must stay fast.
const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(20);
/// Connections to Redis; commands are pipelined on each.
const DEFAULT_REDIS_POOL_SIZE: usize = 2;

pub(super) fn compile_stores(value: Value, issues: &mut Issues) -> Option<RedisSpec> {
    let stores = issues.item::<raw::Stores>(value, "stores")?;
    let raw = stores.redis?;
    let before = issues.list.len();
    if redis::Client::open(raw.url.as_str()).is_err() {
        issues.add(
            "stores.redis.url",
            format!(
                "{:?} is not a Redis URL (redis://[user:password@]host[:port][/db])",
                raw.url
            ),
        );
    }
    let timeout = duration_field(
        raw.timeout,
        DEFAULT_REDIS_TIMEOUT,
        "stores.redis.timeout",
        issues,
    );
    if raw.pool_size == Some(0) {
        issues.add("stores.redis.pool_size", "must be at least 1");
    }
    (issues.list.len() == before).then(|| RedisSpec {
        url: raw.url,
        timeout,
        pool_size: raw.pool_size.unwrap_or(DEFAULT_REDIS_POOL_SIZE),
    })
}
