//! The per-route filter chain. Each entry of a route's `filters:` compiles once into an
//! `Arc<dyn Filter>`; a request runs `on_request` in config order until one answers, the
//! action (proxy, respond, redirect) unless one did, `on_response` in reverse for the filters
//! that ran, and `on_complete` exactly once for each of them, whatever happened (also when the
//! client goes away mid-request: the [`Chain`] does it when dropped).

use crate::body::Body;
use crate::context::RequestCtx;
use crate::error::ProxyError;
use http::request::Parts;
use http::Response;
use std::sync::Arc;

/// Returned once per filter and moved at most a few times: boxing the response would cost an
/// allocation on every short-circuit to save copying a couple of hundred bytes.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Flow {
    Continue,
    /// Answer now; later filters and the route's action do not run.
    Respond(Response<Body>),
}

/// How the request ended, for `on_complete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The status sent to the client; `None` when the client went away first.
    pub(crate) status: Option<u16>,
    /// Where a failure came from (`client`, `upstream`), if the request failed.
    pub(crate) error: Option<&'static str>,
}

impl Outcome {
    pub(crate) const ABORTED: Outcome = Outcome {
        status: None,
        error: Some("client"),
    };
}

#[async_trait::async_trait]
pub(crate) trait Filter: Send + Sync + 'static {
    /// The kind, as a `filters:` entry names it (`rate_limit`, `jwt` …): which filter
    /// answered a request, in its trace.
    fn kind(&self) -> &'static str;

    async fn on_request(
        &self,
        _req: &mut Parts,
        _ctx: &mut RequestCtx,
    ) -> Result<Flow, ProxyError> {
        Ok(Flow::Continue)
    }

    async fn on_response(
        &self,
        _res: &mut Response<Body>,
        _ctx: &mut RequestCtx,
    ) -> Result<(), ProxyError> {
        Ok(())
    }

    /// Whether `on_response` does anything. Filters that leave responses alone say no, and
    /// the chain skips the call (an async call costs an allocation).
    fn edits_responses(&self) -> bool {
        true
    }

    /// Cannot fail; breakers and metrics record here.
    fn on_complete(&self, _ctx: &RequestCtx, _outcome: &Outcome) {}

    /// Up to how many bytes of the request body the filter wants to see (in `ctx.body`).
    /// When any of a route's filters says so, the body is read whole before they run; a
    /// longer body is refused with 413.
    fn reads_body(&self) -> Option<u64> {
        None
    }
}

/// A request to the route's upstream outside any client's request: background work such as
/// refreshing a cache entry. Given to filters that need it when they are built.
pub(crate) trait Fetch: Send + Sync {
    /// `req` as it should go (its method included), with `body` (empty: none).
    fn fetch(
        &self,
        req: Parts,
        body: bytes::Bytes,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, ProxyError>> + Send>,
    >;
}

/// Where a filter list is attached. The listener's filters run first (before routing), then
/// the route's; responses pass back through them in reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Listener = 0,
    Route = 1,
}

/// One request's pass through its listener's and its route's filters. Owns the request context
/// so that dropping it (the client went away) still completes every filter that ran.
pub(crate) struct Chain<'a> {
    /// The filters of each stage, by [`Stage`].
    stages: [&'a [Arc<dyn Filter>]; 2],
    /// How many of each stage's filters ran.
    ran: [usize; 2],
    completed: bool,
    pub(crate) ctx: RequestCtx,
}

impl<'a> Chain<'a> {
    pub(crate) fn new(ctx: RequestCtx) -> Chain<'a> {
        Chain {
            stages: [&[], &[]],
            ran: [0, 0],
            completed: false,
            ctx,
        }
    }

    /// Runs `on_request` of one stage's filters in order. `Some(response)`: a filter answered
    /// or failed.
    pub(crate) async fn request(
        &mut self,
        stage: Stage,
        filters: &'a [Arc<dyn Filter>],
        req: &mut Parts,
    ) -> Option<Result<Response<Body>, ProxyError>> {
        let at = stage as usize;
        self.stages[at] = filters;
        for filter in filters {
            self.ran[at] += 1;
            match filter.on_request(req, &mut self.ctx).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Respond(response)) => {
                    self.ctx.answered_by = Some(filter.kind());
                    return Some(Ok(response));
                }
                Err(error) => return Some(Err(error)),
            }
        }
        None
    }

    /// Whether any filter ran (and so may want to see the response).
    pub(crate) fn ran_any(&self) -> bool {
        self.ran != [0, 0]
    }

    /// Runs `on_response` in reverse for the filters that ran: the route's, then the
    /// listener's.
    pub(crate) async fn response(
        &mut self,
        response: &mut Response<Body>,
    ) -> Result<(), ProxyError> {
        for at in [Stage::Route as usize, Stage::Listener as usize] {
            for filter in self.stages[at][..self.ran[at]].iter().rev() {
                if filter.edits_responses() {
                    filter.on_response(response, &mut self.ctx).await?;
                }
            }
        }
        Ok(())
    }

    /// Runs `on_complete` for the filters that ran (once; dropping the chain later does not
    /// repeat it).
    pub(crate) fn complete(&mut self, outcome: &Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: &Outcome) {
        if self.completed {
            return;
        }
        self.completed = true;
        for at in [Stage::Listener as usize, Stage::Route as usize] {
            for filter in &self.stages[at][..self.ran[at]] {
                filter.on_complete(&self.ctx, outcome);
            }
        }
    }
}

