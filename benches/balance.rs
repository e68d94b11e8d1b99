//! One balancer pick over 100 endpoints, for each strategy.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::upstream::{hash_key, Balancer, Endpoint, HashOn, Strategy};
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let endpoints: Vec<Arc<Endpoint>> = (0..100u32)
        .map(|i| {
            let address = format!("10.0.{}.{}:80", i / 250, i % 250 + 1)
                .parse()
                .unwrap();
            Arc::new(Endpoint::new(address, 1 + i % 3, 1, 1))
        })
        .collect();
    let strategies = [
        ("round_robin", Strategy::RoundRobin),
        ("random", Strategy::Random),
        ("least_request", Strategy::LeastRequest),
        (
            "consistent_hash",
            Strategy::ConsistentHash(HashOn::ClientIp),
        ),
    ];
    let key = hash_key(b"user-42");
    for (name, strategy) in strategies {
        let balancer = Balancer::new(endpoints.clone(), strategy);
        c.bench_function(&format!("balance_pick/100_endpoints/{name}"), |b| {
            b.iter(|| balancer.pick(black_box(Some(key))).map(|e| e.weight))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
