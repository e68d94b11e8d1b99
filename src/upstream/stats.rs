//! What an upstream reports to metrics and the admin API.

use super::health::HealthState;
use super::Upstream;

impl crate::telemetry::UpstreamStateSource for Upstream {
    fn upstream_state(&self) -> crate::telemetry::UpstreamState {
        let status = &self.feed.status;
        let endpoint_health = match self.spec.health {
            None => Vec::new(),
            Some(_) => self
                .members
                .load()
                .iter()
                .map(|e| {
                    (
                        e.address.to_string(),
                        e.health.state() == HealthState::Healthy,
                    )
                })
                .collect(),
        };
        crate::telemetry::UpstreamState {
            discovery_last_success: status.last_success().map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            }),
            discovery_errors: status.errors(),
            endpoint_health,
        }
    }
}
