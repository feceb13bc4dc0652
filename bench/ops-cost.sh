#!/usr/bin/env bash
# bench/ops-cost.sh: what the operations features cost the gateway itself. fcgate in front of
# its demo app (a separate process, near-zero work per request, so the gateway's own cost is
# what is measured), three ways in turn, ROUNDS rounds interleaved:
#   plain    access log off, no admin listener
#   log      access log on, combined format, to a file
#   metrics  admin listener on, /metrics scraped once a second (curl) during the load
# (bench/run's fcgate, fcgate-log and fcgate-metrics peers, in app mode with max_conns 8.)
# For each: requests/s under h2load --h1 -n N -c 64, and the gateway's CPU per request
# (utime + stime from /proc/PID/stat over the measured run). Prints a markdown table of medians
# and spreads and writes it to bench/results/ops-cost.md (replacing the previous run's) and a
# row to bench/results/HISTORY.md. Installs h2load (nghttp2-client) and curl if missing (as
# root); run it on a quiet machine (no builds or tests on the same cores).
#
#   bench/ops-cost.sh [--no-build] [--dry-run]     # ROUNDS=5 N=200000 by default
#
# --dry-run prints what would be installed, written, started and run, and does none of it.
# Environment: ROUNDS, N, PORT (19300: fcgate; the demo app on +1, the admin listener on +1000).
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
ROUNDS=${ROUNDS:-5}
N=${N:-200000}
PORT=${PORT:-19300}
build=1

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # start_demo
source "$bench_dir/lib/peers.sh"     # write_fcgate_toml, start_peer_process

while [ $# -gt 0 ]; do
  case $1 in
    *) common_arg "$1" ;;
  esac
  shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $N =~ ^[1-9][0-9]*$ ]] || die "ROUNDS and N must be positive numbers"

ensure_packages h2load curl
bench_lock
make_work fcgate-ops-cost
demo_pid="" peer_pid=""
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  stop_tree "$peer_pid"
  stop_tree "$demo_pid"
  kill_run "$work"
  rm -rf "$work"
}
trap cleanup EXIT
prepare_fcgate "$build"
start_demo "127.0.0.1:$((PORT + 1))" "$work/demo.out"
wait_port 127.0.0.1 $((PORT + 1)) || die "the demo app did not start (see $work/demo.out)"
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME: one variant; prints "NAME RPS CPU_US_PER_REQUEST"
run() {
  local name=$1 peer=fcgate dir="$work/$1"
  local args=(listen="127.0.0.1:$PORT" upstream="127.0.0.1:$((PORT + 1))" max_conns=8 access_log=off)
  case $name in
    log) peer=fcgate-log args+=(access_log="$dir/access.log") ;;
    metrics) peer=fcgate-metrics args+=(admin_listen="127.0.0.1:$((PORT + 1000))") ;;
  esac
  [ -z "$dry_run" ] || printf '\n== %s\n' "$name"
  [ -n "$dry_run" ] || mkdir -p "$dir"
  write_fcgate_toml "$dir/fcgate.toml" "${args[@]}"
  start_peer_process "$peer" "$dir" "$PORT"
  wait_port 127.0.0.1 "$PORT" || die "fcgate did not start (see $dir/out.log)"
  local warmup=(h2load --h1 -n 2000 -c 16 "http://127.0.0.1:$PORT/")
  local measured=(h2load --h1 -n "$N" -c 64 -t 2 "http://127.0.0.1:$PORT/")
  if [ -n "$dry_run" ]; then
    show_load "${warmup[@]}"
    show_load "${measured[@]}"
    return
  fi
  "${warmup[@]}" >/dev/null 2>&1
  local before after out rps
  before=$(cpu_ticks "$peer_pid")
  out=$("${measured[@]}" 2>&1)
  after=$(cpu_ticks "$peer_pid")
  stop_tree "$peer_pid"
  peer_pid=""
  rm -f "$dir/access.log"
  rps=$(grep -o 'finished in [0-9.]*s, [0-9.]* req/s' <<<"$out" | awk '{print $4}')
  awk -v name="$name" -v rps="$rps" -v t=$((after - before)) -v hz="$ticks" -v n="$N" \
    'BEGIN { printf "%s %.0f %.2f\n", name, rps, t / hz * 1e6 / n }'
}

if [ -n "$dry_run" ]; then  # every round starts the same processes on the same configs
  run plain
  run log
  run metrics
  echo
  publish_result ops-cost.md "" </dev/null
  exit 0
fi
for round in $(seq "$ROUNDS"); do
  run plain
  run log
  run metrics
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
report >"$work/report.md"
headline=$(awk -F ' [|] ' '/^[|] (plain|log|metrics) / {
    sub(/^[|] /, "", $1); printf "%s%s %s req/s, %s µs CPU", (n++ ? "; " : ""), $1, $2, $4
  } END {print " per request"}' "$work/report.md")
publish_result ops-cost.md "$headline" <"$work/report.md"
