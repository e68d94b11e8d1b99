//! Test harness: real servers on ephemeral loopback ports.
//!
//! - [`upstream()`] starts a hyper server whose behaviour is scripted by the request path:
//!   `/status/{code}`, `/delay/{ms}`, `/bytes/{n}`, `/stream/{chunks}` (one chunk per 50 ms),
//!   `/hold` (first chunk, then waits for `release()`), `/die-mid-body`, `/upgrade` (echo after
//!   101), `/trailers` (a body, then gRPC-style trailers); anything else echoes the request as JSON (`method`, `path`, `headers`, `body_len`).
//!   It counts requests and connections and records what it saw. `/health` answers the status
//!   set with `set_health` (200 at first) and is counted apart, as `health_checks`.
//! - [`gateway()`] starts Portcullis in-process from YAML on `127.0.0.1:0`.
//! - [`Client`] keeps one HTTP/1.1 or h2c connection; [`raw`] speaks bytes over a socket.

mod browser;
mod client;
mod collector;
mod gateway;
pub mod origin;
mod services;
mod upstream;

pub use browser::*;
pub use client::*;
pub use collector::*;
pub use gateway::*;
pub use services::*;
pub use upstream::*;
