//! Integration tests, in one binary (each test file linking the whole crate again cost more
//! than the tests): real servers on ephemeral loopback ports, a module per area.

mod support;

mod admin;
mod balance;
mod cache;
mod cache_rfc;
mod check_diff;
mod circuit_breaker;
mod client_limits;
mod compress;
mod config_errors;
mod deploy;
mod discovery;
mod ext_authz;
mod fallback;
mod filters;
mod hardening;
mod health;
mod idle_clients;
mod ip_filter;
mod jwks;
mod jwt;
mod keep_alive;
mod mirror;
mod proxy;
mod rate_limit;
mod rate_limit_redis;
mod reload;
mod retries;
mod signals;
mod status_page;
mod tls;
mod traces;
mod traffic;
mod upstream_failures;
mod zookeeper;
