//! The JSON body of the compression benchmarks, shared by `benches/compress.rs` and the load
//! benchmark's upstream (`examples/bench_upstream.rs`).

/// A JSON array of user records, about `size` bytes: as repetitive as real API answers.
pub fn document(size: usize) -> Vec<u8> {
    let mut out = String::from("[");
    let mut i = 0;
    while out.len() + 2 < size {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{i},\"user\":\"user-{}\",\"email\":\"u{}@example.com\",\"active\":{},\"score\":{}.{}}}",
            i * 7919 % 1000,
            i * 31 % 977,
            i % 3 == 0,
            i * 13 % 100,
            i % 10
        ));
        i += 1;
    }
    out.push(']');
    out.into_bytes()
}
