//! Shared state outside the gateway, for limits that hold across replicas. Filters use a store
//! through a narrow interface and decide themselves what to do when it is unreachable.

pub(crate) mod redis;

pub(crate) use self::redis::{RedisSpec, RedisStore};
