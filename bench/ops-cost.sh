#!/usr/bin/env bash
# bench/ops-cost.sh: what the operations features cost the gateway itself. fcgate in front of
# its demo app (a separate process, near-zero work per request, so the gateway's own cost is
# what is measured), three ways in turn, ROUNDS rounds interleaved:
#   plain    access log off, no admin listener
#   log      access log on, combined format, to a file
#   metrics  admin listener on, /metrics scraped once a second (curl) during the load
# For each: requests/s under h2load --h1 -n N -c 64, and the gateway's CPU per request
# (utime + stime from /proc/PID/stat over the measured run). Prints a markdown table of medians
# and spreads and writes it to bench/results/<date>-ops-cost.md. Needs h2load (nghttp2-client)
# and curl; run it on a quiet machine (no builds or tests on the same cores).
#
#   bench/ops-cost.sh            # ROUNDS=5 N=200000 by default
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}
N=${N:-200000}
PORT=${PORT:-19300}
command -v h2load >/dev/null || { echo "bench/ops-cost.sh: needs h2load (apt-get install nghttp2-client)" >&2; exit 1; }
cargo build --release -q -p fcgate --manifest-path "$repo/Cargo.toml"
bin=$repo/target/release/fcgate
work=$(mktemp -d)
app_pid=""
cleanup() { [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$bin" demo-app --listen "127.0.0.1:$((PORT + 1))" >/dev/null 2>&1 &
app_pid=$!
sleep 0.5
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME EXTRA_SETTING: prints "NAME RPS CPU_US_PER_REQUEST"
run() {
  local name=$1 extra=$2 off='access_log = "off"' scraper=""
  [[ $extra == access_log* ]] && off=""
  printf 'listen = "127.0.0.1:%s"\n%s\n%s\n[upstream]\nservers = ["127.0.0.1:%s"]\nmax_conns = 8\n' \
    "$PORT" "$off" "$extra" "$((PORT + 1))" >"$work/$name.toml"
  "$bin" --config "$work/$name.toml" >/dev/null 2>&1 &
  local pid=$!
  sleep 0.7
  if [ "$name" = metrics ]; then
    (while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$((PORT + 2))/metrics" || true; done) &
    scraper=$!
  fi
  h2load --h1 -n 2000 -c 16 "http://127.0.0.1:$PORT/" >/dev/null 2>&1
  local before after out rps
  before=$(cpu_ticks "$pid")
  out=$(h2load --h1 -n "$N" -c 64 -t 2 "http://127.0.0.1:$PORT/" 2>&1)
  after=$(cpu_ticks "$pid")
  [ -n "$scraper" ] && kill "$scraper"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$work/access.log"
  rps=$(grep -o 'finished in [0-9.]*s, [0-9.]* req/s' <<<"$out" | awk '{print $4}')
  awk -v name="$name" -v rps="$rps" -v t=$((after - before)) -v hz="$ticks" -v n="$N" \
    'BEGIN { printf "%s %.0f %.2f\n", name, rps, t / hz * 1e6 / n }'
}

for round in $(seq "$ROUNDS"); do
  run plain ""
  run log "access_log = \"$work/access.log\""
  run metrics "admin_listen = \"127.0.0.1:$((PORT + 2))\""
  echo "round $round done" >&2
done >"$work/runs"

report() {
  echo "# fcgate: what the access log and metrics cost, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "fcgate at $(git -C "$repo" rev-parse --short HEAD), $(nproc) cores, in front of its demo app"
  echo "(own process); h2load --h1, $N requests, 64 connections, $ROUNDS rounds interleaved."
  echo
  echo "| variant | requests/s (median) | spread | gateway CPU µs/request (median) | spread |"
  echo "|---|--:|--:|--:|--:|"
  for name in plain log metrics; do
    local rps cpu
    rps=$(awk -v n="$name" '$1 == n {print $2}' "$work/runs" | sort -n)
    cpu=$(awk -v n="$name" '$1 == n {print $3}' "$work/runs" | sort -n)
    printf '| %s | %s | %s–%s | %s | %s–%s |\n' "$name" \
      "$(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' <<<"$rps")" "$(head -1 <<<"$rps")" "$(tail -1 <<<"$rps")" \
      "$(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' <<<"$cpu")" "$(head -1 <<<"$cpu")" "$(tail -1 <<<"$cpu")"
  done
}
out="$repo/bench/results/$(date -u '+%Y-%m-%d-%H%M')-ops-cost.md"
report | tee "$out"
echo "written: $out" >&2
