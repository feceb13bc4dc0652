#!/usr/bin/env bash
# bench/multiplex.sh: issue 5's benchmark. fcgate in front of its own multiplexing demo app
# (`fcgate demo-app`, FCGI_MPXS_CONNS=1, TCP 127.0.0.1), with `multiplex = "force"` and with
# `multiplex = "off"`, the same `max_conns` (CAP, 4) both ways; h2load over HTTP/1.1 with
# CONNECTIONS (256) clients for DURATION (10 s), ROUNDS (3) rounds with the two modes
# interleaved (off force off force ...), so drift hits both alike.
#
# Columns: requests/s, p50, p99 (from h2load's per-request log), errors, and backend
# connections opened (SYNs to the demo app's port, counted by an nftables rule this script adds
# and removes). Cells are medians over the rounds, with the spread (min-max) of requests/s.
# Prints a markdown table and writes it to bench/results/multiplex.md (replacing the previous
# run's) and a row to bench/results/HISTORY.md. Needs root (nftables); installs nghttp2-client
# and nftables from Debian if missing. --dry-run prints what would be installed, written,
# started and run, and does none of it.
#
#   bench/multiplex.sh [--no-build] [--dry-run]
#
# Environment: CAP, CONNECTIONS, DURATION, ROUNDS, PORT_BASE (18700), LOAD_THREADS (2).
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
CAP=${CAP:-4}
CONNECTIONS=${CONNECTIONS:-256}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
PORT_BASE=${PORT_BASE:-18700}
LOAD_THREADS=${LOAD_THREADS:-2}
LOADGEN=h2load
duration_seconds=$DURATION
build=1

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # start_demo
source "$bench_dir/lib/peers.sh"     # write_fcgate_toml, start_peer_process
source "$bench_dir/lib/measure.sh"   # count_syns_to, syns, load_command, run_load

while [ $# -gt 0 ]; do
  case $1 in
    *) common_arg "$1" ;;
  esac
  shift
done

demo_port=$((PORT_BASE + 90))
gateway_port=$((PORT_BASE + 1))
demo_pid=""
peer_pid=""

ensure_packages h2load nft
bench_lock
make_work fcgate-bench-mpx
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  stop_tree "$peer_pid"
  stop_tree "$demo_pid"
  remove_syn_counter
  kill_run "$work"
  rm -rf "$work"
}
trap cleanup EXIT
prepare_fcgate "$build"

start_demo "127.0.0.1:$demo_port" "$work/demo.out"
wait_port 127.0.0.1 "$demo_port" || die "the demo app did not start (see $work/demo.out)"

# run_mode MODE ROUND: one bounded run; appends "mode rps p50 p99 errors syns" to results.
run_mode() {
  local mode=$1 round=$2 out="$work/$1-$2"
  [ -z "$dry_run" ] || printf '\n== multiplex = %s\n' "$mode"
  [ -n "$dry_run" ] || mkdir -p "$out"
  write_fcgate_toml "$out/fcgate.toml" listen="127.0.0.1:$gateway_port" \
    upstream="127.0.0.1:$demo_port" max_conns="$CAP" multiplex="$mode"
  count_syns_to "$demo_port"
  start_peer_process fcgate "$out" "$gateway_port"
  wait_port 127.0.0.1 "$gateway_port" || die "fcgate did not start (see $out/out.log)"
  if [ -n "$dry_run" ]; then
    load_command "http://127.0.0.1:$gateway_port/" "" "$out"
    show_load "${load_cmd[@]}"
    return
  fi
  local figures
  figures=$(run_load "http://127.0.0.1:$gateway_port/" "" "$out")
  local opened
  opened=$(syns)
  stop_tree "$peer_pid"
  peer_pid=""
  remove_syn_counter
  echo "$mode $figures $opened" >>"$work/results"
  log "round $round, multiplex = $mode: $figures, $opened backend connections"
}

[ -z "$dry_run" ] || ROUNDS=1  # every round starts the same processes on the same configs
for round in $(seq "$ROUNDS"); do
  run_mode off "$round"
  run_mode force "$round"
done
[ -z "$dry_run" ] || { echo; publish_result multiplex.md "" </dev/null; exit 0; }

# Columns of $work/results: mode rps p50 p99 errors answered syns.
table=$(awk -v cap="$CAP" -v clients="$CONNECTIONS" '
  function median(list,   n, parts, i, j, t) {
    n = split(list, parts, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
      if (parts[j] + 0 < parts[i] + 0) { t = parts[i]; parts[i] = parts[j]; parts[j] = t }
    return parts[int((n + 1) / 2)]
  }
  function spread(list,   n, parts, i, lo, hi) {
    n = split(list, parts, " "); lo = parts[1]; hi = parts[1]
    for (i = 2; i <= n; i++) { if (parts[i] + 0 < lo + 0) lo = parts[i]; if (parts[i] + 0 > hi + 0) hi = parts[i] }
    return lo "-" hi
  }
  { rps[$1] = rps[$1] " " $2; p50[$1] = p50[$1] " " $3; p99[$1] = p99[$1] " " $4
    errors[$1] = errors[$1] " " $5; syns[$1] = syns[$1] " " $7 }
  END {
    printf "| multiplex (max_conns %d, %d clients) | requests/s (spread) | p50 ms | p99 ms | errors | backend connections opened |\n", cap, clients
    print "|---|---|---|---|---|---|"
    split("off force", modes, " ")
    for (m = 1; m <= 2; m++) {
      k = modes[m]
      printf "| %s | %s (%s) | %s | %s | %s | %s |\n", k, median(rps[k]), spread(rps[k]),
        median(p50[k]), median(p99[k]), median(errors[k]), median(syns[k])
    }
  }' "$work/results")

# The headline: both modes' median requests/s and backend connections, from the table.
headline=$(awk -F ' [|] ' '/^[|] (off|force) / {
    sub(/^[|] /, "", $1); sub(/ [|]$/, "", $6)
    printf "%s%s %s req/s, %s backend conns", (n++ ? "; " : ""), $1, $2, $6
  } END {print ""}' <<<"$table")
{
  echo "# fcgate: multiplexing on vs off, demo app backend"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load before the run: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "h2load --h1 -c$CONNECTIONS -t$LOAD_THREADS -D$DURATION, $ROUNDS rounds interleaved, medians."
  echo
  echo "$table"
  echo
  echo "Backend connections: fcgate retires a connection after keepalive_requests (10,000) requests,"
  echo "so a run of N requests opens about N / 10,000 + max_conns; never more than max_conns at once."
} | publish_result multiplex.md "$headline"
