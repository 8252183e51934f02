#!/usr/bin/env bash
# The load benchmark and the other figures, side by side with nginx, in one run:
#   benches/load/run.sh                  # everything (about 15 minutes on 2 cores)
#   benches/load/run.sh --skip-figures   # the load scenarios only
#   benches/load/run.sh --help           # lengths, rounds, connections, token counts
# Installs what it needs (nginx and wrk from apt, oha with cargo; cached after the first run),
# builds the release binary, and writes benches/results/latest.md and latency.svg.
# Not part of CI: targets are reported against, never asserted.
set -euo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y "${need_apt[@]}" || { $sudo apt-get update && $sudo apt-get install -y "${need_apt[@]}"; }
    # The package starts a system nginx on port 80; the benchmark runs its own.
    $sudo nginx -s stop 2>/dev/null || true
    $sudo systemctl stop haproxy 2>/dev/null || $sudo service haproxy stop 2>/dev/null || true
fi
if ! command -v oha >/dev/null 2>&1; then
    export PATH="$HOME/.cargo/bin:$PATH"
    command -v oha >/dev/null 2>&1 || cargo install oha --locked
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "needs 2 cores: the proxy under test on one, everything else on the other" >&2
    exit 1
fi
cargo build --release --bin tokengate
exec python3 benches/load/bench.py "$@"
