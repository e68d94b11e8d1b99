//! Endpoints a registry lists by name (etcd keys, ZooKeeper znodes): each name is resolved
//! when the set is published, and its last good addresses stand in while it fails to resolve,
//! so a resolver blink never drops a registered endpoint.

use super::backend::{DiscoveredEndpoint, Status};
use super::static_list::StaticEndpoint;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(super) struct Registered {
    /// The last good resolution of each registered host name.
    resolved: Mutex<HashMap<(String, u16), Vec<DiscoveredEndpoint>>>,
}

impl Registered {
    /// The addresses of `endpoints`, host names resolved (or their last good addresses,
    /// with the failure counted in `status`). Names no longer registered are forgotten.
    pub(super) async fn addresses(
        &self,
        endpoints: &[&StaticEndpoint],
        status: &Status,
    ) -> Vec<DiscoveredEndpoint> {
        let mut found = Vec::new();
        for endpoint in endpoints {
            let name = (endpoint.host.clone(), endpoint.port);
            match endpoint.resolve().await {
                Ok(addresses) => {
                    if endpoint.literal().is_none() {
                        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
                        resolved.insert(name, addresses.clone());
                    }
                    found.extend(addresses);
                }
                Err(error) => {
                    status.failed();
                    tracing::warn!(host = %endpoint.host, %error, "registered host does not resolve; keeping its last addresses");
                    let resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
                    let last = resolved.get(&name).into_iter().flatten();
                    found.extend(last.map(|d| DiscoveredEndpoint {
                        weight: endpoint.weight,
                        ..*d
                    }));
                }
            }
        }
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(host, port), _| endpoints.iter().any(|e| e.host == *host && e.port == *port));
        found
    }
}
