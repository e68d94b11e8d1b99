//! The config as the admin API shows it and as its hash covers it: every value that came from
//! the environment, and every key that names a secret, replaced by `<redacted>`.

use serde_json::Value;

/// Keys whose values are secrets wherever they appear.
const SECRET_KEYS: [&str; 5] = ["secret", "password", "token", "key", "private_key"];

impl super::Config {
    /// The source as JSON, secrets redacted.
    pub(crate) fn redacted_source(&self) -> Value {
        let mut value = serde_json::to_value(&self.source).unwrap_or(Value::Null);
        for path in &self.from_env {
            redact_path(&mut value, path);
        }
        redact_keys(&mut value);
        // Headers sent to the trace collector are how it authenticates the gateway.
        if let Some(Value::Object(headers)) = value.pointer_mut("/tracing/otlp/headers") {
            headers
                .values_mut()
                .for_each(|v| *v = Value::String("<redacted>".into()));
        }
        value
    }

    /// The first 12 hex digits of the SHA-256 of [`Self::redacted_source`]: which config a
    /// replica runs, without a way to guess its secrets from the hash.
    pub(crate) fn hash(&self) -> String {
        let text = self.redacted_source().to_string();
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Replaces the value at a config key path (`a.b[2].c`) with a marker.
fn redact_path(value: &mut Value, path: &str) {
    let mut node = value;
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            node = match node.get_mut(key) {
                Some(next) => next,
                None => return,
            };
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            node = match index.parse::<usize>().ok().and_then(|i| node.get_mut(i)) {
                Some(next) => next,
                None => return,
            };
        }
    }
    *node = Value::String("<redacted>".into());
}

fn redact_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if SECRET_KEYS.iter().any(|s| key.eq_ignore_ascii_case(s)) {
                    *item = Value::String("<redacted>".into());
                } else {
                    redact_keys(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redaction_by_path_and_by_key() {
        let mut value =
            json!({"a": {"b": [1, {"c": "x"}]}, "stores": {"redis": {"password": "p"}}});
        redact_path(&mut value, "a.b[1].c");
        redact_keys(&mut value);
        assert_eq!(value["a"]["b"][1]["c"], "<redacted>");
        assert_eq!(value["a"]["b"][0], 1);
        assert_eq!(value["stores"]["redis"]["password"], "<redacted>");
        redact_path(&mut value, "missing.path[3]");
    }
}
