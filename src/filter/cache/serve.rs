//! Answers built from a stored response: the whole of it, a `304` for a client whose
//! conditional matches (RFC 9110 §13.2.2), or one byte range of it (RFC 9110 §14).

use super::range::{self, Selection};
use super::store::Entry;
use super::policy;
use super::spec::Cache;
use crate::body::Body;
use http::header::{AGE, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

impl Cache {
    /// The answer from `entry` for `req`, labelled `label`, with its `Age` at `now`.
    pub(super) fn serve(
        &self,
        entry: &Entry,
        req: &Parts,
        now: tokio::time::Instant,
        label: HeaderValue,
    ) -> Response<Body> {
        let selection = if not_modified(&req.headers, &entry.headers) {
            None
        } else if entry.status == StatusCode::OK {
            Some(range::select(
                &req.method,
                &req.headers,
                &entry.headers,
                entry.body.len(),
            ))
        } else {
            Some(Selection::Whole)
        };
        let len = entry.body.len();
        let (status, body, content_range) = match selection {
            None => (StatusCode::NOT_MODIFIED, Body::Empty, None),
            Some(Selection::Whole) => (entry.status, Body::full(entry.body.clone()), None),
            Some(Selection::Part(part)) => {
                let content_range = format!("bytes {}-{}/{len}", part.start, part.end - 1);
                let body = Body::full(entry.body.slice(part));
                (StatusCode::PARTIAL_CONTENT, body, Some(content_range))
            }
            Some(Selection::Unsatisfiable) => {
                let mut response = Response::new(Body::Empty);
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let headers = response.headers_mut();
                headers.insert(CONTENT_RANGE, unsatisfied(len));
                headers.insert(self.spec.status_header.clone(), label);
                return response;
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.clone_from(&entry.headers);
        // The length is the stored body's, set by the server from the body itself.
        headers.remove(CONTENT_LENGTH);
        if let Some(content_range) = content_range.and_then(|r| HeaderValue::try_from(r).ok()) {
            headers.insert(CONTENT_RANGE, content_range);
        }
        headers.insert(AGE, HeaderValue::from(entry.age(now).as_secs()));
        headers.insert(self.spec.status_header.clone(), label);
        response
    }
}

/// `Content-Range` of a 416: the length the range missed.
fn unsatisfied(len: usize) -> HeaderValue {
    HeaderValue::try_from(format!("bytes */{len}")).unwrap_or(HeaderValue::from_static("bytes */0"))
}

/// Whether the client's conditional matches the stored response: `If-None-Match` decides
/// when present (weak comparison), else `If-Modified-Since` against the stored
/// `Last-Modified`, or its `Date` when it has none (RFC 9111 §4.3.2).
pub(crate) fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut lists = request.get_all(IF_NONE_MATCH).iter().peekable();
    if lists.peek().is_some() {
        // Weak comparison (RFC 9110 §13.1.2): the opaque tags, whatever their W/ marks.
        let Some(etag) = stored.get(ETAG).and_then(|e| e.to_str().ok()).and_then(opaque_tag) else {
            return false;
        };
        return lists.filter_map(|v| v.to_str().ok()).any(|list| {
            list.trim() == "*" || entity_tags(list).is_some_and(|tags| tags.contains(&etag))
        });
    }
    policy::date(request, IF_MODIFIED_SINCE).is_some_and(|since| {
        policy::date(stored, http::header::LAST_MODIFIED)
            .or_else(|| policy::date(stored, http::header::DATE))
            .is_some_and(|modified| modified <= since)
    })
}

/// The opaque tag (`"…"`) of one well-formed entity tag, `[W/]"…"` (RFC 9110 §8.8.3).
fn opaque_tag(tag: &str) -> Option<&str> {
    let tag = tag.trim();
    let opaque = tag.strip_prefix("W/").unwrap_or(tag);
    let inner = opaque.strip_prefix('"')?.strip_suffix('"')?;
    inner.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80).then_some(opaque)
}

/// The opaque tags of an `If-None-Match` list; `None` when it is not a list of entity tags
/// (then nothing matches). A comma inside a tag's quotes belongs to the tag.
fn entity_tags(list: &str) -> Option<Vec<&str>> {
    let mut tags = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let start = rest.strip_prefix("W/").unwrap_or(rest);
        let end = start.get(1..)?.find('"')? + 2;
        tags.push(opaque_tag(start.get(..end)?)?);
        rest = start[end..].trim_start();
        rest = match rest.strip_prefix(',') {
            Some(more) => more.trim_start(),
            None if rest.is_empty() => rest,
            None => return None,
        };
    }
    Some(tags)
}

/// The parts of a request the cache answers later from what it kept of it: its headers, and
/// whether it was a `HEAD`.
pub(super) fn request_parts(headers: HeaderMap, head: bool) -> Parts {
    let mut parts = http::Request::new(()).into_parts().0;
    parts.headers = headers;
    if head {
        parts.method = Method::HEAD;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered_304(if_none_match: &[&str], etag: &str) -> bool {
        let mut request = HeaderMap::new();
        for list in if_none_match {
            request.append(IF_NONE_MATCH, HeaderValue::from_str(list).unwrap());
        }
        let mut stored = HeaderMap::new();
        stored.insert(ETAG, HeaderValue::from_str(etag).unwrap());
        not_modified(&request, &stored)
    }

    #[test]
    fn if_none_match_names_whole_entity_tags() {
        assert!(answered_304(&["\"b,c\""], "\"b,c\""));
        assert!(answered_304(&["W/\"a\", \"b\""], "W/\"b\""));
        assert!(answered_304(&["\"x\"", "\"y\""], "\"y\""));
        assert!(answered_304(&["*"], "\"z\""));
        // A comma inside quotes separates nothing; an unclosed quote matches nothing.
        assert!(!answered_304(&["\"a\", \"b,c."], "\"b"));
        assert!(!answered_304(&["Wol: max-/\"a\", \"b,c."], "\"b"));
        assert!(!answered_304(&["\"a\""], "\"a"));
        assert!(!answered_304(&["\"a\" \"b\""], "\"b\""));
        assert!(!answered_304(&["W/W/\"a\""], "\"a\""));
    }
}
