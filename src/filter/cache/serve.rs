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
fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    match (request.get(IF_NONE_MATCH), stored.get(ETAG)) {
        (Some(wanted), Some(etag)) => wanted
            .to_str()
            .ok()
            .is_some_and(|w| w.trim() == "*" || w.split(',').any(|t| weak_eq(t, etag))),
        (Some(_), None) => false,
        (None, _) => policy::date(request, IF_MODIFIED_SINCE).is_some_and(|since| {
            policy::date(stored, http::header::LAST_MODIFIED)
                .or_else(|| policy::date(stored, http::header::DATE))
                .is_some_and(|modified| modified <= since)
        }),
    }
}

/// Weak comparison of entity tags (RFC 9110 §8.8.3.2), for `If-None-Match`.
fn weak_eq(candidate: &str, etag: &HeaderValue) -> bool {
    fn strip(tag: &str) -> &str {
        tag.trim().trim_start_matches("W/")
    }
    etag.to_str().is_ok_and(|e| strip(candidate) == strip(e))
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
