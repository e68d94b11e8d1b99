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
    kept: quick_cache::sync::Cache<Vec<u8>, (Instant, Arc<HeaderMap>)>,
}

impl Decisions {
    pub(crate) fn new(spec: &CacheSpec) -> Decisions {
        Decisions {
            key: spec.key.clone(),
            ttl: spec.ttl,
            kept: quick_cache::sync::Cache::new(spec.max_entries),
        }
    }

    /// The request's key: each key header's values, byte for byte, in order, absent ones
    /// marked as such. The separators are control bytes no header value may hold.
    pub(crate) fn key(&self, headers: &HeaderMap) -> Vec<u8> {
        let mut key = Vec::new();
        for name in &self.key {
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                key.push(0);
            }
            for value in values {
                key.extend_from_slice(value.as_bytes());
                key.push(0x1f);
            }
            key.push(0x1e);
        }
        key
    }

    /// The headers an allowing answer for `key` copied, while it is fresh.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<HeaderMap>> {
        let (stored, headers) = self.kept.get(key)?;
        (stored.elapsed() < self.ttl).then_some(headers)
    }

    /// Keeps an allowing answer: the `copied` headers of `answer`.
    pub(crate) fn put(&self, key: Vec<u8>, answer: &HeaderMap, copied: &[HeaderName]) {
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
        // Two values that are not UTF-8 and differ only there.
        let mut ff = HeaderMap::new();
        ff.insert("authorization", http::HeaderValue::from_bytes(b"token\xff").unwrap());
        let mut fe = HeaderMap::new();
        fe.insert("authorization", http::HeaderValue::from_bytes(b"token\xfe").unwrap());
        let keys = [
            d.key(&HeaderMap::new()),
            d.key(&empty),
            d.key(&one),
            d.key(&two),
            d.key(&ff),
            d.key(&fe),
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
        d.put(b"k".to_vec(), &answer, &[HeaderName::from_static("x-user-id")]);
        let kept = d.get(b"k").unwrap();
        assert_eq!(kept["x-user-id"], "42");
        assert!(kept.get("set-cookie").is_none());
        assert!(d.get(b"other").is_none());
    }
}
