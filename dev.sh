#!/usr/bin/env bash
# README's first command: build vodfarm and run it locally.
#   ./dev.sh
# Installs and starts PostgreSQL and Redis if they are missing or down,
# builds the binary, applies the schema, and runs the coordinator.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null 2>&1; then
  echo "dev: cargo is missing. Install Rust first: https://rustup.rs (then re-run ./dev.sh)" >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodfarm/target}"
bash scripts/services.sh
cargo build --locked --bin vodfarm
bin="$CARGO_TARGET_DIR/debug/vodfarm"

data="${VODFARM_DATA_DIR:-$PWD/.vodfarm}"
mkdir -p "$data"
if [ ! -s "$data/worker-token" ]; then
  head -c 32 /dev/urandom | base64 | tr -d '/+=' > "$data/worker-token"
fi
export VODFARM_WORKER_TOKEN="${VODFARM_WORKER_TOKEN:-$(cat "$data/worker-token")}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/vodfarm}"
listen="${VODFARM_COORDINATOR_LISTEN:-127.0.0.1:8082}"

"$bin" migrate
cat <<MSG

vodfarm coordinator on http://$listen  (Ctrl-C stops it)
  worker token:  $data/worker-token
  queue stats:   curl -H "Authorization: Bearer \$(cat $data/worker-token)" http://$listen/v1/queue/stats
  metrics:       curl http://$listen/metrics
  all flags:     $bin coordinator --help

MSG
exec "$bin" coordinator --listen "$listen"
