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
# Prints a markdown table and writes it to bench/results/<date>-queue-memory.md.
#
#   bench/queue-memory.sh [--counts 1000,10000] [--kinds idle,queue,keepalive,h2] [--no-build]
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

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case $1 in
    --counts) [ $# -ge 2 ] || die "--counts needs a value"; counts=$2; shift ;;
    --counts=*) counts=${1#*=} ;;
    --kinds) [ $# -ge 2 ] || die "--kinds needs a value"; kinds=$2; shift ;;
    --kinds=*) kinds=${1#*=} ;;
    --no-build) build="" ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
  shift
done
[[ $counts =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--counts takes numbers separated by commas"
largest=$(tr ',' '\n' <<<"$counts" | sort -n | tail -n1)
command -v python3 >/dev/null || die "python3 is needed"

# Every client and every accepted connection is a descriptor, in two processes that each
# inherit this limit: raise it as far as allowed and check it is enough.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((largest + 1000)) ] ||
  die "open files limit $(ulimit -n) is too low for $largest connections (run as root)"

# One benchmark at a time on this machine (the lock bench/run takes): a second one would
# share the cores and skew both.
exec 9>/run/lock/fcgate-bench.lock
flock -w 1800 9 || die "another benchmark still holds /run/lock/fcgate-bench.lock after 30 min"

wait_for_quiet_machine() {
  local waited=0 load
  while :; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$load" -v m="$LOAD_MAX" 'BEGIN {exit !(l < m)}' && return 0
    [ "$waited" -ge "$LOAD_WAIT" ] && { log "warning: load $load still >= $LOAD_MAX after ${LOAD_WAIT} s; measuring anyway"; return 0; }
    log "load average $load >= $LOAD_MAX; waiting (at most ${LOAD_WAIT} s)"
    sleep 10
    waited=$((waited + 10))
  done
}

if [ -n "$build" ]; then
  (cd "$repo" && cargo build --release -p fcgate >/dev/null 2>&1) ||
    (cd "$repo" && cargo build --release -p fcgate) || die "cargo build failed"
fi
[ -x "$repo/target/release/fcgate" ] || die "no target/release/fcgate (build it, or drop --no-build)"

work=$(mktemp -d /tmp/fcgate-queue-memory.XXXXXX)
driver_pid=""
cleanup() {
  set +e
  if [ -n "$driver_pid" ]; then
    kill -TERM -- "-$driver_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 -- "-$driver_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$driver_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# A copy: another build replacing target/release/fcgate mid-run must not change what is measured.
cp "$repo/target/release/fcgate" "$work/fcgate"

wait_for_quiet_machine
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# setsid: the driver, fcgate and the backend form one process group the trap can end at once.
setsid timeout -k 10 1200 python3 "$bench_dir/queue-memory.py" measure \
  --fcgate "$work/fcgate" --work "$work" --counts "$counts" --kinds "$kinds" >"$work/table.md" 9>&- &
driver_pid=$!
status=0
wait "$driver_pid" || status=$?
driver_pid=""
[ "$status" = 0 ] || die "measurement failed ($status); fcgate logs were in $work"

mkdir -p "$bench_dir/results"
report="$bench_dir/results/$(date +%Y-%m-%d-%H%M)-queue-memory.md"
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$repo" diff --quiet HEAD -- crates 2>/dev/null || commit="$commit + uncommitted changes"
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
} >"$report"
cat "$report"
log "written $report"
