//! Route lookup over 1 000 routes: exact hosts, wildcard hosts, prefixes, exact paths and a few
//! regexes, looked up for hits at several depths and for a miss.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
use portcullis::router::{Fields, HostMatch, PathMatch, RouteMatch, Router};
use regex::Regex;
use std::sync::Arc;

fn routes() -> Router<usize> {
    let mut list = Vec::new();
    for i in 0..1000usize {
        let host = match i % 4 {
            0 => HostMatch::Any,
            1 => HostMatch::Exact(format!("svc{}.example.com", i % 50)),
            2 => HostMatch::Suffix(format!(".tenant{}.example.com", i % 20)),
            _ => HostMatch::Exact("api.example.com".into()),
        };
        let path = match i % 10 {
            0 => PathMatch::Exact(format!("/exact/{i}")),
            9 if i % 100 == 99 => {
                PathMatch::Regex(Regex::new(&format!("^/re{i}/[0-9]+$")).unwrap())
            }
            _ => PathMatch::prefix(&format!("/api/v{}/resource{i}", i % 3)),
        };
        list.push((
            RouteMatch {
                host,
                path,
                methods: None,
                conditions: Vec::new(),
            },
            Arc::new(i),
        ));
    }
    Router::new(list)
}

fn bench(c: &mut Criterion) {
    let router = routes();
    let headers = HeaderMap::new();
    let fields = Fields {
        headers: &headers,
        query: None,
    };
    let get = Method::GET;
    let cases = [
        (
            "exact_host_prefix",
            "api.example.com",
            "/api/v1/resource7/items/42",
        ),
        (
            "wildcard_host",
            "a.tenant2.example.com",
            "/api/v2/resource2/x",
        ),
        ("any_host_exact_path", "other.example.com", "/exact/500"),
        ("miss", "nobody.example.com", "/not/routed/anywhere/at/all"),
    ];
    for (name, host, path) in cases {
        c.bench_function(&format!("lookup_1000_routes/{name}"), |b| {
            b.iter(|| router.lookup(black_box(Some(host)), black_box(path), &get, fields))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
