//! Compression levels on a 16 KiB JSON body, the case the `compress` defaults were chosen
//! for: time per body at each level (criterion) and the size it comes to (printed once).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::io::Write;

#[path = "json_document.rs"]
mod json_document;

fn gzip(body: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

fn brotli(body: &[u8], level: u32) -> Vec<u8> {
    let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, level, 22);
    e.write_all(body).unwrap();
    e.into_inner()
}

fn zstd(body: &[u8], level: i32) -> Vec<u8> {
    zstd::encode_all(body, level).unwrap()
}

fn bench(c: &mut Criterion) {
    let body = json_document::document(16 << 10);
    type Case = (&'static str, u32, fn(&[u8], u32) -> Vec<u8>);
    let cases: [Case; 9] = [
        ("gzip", 1, gzip),
        ("gzip", 4, gzip),
        ("gzip", 6, gzip),
        ("br", 1, brotli),
        ("br", 4, brotli),
        ("br", 6, brotli),
        ("zstd", 1, |b, l| zstd(b, l as i32)),
        ("zstd", 3, |b, l| zstd(b, l as i32)),
        ("zstd", 6, |b, l| zstd(b, l as i32)),
    ];
    for (name, level, encode) in cases {
        let size = encode(&body, level).len();
        println!(
            "{name} level {level}: {} -> {size} bytes ({:.1}%)",
            body.len(),
            100.0 * size as f64 / body.len() as f64
        );
        c.bench_function(&format!("compress_16k_json/{name}_{level}"), |b| {
            b.iter(|| encode(black_box(&body), level))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
