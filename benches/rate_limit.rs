//! One local rate-limit check: uncontended on one key, and two threads over 10 000 keys.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::filter::rate_limit::{Gcra, LocalLimiter, Rate};
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let gcra = Gcra::new(Rate::parse("1000000/s").unwrap(), 1000);
    let limiter = LocalLimiter::new(gcra, 100_000);
    c.bench_function("rate_limit_check/one_key", |b| {
        b.iter(|| limiter.check(black_box(42), limiter.now()))
    });

    let limiter = Arc::new(LocalLimiter::new(gcra, 100_000));
    let keys: Vec<u64> = (0..10_000u64)
        .map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    c.bench_function("rate_limit_check/2_threads_10k_keys", |b| {
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..2u64 {
                    let limiter = Arc::clone(&limiter);
                    let keys = &keys;
                    scope.spawn(move || {
                        for i in 0..iters {
                            let key = keys[((i * 2 + thread) % 10_000) as usize];
                            black_box(limiter.check(key, limiter.now()));
                        }
                    });
                }
            });
            // Each thread ran `iters` checks in this time: the time one check takes while
            // another core checks too.
            started.elapsed()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
