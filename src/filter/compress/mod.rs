//! `compress`: gzip, brotli or zstd for responses the client accepts them for. Negotiated from
//! `Accept-Encoding` (q-values, the configured preference order on ties); only for the
//! configured content types, bodies of at least `min_size` (or of unknown length), responses
//! not encoded already and not marked `no-transform`; never 1xx, 204, 206, 304 or a HEAD.
//! Compressed responses lose `Content-Length`, and a strong `ETag` becomes weak. Every
//! response that could be compressed says `Vary: Accept-Encoding`, compressed or not.

pub(crate) mod build;
pub(crate) mod config;
mod encode;
pub(crate) mod metrics;
mod negotiate;

use super::cache::policy::Directives;
use super::{Filter, Flow};
use crate::proxy::content_length;
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use encode::{Encoding, Levels, Tally};
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    ETAG, VARY,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
pub(crate) use negotiate::Algorithm;
use std::collections::HashMap;

/// A validated `compress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompressSpec {
    /// Preference order, for clients that accept several equally.
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) min_size: u64,
    /// Media types (`text/html`), ranges (`text/*`) or suffixes (`application/*+json`).
    pub(crate) types: Vec<String>,
    pub(crate) levels: Levels,
}

/// What `on_request` learned, for `on_response`.
#[derive(Clone, Copy)]
struct Negotiated {
    algorithm: Option<Algorithm>,
    head: bool,
}

pub(crate) struct Compress {
    spec: CompressSpec,
    tallies: HashMap<Algorithm, Tally>,
}

impl CompressSpec {
    fn compressible(&self, headers: &HeaderMap) -> bool {
        let Some(media) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let Some((kind, sub)) = media.split_once('/') else {
            return false;
        };
        self.types.iter().any(|pattern| {
            let Some((pkind, psub)) = pattern.split_once('/') else {
                return false;
            };
            pkind == kind
                && (psub == "*"
                    || psub == sub
                    || psub.strip_prefix('*').is_some_and(|suffix| sub.ends_with(suffix)))
        })
    }
}

/// Whether a response may be compressed at all, before the client's choice.
fn eligible(spec: &CompressSpec, status: StatusCode, headers: &HeaderMap) -> bool {
    let status_ok = !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::PARTIAL_CONTENT
        && status != StatusCode::NOT_MODIFIED;
    let encoded = headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let small = content_length(headers).is_some_and(|length| length < spec.min_size);
    status_ok
        && !encoded
        && !small
        && !headers.contains_key(CONTENT_RANGE)
        && spec.compressible(headers)
        // Last: the one check that parses a whole field.
        && !Directives::of(headers).no_transform
}

/// Adds `Accept-Encoding` to `Vary` unless it is there (or `*` is).
fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let present = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|name| {
                let name = name.trim();
                name == "*" || name.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// `"abc"` becomes `W/"abc"`: the compressed bytes are not the ones the tag named.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(tag) = headers.get(ETAG) else {
        return;
    };
    if tag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(tag.as_bytes());
    if let Ok(weak) = HeaderValue::from_bytes(&weak) {
        headers.insert(ETAG, weak);
    }
}

#[async_trait::async_trait]
impl Filter for Compress {
    fn kind(&self) -> &'static str {
        "compress"
    }

    async fn on_request(&self, req: &mut Parts, ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        let values = req.headers.get_all(ACCEPT_ENCODING);
        let algorithm =
            negotiate::choose(|| values.iter().map(HeaderValue::as_bytes), &self.spec.algorithms);
        ctx.extensions.insert(Negotiated {
            algorithm,
            head: req.method == Method::HEAD,
        });
        Ok(Flow::Continue)
    }

    async fn on_response(
        &self,
        res: &mut Response<Body>,
        ctx: &mut RequestCtx,
    ) -> Result<(), ProxyError> {
        let Some(negotiated) = ctx.extensions.remove::<Negotiated>() else {
            return Ok(());
        };
        if !eligible(&self.spec, res.status(), res.headers()) {
            return Ok(());
        }
        vary_on_accept_encoding(res.headers_mut());
        let (Some(algorithm), false) = (negotiated.algorithm, negotiated.head) else {
            return Ok(());
        };
        let Some(tally) = self.tallies.get(&algorithm) else {
            return Ok(());
        };
        let encoding = match Encoding::new(algorithm, self.spec.levels, tally.clone()) {
            Ok(encoding) => encoding,
            Err(error) => {
                // Validated levels make this unreachable; the response then goes as it is.
                tracing::warn!(%error, algorithm = algorithm.token(), "encoder did not start");
                return Ok(());
            }
        };
        let body = std::mem::replace(res.body_mut(), Body::Empty);
        *res.body_mut() = Body::Transformed(Box::pin(encoding.wrap(body)));
        let headers = res.headers_mut();
        headers.remove(CONTENT_LENGTH);
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(algorithm.token()));
        weaken_etag(headers);
        Ok(())
    }
}
