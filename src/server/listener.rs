//! Listening sockets and client connections.
//!
//! Every worker thread binds its own socket on each listener address with SO_REUSEPORT, so the
//! kernel spreads connections over the workers and no accept lock is shared. A connection is
//! served on the worker that accepted it, start to end, by hyper's HTTP/1.1 server or, when it
//! opens with the HTTP/2 preface (prior knowledge, h2c), by hyper's HTTP/2 server, both
//! configured from `limits:`.

use super::idle::Idle;
use super::lent::Lent;
use super::park::{parkable, OnTcp, Park, Parking, Watched};
use super::shutdown::{Shutdown, Stopped};
use crate::proxy::{handle, ConnCounter, ConnInfo, PerIpLimits};
use crate::snapshot::{Gateway, Limits};
use crate::timer::{self, Sleep};
use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use socket2::{Domain, Socket, Type};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// hyper's own default, above which it keeps headers on the heap.
const HYPER_STACK_HEADERS: usize = 100;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long the accept loop waits after a failed accept (out of files) before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);
/// An HTTP/2 client that does not answer a keep-alive PING within this is dropped.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How soon a connection that sent part of the HTTP/2 preface is looked at again.
const PREFACE_RETRY: Duration = Duration::from_millis(5);

/// Binds a listening socket that other workers can bind too (SO_REUSEPORT).
pub(crate) fn bind(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// What one listener serves: its name and, for a TLS listener, the settings it started with
/// (the current snapshot's, taken at each accept, win; these stay if a reload drops them,
/// because switching TLS off needs a restart).
pub(crate) struct ListenerInfo {
    pub(crate) name: Arc<str>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    info: Arc<ListenerInfo>,
    gateway: Arc<Gateway>,
    counter: Arc<ConnCounter>,
    gauge: Gauge,
    shutdown: Arc<Shutdown>,
) {
    // Accepts failed in a row: out of files, a run of them is logged once when it starts
    // and once when it ends, not every retry.
    let mut failing: u64 = 0;
    let mut serving = Serving::new(gateway.snapshot.load().limits);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.stopped() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                if failing == 0 {
                    tracing::warn!(%error, "accept failed");
                }
                failing += 1;
                // EMFILE and friends: back off briefly instead of spinning.
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        if failing > 0 {
            tracing::info!(failed = failing, "accepting again");
            failing = 0;
        }
        let snapshot = gateway.snapshot.load();
        let limits = snapshot.limits;
        let tls = info
            .tls
            .as_ref()
            .map(|initial| Arc::clone(snapshot.listener_tls.get(&*info.name).unwrap_or(initial)));
        // Trusted proxies carry many clients: their connections are not held to one
        // client's share.
        let per_ip = (limits.max_connections_per_ip.is_some()
            || limits.connection_rate_per_ip.is_some())
            && !snapshot.is_trusted(peer.ip());
        drop(snapshot);
        let per_ip = per_ip.then_some((
            peer.ip(),
            PerIpLimits {
                max_open: limits.max_connections_per_ip,
                rate: limits.connection_rate_per_ip,
            },
        ));
        let slot = match counter.admit(limits.max_connections, per_ip, &gauge) {
            Ok(slot) => slot,
            Err(refused) => {
                tracing::debug!(%peer, reason = refused.label(), "connection refused");
                gateway
                    .metrics
                    .connection_refused(&info.name, refused.label());
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if serving.limits != limits {
            serving = Serving::new(limits);
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = Arc::clone(&info.name);
        let conn = ConnInfo::new(Arc::clone(&gateway), peer, scheme, listener, slot);
        tokio::spawn(serve_connection(
            stream,
            tls,
            Arc::new(conn),
            Arc::clone(&serving),
            Arc::clone(&shutdown),
        ));
    }
}

/// How connections are served under one `limits:`: hyper's builders, made when the limits
/// change rather than for every connection, whose task would otherwise hold them.
struct Serving {
    limits: Limits,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Serving {
    fn new(limits: Limits) -> Arc<Serving> {
        let mut h1 = http1::Builder::new();
        h1.timer(crate::timer::WheelTimer)
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true);
        if limits.max_headers > HYPER_STACK_HEADERS {
            h1.max_headers(limits.max_headers);
        }
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            // Bounds HEADERS + CONTINUATION per request: a CONTINUATION flood ends in an error.
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_reset_streams)
            .keep_alive_interval(limits.idle_timeout / 2)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        Arc::new(Serving { limits, h1, h2 })
    }
}

/// Waits until the client has sent enough to tell HTTP/1 from the HTTP/2 preface (`true`).
async fn first_bytes(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == buf.len() {
            return Ok(true);
        }
        // A partial HTTP/2 preface: wait for the rest.
        Sleep::after(PREFACE_RETRY).await;
    }
}

/// Drives a client connection to its end. On shutdown (`stopped`), or once idle for
/// `idle_timeout` (`idle`), it stops taking requests and lets those in flight finish
/// (`graceful`, hyper's for the protocol; HTTP/2: GOAWAY).
async fn drive<C: Future>(
    mut conn: Pin<&mut C>,
    graceful: fn(Pin<&mut C>),
    stopped: &mut Stopped<'_>,
    idle: Pin<&mut Idle<'_>>,
    peer: SocketAddr,
) -> C::Output {
    tokio::select! {
        biased;
        result = conn.as_mut() => result,
        _ = stopped => {
            graceful(conn.as_mut());
            conn.await
        }
        _ = idle => {
            tracing::debug!(%peer, "idle_timeout reached, closing");
            graceful(conn.as_mut());
            conn.await
        }
    }
}

/// Logs how a client connection ended, when it ended with an error.
fn ended(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}

/// Serves one client connection, start to end. The task's size is what every idle
/// connection costs, so what is shared is passed by reference down the calls rather than
/// held again at each level.
async fn serve_connection(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    info: Arc<ConnInfo>,
    serving: Arc<Serving>,
    shutdown: Arc<Shutdown>,
) {
    if let Some(tls) = tls {
        // Boxed whole, handshake and session: inline, the TLS stream would size every
        // plaintext connection's task to it.
        return Box::pin(serve_tls(stream, tls, info, serving, shutdown)).await;
    }
    // A client that connects and stays silent is dropped after the header-read timeout.
    let first = timer::timeout(serving.limits.header_read_timeout, first_bytes(&stream));
    let h2 = match first.await {
        Ok(Ok(h2)) => h2,
        Ok(Err(_)) => return,
        Err(_) => {
            tracing::debug!(peer = %info.peer, "no request before header_read_timeout, closing");
            return;
        }
    };
    if h2 {
        Box::pin(serve_h2(stream, info, &serving, &shutdown)).await;
    } else {
        serve_h1(stream, info, &serving, &shutdown).await;
    }
}

/// Shakes hands with a client on a TLS listener, then serves it.
async fn serve_tls(
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    info: Arc<ConnInfo>,
    serving: Arc<Serving>,
    shutdown: Arc<Shutdown>,
) {
    // The handshake counts against the header-read timeout too. Boxed, as the session is
    // below: each is large, and inline they would size this future for good.
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = Box::pin(acceptor.accept(stream));
    let peer = info.peer;
    let stream = match timer::timeout(serving.limits.header_read_timeout, handshake).await {
        Ok(Ok(stream)) => Box::new(stream),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not done before header_read_timeout, closing");
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2) {
        serve_h2(stream, info, &serving, &shutdown).await;
    } else {
        serve_h1(stream, info, &serving, &shutdown).await;
    }
}

/// Serves HTTP/2. Boxed on the plaintext path (the TLS path is boxed whole): the connection's
/// state is large, and inline it would size every plaintext HTTP/1.1 connection's task to it.
async fn serve_h2<I>(io: I, info: Arc<ConnInfo>, serving: &Serving, shutdown: &Shutdown)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watched = Arc::clone(&info);
    // Each stream runs in a task of its own, which holds the request's future.
    let service = service_fn(move |request| {
        let info = Arc::clone(&info);
        async move { Ok::<_, Infallible>(handle(&info, request, None).await) }
    });
    let idle = Idle::new(&watched.activity, serving.limits.idle_timeout);
    tokio::pin!(idle);
    let mut stopped = shutdown.stopped();
    let conn = serving.h2.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let graceful = http2::Connection::graceful_shutdown;
    let result = drive(conn, graceful, &mut stopped, idle, watched.peer).await;
    ended(watched.peer, result);
}

