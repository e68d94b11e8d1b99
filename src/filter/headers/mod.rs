//! `headers`: set, add and remove request headers (before the upstream sees them) and
//! response headers (before the client does). Removal first, then set, then add.

pub(super) mod build;
pub(crate) mod config;
use super::{Filter, Flow};
use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeaderEdits {
    pub(crate) remove: Vec<HeaderName>,
    /// Replaces every value of the header.
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
    /// Appends a value, keeping the ones present.
    pub(crate) add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

impl HeaderEdits {
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Headers {
    pub(crate) request: HeaderEdits,
    pub(crate) response: HeaderEdits,
}

#[async_trait::async_trait]
impl Filter for Headers {
    fn kind(&self) -> &'static str {
        "headers"
    }

    fn edits_responses(&self) -> bool {
        !self.response.is_empty()
    }

    async fn on_request(&self, req: &mut Parts, _ctx: &mut RequestCtx) -> Result<Flow, ProxyError> {
        self.request.apply(&mut req.headers);
        Ok(Flow::Continue)
    }

    async fn on_response(
        &self,
        res: &mut Response<Body>,
        _ctx: &mut RequestCtx,
    ) -> Result<(), ProxyError> {
        self.response.apply(res.headers_mut());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_then_set_then_add() {
        let edits = HeaderEdits {
            remove: vec![HeaderName::from_static("x-secret")],
            set: vec![(
                HeaderName::from_static("x-env"),
                HeaderValue::from_static("prod"),
            )],
            add: vec![(
                HeaderName::from_static("x-tag"),
                HeaderValue::from_static("b"),
            )],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-secret", HeaderValue::from_static("s"));
        headers.append("x-env", HeaderValue::from_static("dev"));
        headers.append("x-env", HeaderValue::from_static("test"));
        headers.insert("x-tag", HeaderValue::from_static("a"));
        edits.apply(&mut headers);
        assert!(!headers.contains_key("x-secret"));
        assert_eq!(
            headers.get_all("x-env").iter().collect::<Vec<_>>(),
            ["prod"]
        );
        assert_eq!(
            headers.get_all("x-tag").iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
