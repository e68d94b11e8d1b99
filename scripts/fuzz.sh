#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 30) and fails on any crash, hang
# or broken invariant. Needs the nightly toolchain (cargo fuzz builds with sanitizers) and
# cargo-fuzz, installed here when missing. New inputs go to a scratch corpus; the committed
# seeds in fuzz/corpus/<target>/ are only read. A failing input is kept in
# fuzz/artifacts/<target>/; make it a regression test by copying it into the target's corpus
# (the unit test `corpora_replay_without_a_broken_invariant` replays every corpus).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# FUZZ_BUILD="--dev --sanitizer none" builds faster and fuzzes slower (CI's short runs); the
# default is an optimised build with AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
toolchain=nightly
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain; building with the stable one (RUSTC_BOOTSTRAP)" >&2
    toolchain=stable
    export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +"$toolchain" fuzz list --fuzz-dir fuzz)
fi
read -r -a build <<<"${FUZZ_BUILD:-}"
cargo +"$toolchain" fuzz build --fuzz-dir fuzz "${build[@]}" 2>&1 | tail -n 30
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
    dict=fuzz/dict/http.dict
    case "$target" in config*) dict=fuzz/dict/yaml.dict ;; esac
    mkdir -p "$scratch/$target"
    echo "== fuzz $target (${seconds}s)"
    if ! cargo +"$toolchain" fuzz run --fuzz-dir fuzz "${build[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -dict="$dict" -print_final_stats=1 2>"$scratch/$target.log"; then
        failed+=("$target")
        tail -n 40 "$scratch/$target.log"
    fi
    grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|#[0-9]+.*DONE)" "$scratch/$target.log" || true
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failures in ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no failure"
