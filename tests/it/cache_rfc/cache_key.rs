//! §2 (the cache key): the scheme and the authority with its port are part of the key.

use super::*;
use http_body_util::BodyExt;

/// One GET over TLS (trusting `cert_pem`), answering the `x-cache` label.
async fn tls_fetch(addr: std::net::SocketAddr, cert_pem: &str, host: &str, path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::builder()
        .uri(path)
        .header("host", host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let label = response.headers()["x-cache"].to_str().unwrap().to_string();
    response.into_body().collect().await.unwrap();
    label
}

#[tokio::test]
async fn an_answer_fetched_over_one_scheme_is_never_served_on_the_other() {
    let origin = origin().await;
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_file = temp_path("cache-tls.pem");
    let key_file = temp_path("cache-tls.key");
    std::fs::write(&cert_file, issued.cert.pem()).unwrap();
    std::fs::write(&key_file, issued.signing_key.serialize_pem()).unwrap();
    let yaml = config(origin.addr, "{ ttl: 1h }").replace(
        "listeners: [{ name: http, address: 127.0.0.1:0 }]",
        &format!(
            "listeners:\n  - {{ name: http, address: 127.0.0.1:0 }}\n  - {{ name: https, address: 127.0.0.1:0, tls: {{ certificates: [{{ cert_file: {}, key_file: {} }}] }} }}",
            cert_file.display(),
            key_file.display()
        ),
    );
    let gw = gateway(&yaml);
    let host = [("host", "shop.example")];
    let mut client = Client::http1(gw.addr()).await;
    fetch(&mut client, "/page", &host).await;
    assert_eq!(x_cache(&fetch(&mut client, "/page", &host).await), "HIT");
    let https = gw.addr_of("https");
    let pem = issued.cert.pem();
    assert_eq!(
        tls_fetch(https, &pem, "shop.example", "/page").await,
        "MISS"
    );
    assert_eq!(tls_fetch(https, &pem, "shop.example", "/page").await, "HIT");
    assert_eq!(origin.count("/page"), 2);
    // The port is part of the authority: another port, another entry.
    let other_port = [("host", "shop.example:8443")];
    assert_eq!(
        x_cache(&fetch(&mut client, "/page", &other_port).await),
        "MISS"
    );
}
