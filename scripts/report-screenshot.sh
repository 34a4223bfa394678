#!/usr/bin/env bash
# A PNG of a `kycshare report`, as a real browser draws it (headless
# Chromium), to look at the page by eye. Not part of CI.
#
#   scripts/report-screenshot.sh                     make a run on the emulator, report it, screenshot it
#   scripts/report-screenshot.sh REPORT.html [PNG]   screenshot an existing report
#
# The run (about two minutes): a generated export with invalid and duplicate
# rows, some rows Banxa refuses with 422 (a non-ASCII email local part),
# 3 % of 500s, a latency of 20-120 ms and a 20-second outage (the breaker
# pauses), then the retry run of its retry file. Everything stays on this
# machine (loopback). Chromium comes from Debian's packages when
# /usr/bin/chromium is missing (apt-get, as root or with sudo).
#
# Environment: ROWS (default 3000), RATE (default 25/s), OUT (a folder,
# default /tmp/kycshare-report), WIDTH/HEIGHT of the window (1280x3000).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
ROWS=${ROWS:-3000}
RATE=${RATE:-25/s}
OUT=${OUT:-${TMPDIR:-/tmp}/kycshare-report}
WIDTH=${WIDTH:-1280}
HEIGHT=${HEIGHT:-3000}

if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium from Debian's packages"
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi

shot() { # html png
  local html png
  html=$(realpath "$1"); png=$(realpath -m "$2")
  # --no-sandbox: root in a container has no user namespaces for it; the
  # page is our own file and runs no script.
  /usr/bin/chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --screenshot="$png" --window-size="$WIDTH,$HEIGHT" "file://$html" 2>/dev/null
  echo "screenshot: $png"
}

if [ $# -ge 1 ]; then
  shot "$1" "${2:-${1%.html}.png}"
  exit 0
fi

cargo build --quiet --bin kycshare --example gen_export
BIN=${CARGO_TARGET_DIR:-target}/debug/kycshare
GEN=${CARGO_TARGET_DIR:-target}/debug/examples/gen_export
mkdir -p "$OUT"
rm -f "$OUT"/export*
export BANXA_API_KEY=shot-key BANXA_API_SECRET=shot-secret

MOCK_PID=
start_mock() { # flags...; sets URL
  stop_mock
  # The old address must not be read before the new emulator truncates the file.
  rm -f "$OUT/mock.out"
  "$BIN" mock --listen 127.0.0.1:0 --rate-limit off "$@" >"$OUT/mock.out" 2>"$OUT/mock.err" &
  MOCK_PID=$!
  for _ in $(seq 200); do
    URL=$(sed -n 's/^listening on //p' "$OUT/mock.out" 2>/dev/null)
    [ -n "$URL" ] && return 0
    sleep 0.05
  done
  echo "the emulator did not start" >&2; exit 1
}
stop_mock() { if [ -n "$MOCK_PID" ]; then kill "$MOCK_PID" 2>/dev/null || true; wait "$MOCK_PID" 2>/dev/null || true; MOCK_PID=; fi; }
trap stop_mock EXIT

# Every 150th row gets an email the emulator refuses with 422 (valid locally).
"$GEN" "$ROWS" --bad-every 200 --dup-every 333 \
  | awk -F, 'BEGIN{OFS=","} NR>1 && NR%150==0 {$2="j\xc3\xb6hn" NR "@example.com"} {print}' >"$OUT/export.csv"

start_mock --seed 7 --fail-rate 0.03 --latency 20 --latency-jitter 100 --outage-after 40 --outage-for 20
"$BIN" -q run "$OUT/export.csv" --base-url "$URL" --rate "$RATE" --max-attempts 2 || true
if [ -s "$OUT/export.retry.csv" ]; then
  start_mock --seed 8 --latency 20 --latency-jitter 40
  "$BIN" -q run "$OUT/export.retry.csv" --base-url "$URL" --rate "$RATE" || true
fi
stop_mock
files=("$OUT/export.results.csv")
[ -f "$OUT/export.retry.results.csv" ] && files+=("$OUT/export.retry.results.csv")
"$BIN" report "${files[@]}" -o "$OUT/export.report.html"
shot "$OUT/export.report.html" "$OUT/export.report.png"
