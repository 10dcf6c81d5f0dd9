#!/usr/bin/env bash
# README's first command: build vodfarm and run the whole system locally.
#   ./dev.sh [vodfarm dev flags...]      e.g. ./dev.sh --sample my.mp4
# Installs the Debian packages it needs (FFmpeg libraries, PostgreSQL and
# Redis servers, …) when missing, builds the binary, then runs
# `vodfarm dev`: a private PostgreSQL and Redis under ./.vodfarm, the api
# with its web page, the coordinator, a worker, an origin and a shield,
# and a demo video uploaded, transcoded and ready to play.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  if command -v curl >/dev/null 2>&1; then
    echo "dev: installing the Rust toolchain with rustup (into ~/.cargo)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . "$HOME/.cargo/env"
  else
    echo "dev: cargo is missing. Install Rust (https://rustup.rs), then run ./dev.sh again." >&2
    exit 1
  fi
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodfarm/target}"
bash scripts/deps.sh
cargo build --locked --bin vodfarm
exec "$CARGO_TARGET_DIR/debug/vodfarm" dev "$@"
