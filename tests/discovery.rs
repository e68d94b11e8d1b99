//! Endpoint discovery from a file that another tool rewrites.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// Writes `text` the way editors and Kubernetes do: a new file renamed over the old one.
fn write_atomically(path: &std::path::Path, text: &str) {
    let staging = path.with_extension("new");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

fn config(path: &std::path::Path) -> String {
    format!(
        "listeners: [{{ name: http, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  up:\n    discovery: {{ file: {{ path: {}, interval: 100ms }} }}\n\
         routes:\n  - name: all\n    upstream: up\n",
        path.display()
    )
}

#[tokio::test]
async fn rewritten_endpoint_files_are_followed_and_bad_ones_ignored() {
    let first = upstream().run().await;
    let second = upstream().run().await;
    let path = temp_path("endpoints.yaml");
    write_atomically(&path, &format!("- {}\n", first.addr));
    let gw = gateway(&config(&path));
    let mut client = Client::http1(gw.addr()).await;
    assert_eq!(client.get("/").await.status, 200);
    assert_eq!(first.requests(), 1);

    write_atomically(
        &path,
        &format!("[{{\"address\": \"{}\", \"weight\": 2}}]", second.addr),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while second.requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the new endpoint never got traffic"
        );
        assert_eq!(
            client.get("/").await.status,
            200,
            "a request failed during the switch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = first.requests();

    // A broken file, then no file at all: the last good endpoints keep serving.
    write_atomically(&path, "- [this is not an endpoint\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert_eq!(client.get("/").await.status, 200);
    }
    assert_eq!(first.requests(), before, "the old endpoint came back");
}

#[test]
fn a_missing_endpoint_file_is_a_config_error() {
    let path = temp_path("missing.yaml");
    let error = portcullis::config::parse(&config(&path), "t", &|_| None).unwrap_err();
    assert!(
        error.issues()[0].starts_with("upstreams.up.discovery.file.path: cannot read"),
        "{:?}",
        error.issues()
    );
}
