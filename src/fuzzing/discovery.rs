//! Discovery payloads as the backends read them: etcd values, endpoint files (YAML and JSON),
//! ZooKeeper node data (address and Curator formats), and DNS answers (the SRV records of a
//! response message). Oracles: every endpoint taken has a host, a port other than 0 and a
//! weight of at least 1; a weight of 0 or a disabled instance takes no traffic; SRV answers
//! keep only the best priority, with the shortest TTL among them.

use crate::discovery::{
    best_srv, instance, parse_file, parse_value, FileFormat, StaticEndpoint, ZooKeeperFormat,
};
use hickory_resolver::proto::op::Message;

pub fn discovery(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(payload);
    match kind % 6 {
        0 => {
            if let Ok(Some(endpoint)) = parse_value(&text) {
                usable(&endpoint, &text);
                assert!(!weight_zero(&text), "weight 0 takes traffic: {text}");
            }
        }
        1 | 2 => {
            let format = if kind % 6 == 1 {
                FileFormat::Yaml
            } else {
                FileFormat::Json
            };
            for endpoint in parse_file(&text, format).unwrap_or_default() {
                usable(&endpoint, &text);
            }
        }
        3 | 4 => {
            let format = if kind % 6 == 3 {
                ZooKeeperFormat::Address
            } else {
                ZooKeeperFormat::Curator
            };
            if let Ok(Some(endpoint)) = instance(format, "10.0.0.1:8080", payload) {
                usable(&endpoint, &text);
                assert!(
                    !text.replace(' ', "").contains("\"enabled\":false"),
                    "disabled instance taken"
                );
            }
        }
        _ => {
            let Ok(message) = Message::from_vec(payload) else {
                return;
            };
            let (chosen, ttl) = best_srv(&message.answers);
            let srv: Vec<_> = message
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::SRV(srv) => Some((r.ttl, srv)),
                    _ => None,
                })
                .collect();
            let best = srv.iter().map(|(_, s)| s.priority).min();
            assert_eq!(chosen.is_empty(), best.is_none());
            for record in &chosen {
                assert_eq!(
                    Some(record.priority),
                    best,
                    "priority {} kept",
                    record.priority
                );
            }
            let shortest = srv
                .iter()
                .filter(|(_, s)| Some(s.priority) == best)
                .map(|(t, _)| *t)
                .min();
            assert_eq!(ttl, shortest.unwrap_or(u32::MAX));
        }
    }
}

fn usable(endpoint: &StaticEndpoint, text: &str) {
    assert!(!endpoint.host.is_empty(), "no host from {text:?}");
    assert_ne!(endpoint.port, 0, "port 0 from {text:?}");
    assert!(endpoint.weight >= 1, "weight 0 from {text:?}");
}

/// A JSON registration whose weight is 0.
fn weight_zero(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text.trim()).is_ok_and(|v| v["weight"] == 0)
}
