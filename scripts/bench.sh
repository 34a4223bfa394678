#!/usr/bin/env bash
# End-to-end benchmarks (see docs/performance.md). Generates its data under
# bench-data/ (not committed); measures the release binary with
# examples/measure.rs (wall time, CPU time, peak RSS via wait4) against the
# emulator on loopback. Everything runs on this machine; nothing leaves it.
#
# The comparisons run the tools a user would hold kycshare against on the
# same machine, same data, same moment, and print the ratios: oha against
# kycshare on one static nginx (one worker, answers 202 `{}`), `xsv count`
# against `kycshare validate`. nginx comes from Debian's packages and oha
# and xsv from crates.io when missing (NO_INSTALL=1 skips a missing tool).
# None of this runs in CI.
#
#   scripts/bench.sh            all of it (about 10 minutes)
#   QUICK=1 scripts/bench.sh    skip the 60-second rate runs, the pacer comparison and the 1M-row runs
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
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
  rm -f bench-data/mock.out  # the old address must not be read before the new emulator writes its own
  "$BIN" mock --listen 127.0.0.1:0 "$@" > bench-data/mock.out 2>bench-data/mock.err &
  MOCK_PID=$!
  for _ in $(seq 100); do
    URL=$(sed -n "s/^listening on //p" bench-data/mock.out 2>/dev/null)
    [ -n "$URL" ] && return 0
    sleep 0.05
  done
  echo "the emulator did not start" >&2; exit 1
}
stop_mock() { if [ -n "$MOCK_PID" ]; then kill "$MOCK_PID" 2>/dev/null || true; wait "$MOCK_PID" 2>/dev/null || true; MOCK_PID=; fi; }
trap stop_all EXIT

gen() { # rows file
  [ -s "$2" ] || "$EX/gen_export" "$1" --bad-every 1000 --dup-every 997 > "$2"
}
valid_rows() { # the records that are sent (not invalid, not duplicate)
  { "$BIN" -q validate "$1" --results bench-data/count.results.csv --force --json 2>/dev/null || true; } | sed -n 's/.*"validated":\([0-9]*\).*/\1/p'
}

# --- the tools compared with ------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
install_tools() {
  [ "${NO_INSTALL:-0}" = 1 ] && return 0
  if ! have nginx; then
    echo "installing nginx from Debian's packages (nginx-light)"
    local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null || echo "nginx could not be installed: its comparison is skipped" >&2
  fi
  for tool in oha xsv; do
    have "$tool" || { echo "installing $tool from crates.io (cargo install --locked $tool)"; cargo install --locked --quiet "$tool" || echo "$tool could not be installed: its comparison is skipped" >&2; }
  done
}
install_tools

