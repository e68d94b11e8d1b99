//! A one-connection HTTP/1.1 client for the control plane: fetching JWK sets and talking to
//! service registries. Not for proxied traffic (that goes through `upstream/` and its pools).

use crate::tls::UpstreamTls;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// TCP keepalive on registry connections: first probe after this much silence…
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// …then one every this long, and the peer is gone after this many unanswered.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// Sends `request` (its URI holds only the path) to the host of `base` over a new connection,
/// with TLS when `base` is `https` (and `tls` is set). Errors are short human-readable texts.
pub(crate) async fn send<B>(
    base: &Uri,
    tls: Option<&UpstreamTls>,
    mut request: Request<B>,
) -> Result<Response<Incoming>, String>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let host = base.host().ok_or("URL without host")?;
    let https = base.scheme_str() == Some("https");
    let port = base.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    // Registry watches stay open for hours: notice a peer that vanished without a word.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    if !request.headers().contains_key(HOST) {
        let authority = base.authority().map_or(host, |a| a.as_str());
        let value = HeaderValue::from_str(authority).map_err(|e| e.to_string())?;
        request.headers_mut().insert(HOST, value);
    }
    match (https, tls) {
        (false, _) => exchange(TokioIo::new(stream), request).await,
        (true, None) => Err("https needs a TLS configuration".into()),
        (true, Some(tls)) => {
            let name = ServerName::try_from(bare_host.to_string())
                .map_err(|_| format!("invalid server name {bare_host:?}"))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(stream), request).await
        }
    }
}

async fn exchange<I, B>(io: TokioIo<I>, request: Request<B>) -> Result<Response<Incoming>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))
}
