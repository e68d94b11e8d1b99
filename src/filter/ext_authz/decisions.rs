//! Allow decisions kept for a short while, so a busy client does not cost a call to the
//! authorization service per request. The key is the exact values of the configured headers
//! (never a hash: two credentials must never share a decision), and only allowing answers
//! are kept, with the headers they copy.

use http::{HeaderMap, HeaderName};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A validated `cache:` of decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheSpec {
    pub(crate) ttl: Duration,
    pub(crate) key: Vec<HeaderName>,
    pub(crate) max_entries: usize,
}

pub(crate) struct Decisions {
    key: Vec<HeaderName>,
    ttl: Duration,
    kept: quick_cache::sync::Cache<String, (Instant, Arc<HeaderMap>)>,
}

impl Decisions {
    pub(crate) fn new(spec: &CacheSpec) -> Decisions {
        Decisions {
            key: spec.key.clone(),
            ttl: spec.ttl,
            kept: quick_cache::sync::Cache::new(spec.max_entries),
        }
    }

    /// The request's key: each key header's values in order, absent ones marked as such.
    pub(crate) fn key(&self, headers: &HeaderMap) -> String {
        let mut key = String::new();
        for name in &self.key {
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                key.push('\u{0}');
            }
            for value in values {
                key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                key.push('\u{1f}');
            }
            key.push('\u{1e}');
        }
        key
    }

    /// The headers an allowing answer for `key` copied, while it is fresh.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<HeaderMap>> {
        let (stored, headers) = self.kept.get(key)?;
        (stored.elapsed() < self.ttl).then_some(headers)
    }

    /// Keeps an allowing answer: the `copied` headers of `answer`.
    pub(crate) fn put(&self, key: String, answer: &HeaderMap, copied: &[HeaderName]) {
        let mut headers = HeaderMap::new();
        for name in copied {
            for value in answer.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        self.kept.insert(key, (Instant::now(), Arc::new(headers)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decisions() -> Decisions {
        Decisions::new(&CacheSpec {
            ttl: Duration::from_secs(60),
            key: vec![HeaderName::from_static("authorization")],
            max_entries: 100,
        })
    }

    #[test]
    fn absent_empty_and_repeated_values_are_different_keys() {
        let d = decisions();
        let mut empty = HeaderMap::new();
        empty.insert("authorization", "".parse().unwrap());
        let mut one = HeaderMap::new();
        one.append("authorization", "a".parse().unwrap());
        let mut two = one.clone();
        two.append("authorization", "b".parse().unwrap());
        let mut joined = HeaderMap::new();
        joined.insert("authorization", "a\u{1f}b".parse().unwrap_or("x".parse().unwrap()));
        let keys = [
            d.key(&HeaderMap::new()),
            d.key(&empty),
            d.key(&one),
            d.key(&two),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn only_the_copied_headers_are_kept() {
        let d = decisions();
        let mut answer = HeaderMap::new();
        answer.insert("x-user-id", "42".parse().unwrap());
        answer.insert("set-cookie", "s=1".parse().unwrap());
        d.put("k".into(), &answer, &[HeaderName::from_static("x-user-id")]);
        let kept = d.get("k").unwrap();
        assert_eq!(kept["x-user-id"], "42");
        assert!(kept.get("set-cookie").is_none());
        assert!(d.get("other").is_none());
    }
}