impl Drop for Chain<'_> {
    fn drop(&mut self) {
        self.finish(&Outcome::ABORTED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every hook call in a shared log.
    struct Probe {
        label: &'static str,
        answer: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl Filter for Probe {
        fn kind(&self) -> &'static str {
            "probe"
        }

        async fn on_request(
            &self,
            _req: &mut Parts,
            _ctx: &mut RequestCtx,
        ) -> Result<Flow, ProxyError> {
            self.log.lock().unwrap().push(format!("req {}", self.label));
            Ok(if self.answer {
                Flow::Respond(Response::new(Body::Empty))
            } else {
                Flow::Continue
            })
        }
        async fn on_response(
            &self,
            _res: &mut Response<Body>,
            _ctx: &mut RequestCtx,
        ) -> Result<(), ProxyError> {
            self.log.lock().unwrap().push(format!("res {}", self.label));
            Ok(())
        }
        fn on_complete(&self, _ctx: &RequestCtx, outcome: &Outcome) {
            self.log
                .lock()
                .unwrap()
                .push(format!("done {} {:?}", self.label, outcome.status));
        }
    }

    fn probes(log: &Arc<Mutex<Vec<String>>>, answer_at: Option<usize>) -> Vec<Arc<dyn Filter>> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, label)| {
                Arc::new(Probe {
                    label,
                    answer: answer_at == Some(i),
                    log: Arc::clone(log),
                }) as Arc<dyn Filter>
            })
            .collect()
    }

    fn parts() -> Parts {
        http::Request::new(()).into_parts().0
    }

    #[tokio::test]
    async fn order_short_circuit_and_completion() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let filters = probes(&log, Some(1));
        let mut chain = Chain::new(RequestCtx::new(
            http::HeaderValue::from_static("t"),
            [127, 0, 0, 1].into(),
        ));
        let mut req = parts();
        let mut response = chain
            .request(Stage::Route, &filters, &mut req)
            .await
            .unwrap()
            .unwrap();
        chain.response(&mut response).await.unwrap();
        chain.complete(&Outcome {
            status: Some(200),
            error: None,
        });
        assert_eq!(
            *log.lock().unwrap(),
            [
                "req a",
                "req b",
                "res b",
                "res a",
                "done a Some(200)",
                "done b Some(200)"
            ]
        );
    }

    #[tokio::test]
    async fn a_dropped_chain_completes_once_as_aborted() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let filters = probes(&log, None);
        let mut chain = Chain::new(RequestCtx::new(
            http::HeaderValue::from_static("t"),
            [127, 0, 0, 1].into(),
        ));
        let mut req = parts();
        assert!(chain
            .request(Stage::Route, &filters, &mut req)
            .await
            .is_none());
        drop(chain);
        let log = log.lock().unwrap();
        assert_eq!(log.iter().filter(|l| l.starts_with("done")).count(), 3);
        assert!(log
            .iter()
            .all(|l| !l.starts_with("done") || l.ends_with("None")));
    }

    #[tokio::test]
    async fn listener_filters_run_first_and_see_the_response_last() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let listener: Vec<Arc<dyn Filter>> = vec![Arc::new(Probe {
            label: "l",
            answer: false,
            log: Arc::clone(&log),
        })];
        let route = probes(&log, None);
        let mut chain = Chain::new(RequestCtx::new(
            http::HeaderValue::from_static("t"),
            [127, 0, 0, 1].into(),
        ));
        let mut req = parts();
        assert!(chain
            .request(Stage::Listener, &listener, &mut req)
            .await
            .is_none());
        assert!(chain
            .request(Stage::Route, &route, &mut req)
            .await
            .is_none());
        let mut response = Response::new(Body::Empty);
        chain.response(&mut response).await.unwrap();
        chain.complete(&Outcome {
            status: Some(200),
            error: None,
        });
        assert_eq!(
            *log.lock().unwrap(),
            [
                "req l",
                "req a",
                "req b",
                "req c",
                "res c",
                "res b",
                "res a",
                "res l",
                "done l Some(200)",
                "done a Some(200)",
                "done b Some(200)",
                "done c Some(200)"
            ]
        );
    }
}
