#!/usr/bin/env bash
# bench/hotpath.sh: what one request costs fcgate's own code, counted instead of timed: the CPU
# instructions and the misses in a simulated first-level instruction and data cache (valgrind's
# callgrind), and the heap allocations (valgrind's DHAT), of a hello.php request through fcgate
# (workers = 1, access log off) to php-fpm; HAProxy (nbthread 1, fcgi-app) is counted the same
# way beside it when installed. The load is bench/run's: 64 connections (h2load -c 64) on 8
# php-fpm workers, so requests queue as they do there. On a quiet machine instructions and
# allocations move by under 1% from run to run, unlike time on shared cores, so they show what
# a change to the hot path did and guard it from growing unnoticed. (Under a parallel build
# requests batch differently: the same binary counted 1.7% more instructions.) The simulated
# cache misses move more, HAProxy's by up to 30% between runs: compare those over several
# runs. They are what instructions do not show: HAProxy runs as many instructions per request
# as fcgate and takes less CPU (bench/results/speed-profile.md).
#
# Each gateway runs twice under each tool, for N1 and then N2 requests; the difference divided
# by N2 − N1 is the cost of one request, free of start-up and shutdown. Only the gateway runs
# under valgrind (php-fpm and h2load run natively). Prints a table and the functions that cost
# fcgate the most instructions, writes bench/results/hotpath.md and a row to
# bench/results/HISTORY.md.
#
#   bench/hotpath.sh [--no-build] [--dry-run] [--check]
#
# --check compares fcgate's figures with bench/hotpath.budget and exits 1 when instructions per
# request grew by more than 3% or allocations per request grew at all; after a change that
# is meant to cost more, update the budget in the same commit, with the reason.
# Environment: N1 (1000), N2 (3000), C (64 connections), PORT (19400: the gateway; php-fpm on +1).
# Installs valgrind, h2load and php-fpm if missing (as root); HAProxy is not installed for it.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
N1=${N1:-1000}
N2=${N2:-3000}
C=${C:-64}
PORT=${PORT:-19400}
build=1
check=""

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # start_local_fpm
source "$bench_dir/lib/peers.sh"     # write_fcgate_toml, write_haproxy_cfg

while [ $# -gt 0 ]; do
  case $1 in
    --check) check=1 ;;
    *) common_arg "$1" ;;
  esac
  shift
done
[[ $N1 =~ ^[1-9][0-9]*$ && $N2 =~ ^[1-9][0-9]*$ && $N2 -gt $N1 && $C =~ ^[1-9][0-9]*$ ]] ||
  die "N1, N2 and C must be positive numbers, N2 the larger"

ensure_packages valgrind h2load curl php-fpm
bench_lock
make_work fcgate-hotpath
fpm_pid="" gateway_pid=""
trap stop_gateway_run EXIT
prepare_fcgate "$build"
start_local_fpm $((PORT + 1))
write_fcgate_toml "$work/fcgate.toml" listen="127.0.0.1:$PORT" upstream="127.0.0.1:$((PORT + 1))" \
  root="$bench_dir/www" max_conns=8 access_log=off workers=1
gateways=(fcgate)
if command -v haproxy >/dev/null; then
  gateways+=(haproxy)
  [ -n "$dry_run" ] || mkdir -p "$work/haproxy"
  WORKERS=1 www="$bench_dir/www" write_haproxy_cfg "$work/haproxy" port="$PORT" \
    upstream="127.0.0.1:$((PORT + 1))" max_conns=8
fi

# measure GATEWAY TOOL COUNT: GATEWAY under valgrind's TOOL serves COUNT requests to C clients
# and stops (SIGTERM: both exit cleanly on it, and the tool writes its figures); the tool's
# output is left in $work/GATEWAY-TOOL-COUNT.*.
measure() {
  local gateway=$1 tool=$2 count=$3 out="$work/$1-$2-$3"
  local command=(valgrind "--tool=$tool")
  case $tool in
    callgrind) command+=(--cache-sim=yes "--callgrind-out-file=$out.data") ;;
    dhat) command+=("--dhat-out-file=$out.data") ;;
  esac
  case $gateway in
    fcgate) command+=("$fcgate_bin" --config "$work/fcgate.toml") ;;
    haproxy) command+=(haproxy -db -f "$work/haproxy/haproxy.cfg") ;;
  esac
  local load=(h2load --h1 -c "$C" -n "$count" "http://127.0.0.1:$PORT/hello.php")
  spawn "$out.log" env RUST_LOG=warn "${command[@]}"
  gateway_pid=$spawned_pid
  if [ -n "$dry_run" ]; then show_load "${load[@]}"; return 0; fi
  # Started under valgrind, it takes a few seconds to listen.
  wait_port 127.0.0.1 "$PORT" 600 || die "$gateway did not start under $tool (see $out.log)"
  curl -sf "http://127.0.0.1:$PORT/hello.php" >/dev/null || die "no answer through $gateway (see $out.log)"
  local answered
  answered=$("${load[@]}" | awk '/^requests:/ {print $8}')
  [ "$answered" = "$count" ] || die "$gateway under $tool: $answered of $count requests succeeded"
  kill -TERM "$gateway_pid"
  wait "$gateway_pid" || true
  gateway_pid=""
}

