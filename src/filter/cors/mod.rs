//! `cors`: answers preflight requests at the gateway and adds the CORS headers to responses
//! for allowed origins (Fetch standard, "CORS protocol"). A preflight from an origin, method
//! or header that is not allowed gets 403; an actual request from an origin that is not
//! allowed passes without CORS headers, so the browser withholds the response.

pub(super) mod build;
pub(crate) mod config;
use super::{Filter, Flow};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::{error_response, ProxyError};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginMatch {
    Any,
    Exact(String),
    /// `https://*.example.com`: the scheme and a suffix starting with a dot (ports must match too).
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

impl OriginMatch {
    pub(crate) fn parse(text: &str) -> Result<OriginMatch, String> {
        if text == "*" {
            return Ok(OriginMatch::Any);
        }
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            format!("invalid origin {text:?}: expected scheme://host[:port] or *")
        })?;
        if rest.is_empty() || rest.contains('/') {
            return Err(format!("invalid origin {text:?}: no path allowed"));
        }
        match rest.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && !suffix.contains('*') => {
                Ok(OriginMatch::Subdomains {
                    scheme: scheme.to_ascii_lowercase(),
                    suffix: suffix.to_ascii_lowercase(),
                })
            }
            None if !rest.contains('*') => Ok(OriginMatch::Exact(text.to_ascii_lowercase())),
            _ => Err(format!(
                "invalid origin {text:?}: a wildcard must be *.domain"
            )),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginMatch::Any => true,
            OriginMatch::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            OriginMatch::Subdomains { scheme, suffix } => {
                let origin = origin.to_ascii_lowercase();
                origin
                    .strip_prefix(scheme.as_str())
                    .and_then(|rest| rest.strip_prefix("://"))
                    .is_some_and(|host| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CorsSpec {
    pub(crate) origins: Vec<OriginMatch>,
    /// Methods allowed beyond the CORS-safelisted GET, HEAD and POST.
    pub(crate) methods: Vec<Method>,
    /// Request headers allowed; `*` allows any.
    pub(crate) headers: Vec<String>,
    pub(crate) expose: Vec<HeaderName>,
    pub(crate) credentials: bool,
    pub(crate) max_age: Option<Duration>,
}

/// The origin allowed for this request, kept for `on_response`.
#[derive(Clone)]
struct AllowedOrigin(HeaderValue);

pub(crate) struct Cors {
    spec: CorsSpec,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

fn join<T: AsRef<str>>(items: &[T]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    let text: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    HeaderValue::try_from(text.join(", ")).ok()
}

impl Cors {
    pub(crate) fn new(spec: CorsSpec) -> Cors {
        let mut methods: Vec<String> = ["GET", "HEAD", "POST"]
            .iter()
            .map(|m| m.to_string())
            .collect();
        for method in &spec.methods {
            if !methods.iter().any(|m| m == method.as_str()) {
                methods.push(method.to_string());
            }
        }
        Cors {
            allow_methods: join(&methods)
                .unwrap_or_else(|| HeaderValue::from_static("GET, HEAD, POST")),
            allow_headers: if spec.headers.iter().any(|h| h == "*") {
                None
            } else {
                join(&spec.headers)
            },
            expose: join(
                &spec
                    .expose
                    .iter()
                    .map(HeaderName::as_str)
                    .collect::<Vec<_>>(),
            ),
            max_age: spec.max_age.map(|age| HeaderValue::from(age.as_secs())),
            spec,
        }
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .is_ok_and(|o| self.spec.origins.iter().any(|m| m.matches(o)))
    }

    /// `*` only when any origin is allowed without credentials; otherwise the origin itself.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if !self.spec.credentials && self.spec.origins.contains(&OriginMatch::Any) {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    fn method_allowed(&self, method: &str) -> bool {
        matches!(method, "GET" | "HEAD" | "POST")
            || self.spec.methods.iter().any(|m| m.as_str() == method)
    }

    fn headers_allowed(&self, requested: Option<&HeaderValue>) -> bool {
        let Some(requested) = requested.and_then(|v| v.to_str().ok()) else {
            return true;
        };
        if self.spec.headers.iter().any(|h| h == "*") {
            return true;
        }
        requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| {
                self.spec
                    .headers
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(h))
            })
    }

    fn preflight(&self, req: &Parts, origin: &HeaderValue, ctx: &RequestCtx) -> Response<Body> {
        let requested_method = req
            .headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let requested_headers = req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        if !self.origin_allowed(origin)
            || !self.method_allowed(requested_method)
            || !self.headers_allowed(requested_headers)
        {
            return error_response(
                StatusCode::FORBIDDEN,
                "CORS preflight rejected",
                &ctx.request_id,
                false,
            );
        }
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        match (&self.allow_headers, requested_headers) {
            (Some(allowed), _) => {
                headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
            }
            // `*` configured: echo what was asked (a literal `*` means nothing with credentials).
            (None, Some(requested)) => {
                headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
            }
            (None, None) => {}
        }
        if self.spec.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        headers.append(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        response
    }
}

#[async_trait::async_trait]
impl Filter for Cors {
    fn kind(&self) -> &'static str {
        "cors"
    }

    async fn on_request(&self, req: &mut Parts, ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        let Some(origin) = req.headers.get(ORIGIN).cloned() else {
            return Ok(Flow::Continue);
        };
        if req.method == Method::OPTIONS && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Ok(Flow::Respond(self.preflight(req, &origin, ctx)));
        }
        if self.origin_allowed(&origin) {
            ctx.extensions.insert(AllowedOrigin(origin));
        }
        Ok(Flow::Continue)
    }

    async fn on_response(
        &self,
        res: &mut Response<Body>,
        ctx: &mut RequestCtx,
    ) -> Result<(), ProxyError> {
        let Some(AllowedOrigin(origin)) = ctx.extensions.get::<AllowedOrigin>() else {
            return Ok(());
        };
        let value = self.allow_origin_value(origin);
        let headers = res.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if self.spec.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        headers.append(VARY, HeaderValue::from_static("Origin"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns() {
        let exact = OriginMatch::parse("https://app.example.com").unwrap();
        assert!(exact.matches("https://APP.example.com"));
        assert!(!exact.matches("http://app.example.com"));
        let sub = OriginMatch::parse("https://*.example.com").unwrap();
        assert!(sub.matches("https://a.example.com"));
        assert!(sub.matches("https://a.b.example.com"));
        // An origin carries its port: a pattern without one does not cover other ports.
        assert!(!sub.matches("https://a.example.com:8443"));
        assert!(OriginMatch::parse("https://*.example.com:8443")
            .unwrap()
            .matches("https://a.example.com:8443"));
        assert!(!sub.matches("https://example.com"));
        assert!(!sub.matches("https://evil-example.com"));
        assert!(!sub.matches("http://a.example.com"));
        assert!(OriginMatch::parse("app.example.com").is_err());
        assert!(OriginMatch::parse("https://a.example.com/path").is_err());
        assert!(OriginMatch::parse("https://a*.example.com").is_err());
    }
}
