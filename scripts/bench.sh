#!/usr/bin/env bash
# End-to-end benchmarks (see docs/performance.md). Generates its data under
# bench-data/ (not committed); measures the release binary with
# examples/measure.rs (wall time, CPU time, peak RSS via wait4) against the
# emulator on loopback. Everything runs on this machine; nothing leaves it.
#
#   scripts/bench.sh            all of it (about 6 minutes)
#   QUICK=1 scripts/bench.sh    skip the 60-second rate run and the 1M-row runs
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
QUICK=${QUICK:-0}
mkdir -p bench-data
cargo build --release --locked --quiet --bin kycshare --examples
BIN=target/release/kycshare
EX=target/release/examples
export BANXA_API_KEY=bench-key BANXA_API_SECRET=bench-secret
export SUMSUB_APP_TOKEN=bench-app SUMSUB_SECRET_KEY=bench-sumsub-secret

MOCK_PID=
start_mock() { # args: extra mock flags; sets URL
  stop_mock
  "$BIN" mock --listen 127.0.0.1:0 "$@" > bench-data/mock.out 2>bench-data/mock.err &
  MOCK_PID=$!
  for _ in $(seq 100); do
    URL=$(sed -n 's/^listening on //p' bench-data/mock.out)
    [ -n "$URL" ] && return 0
    sleep 0.05
  done
  echo "the emulator did not start" >&2; exit 1
}
stop_mock() { if [ -n "$MOCK_PID" ]; then kill "$MOCK_PID" 2>/dev/null || true; wait "$MOCK_PID" 2>/dev/null || true; MOCK_PID=; fi; }
trap stop_mock EXIT

gen() { # rows file
  [ -s "$2" ] || "$EX/gen_export" "$1" --bad-every 1000 --dup-every 997 > "$2"
}
valid_rows() { # the records that are sent (not invalid, not duplicate)
  { "$BIN" -q validate "$1" --results bench-data/count.results.csv --force --json 2>/dev/null || true; } | sed -n 's/.*"validated":\([0-9]*\).*/\1/p'
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

DATA=bench-data/export-$ROWS.csv
gen "$ROWS" "$DATA"
echo; echo "== validate: $ROWS rows ($(du -m "$DATA" | cut -f1) MB), one thread"
"$EX/measure" --rows "$ROWS" -- "$BIN" -q validate "$DATA" --results bench-data/validate.results.csv --force

echo; echo "== emulator: signed, verified, validated requests/s (in-process bench client, 10 s)"
"$EX/mock_bench" || true

R200=bench-data/export-200000.csv
gen 200000 "$R200"
SENT200=$(valid_rows "$R200")
echo; echo "== run, unthrottled (--rate 1000000/s, --concurrency 64): 200,000 rows ($SENT200 sent) against the emulator"
start_mock --rate-limit off
"$EX/measure" --rows 200000 -- "$BIN" -q run "$R200" --base-url "$URL" --rate 1000000/s --concurrency 64 \
  --results bench-data/run.results.csv --retry-file bench-data/run.retry.csv --force

echo; echo "== the same with --ledger (a new ledger: every row is sent and recorded)"
rm -f bench-data/bench-ledger.db*
"$EX/measure" --rows 200000 -- "$BIN" -q run "$R200" --base-url "$URL" --rate 1000000/s --concurrency 64 \
  --results bench-data/run.results.csv --retry-file bench-data/run.retry.csv --force --ledger bench-data/bench-ledger.db

echo; echo "== --mint at --rate 20/s, 400 rows, Sumsub latency 200 ms, Banxa latency 150 ms, concurrency auto"
rm -f bench-data/mint.rec.jsonl
start_mock --rate-limit off --latency 150 --sumsub-latency 200 --check-tokens --record bench-data/mint.rec.jsonl
"$EX/gen_export" 400 --applicant > bench-data/mint-400.csv
"$EX/measure" --rows 400 -- "$BIN" -q run bench-data/mint-400.csv --base-url "$URL" --rate 20/s --mint \
  --for-client-id banxa --sumsub-base-url "$URL" --results bench-data/mint.results.csv --retry-file bench-data/mint.retry.csv --force
"$EX/rate_check" bench-data/mint.rec.jsonl

if [ "$QUICK" = 1 ]; then exit 0; fi

echo; echo "== rate accuracy: --rate 500/min against an emulator limited to 500/min, 520 rows (~62 s)"
rm -f bench-data/rate.rec.jsonl
start_mock --rate-limit 500/min --record bench-data/rate.rec.jsonl
"$EX/gen_export" 520 > bench-data/rate-520.csv
"$BIN" -q run bench-data/rate-520.csv --base-url "$URL" --rate 500/min \
  --results bench-data/rate.results.csv --retry-file bench-data/rate.retry.csv --force || true
"$EX/rate_check" bench-data/rate.rec.jsonl

echo; echo "== run, unthrottled, $ROWS rows: peak RSS"
start_mock --rate-limit off
rm -f bench-data/nightly-ledger.db*
"$EX/measure" --rows "$ROWS" -- "$BIN" -q run "$DATA" --base-url "$URL" --rate 1000000/s --concurrency 64 \
  --results bench-data/run1m.results.csv --retry-file bench-data/run1m.retry.csv --force --ledger bench-data/nightly-ledger.db

echo; echo "== nightly: the same $ROWS-row export again, every row already in the ledger (all skipped)"
"$EX/measure" --rows "$ROWS" -- "$BIN" -q run "$DATA" --base-url "$URL" \
  --results bench-data/nightly.results.csv --retry-file bench-data/nightly.retry.csv --force --ledger bench-data/nightly-ledger.db
