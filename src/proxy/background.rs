//! Requests to an upstream that no client is waiting for (a cache refreshing an entry in the
//! background, an authorization check). They carry the route's rewrite and `Host`, and the
//! outcome counts for outlier ejection like any other exchange.

use super::forward::upstream_path;
use super::headers::remove_hop_by_hop;
use super::retry;
use crate::body::Body;
use crate::error::ProxyError;
use crate::filter::Fetch;
use crate::snapshot::Rewrite;
use crate::upstream::split::Split;
use crate::upstream::Protocol;
use http::header::{CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::{Request, Response, Uri, Version};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub(crate) struct Background {
    /// A split route's requests go to a target drawn by weight.
    split: Arc<Split>,
    rewrite: Rewrite,
}

impl Background {
    pub(crate) fn new(split: Arc<Split>, rewrite: Rewrite) -> Background {
        Background { split, rewrite }
    }
}

impl Fetch for Background {
    fn fetch(
        &self,
        mut parts: Parts,
        body: bytes::Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, ProxyError>> + Send>> {
        let upstream = Arc::clone(self.split.draw());
        let rewrite = self.rewrite.clone();
        Box::pin(async move {
            let endpoint = upstream
                .pick()
                .ok_or_else(|| ProxyError::NoEndpoint(upstream.name.clone()))?;
            if upstream.spec.protocol == Protocol::Http2 {
                return Err(ProxyError::BadRequest("background requests use HTTP/1.1"));
            }
            let path = upstream_path(&parts.uri, &rewrite)?;
            // The client's connection-level headers stay with it; the length is the body's.
            remove_hop_by_hop(&mut parts.headers);
            parts.headers.remove(CONTENT_LENGTH);
            if !body.is_empty() {
                parts
                    .headers
                    .insert(CONTENT_LENGTH, http::HeaderValue::from(body.len()));
            }
            if let Some(host) = &rewrite.host {
                parts.headers.insert(HOST, host.clone());
            }
            parts.uri = Uri::from(path);
            parts.version = Version::HTTP_11;
            let result = upstream
                .send(&endpoint, Request::from_parts(parts, Body::full(body)))
                .await;
            retry::record(&upstream, &endpoint, &result);
            result
        })
    }
}
