//! A minimal, fast HTTP/1.1 upstream for the load benchmark: answers every request with a
//! fixed body. `bench_upstream ADDRESS BODY_BYTES [json]`: with `json`, the body is a JSON
//! document of about that size, sent as `application/json` (for the compression benchmark).

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

#[path = "../benches/json_document.rs"]
mod json_document;
use json_document::document;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:19000".into());
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let json = args.next().as_deref() == Some("json");
    let body = Bytes::from(if json {
        document(size)
    } else {
        vec![b'x'; size]
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&address).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let mut response = Response::new(Full::new(body.clone()));
                    if json {
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                    }
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
