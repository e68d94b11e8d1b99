//! Signed tokens for the load benchmark, one per line, each for a different subject:
//! `bench_tokens HS256|RS256 COUNT`. HS256 uses the benchmark secret, RS256 the key pair under
//! benches/keys; both exist for benchmarking only.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::io::Write;

const BENCH_SECRET: &str = "a-benchmark-secret-of-sufficient-length";

fn main() {
    let mut args = std::env::args().skip(1);
    let alg = args.next().unwrap_or_else(|| "HS256".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let (alg, key) = match alg.as_str() {
        "RS256" => {
            let pem = std::fs::read("benches/keys/rsa-bench-private.pem")
                .expect("run from the project root");
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(&pem).expect("RSA private key"),
            )
        }
        _ => (
            Algorithm::HS256,
            EncodingKey::from_secret(BENCH_SECRET.as_bytes()),
        ),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..count {
        let claims = serde_json::json!({"iss": "https://auth.example.com", "aud": "api",
            "sub": format!("user-{i}"), "scope": "read write", "iat": now, "exp": now + 3600});
        let token = encode(&Header::new(alg), &claims, &key).expect("signing");
        writeln!(out, "{token}").expect("stdout");
    }
}
