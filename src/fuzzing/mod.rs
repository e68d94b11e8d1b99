//! Entry points of the fuzz targets in `fuzz/`, one per parser that reads untrusted or
//! operator input. Each takes the fuzzer's bytes through the gateway's own code and panics
//! when an invariant breaks: the invariants are the oracles, not only "no crash". The tests
//! below replay every committed corpus (`fuzz/corpus/<target>/`), so an input that once
//! failed stays a regular regression test.

pub mod cache;
pub mod config;
pub mod discovery;
mod fields;
pub mod forwarded;
mod framing;
pub mod http1;
pub mod jwt;
pub mod request;

/// A target's entry: the fuzzer's bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by its name in `fuzz/`, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config::config),
    ("config_yaml", config::config_yaml),
    ("request", request::request),
    ("forwarded", forwarded::forwarded),
    ("jwt", jwt::jwt),
    ("cache", cache::cache),
    ("discovery", discovery::discovery),
    ("http1", http1::http1),
];

#[cfg(test)]
mod tests {
    use super::TARGETS;
    use std::path::Path;

    /// Every committed corpus input and every found crash, through its target.
    #[test]
    fn corpora_replay_without_a_broken_invariant() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let folder = root.join(name);
            let inputs: Vec<_> = std::fs::read_dir(&folder)
                .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
                .map(|entry| entry.unwrap().path())
                .collect();
            assert!(!inputs.is_empty(), "{name}: empty corpus");
            for input in inputs {
                let data = std::fs::read(&input).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(
                    outcome.is_ok(),
                    "{name}: {} broke an invariant",
                    input.display()
                );
            }
        }
    }
}
