#!/usr/bin/env bash
# bench/queue-memory.sh: what N queued requests cost fcgate in resident memory (issue 3:
# "10,000 queued requests must be cheap: measure and report bytes per queued request").
#
# A FastCGI backend that accepts and never answers (bench/queue-memory.py backend) sits behind
# fcgate in app mode with --max-conns 1 --queue-timeout 120s --max-queue 20000, so the first
# request occupies the only backend connection and every later one waits in fcgate's queue.
# For each N: a fresh fcgate with N idle client connections (connected, nothing sent), then a
# fresh fcgate with N connections that each sent one GET, then a fresh fcgate in front of the demo
# app with N keep-alive connections that each got one answer and stay open, then a fresh fcgate
# with N idle HTTP/2 connections (preface and SETTINGS sent, nothing else). Reported: fcgate's VmRSS before and
# under load, and (RSS_loaded - RSS_before) / N as bytes per idle connection / queued request.
# Kernel socket buffers are not in a process's RSS and are not counted.
#
# Prints a markdown table and writes it to bench/results/queue-memory.md (replacing the
# previous run's) and a row to bench/results/HISTORY.md. fcgate and the backends are started by
# the Python driver (bench/queue-memory.py measure), a fresh pair per row on a free port.
# --dry-run prints what would be built and run, and does none of it.
#
#   bench/queue-memory.sh [--counts 1000,10000] [--kinds idle,queue,keepalive,h2] [--no-build]
#                         [--dry-run]
#
# Environment: LOAD_MAX (1.5) and LOAD_WAIT (300 s): wait, bounded, for the 1-minute load
# average to drop below LOAD_MAX before measuring.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
counts=1000,10000
kinds=idle,queue,keepalive,h2
build=1
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-300}

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"  # log, die

while [ $# -gt 0 ]; do
  case $1 in
    --counts) [ $# -ge 2 ] || die "--counts needs a value"; counts=$2; shift ;;
    --counts=*) counts=${1#*=} ;;
    --kinds) [ $# -ge 2 ] || die "--kinds needs a value"; kinds=$2; shift ;;
    --kinds=*) kinds=${1#*=} ;;
    *) common_arg "$1" ;;
  esac
  shift
done
[[ $counts =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--counts takes numbers separated by commas"
largest=$(tr ',' '\n' <<<"$counts" | sort -n | tail -n1)
[ -n "$dry_run" ] || command -v python3 >/dev/null || die "python3 is needed"

# Every client and every accepted connection is a descriptor, in two processes that each
# inherit this limit: raise it as far as allowed and check it is enough.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ -n "$dry_run" ] || [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((largest + 1000)) ] ||
  die "open files limit $(ulimit -n) is too low for $largest connections (run as root)"

# One benchmark at a time on this machine: a second one would share the cores and skew both.
bench_lock

make_work fcgate-queue-memory
driver_pid=""
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  if [ -n "$driver_pid" ]; then
    kill -TERM -- "-$driver_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 -- "-$driver_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$driver_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

prepare_fcgate "$build"
wait_quiet "$LOAD_MAX" "$LOAD_WAIT"

driver=(timeout -k 10 1200 python3 "$bench_dir/queue-memory.py" measure
  --fcgate "$fcgate_bin" --work "$work" --counts "$counts" --kinds "$kinds")
if [ -n "$dry_run" ]; then
  dry_say "start: $(shown setsid "${driver[@]}")"
  dry_say "  (per row: a backend, then fcgate --config WORK/fcgate.toml (max_client_connections 1000000," \
    "access_log off) --listen 127.0.0.1:FREE_PORT --upstream unix:WORK/backend-LABEL.sock" \
    "--max-conns 1 --queue-timeout 120s --max-queue 20000 --read-timeout 300s" \
    "--client-header-timeout 120s, and N clients)"
  echo
  publish_result queue-memory.md "" </dev/null
  exit 0
fi
# setsid: the driver, fcgate and the backend form one process group the trap can end at once.
setsid "${driver[@]}" >"$work/table.md" 9>&- &
driver_pid=$!
status=0
wait "$driver_pid" || status=$?
driver_pid=""
[ "$status" = 0 ] || die "measurement failed ($status); fcgate logs were in $work"

commit=$(commit_described)
# The headline: bytes each, per N and load.
headline=$(awk -F ' [|] ' '/^[|] [0-9]+ [|]/ {sub(/^[|] /, "", $1)
             printf "%s%s %s: %s B", (n++ ? "; " : ""), $1, $2, $6} END {print " each"}' "$work/table.md")
{
  echo "# fcgate: memory per queued request, $(date '+%Y-%m-%d %H:%M %Z')"
  echo
  echo "Commit $commit, $(nproc) cores, $(uname -sr), load average before: $load_before."
  echo "fcgate app mode, \`--max-conns 1 --queue-timeout 120s --max-queue 20000 --read-timeout 300s"
  echo "--client-header-timeout 120s\`, RUST_LOG=warn; the backend accepts and never answers."
  echo
  cat "$work/table.md"
  echo
  echo "- RSS: fcgate's VmRSS (/proc/PID/status), a fresh process per row; \"under load\" is read"
  echo "  1 s after the last client connected (and sent its GET), once two readings 0.5 s apart"
  echo "  differ by < 64 KiB."
  echo "- bytes each: (under load - before) / connections still held (N minus failed, answered,"
  echo "  closed early). For queued requests one of the N is in flight on the backend connection."
  echo "- Kernel socket buffers are not in RSS; the client runs in a separate process."
} | publish_result queue-memory.md "$headline"
