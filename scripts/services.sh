#!/usr/bin/env bash
# Installs what the build and tests need (apt packages, the s3s-fs S3
# server) and starts the servers vodfarm's tests talk to:
# PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) and Redis on
# 127.0.0.1:6379. Safe to run again: it only starts what is down.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

here=$(cd "$(dirname "$0")" && pwd)
# Build and runtime dependencies (toolchain, FFmpeg libraries, servers).
bash "$here/deps.sh"

apt_updated=0
ensure() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "services: installing $2 (for $1)"
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
ensure_pkg() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "services: installing ${missing[*]}"
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Origin bench peers: nginx, wrk and varnish; varnish is also the CDN
# edge of tests/it/edge.rs (deploy/varnish/vodfarm.vcl).
ensure_pkg nginx-light varnish wrk

# Browser tests: Debian's chromium driven by playwright-core (web/).
ensure chromium chromium
if [ ! -d web/node_modules/playwright-core ] && command -v npm >/dev/null 2>&1; then
  echo "services: installing web/ test dependencies (npm ci)"
  (cd web && npm ci --no-audit --no-fund >/dev/null)
fi

# A real S3-protocol server for the object-store tests.
s3s_bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$s3s_bin" ]; then
  echo "services: installing s3s-fs (S3 test server, ~2 min)"
  cargo install --locked s3s-fs --version 0.14.1 --features binary
fi

# A real Kafka-protocol broker for the event bus tests (tests/it/counts.rs
# runs `tansu broker … --storage-engine memory://tansu/`). The default
# build has no storage engine, hence the features; ~10 min, once: the
# binary is reused.
tansu_bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$tansu_bin" ]; then
  echo "services: installing tansu (Kafka test broker, ~10 min)"
  cargo install --locked tansu --version '^0.6' --features dynostore,postgres
fi

# Python test clients of the creator API: tuspy (a stock tus client) and
# schemathesis (fuzzes the api from its OpenAPI document).
ensure python3 python3
python3 -m pip --version >/dev/null 2>&1 || ensure_pkg python3-pip
if ! python3 -c 'import tusclient' >/dev/null 2>&1; then
  echo "services: installing tuspy (pip)"
  python3 -m pip install -q tuspy || python3 -m pip install -q --break-system-packages tuspy
fi
# Pinned: tests/tus/schemathesis_hooks.py uses some of its internals.
schemathesis_version=4.32.5
if ! python3 -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$schemathesis_version')" >/dev/null 2>&1 \
   || ! command -v schemathesis >/dev/null 2>&1; then
  echo "services: installing schemathesis $schemathesis_version (pip)"
  python3 -m pip install -q "schemathesis==$schemathesis_version" \
    || python3 -m pip install -q --break-system-packages "schemathesis==$schemathesis_version"
fi

# NVRTC (CUDA C -> PTX, no GPU needed) for native/'s kernel-compile
# test: PyPI's wheel ships libnvrtc.so.12; tests find it through python3
# (or NVRTC_LIB).
nvrtc_version=12.9.86
if ! python3 -c 'import nvidia.cuda_nvrtc' >/dev/null 2>&1; then
  echo "services: installing nvidia-cuda-nvrtc-cu12 $nvrtc_version (pip)"
  python3 -m pip install -q "nvidia-cuda-nvrtc-cu12==$nvrtc_version" \
    || python3 -m pip install -q --break-system-packages "nvidia-cuda-nvrtc-cu12==$nvrtc_version"
fi

# Monitoring checks of ./test.sh: promtool (Debian's prometheus package;
# only its promtool is used, recommends skipped) checks and unit-tests the
# alert rules and lints every role's /metrics (tests/it/metrics.rs);
# helm-python-sdk (Helm's Go SDK as a Python module, no helm binary
# needed) lints and renders the chart for scripts/helm_check.py.
if ! command -v promtool >/dev/null 2>&1; then
  echo "services: installing prometheus (for promtool)"
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version >/dev/null
if ! python3 -c 'import helm_python' >/dev/null 2>&1; then
  echo "services: installing helm-python-sdk (pip)"
  python3 -m pip install -q helm-python-sdk || python3 -m pip install -q --break-system-packages helm-python-sdk
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  echo "services: installing pyyaml (pip)"
  python3 -m pip install -q pyyaml || python3 -m pip install -q --break-system-packages pyyaml
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "services: starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
fi
for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
pg_isready -h 127.0.0.1 -p 5432
# Tests connect as postgres without a password over TCP.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  echo "services: PostgreSQL refuses postgres@127.0.0.1 without a password; enable trust auth for local TCP" >&2
  exit 1
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 60); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null
echo "services: PostgreSQL and Redis are up"
