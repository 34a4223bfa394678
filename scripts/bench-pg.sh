#!/usr/bin/env bash
# The PostgreSQL ledger's end-to-end figures (docs/performance.md), against a
# throwaway server with its default durability (WITH_PG_DURABLE=1):
#
#   - 200,000 rows unthrottled into a fresh PostgreSQL ledger and into a
#     fresh SQLite ledger, alternately, twice each (the same emulator);
#   - a 1,000,000-row run filling a PostgreSQL ledger, then the same export
#     again: the all-skipped nightly run over 1,000,000 identities.
#
#   scripts/bench-pg.sh            (ROWS=1000000 by default; QUICK=1: the 200,000-row part only)
#
# Everything runs on this machine; nothing leaves it. Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${KYCSHARE_TEST_PG_URL:-}" ]; then
    WITH_PG_DURABLE=1 exec scripts/with-postgres.sh "$0" "$@"
fi
ROWS=${ROWS:-1000000}
QUICK=${QUICK:-0}
T=${CARGO_TARGET_DIR:-target}
mkdir -p bench-data
cargo build --release --locked --quiet --bin kycshare --examples
BIN=$T/release/kycshare
EX=$T/release/examples
export BANXA_API_KEY=bench-key BANXA_API_SECRET=bench-secret
PG=$KYCSHARE_TEST_PG_URL
pg_fresh() { # a new, empty database; prints its URL
    local db=$1
    psql "$PG" -q -X -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    echo "${PG%/*}/$db"
}

"$BIN" mock --listen 127.0.0.1:0 --rate-limit off >bench-data/pgmock.out 2>bench-data/pgmock.err &
MOCK=$!
trap 'kill $MOCK 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    URL=$(sed -n "s/^listening on //p" bench-data/pgmock.out 2>/dev/null)
    [ -n "$URL" ] && break
    sleep 0.05
done

R200=bench-data/export-200k.csv
[ -s "$R200" ] || "$EX/gen_export" 200000 --bad-every 1000 --dup-every 997 >"$R200"
unthrottled() { # ledger rows input
    "$EX/measure" --rows "$2" -- "$BIN" -q run "$3" --base-url "$URL" --rate 1000000/s --concurrency 64 \
        --results bench-data/pg.results.csv --retry-file bench-data/pg.retry.csv --force --ledger "$1"
}
for round in 1 2; do
    echo; echo "== round $round: 200,000 rows unthrottled, a fresh SQLite ledger"
    rm -f bench-data/pg-bench-sqlite.db*
    unthrottled bench-data/pg-bench-sqlite.db 200000 "$R200"
    echo; echo "== round $round: 200,000 rows unthrottled, a fresh PostgreSQL ledger"
    unthrottled "$(pg_fresh bench200)" 200000 "$R200"
done
if [ "$QUICK" = 1 ]; then exit 0; fi

DATA=bench-data/export-$ROWS.csv
[ -s "$DATA" ] || "$EX/gen_export" "$ROWS" --bad-every 1000 --dup-every 997 >"$DATA"
NIGHT=$(pg_fresh nightly)
echo; echo "== $ROWS rows unthrottled, filling a fresh PostgreSQL ledger"
unthrottled "$NIGHT" "$ROWS" "$DATA"
echo; echo "== nightly: the same $ROWS-row export again, every row in the PostgreSQL ledger (all skipped)"
"$EX/measure" --rows "$ROWS" -- "$BIN" -q run "$DATA" --base-url "$URL" \
    --results bench-data/pgnight.results.csv --retry-file bench-data/pgnight.retry.csv --force --ledger "$NIGHT"
"$BIN" ledger "$NIGHT" | head -8
