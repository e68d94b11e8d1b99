//! One request, top to bottom: `handler` checks it, routes it and answers or forwards it;
//! `forward` prepares the upstream request and relays the exchange, through `retry` (the
//! retry loop, and the one place an exchange's outcome is recorded); `headers` holds the
//! header work both share; `conn` the connection's state and `per_ip` its address's share of
//! the connection limits; `background` requests the gateway makes on its own (cache
//! refreshes).

mod background;
pub(crate) mod checks;
mod conn;
mod fallback;
mod forward;
mod handler;
pub(crate) mod headers;
mod mirror;
mod per_ip;
mod retry;

pub(crate) use background::Background;
pub(crate) use conn::{Activity, ConnCounter, ConnInfo};
pub(crate) use fallback::FallbackMetrics;
pub(crate) use handler::handle;
pub(crate) use headers::{content_length, remove_gateway_owned, remove_hop_by_hop};
pub(crate) use mirror::MirrorMetrics;
pub(crate) use per_ip::PerIpLimits;
