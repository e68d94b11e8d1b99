//! The floor of the load benchmark: the least a hyper reverse proxy does. One upstream, one
//! current-thread runtime, HTTP/1.1 keep-alive on both sides through a pool of
//! `conn::http1` senders, and nothing else (no routing, no header rewriting, no limits, no
//! metrics). Every figure of the gateway is read against it: what is above the floor is
//! ours. `floor_proxy LISTEN UPSTREAM`.

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

type Pool = Rc<RefCell<Vec<client::SendRequest<Incoming>>>>;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:19086".into());
    let upstream: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:19080".into())
        .parse()
        .map_err(|_| std::io::Error::other("UPSTREAM must be IP:PORT"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        let pool: Pool = Rc::default();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let pool = Rc::clone(&pool);
            tokio::task::spawn_local(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let pool = Rc::clone(&pool);
                    async move {
                        Ok::<_, std::convert::Infallible>(forward(&pool, upstream, request).await)
                    }
                });
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Sends `request` on an idle pooled connection (or a new one) and hands the connection back
/// once the response head is in; a failure is a bare 502.
async fn forward(
    pool: &Pool,
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Response<http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>> {
    let bad_gateway = || {
        let mut response =
            Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response
    };
    // A sender is ready once the response body before has been read; closed ones go.
    let idle = {
        let mut senders = pool.borrow_mut();
        senders.retain(|s| !s.is_closed());
        let ready = senders.iter().position(|s| s.is_ready());
        ready.map(|i| senders.swap_remove(i))
    };
    let mut sender = match idle {
        Some(sender) => sender,
        None => {
            let Ok(stream) = tokio::net::TcpStream::connect(upstream).await else {
                return bad_gateway();
            };
            let _ = stream.set_nodelay(true);
            let Ok((sender, connection)) = client::handshake(TokioIo::new(stream)).await else {
                return bad_gateway();
            };
            tokio::task::spawn_local(connection);
            sender
        }
    };
    match sender.send_request(request).await {
        Ok(response) => {
            pool.borrow_mut().push(sender);
            response.map(http_body_util::Either::Left)
        }
        Err(_) => bad_gateway(),
    }
}
