#!/usr/bin/env bash
# bench/idle-release.sh: what handing idle workers back costs and what it buys
# (upstream.worker_idle_timeout, and the look at a local backend's listen queue). php-fpm, 4
# static workers on a unix socket, behind fcgate with max_conns = 4, in turn:
#   release  worker_idle_timeout = "250ms" (the default)
#   keep     worker_idle_timeout = "60s": idle connections kept, but handed over when someone
#            waits in php-fpm's listen queue
#   before   with FCGATE_BASELINE=/path/to/an/older/fcgate: that build, its defaults
# The cost: ROUNDS requests to hello.php, each after a quiet spell of QUIET seconds (longer than
# 250 ms: with release each one connects anew); time to the whole response (curl), median and
# 90th percentile, and the same for a request right after (warm).
# The benefit: a second fcgate on the same 4 workers sends one request right after the first
# one's burst (h2load -n 2000 -c 16); how long it waits for a worker (curl gives up after 5 s).
# Prints a markdown table and writes it to bench/results/idle-release.md (replacing the previous
# run's) and a row to bench/results/HISTORY.md. Installs h2load and curl if missing (as root);
# run it on a quiet machine.
#
#   bench/idle-release.sh [--no-build] [--dry-run]     # ROUNDS=40 QUIET=0.5 by default
#
# --dry-run prints what would be installed, written, started and run, and does none of it.
# Environment: ROUNDS, QUIET, PORT (19400: the first fcgate; the second on +1), FCGATE_BASELINE.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
ROUNDS=${ROUNDS:-40}
QUIET=${QUIET:-0.5}
PORT=${PORT:-19400}
build=1

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # find_fpm, write_fpm_conf, start_fpm
source "$bench_dir/lib/peers.sh"     # write_fcgate_toml, start_peer_process

while [ $# -gt 0 ]; do
  common_arg "$1"
  shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"

ensure_packages h2load curl
bench_lock
find_fpm
make_work fcgate-idle-release
fpm_pid="" first_pid="" second_pid=""
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  stop_tree "$second_pid"
  stop_tree "$first_pid"
  stop_tree "$fpm_pid"
  kill_run "$work"
  rm -rf "$work"
}
trap cleanup EXIT
prepare_fcgate "$build"
www="$work/www"
socket="$work/php-fpm.sock"
if [ -z "$dry_run" ]; then
  cp -r "$bench_dir/www" "$www"
  chmod -R a+rX "$www"
fi
write_fpm_conf "$work/php-fpm.conf" listen="$socket" children=4
start_fpm "$work/php-fpm.conf"
wait_socket "$socket" || die "php-fpm did not start (see $work/php-fpm.log)"

# start_gateway NAME PORT TIMEOUT: an fcgate on PORT with worker_idle_timeout TIMEOUT (none
# given: the baseline build, on its defaults), its metrics on PORT + 1000; sets peer_pid.
start_gateway() {
  local dir="$work/$1" peer=fcgate extra=""
  [ -n "$3" ] && extra="worker_idle_timeout = \"$3\"" || peer=fcgate-baseline
  [ -n "$dry_run" ] || mkdir -p "$dir"
  write_fcgate_toml "$dir/fcgate.toml" listen="127.0.0.1:$2" upstream="unix:$socket" \
    root="$www" max_conns=4 access_log=off admin_listen="127.0.0.1:$(($2 + 1000))" \
    upstream_extra="$extra"
  start_peer_process "$peer" "$dir" "$2"
  wait_port 127.0.0.1 "$2" || die "fcgate did not start (see $dir/out.log)"
}

url() { echo "http://127.0.0.1:$1/hello.php"; }
# opened PORT: backend connections the fcgate on PORT has opened so far (its /metrics).
opened() {
  curl -s "http://127.0.0.1:$(($1 + 1000))/metrics" |
    awk '/^fcgate_backend_connections_opened_total/ {n += $NF} END {print n + 0}'
}
# timed URL: seconds to the whole response; curl writes the time even when it gives up at 5 s.
timed() { curl -s -o /dev/null --max-time 5 -w '%{time_total}\n' "$@" || true; }

