//! Exchanges with an endpoint: the request sent on a pooled or new connection (HTTP/1.1 or
//! HTTP/2, TLS when configured), health probes, and the in-flight count least_request reads.

use super::balance::Strategy;
use super::health::HealthSpec;
use super::pool::Sender;
use super::{Endpoint, Protocol, Upstream};
use crate::body::Body;
use crate::body::{ReturnConnection, UpstreamBody};
use crate::error::ProxyError;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use tokio::net::TcpStream;

/// The most an upstream HTTP/1.1 connection buffers ahead of the client. hyper's read buffer
/// otherwise grows towards 400 KiB on a fast upstream, and a client that reads slowly (or not
/// at all) keeps all of it: 282 KiB per stalled 1 MiB response. Reads of this size keep large
/// bodies flowing in few system calls.
const UPSTREAM_READ_BUFFER_BYTES: usize = 64 * 1024;

impl Upstream {
    /// The request target for `path` on `endpoint`: the path alone for HTTP/1.1, an absolute
    /// URI for HTTP/2, whose authority is `host` (default: the endpoint's address).
    pub(crate) fn target(
        &self,
        endpoint: &Endpoint,
        host: Option<&HeaderValue>,
        path: PathAndQuery,
    ) -> Option<Uri> {
        if self.spec.protocol == Protocol::Http1 {
            return Some(Uri::from(path));
        }
        let authority = host
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| endpoint.authority.clone());
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(if self.spec.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri.authority = Some(authority);
        uri.path_and_query = Some(path);
        Uri::from_parts(uri).ok()
    }

    /// One health check of `endpoint`: a fresh connection, `GET path`, the status.
    pub(super) async fn probe(
        &self,
        endpoint: &Endpoint,
        spec: &HealthSpec,
    ) -> Result<StatusCode, String> {
        let host = spec.host.clone().unwrap_or_else(|| {
            HeaderValue::from_str(endpoint.authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("upstream"))
        });
        let check = async {
            let target = self
                .target(endpoint, Some(&host), spec.path.clone())
                .ok_or("invalid check target")?;
            let mut request = Request::get(target)
                .header(http::header::USER_AGENT, "portcullis-health-check")
                .body(Body::Empty)
                .map_err(|e| e.to_string())?;
            let sender = self
                .connect(endpoint, false)
                .await
                .map_err(|e| e.to_string())?;
            let response = match sender {
                Sender::H1(mut s) => {
                    request.headers_mut().insert(http::header::HOST, host);
                    s.send_request(request).await
                }
                Sender::H2(mut s) => {
                    *request.version_mut() = http::Version::HTTP_2;
                    s.send_request(request).await
                }
            };
            response.map(|r| r.status()).map_err(|e| e.to_string())
        };
        tokio::time::timeout(spec.timeout, check)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    /// One exchange with `endpoint`. A pooled connection that turns out to be closed before
    /// the request went out is replaced by a fresh one, transparently.
    pub(crate) async fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let _in_flight =
            (self.spec.balance == Strategy::LeastRequest).then(|| InFlight::new(endpoint));
        let timeouts = self.spec.timeouts;
        let mut pooled = endpoint.pool.take();
        loop {
            let reused = pooled.is_some();
            let sender = match pooled.take() {
                Some(sender) => sender,
                // Boxed: the handshake future is large and rare; inline it would be moved
                // with every request's future.
                None => Box::pin(self.connect(endpoint, true)).await?,
            };
            let attempt = async {
                match sender {
                    Sender::H1(mut s) => {
                        if !s.is_ready() && s.ready().await.is_err() {
                            return Err((None, None));
                        }
                        let result = s.try_send_request(request).await;
                        result
                            .map(|r| (r, Some(s)))
                            .map_err(|mut e| (e.take_message(), Some(e.into_error())))
                    }
                    Sender::H2(mut s) => {
                        if s.ready().await.is_err() {
                            return Err((None, None));
                        }
                        let result = s.try_send_request(request).await;
                        result
                            .map(|r| (r, None))
                            .map_err(|mut e| (e.take_message(), Some(e.into_error())))
                    }
                }
            };
            let outcome = crate::timer::timeout(timeouts.response, attempt).await;
            match outcome {
                Err(_) => return Err(ProxyError::ResponseTimeout),
                Ok(Ok((response, h1))) => {
                    let release = if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                        None
                    } else {
                        h1.map(|s| (Arc::clone(endpoint) as Arc<dyn ReturnConnection<_>>, s))
                    };
                    return Ok(response.map(|body| {
                        Body::Upstream(UpstreamBody::new(body, timeouts.idle, release))
                    }));
                }
                // The connection was already dead: the request never left, try a fresh one.
                Ok(Err((Some(unsent), _))) if reused => request = unsent,
                Ok(Err((_, Some(error)))) => return Err(ProxyError::from_upstream(error)),
                Ok(Err((_, None))) => {
                    return Err(ProxyError::Connect(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "pooled connection closed",
                    )))
                }
            }
        }
    }

    /// A new connection to `endpoint`; an HTTP/2 one also joins the pool when `share`.
    async fn connect(&self, endpoint: &Endpoint, share: bool) -> Result<Sender, ProxyError> {
        let timeouts = self.spec.timeouts;
        let stream = match tokio::time::timeout(
            timeouts.connect,
            TcpStream::connect(endpoint.address),
        )
        .await
        {
            Err(_) => return Err(ProxyError::ConnectTimeout),
            Ok(Err(error)) => return Err(ProxyError::Connect(error)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.spec.tls else {
            return self.handshake(endpoint, TokioIo::new(stream), share).await;
        };
        // Verified against `server_name`, or else the endpoint's IP address.
        let name = tls
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(endpoint.address.ip().into()));
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
        match tokio::time::timeout(timeouts.connect, connector.connect(name, stream)).await {
            Err(_) => Err(ProxyError::ConnectTimeout),
            Ok(Err(error)) => {
                tracing::debug!(address = %endpoint.address, %error, "upstream TLS handshake failed");
                Err(ProxyError::Connect(error))
            }
            Ok(Ok(stream)) => self.handshake(endpoint, TokioIo::new(stream), share).await,
        }
    }

    /// The HTTP handshake on a connected (and maybe TLS) stream; the connection's own task
    /// runs on this worker.
    async fn handshake<I>(
        &self,
        endpoint: &Endpoint,
        io: TokioIo<I>,
        share: bool,
    ) -> Result<Sender, ProxyError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let address = endpoint.address;
        match self.spec.protocol {
            Protocol::Http1 => {
                let (sender, conn) = http1::Builder::new()
                    .max_buf_size(UPSTREAM_READ_BUFFER_BYTES)
                    .handshake(io)
                    .await
                    .map_err(ProxyError::Upstream)?;
                tokio::spawn(async move {
                    if let Err(error) = conn.with_upgrades().await {
                        tracing::debug!(%address, %error, "upstream connection ended");
                    }
                });
                Ok(Sender::H1(sender))
            }
            Protocol::Http2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .map_err(ProxyError::Upstream)?;
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%address, %error, "upstream connection ended");
                    }
                });
                if share {
                    endpoint.pool.put(Sender::H2(sender.clone()));
                }
                Ok(Sender::H2(sender))
            }
        }
    }
}

/// Counts a request against its endpoint until the response head is in (or it failed).
struct InFlight<'a>(&'a Endpoint);

impl<'a> InFlight<'a> {
    fn new(endpoint: &'a Endpoint) -> InFlight<'a> {
        endpoint
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(endpoint)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
