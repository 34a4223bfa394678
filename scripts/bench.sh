#!/usr/bin/env bash
# End-to-end benchmarks (see docs/performance.md). Generates its data under
# bench-data/ (not committed) and measures the release binary with
# examples/measure.rs (wall time, CPU time, peak RSS via wait4).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
mkdir -p bench-data
cargo build --release --locked --quiet --bin kycshare --example gen_export --example measure
DATA=bench-data/export-$ROWS.csv
if [ ! -s "$DATA" ]; then
  target/release/examples/gen_export "$ROWS" --bad-every 1000 --dup-every 997 > "$DATA"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== validate: $ROWS rows ($(du -m "$DATA" | cut -f1) MB), one thread"
target/release/examples/measure --rows "$ROWS" -- \
  target/release/kycshare -q validate "$DATA" --results bench-data/validate.results.csv --force
