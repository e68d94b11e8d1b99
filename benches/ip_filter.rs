//! One ip_filter lookup against 100, 10 000 and 100 000 prefixes (random IPv4 /16 to /32 and
//! IPv6 /32 to /64): an address on the list and one off it. Bisection keeps the cost growing
//! with the logarithm of the list.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ipnet::IpNet;
use portcullis::filter::ip_filter::prefixes::{parse_prefix, PrefixSet};
use std::net::IpAddr;

fn prefixes(n: usize, rng: &mut fastrand::Rng) -> Vec<IpNet> {
    (0..n)
        .map(|i| {
            let text = if i % 10 == 9 {
                let a = rng.u16(..);
                let b = rng.u16(..);
                format!("2001:{a:x}:{b:x}::/{}", rng.u8(32..=64))
            } else {
                let ip = std::net::Ipv4Addr::from(rng.u32(..));
                format!("{ip}/{}", rng.u8(16..=32))
            };
            parse_prefix(&text).unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(7);
    for n in [100, 10_000, 100_000] {
        let list = prefixes(n, &mut rng);
        let set = PrefixSet::new(&list);
        // The first address of a listed prefix, and an address in no prefix.
        let listed: IpAddr = list[n / 2].network();
        let unlisted: IpAddr = (0..)
            .map(|_| IpAddr::from(std::net::Ipv4Addr::from(rng.u32(..))))
            .find(|ip| !set.contains(*ip))
            .unwrap();
        c.bench_function(&format!("ip_filter_lookup/{n}_prefixes/listed"), |b| {
            b.iter(|| set.contains(black_box(listed)))
        });
        c.bench_function(&format!("ip_filter_lookup/{n}_prefixes/unlisted"), |b| {
            b.iter(|| set.contains(black_box(unlisted)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
