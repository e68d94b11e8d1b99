//! The breakers shown with their upstream in the admin API's `/upstreams`.

use super::{Breaker, State};
use crate::filter::Exposed;
use serde_json::{json, Value};

/// Every breaker in front of `upstream`: its route, state, and when an open one lets a probe
/// through.
pub(crate) fn upstream_view(exposed: &Exposed, upstream: &str) -> Vec<Value> {
    exposed
        .of::<Breaker>()
        .filter(|(_, b)| b.upstream == upstream)
        .map(|(_, b)| {
            let state = b.state();
            let mut entry = json!({"route": b.route, "state": state.as_str()});
            if state == State::Open {
                entry["retry_in_ms"] = json!(b.retry_in().as_millis() as u64);
            }
            entry
        })
        .collect()
}