NGINX_PID=
free_port() { # a loopback port nothing listens on
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}
start_nginx() { # sets NGINX_URL; one worker, every request answered 202 `{}`, nothing logged
  local dir="$PWD/bench-data/nginx" port
  port=$(free_port)
  mkdir -p "$dir/tmp"
  cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$port;
    location / { default_type application/json; return 202 '{}'; }
  }
}
EOF
  nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
  NGINX_PID=$!
  NGINX_URL="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nginx did not start: $(cat "$dir/error.log")" >&2; return 1
}
stop_nginx() { if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=; fi; }
stop_all() { stop_mock; stop_nginx; }
field() { # file key: the number after "key:" in a measure report
  sed -n "s|^$2: *\([0-9.]*\).*|\1|p" "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

DATA=bench-data/export-$ROWS.csv
gen "$ROWS" "$DATA"
echo; echo "== validate: $ROWS rows ($(du -m "$DATA" | cut -f1) MB), read on one thread, signed and written on another"
"$EX/measure" --rows "$ROWS" -- "$BIN" -q validate "$DATA" --results bench-data/validate.results.csv --force | tee bench-data/validate.measure
if have xsv; then
  echo; echo "== xsv count on the same file (parse only: no validation, no body, no signature, nothing written)"
  "$EX/measure" --rows "$ROWS" -- xsv count "$DATA" | tee bench-data/xsv.measure
  echo "ratio: kycshare validate / xsv count = $(ratio "$(field bench-data/validate.measure throughput)" "$(field bench-data/xsv.measure throughput)")x the throughput"
fi

echo; echo "== emulator: signed, verified, validated requests/s (in-process bench client, 10 s)"
"$EX/mock_bench" || true

R200=bench-data/export-200000.csv
gen 200000 "$R200"
SENT200=$(valid_rows "$R200")
if have nginx && have oha; then
  start_nginx
  echo; echo "== static nginx (one worker, 202 {}), concurrency 64: kycshare run, 200,000 rows ($SENT200 sent)"
  "$EX/measure" --rows "$SENT200" -- "$BIN" -q run "$R200" --base-url "$NGINX_URL" --rate 1000000/s --concurrency 64 \
    --results bench-data/nginx.results.csv --retry-file bench-data/nginx.retry.csv --force | tee bench-data/run-nginx.measure
  # oha sends one kycshare body and the same headers $SENT200 times
  printf '%s' '{"identityReference":"cust-0000000001","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0.eyJ1cmwiOiJodHRwczovL2FwaS5zdW1zdWIuY29tIiwiYXBwbGljYW50SWQiOiI2NWIxYzJkM2U0ZjVhNiJ9.c2lnbmF0dXJl","email":"customer.0000000001@example.com","mobileNumber":"+61412345678"}' > bench-data/oha.body.json
  echo; echo "== static nginx, the same: oha -n $SENT200 -c 64, POST of a $(wc -c < bench-data/oha.body.json)-byte body"
  "$EX/measure" --rows "$SENT200" -- oha --no-tui -n "$SENT200" -c 64 -m POST -D bench-data/oha.body.json \
    -H 'content-type: application/json' \
    -H "authorization: Bearer bench-key:$(printf '%064d' 0):$(date +%s%3N)-0000000001" \
    -o bench-data/oha.out "$NGINX_URL/eapi/v0/identities/token/share" | tee bench-data/oha.measure
  grep -E 'Success rate|Requests/sec|\[20[0-9]\]' bench-data/oha.out | sed 's/^ */  oha: /'
  echo "ratio: kycshare / oha = $(ratio "$(field bench-data/run-nginx.measure throughput)" "$(field bench-data/oha.measure throughput)")x the throughput," \
    "$(ratio "$(field bench-data/run-nginx.measure cpu/row)" "$(field bench-data/oha.measure cpu/row)")x the CPU a request"
  stop_nginx
fi

echo; echo "== run, unthrottled (--rate 1000000/s, --concurrency 64): 200,000 rows ($SENT200 sent) against the emulator"
start_mock --rate-limit off
"$EX/measure" --rows 200000 -- "$BIN" -q run "$R200" --base-url "$URL" --rate 1000000/s --concurrency 64 \
  --results bench-data/run.results.csv --retry-file bench-data/run.retry.csv --force

echo; echo "== verify of that run's accepted records, unthrottled (--rate 1000000/s --concurrency 64)"
"$EX/measure" --rows "$SENT200" -- "$BIN" -q verify bench-data/run.results.csv --rate 1000000/s --concurrency 64 \
  --output bench-data/run.verify.csv --force || true

echo; echo "== the same with --ledger (a new ledger: every row is sent and recorded)"
rm -f bench-data/bench-ledger.db*
"$EX/measure" --rows 200000 -- "$BIN" -q run "$R200" --base-url "$URL" --rate 1000000/s --concurrency 64 \
  --results bench-data/run.results.csv --retry-file bench-data/run.retry.csv --force --ledger bench-data/bench-ledger.db

echo; echo "== --mint at --rate 20/s (--mint-rate 40/s: the emulated Sumsub has no limit; the default caps minting at 540/min, under Sumsub's 600/min), 400 rows, Sumsub latency 200 ms, Banxa latency 150 ms, concurrency auto"
rm -f bench-data/mint.rec.jsonl
start_mock --rate-limit off --latency 150 --sumsub-latency 200 --check-tokens --record bench-data/mint.rec.jsonl
"$EX/gen_export" 400 --applicant > bench-data/mint-400.csv
"$EX/measure" --rows 400 -- "$BIN" -q run bench-data/mint-400.csv --base-url "$URL" --rate 20/s --mint \
  --mint-rate 40/s --for-client-id banxa --sumsub-base-url "$URL" --results bench-data/mint.results.csv --retry-file bench-data/mint.retry.csv --force
"$EX/rate_check" bench-data/mint.rec.jsonl

if [ "$QUICK" = 1 ]; then exit 0; fi

echo; echo "== rate accuracy: --rate 500/min against an emulator limited to 500/min, 520 rows (~62 s)"
rm -f bench-data/rate.rec.jsonl
start_mock --rate-limit 500/min --record bench-data/rate.rec.jsonl
"$EX/gen_export" 520 > bench-data/rate-520.csv
"$BIN" -q run bench-data/rate-520.csv --base-url "$URL" --rate 500/min \
  --results bench-data/rate.results.csv --retry-file bench-data/rate.retry.csv --force || true
"$EX/rate_check" bench-data/rate.rec.jsonl

if have nginx; then
  start_nginx
  echo; echo "== run, unthrottled, $ROWS rows against static nginx, no ledger: peak RSS"
  "$EX/measure" --rows "$ROWS" -- "$BIN" -q run "$DATA" --base-url "$NGINX_URL" --rate 1000000/s --concurrency 64 \
    --results bench-data/nginx1m.results.csv --retry-file bench-data/nginx1m.retry.csv --force
  stop_nginx
fi

echo; echo "== pacers: governor (burst 1 and 5) against kycshare's limiter on the emulator's sliding window (about 5 minutes)"
CARGO_TARGET_DIR="$PWD/target/pacer-compare" cargo run --release --quiet --manifest-path bench/pacer-compare/Cargo.toml

echo; echo "== run, unthrottled, $ROWS rows with --ledger: peak RSS"
start_mock --rate-limit off
rm -f bench-data/nightly-ledger.db*
"$EX/measure" --rows "$ROWS" -- "$BIN" -q run "$DATA" --base-url "$URL" --rate 1000000/s --concurrency 64 \
  --results bench-data/run1m.results.csv --retry-file bench-data/run1m.retry.csv --force --ledger bench-data/nightly-ledger.db

echo; echo "== nightly: the same $ROWS-row export again, every row already in the ledger (all skipped)"
"$EX/measure" --rows "$ROWS" -- "$BIN" -q run "$DATA" --base-url "$URL" \
  --results bench-data/nightly.results.csv --retry-file bench-data/nightly.retry.csv --force --ledger bench-data/nightly-ledger.db

echo; echo "== nightly again with --reshare-unverified 24h (the accepted set loaded with the re-share filter)"
"$EX/measure" --rows "$ROWS" -- "$BIN" -q run "$DATA" --base-url "$URL" --reshare-unverified 24h \
  --results bench-data/nightly.results.csv --retry-file bench-data/nightly.retry.csv --force --ledger bench-data/nightly-ledger.db
