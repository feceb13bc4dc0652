#!/usr/bin/env bash
# bench/hotpath.sh: what one request costs fcgate's own code, counted instead of timed: the CPU
# instructions (valgrind's callgrind) and the heap allocations (valgrind's DHAT) of a hello.php
# request through fcgate (workers = 1, access log off) to php-fpm. One request at a time
# (h2load -c 1), so every request takes the same path: no queue, no batching, no contention.
# Counts barely move from run to run, unlike time on a shared machine, so they show what a
# change to the hot path did, and guard it from growing unnoticed.
#
# Each tool runs fcgate twice, for N1 and then N2 requests; the difference divided by N2 − N1 is
# the cost of one request, free of start-up and shutdown. Only fcgate runs under valgrind
# (php-fpm and h2load run natively). Prints a table and the functions that cost the most
# instructions, writes bench/results/hotpath.md and a row to bench/results/HISTORY.md.
#
#   bench/hotpath.sh [--no-build] [--dry-run] [--check]
#
# --check compares the figures with bench/hotpath.budget and exits 1 when instructions per
# request grew by more than 3% or allocations per request grew at all; after a change that
# is meant to cost more, update the budget in the same commit, with the reason.
# Environment: N1 (500), N2 (2500), PORT (19400: fcgate; php-fpm on +1).
# Installs valgrind, h2load and php-fpm if missing (as root).
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
N1=${N1:-500}
N2=${N2:-2500}
PORT=${PORT:-19400}
build=1
check=""

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # find_fpm, write_fpm_conf, start_fpm
source "$bench_dir/lib/peers.sh"     # write_fcgate_toml

while [ $# -gt 0 ]; do
  case $1 in
    --check) check=1 ;;
    *) common_arg "$1" ;;
  esac
  shift
done
[[ $N1 =~ ^[1-9][0-9]*$ && $N2 =~ ^[1-9][0-9]*$ && $N2 -gt $N1 ]] ||
  die "N1 and N2 must be positive numbers, N2 the larger"

ensure_packages valgrind h2load curl php-fpm
bench_lock
make_work fcgate-hotpath
fpm_pid="" gateway_pid=""
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  stop_tree "$gateway_pid"
  stop_tree "$fpm_pid"
  kill_run "$work"
  rm -rf "$work"
}
trap cleanup EXIT
prepare_fcgate "$build"
find_fpm
write_fpm_conf "$work/php-fpm.conf" listen="127.0.0.1:$((PORT + 1))"
start_fpm "$work/php-fpm.conf"
wait_port 127.0.0.1 $((PORT + 1)) || die "php-fpm did not start (see $work/php-fpm.out)"
write_fcgate_toml "$work/fcgate.toml" listen="127.0.0.1:$PORT" upstream="127.0.0.1:$((PORT + 1))" \
  root="$bench_dir/www" max_conns=8 access_log=off workers=1

# measure TOOL COUNT: fcgate under valgrind's TOOL serves COUNT requests one at a time and
# stops (SIGINT: a graceful stop, so the tool writes its figures); the tool's output is left in
# $work/TOOL-COUNT.*.
measure() {
  local tool=$1 count=$2 out="$work/$1-$2"
  local command=(valgrind "--tool=$tool")
  case $tool in
    callgrind) command+=("--callgrind-out-file=$out.data") ;;
    dhat) command+=("--dhat-out-file=$out.data") ;;
  esac
  command+=("$fcgate_bin" --config "$work/fcgate.toml")
  local load=(h2load --h1 -c 1 -n "$count" "http://127.0.0.1:$PORT/hello.php")
  spawn "$out.log" env RUST_LOG=warn "${command[@]}"
  gateway_pid=$spawned_pid
  if [ -n "$dry_run" ]; then show_load "${load[@]}"; return 0; fi
  # Started under valgrind, it takes a few seconds to listen.
  wait_port 127.0.0.1 "$PORT" 600 || die "fcgate did not start under $tool (see $out.log)"
  curl -sf "http://127.0.0.1:$PORT/hello.php" >/dev/null || die "no answer through fcgate (see $out.log)"
  local answered
  answered=$("${load[@]}" | awk '/^requests:/ {print $8}')
  [ "$answered" = "$count" ] || die "$tool: $answered of $count requests succeeded"
  kill -INT "$gateway_pid"
  wait "$gateway_pid" || true
  gateway_pid=""
}

