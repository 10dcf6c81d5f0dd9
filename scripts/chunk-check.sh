#!/usr/bin/env bash
# The chunked-transcoding bench on a big machine: a 10-minute 1080p30
# source, one worker in one job against 8 workers on its chunks.
# Needs 16 cores or more (each worker gets two); PostgreSQL on
# VODFARM_BENCH_PG (default the local one) and s3s-fs (scripts/services.sh).
#
#   scripts/chunk-check.sh            # defaults below
#   BENCH_CHUNK_SECONDS=30 scripts/chunk-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc)
if [ "$cores" -lt 16 ]; then
    echo "chunk-check: this machine has $cores cores; the check wants 16 or more" >&2
    echo "  (run 'cargo bench --bench chunked' with BENCH_WORKERS=2 on small machines)" >&2
    exit 2
fi
export BENCH_SECONDS="${BENCH_SECONDS:-600}"
export BENCH_SIZE="${BENCH_SIZE:-1920x1080}"
export BENCH_FPS="${BENCH_FPS:-30}"
export BENCH_WORKERS="${BENCH_WORKERS:-8}"
export BENCH_CHUNK_SECONDS="${BENCH_CHUNK_SECONDS:-20}"
export BENCH_PRESET="${BENCH_PRESET:-veryfast}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench --locked --bench chunked 2>&1 | tee "$out"
line=$(grep '^chunked: ' "$out" | tail -1)
ratio=$(sed -n 's/.*ratio=\([0-9.]*\).*/\1/p' <<<"$line")
single=$(sed -n 's/.*single_s=\([0-9.]*\).*/\1/p' <<<"$line")
p32=$(sed -n 's/.*projected_32_s=\([0-9.]*\).*/\1/p' <<<"$line")
# With 8 workers the real run should be well ahead of one worker; the
# 32-worker projection under a tenth of the single job.
awk -v r="$ratio" -v s="$single" -v p="$p32" 'BEGIN {
    ok = 1
    if (r < 3.0) { print "chunk-check: ratio " r " < 3 with 8 workers"; ok = 0 }
    if (p >= s / 10) { print "chunk-check: projected_32_s " p " >= single_s/10 (" s / 10 ")"; ok = 0 }
    if (ok) print "chunk-check: ok"
    exit ok ? 0 : 1
}'