/// Serves HTTP/1.1, parking the connection whenever it falls idle (see `park`): hyper serves
/// it from one park to the next, and in between the connection holds only its socket.
async fn serve_h1<I>(mut io: I, info: Arc<ConnInfo>, serving: &Serving, shutdown: &Shutdown)
where
    I: OnTcp + AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let park = Park::new();
    let parks = Arc::clone(&park);
    let watched = Arc::clone(&info);
    // Lent per request: hyper keeps the slot for a request's future for the whole
    // connection, so inline it would cost every idle connection the full size of one.
    let mut service = service_fn(move |request| {
        let info = Arc::clone(&info);
        let (park, body_end) = parks.begin(parkable(&request));
        Lent::new(async move {
            let response = handle(&info, request, body_end).await;
            Ok::<_, Infallible>(response.map(|body| Watched { body, park }))
        })
    });
    let idle = Idle::new(&watched.activity, serving.limits.idle_timeout);
    tokio::pin!(idle);
    // Made once: it registers its waker once for the whole connection.
    let mut stopped = shutdown.stopped();
    let mut ahead = Bytes::new();
    loop {
        // hyper's part, in a block of its own: what it holds, the boxed connection and the
        // parts taken back from it, is gone before the connection parks, so while parked the
        // connection's future keeps no room for any of it.
        {
            let parking = Parking::new(io, ahead, Arc::clone(&park));
            let mut conn = Box::new(
                serving
                    .h1
                    .serve_connection(TokioIo::new(parking), service)
                    .with_upgrades(),
            );
            let graceful = http1::UpgradeableConnection::graceful_shutdown;
            let pinned = Pin::new(&mut *conn);
            let peer = watched.peer;
            let result = drive(pinned, graceful, &mut stopped, idle.as_mut(), peer).await;
            if !park.is_parked() {
                ended(peer, result);
                break;
            }
            (io, ahead, service) = match conn.into_parts() {
                Some(parts) => take_back(parts),
                None => break,
            };
        }
        let parked = Instant::now();
        if ahead.is_empty() {
            let woken = tokio::select! {
                biased;
                _ = &mut stopped => false,
                _ = idle.as_mut() => false,
                readable = io.tcp().readable() => readable.is_ok(),
            };
            if !woken {
                break;
            }
        }
        park.came_back_after(parked.elapsed());
    }
}

/// What a parked connection keeps of hyper's: the socket, the service and the bytes hyper had
/// read ahead, copied out, since hyper's are a view into its whole read buffer, which goes
/// with the rest here.
fn take_back<I, S>(parts: http1::Parts<TokioIo<Parking<I>>, S>) -> (I, Bytes, S) {
    let ahead = Bytes::copy_from_slice(&parts.read_buf);
    (parts.io.into_inner().into_inner(), ahead, parts.service)
}