# instructions COUNT, blocks COUNT, bytes COUNT: the totals of the run that served COUNT (+1,
# the curl that checked it) requests.
instructions() { awk '/^(summary|totals):/ {print $2; exit}' "$work/callgrind-$1.data"; }
blocks() { sed -n 's/.*Total: *[0-9,]* bytes in \([0-9,]*\) blocks.*/\1/p' "$work/dhat-$1.log" | tr -d ,; }
bytes() { sed -n 's/.*Total: *\([0-9,]*\) bytes in.*/\1/p' "$work/dhat-$1.log" | tr -d ,; }
per_request() { awk -v a="$1" -v b="$2" -v n=$((N2 - N1)) 'BEGIN {printf "%.1f", (b - a) / n}'; }

for count in "$N1" "$N2"; do
  measure callgrind "$count"
  measure dhat "$count"
done
if [ -n "$dry_run" ]; then
  publish_result hotpath.md "" </dev/null
  exit 0
fi

ir=$(per_request "$(instructions "$N1")" "$(instructions "$N2")")
allocations=$(per_request "$(blocks "$N1")" "$(blocks "$N2")")
allocated=$(per_request "$(bytes "$N1")" "$(bytes "$N2")")

report() {
  echo "# fcgate: instructions and allocations per request, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "fcgate at $(commit_described), workers = 1, access log off, in front of php-fpm"
  echo "(hello.php, $(basename "$fpm_bin")); h2load --h1 -c 1: one request at a time. Per request:"
  echo "the difference between a run of $N2 and one of $N1 requests, over $((N2 - N1))."
  echo
  echo "| per request | fcgate |"
  echo "|---|--:|"
  echo "| instructions (callgrind) | $ir |"
  echo "| heap allocations (DHAT) | $allocations |"
  echo "| bytes allocated (DHAT) | $allocated |"
  echo
  echo "Where the instructions of the $N2-request run went, by function, its callees included"
  echo "(callgrind_annotate --inclusive=yes; the first lines are the runtime's frames around"
  echo "everything), divided by $N2:"
  echo
  echo '```'
  callgrind_annotate --inclusive=yes "$work/callgrind-$N2.data" 2>/dev/null |
    awk -v n="$N2" '/^ *[0-9,]+ +\([ 0-9.]+%\) +[^ ]/ {
        ir = $1; gsub(/,/, "", ir); $1 = ""; $2 = ""; sub(/^ +/, "")
        sub(/^[^:]*:/, ""); sub(/ \[[^]]*\]$/, "")
        if ($0 ~ /(fcgate|fcgi)::/ && $0 !~ /\(1x\)$/ && !seen[$0]++ && shown++ < 30) printf "%8.0f  %s\n", ir / n, substr($0, 1, 110)
      }'
  echo '```'
}
report >"$work/report.md"
publish_result hotpath.md "$ir instructions, $allocations allocations ($allocated bytes) per request" \
  <"$work/report.md"

if [ -n "$check" ]; then
  budget_file=$bench_dir/hotpath.budget
  budget() { awk -v key="$1" '$1 == key {print $2}' "$budget_file"; }
  over=$(awk -v ir="$ir" -v al="$allocations" -v bir="$(budget instructions)" -v bal="$(budget allocations)" \
    'BEGIN { if (ir > bir * 1.03) print "instructions " ir " > " bir " + 3%";
             if (al > bal + 0.05) print "allocations " al " > " bal }')
  [ -z "$over" ] || die "over the budget in $budget_file: $over"
  log "within the budget in $budget_file"
fi
