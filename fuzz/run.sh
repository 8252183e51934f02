#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; FUZZ_SECONDS=n to change).
#   fuzz/run.sh                 # all targets
#   fuzz/run.sh bearer config   # some
# Needs cargo-fuzz (installed here if missing) and nightly flags: the machine has one stable
# toolchain, so RUSTC_BOOTSTRAP=1 lets it take them. New corpus entries land in a scratch
# folder; the committed corpus (fuzz/corpus) stays small: add an input there by hand when it
# found a bug. A crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(bearer value_token store_record config http1_head)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cargo fuzz build --sanitizer address
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    echo "== $t: ${seconds}s"
    if ! cargo fuzz run --sanitizer address "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
        tail -n 40 "$scratch/$t.log"
        echo "!! $t failed; the input is in fuzz/artifacts/$t" >&2
        exit 1
    fi
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$scratch/$t.log" || true
done
echo "all targets ran ${seconds}s without a crash"
