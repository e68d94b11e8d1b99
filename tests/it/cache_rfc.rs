//! RFC 9111 conformance of the `cache` filter, a module per section, each test named by the
//! rule it checks (one file each in `cache_rfc/`). The origin's answers are scripted by the query (see `support::origin`):
//! `cc` is Cache-Control (`:` for `=`), `etag`, and `h.NAME=VALUE` any header line.

use crate::support::origin::*;
use crate::support::*;
use std::time::{Duration, SystemTime};

/// Percent-encodes a header value for an `h.NAME=` query parameter.
fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn age_of(reply: &Reply) -> u64 {
    reply
        .header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no Age on {:?}", reply.headers))
}

mod age_on_arrival;
mod age_on_the_way_out;
mod cache_key;
mod conditional_requests;
mod freshening_with_304;
mod freshness_lifetime;
mod heuristic_freshness;
mod invalidation;
mod must_understand;
mod no_stale_without_permission;
mod ranges;
mod request_directives;
mod revalidate_every_use;
mod targeted;
mod vary_normalisation;
