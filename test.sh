#!/usr/bin/env bash
# README's second command: every check and test of vodfarm.
#   ./test.sh            alert rules, Helm chart, format, lints, unit and
#                        integration tests
# Servers (PostgreSQL, Redis) are installed and started if they are down.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vodfarm/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

bash scripts/services.sh

echo "== promtool check rules, promtool test rules (alerts)"
promtool check rules helm/vodfarm/files/prometheus/alerts.yaml
promtool test rules deploy/prometheus/alerts_test.yaml
echo "== helm lint, helm template, dashboard (scripts/helm_check.py)"
python3 scripts/helm_check.py
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