# variant NAME TIMEOUT: prints "NAME quiet_ms... | warm_ms... | second_ms" lines to stdout.
variant() {
  local name=$1 timeout=$2
  [ -z "$dry_run" ] || printf '\n== %s\n' "$name"
  start_gateway "$name" "$PORT" "$timeout"
  first_pid=$peer_pid
  local burst=(h2load --h1 -n 2000 -c 16 "$(url "$PORT")")
  if [ -n "$dry_run" ]; then
    dry_say "load: $ROUNDS x (sleep $QUIET; curl $(url "$PORT"); curl $(url "$PORT"))"
    start_gateway "$name-second" $((PORT + 1)) "$timeout"
    show_load "${burst[@]}"
    dry_say "load: curl --max-time 5 $(url $((PORT + 1))) right after the burst"
    return
  fi
  timed "$(url "$PORT")" >/dev/null
  local before
  before=$(opened "$PORT")
  for _ in $(seq "$ROUNDS"); do
    sleep "$QUIET"
    printf 'quiet %s\n' "$(timed "$(url "$PORT")")"
    printf 'warm %s\n' "$(timed "$(url "$PORT")")"
  done >"$work/$name.times"
  printf 'opened %s\n' $(($(opened "$PORT") - before)) >>"$work/$name.times"
  start_gateway "$name-second" $((PORT + 1)) "$timeout"
  second_pid=$peer_pid
  "${burst[@]}" >"$work/$name.burst" 2>&1
  printf 'second %s\n' "$(timed "$(url $((PORT + 1)))")" >>"$work/$name.times"
  stop_tree "$second_pid"
  stop_tree "$first_pid"
  second_pid="" first_pid=""
  sleep 1  # php-fpm's workers see the closes and take new connections again
}

variants="release keep"
variant release 250ms
variant keep 60s
if [ -n "${FCGATE_BASELINE:-}" ]; then
  variants="$variants before"
  variant before ""
fi

if [ -n "$dry_run" ]; then
  echo
  publish_result idle-release.md "" </dev/null
  exit 0
fi

# stats KIND FILE: "median p90" in ms of the KIND lines.
stats() {
  awk -v k="$1" '$1 == k {print $2 * 1000}' "$2" | sort -n |
    awk '{a[NR]=$1} END {printf "%.2f %.2f\n", a[int((NR+1)/2)], a[int(NR*0.9+0.5)]}'
}

report() {
  echo "# fcgate: handing idle workers back (worker_idle_timeout), $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "fcgate at $(git -C "$repo" rev-parse --short HEAD), $(nproc) cores; php-fpm, 4 static workers,"
  echo "unix socket; fcgate max_conns = 4. $ROUNDS requests after a ${QUIET} s quiet spell each, and one"
  echo "right after each of them; then a second fcgate's first request right after the first's burst"
  echo "(h2load -n 2000 -c 16); curl gives up at 5 s."
  echo
  echo "| worker_idle_timeout | after a quiet spell: median / p90 ms | warm: median / p90 ms | backend connections opened for the $((ROUNDS * 2)) requests | second instance's first request, ms |"
  echo "|---|--:|--:|--:|--:|"
  local name quiet warm second opened label
  for name in $variants; do
    read -r qm qp < <(stats quiet "$work/$name.times")
    read -r wm wp < <(stats warm "$work/$name.times")
    second=$(awk '$1 == "second" {printf "%.0f", $2 * 1000}' "$work/$name.times")
    opened=$(awk '$1 == "opened" {print $2}' "$work/$name.times")
    [ "$second" -lt 5000 ] || second="no answer within 5000"
    quiet="$qm / $qp" warm="$wm / $wp"
    case $name in
      release) label="250ms (default)" ;;
      keep) label="60s" ;;
      before) label="unset: $(basename "$FCGATE_BASELINE")" ;;
    esac
    printf '| %s | %s | %s | %s | %s |\n' "$label" "$quiet" "$warm" "$opened" "$second"
  done
}
report >"$work/report.md"
headline=$(awk -F ' [|] ' '/^[|] (250ms|60s|unset)/ {
    sub(/^[|] /, "", $1); printf "%s%s: quiet %s ms, %s connections, second instance %s ms", (n++ ? "; " : ""), $1, $2, $4, $5
  }' "$work/report.md")
publish_result idle-release.md "$headline" <"$work/report.md"
