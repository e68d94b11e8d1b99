//! What a new config changes against the running one, section by section: the items added,
//! removed and changed (with the keys that changed), and the changes a reload cannot apply
//! (listeners, the admin address, workers), which need a restart. Both sides are compared as
//! the admin API shows them (`GET /config`, secrets redacted), so a changed secret does not
//! show.

use serde_json::{Map, Value};

/// Sections whose items have names: lists of `{ name, ... }` or maps by name.
const NAMED_SECTIONS: [&str; 5] = [
    "listeners",
    "upstreams",
    "filters",
    "jwt_providers",
    "routes",
];
/// Settings a reload does not apply.
const RESTART_SETTINGS: [&str; 2] = ["admin", "workers"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemChange {
    Added,
    Removed,
    /// The keys that differ, as paths inside the item (`timeouts.connect`, `filters[0]`).
    Changed(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `routes`, `upstreams` …, or `settings` for the top-level keys.
    pub section: String,
    /// The item's name, or the setting's key.
    pub name: String,
    pub change: ItemChange,
    /// A reload would not apply it: the gateway must be restarted.
    pub needs_restart: bool,
}

impl super::Config {
    /// What this config changes against `running` (the admin API's `GET /config`).
    pub fn diff_against(&self, running: &Value) -> Vec<Change> {
        diff(running, &self.redacted_source())
    }

    /// The admin API's base URL as this config sets it (a wildcard address reached through
    /// loopback); `None` when the admin API is off.
    pub fn admin_url(&self) -> Option<String> {
        let mut address = self.admin?;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Some(format!("http://{address}"))
    }

    /// The admin token this config sets, to ask a running gateway that requires it.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// The text this config was read from.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Every change from `running` to `new`, in section order, items by name.
pub fn diff(running: &Value, new: &Value) -> Vec<Change> {
    let empty = Map::new();
    let (old_top, new_top) = (
        running.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut changes = Vec::new();
    for section in NAMED_SECTIONS {
        let old_items = named(old_top.get(section));
        let new_items = named(new_top.get(section));
        for (name, old) in &old_items {
            match new_items.iter().find(|(n, _)| n == name) {
                None => changes.push(change(section, name, ItemChange::Removed)),
                Some((_, new)) => {
                    let mut keys = Vec::new();
                    differences(old, new, "", &mut keys);
                    if !keys.is_empty() {
                        changes.push(change(section, name, ItemChange::Changed(keys)));
                    }
                }
            }
        }
        for (name, _) in &new_items {
            if !old_items.iter().any(|(n, _)| n == name) {
                changes.push(change(section, name, ItemChange::Added));
            }
        }
    }
    let mut settings: Vec<&String> = old_top.keys().chain(new_top.keys()).collect();
    settings.sort();
    settings.dedup();
    for key in settings {
        if NAMED_SECTIONS.contains(&key.as_str()) {
            continue;
        }
        let (old, new) = (old_top.get(key), new_top.get(key));
        let kind = match (old, new) {
            (None, Some(_)) => ItemChange::Added,
            (Some(_), None) => ItemChange::Removed,
            (Some(old), Some(new)) if old != new => {
                let mut keys = Vec::new();
                differences(old, new, "", &mut keys);
                ItemChange::Changed(keys)
            }
            _ => continue,
        };
        changes.push(change("settings", key, kind));
    }
    changes
}

fn change(section: &str, name: &str, change: ItemChange) -> Change {
    let needs_restart = match section {
        // A listener's address and TLS are bound at start; its filters reload.
        "listeners" => match &change {
            ItemChange::Changed(keys) => keys
                .iter()
                .any(|k| k == "address" || k == "tls" || k.starts_with("tls.")),
            ItemChange::Added | ItemChange::Removed => true,
        },
        "settings" => RESTART_SETTINGS.contains(&name),
        _ => false,
    };
    Change {
        section: section.to_string(),
        name: name.to_string(),
        change,
        needs_restart,
    }
}

/// The items of a section by name: a map's entries, or a list's items by their `name`
/// (unnamed list items by position).
fn named(section: Option<&Value>) -> Vec<(String, &Value)> {
    match section {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let name = item["name"]
                    .as_str()
                    .map_or(format!("#{i}"), str::to_string);
                (name, item)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The paths under `at` where `old` and `new` differ; a list that changed length, or a value
/// that changed type, is one difference.
fn differences(old: &Value, new: &Value, at: &str, out: &mut Vec<String>) {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(x, y, &join(key), out),
                    _ => out.push(join(key)),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{at}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(if at.is_empty() {
            "(value)".into()
        } else {
            at.to_string()
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_by_name_with_the_keys_that_changed() {
        let running = json!({
            "listeners": [{"name": "http", "address": "0.0.0.0:8080"}],
            "upstreams": {"users": {"timeouts": {"connect": "1s"}}, "old": {}},
            "routes": [{"name": "api", "upstream": "users", "filters": [{"rate_limit": {"rate": "10/s"}}]}],
            "access_log": true,
            "workers": 2
        });
        let new = json!({
            "listeners": [{"name": "http", "address": "0.0.0.0:9090"}],
            "upstreams": {"users": {"timeouts": {"connect": "2s"}}, "new": {}},
            "routes": [{"name": "api", "upstream": "users", "filters": [{"rate_limit": {"rate": "20/s"}}]}],
            "access_log": true,
            "workers": 4
        });
        let changes = diff(&running, &new);
        let shown: Vec<(String, String, ItemChange, bool)> = changes
            .into_iter()
            .map(|c| (c.section, c.name, c.change, c.needs_restart))
            .collect();
        let keys = |k: &[&str]| ItemChange::Changed(k.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            shown,
            [
                ("listeners".into(), "http".into(), keys(&["address"]), true),
                ("upstreams".into(), "old".into(), ItemChange::Removed, false),
                (
                    "upstreams".into(),
                    "users".into(),
                    keys(&["timeouts.connect"]),
                    false
                ),
                ("upstreams".into(), "new".into(), ItemChange::Added, false),
                (
                    "routes".into(),
                    "api".into(),
                    keys(&["filters[0].rate_limit.rate"]),
                    false
                ),
                (
                    "settings".into(),
                    "workers".into(),
                    keys(&["(value)"]),
                    true
                ),
            ]
        );
        assert!(diff(&running, &running).is_empty());
    }
}