# callgrind_total GATEWAY COUNT EVENT: an event's total (Ir, I1mr, D1mr, D1mw) in the run that
# served COUNT requests (+1: the curl that checked it, the same in both runs).
callgrind_total() {
  awk -v event="$3" '/^events:/ { for (i = 2; i <= NF; i++) column[$i] = i }
    /^summary:/ { print $column[event]; exit }' "$work/$1-callgrind-$2.data"
}
dhat_total() {  # GATEWAY COUNT blocks|bytes
  local pattern='s/.*Total: *\([0-9,]*\) bytes in \([0-9,]*\) blocks.*/'
  case $3 in blocks) pattern+='\2/p' ;; bytes) pattern+='\1/p' ;; esac
  sed -n "$pattern" "$work/$1-dhat-$2.log" | tr -d ,
}
per_request() { awk -v a="$1" -v b="$2" -v n=$((N2 - N1)) 'BEGIN {printf "%.1f", (b - a) / n}'; }

for gateway in "${gateways[@]}"; do
  for count in "$N1" "$N2"; do
    measure "$gateway" callgrind "$count"
    [ "$gateway" = haproxy ] || measure "$gateway" dhat "$count"
  done
done
if [ -n "$dry_run" ]; then
  publish_result hotpath.md "" </dev/null
  exit 0
fi

declare -A figure
for gateway in "${gateways[@]}"; do
  for event in Ir I1mr D1mr D1mw; do
    figure[$gateway.$event]=$(per_request "$(callgrind_total "$gateway" "$N1" "$event")" \
      "$(callgrind_total "$gateway" "$N2" "$event")")
  done
done
for kind in blocks bytes; do
  figure[fcgate.$kind]=$(per_request "$(dhat_total fcgate "$N1" "$kind")" "$(dhat_total fcgate "$N2" "$kind")")
done
ir=${figure[fcgate.Ir]}
allocations=${figure[fcgate.blocks]}

report() {
  local haproxy_header="" haproxy_rule=""
  if [ -n "${figure[haproxy.Ir]:-}" ]; then
    haproxy_header=" HAProxy |" haproxy_rule="--:|"
  fi
  row() {  # LABEL KEY: one line of the table
    local cells="| $1 | ${figure[fcgate.$2]} |"
    [ -z "$haproxy_header" ] || cells+=" ${figure[haproxy.$2]:-–} |"
    echo "$cells"
  }
  echo "# fcgate: instructions, cache misses and allocations per request, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "fcgate at $(commit_described), workers = 1, access log off, in front of php-fpm"
  echo "(hello.php, $(basename "$fpm_bin"), 8 children)${haproxy_header:+; $(haproxy -v | head -n1 | cut -d' ' -f1-3) with nbthread 1,}"
  echo "h2load --h1 -c $C. Per request: the difference between a run of"
  echo "$N2 and one of $N1 requests, over $((N2 - N1)). Cache misses are callgrind's simulation"
  echo "of this machine's first-level caches; HAProxy allocates from its own pools, so DHAT"
  echo "is not run on it."
  echo
  echo "| per request | fcgate |$haproxy_header"
  echo "|---|--:|$haproxy_rule"
  row "instructions" Ir
  row "instruction cache misses (L1)" I1mr
  row "data cache read misses (L1)" D1mr
  row "data cache write misses (L1)" D1mw
  row "heap allocations (DHAT)" blocks
  row "bytes allocated (DHAT)" bytes
  echo
  echo "Where fcgate's instructions of the $N2-request run went, by function, its callees"
  echo "included (callgrind_annotate --inclusive=yes), divided by $N2:"
  echo
  echo '```'
  callgrind_annotate --inclusive=yes "$work/fcgate-callgrind-$N2.data" 2>/dev/null |
    awk -v n="$N2" '/^ *[0-9,]+ +\([ 0-9.]+%\) +[^ ]/ {
        ir = $1; gsub(/,/, "", ir); $1 = ""; $2 = ""; sub(/^ +/, "")
        sub(/^[^:]*:/, ""); sub(/ \[[^]]*\]$/, "")
        if ($0 ~ /(fcgate|fcgi)::/ && $0 !~ /\(1x\)$/ && !seen[$0]++ && shown++ < 30) printf "%8.0f  %s\n", ir / n, substr($0, 1, 110)
      }'
  echo '```'
}
report >"$work/report.md"
headline="fcgate $ir instructions, ${figure[fcgate.I1mr]} I-cache misses, $allocations allocations per request"
[ -z "${figure[haproxy.Ir]:-}" ] ||
  headline+="; HAProxy ${figure[haproxy.Ir]} instructions, ${figure[haproxy.I1mr]} I-cache misses"
publish_result hotpath.md "$headline" <"$work/report.md"

if [ -n "$check" ]; then
  budget_file=$bench_dir/hotpath.budget
  budget() { awk -v key="$1" '$1 == key {print $2}' "$budget_file"; }
  over=$(awk -v ir="$ir" -v al="$allocations" -v bir="$(budget instructions)" -v bal="$(budget allocations)" \
    'BEGIN { if (ir > bir * 1.03) print "instructions " ir " > " bir " + 3%";
             if (al > bal + 0.05) print "allocations " al " > " bal }')
  [ -z "$over" ] || die "over the budget in $budget_file: $over"
  log "within the budget in $budget_file"
fi
