#!/usr/bin/env bash
# bench/faults.sh: issue 4's fault scenarios against nginx (upstream keepalive + fastcgi_keep_conn)
# and fcgate (defaults) side by side, on a real php-fpm pool: failures out of total for each.
#
# Scenarios (php-fpm: 4 children on TCP 127.0.0.1; 32 connections of GET /hello.php unless said):
#   max-requests  pm static, pm.max_requests = 10; 10 s
#   ondemand      pm ondemand, pm.process_idle_timeout = 1s; 4 bursts of 2 s, 2 s pauses
#   reload        pm static; SIGUSR2 to the master 2 s into a 6 s load
#   kill          pm static; SIGKILL to master and workers 2 s in, restarted on the same address
#                 2 s later, 10 s load: statuses, answers over 5 s, when 2xx came back
#   post          pm.max_requests = 10; 10 s of POST /append.php?id=…, which logs one line per
#                 execution: failures, executions against 2xx answers, duplicates
# The load is bench/faults/client.py, 32 threads of one keep-alive connection each: it keeps
# every request's outcome by id and, unlike wrk, waits for the answers in flight when the time
# is up (at most 30 s), so a gateway that leaves requests hanging shows.
# Each (scenario, peer) gets a fresh php-fpm, and only one peer runs at a time: two gateways
# holding persistent connections to the same 4 workers would pin them for each other.
# Prints one markdown table and writes it to bench/results/<date>-faults.md.
# Needs root to install missing Debian packages (nginx-light, php-fpm).
#
#   bench/faults.sh [--quick] [--scenarios max-requests,ondemand,…] [--peers nginx,fcgate]
#                   [--no-build]
#
# --quick halves every duration and skips the wait for a quiet machine. Otherwise the run waits
# (at most LOAD_WAIT seconds, 600) for the 1-minute load average to drop below LOAD_MAX (1.5).
# KEEP_WORK=1 keeps the work directory (configs, logs, outcomes). FCGATE_ARGS adds flags to
# fcgate's command line (the report says so). Ports: PORT_BASE (18800; bench/run uses 18400…,
# seed-000.sh 18600…), php-fpm on it, nginx on +1, fcgate on +2.
set -euo pipefail
export LC_ALL=C

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
# shellcheck source-path=SCRIPTDIR
source "$bench_dir/faults/processes.sh"
# shellcheck source-path=SCRIPTDIR
source "$bench_dir/faults/results.sh"

all_scenarios="max-requests ondemand reload kill post"
scenarios=$all_scenarios
peers="nginx fcgate"
quick=""
build=1
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-600}
PORT_BASE=${PORT_BASE:-18800}
connections=32

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --scenarios) [ $# -ge 2 ] || die "--scenarios needs a value"; scenarios=${2//,/ }; shift ;;
    --peers) [ $# -ge 2 ] || die "--peers needs a value"; peers=${2//,/ }; shift ;;
    --no-build) build="" ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
  shift
done
for s in $scenarios; do [[ " $all_scenarios " == *" $s "* ]] || die "unknown scenario $s"; done
for p in $peers; do [[ " nginx fcgate " == *" $p "* ]] || die "unknown peer $p"; done

# seconds N: a scenario's N seconds, halved by --quick.
seconds() { if [ -n "$quick" ]; then awk -v n="$1" 'BEGIN { print n / 2 }'; else echo "$1"; fi; }

fpm_port=$PORT_BASE
nginx_port=$((PORT_BASE + 1))
fcgate_port=$((PORT_BASE + 2))
fcgate_bin=$repo/target/release/fcgate

install_missing() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3)
  command -v curl >/dev/null || missing+=(curl)
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v ss >/dev/null || missing+=(iproute2)
  compgen -G '/usr/sbin/php-fpm*' >/dev/null || missing+=(php-fpm)
  [ ${#missing[@]} -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; run as root to install them"
  log "installing ${missing[*]}"
  apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      >/dev/null
}

# wait_quiet: until the 1-minute load average is below LOAD_MAX, at most LOAD_WAIT seconds.
wait_quiet() {
  local waited=0 load
  while load=$(cut -d' ' -f1 /proc/loadavg); awk -v l="$load" -v m="$LOAD_MAX" 'BEGIN { exit !(l >= m) }'; do
    if [ "$waited" -ge "$LOAD_WAIT" ]; then
      log "warning: load average still $load after ${LOAD_WAIT} s; measuring anyway"
      return
    fi
    [ "$waited" = 0 ] && log "waiting for load average $load < $LOAD_MAX (at most ${LOAD_WAIT} s)"
    sleep 10
    waited=$((waited + 10))
  done
}

install_missing
fpm_bin=$(find /usr/sbin -maxdepth 1 -name 'php-fpm*' | sort | tail -n1)
if [ -n "$build" ]; then
  (cd "$repo" && cargo build --release -p fcgate >/dev/null 2>&1) ||
    (cd "$repo" && cargo build --release -p fcgate) || die "cargo build failed"
fi
[ -x "$fcgate_bin" ] || die "no $fcgate_bin (drop --no-build)"
for port in "$fpm_port" "$nginx_port" "$fcgate_port"; do
  listening "$port" && die "port $port is taken; set PORT_BASE"
done

work=$(mktemp -d /tmp/fcgate-faults.XXXXXX)
www=$work/www
load_pid=""
cleanup() {
  # shellcheck disable=SC2046 # pids, one a word
  [ -z "$load_pid" ] || kill $(children "$load_pid") "$load_pid" 2>/dev/null || true
  stop_peer
  stop_fpm
  if [ -n "${KEEP_WORK:-}" ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$www"
cp "$bench_dir/www/hello.php" "$bench_dir/faults/append.php" "$www/"
write_nginx_conf

# load NAME SECONDS [METHOD PATH]: one client.py run (GET /hello.php by default) against the
# current peer, every request's outcome in $work/NAME.outcomes.
load() {
  "$bench_dir/faults/client.py" "${3:-GET}" "http://127.0.0.1:$(peer_port "$peer")${4:-/hello.php}" \
    "$2" "$connections" "$work/$1.outcomes"
}

# run_scenario SCENARIO PEER: fresh php-fpm, the peer, the load and the fault; sets row. Not in
# a subshell: the EXIT trap must know the pids it started.
run_scenario() {
  local scenario=$1 peer=$2 pool=static
  local tag="$scenario-$peer" notes="" killed="" restarted=""
  case $scenario in
    max-requests) pool=recycling ;;
    ondemand) pool=ondemand ;;
    post) pool=recycling ;;
  esac
  : >"$work/executions"
  : >"$work/nginx-error.log"
  : >"$work/fcgate.log"
  write_fpm_conf "$pool"
  start_fpm
  start_peer "$peer"
  local check
  check=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(peer_port "$peer")/hello.php")
  [ "$check" = 200 ] || die "$peer answered $check to GET /hello.php before $scenario"
  log "$scenario: $peer"

  case $scenario in
    max-requests) load "$tag" "$(seconds 10)" ;;
    post) load "$tag" "$(seconds 10)" POST /append.php ;;
    ondemand)
      for burst in 1 2 3 4; do
        load "$tag-$burst" "$(seconds 2)"
        [ "$burst" = 4 ] || sleep "$(seconds 2)"
      done
      ;;
    reload)
      load "$tag" "$(seconds 6)" &
      load_pid=$!
      sleep "$(seconds 2)"
      reload_fpm
      wait "$load_pid"
      load_pid=""
      ;;
    kill)
      load "$tag" "$(seconds 10)" &
      load_pid=$!
      sleep "$(seconds 2)"
      kill_fpm_hard
      killed=$killed_at
      sleep "$(seconds 2)"
      restarted=$EPOCHREALTIME
      start_fpm
      wait "$load_pid"
      load_pid=""
      ;;
  esac
  stop_peer
  stop_fpm

  local requests non2xx socket
  IFS=$'\t' read -r requests non2xx socket notes < <(tally "$work/$tag"*.outcomes)
  notes+="; "
  case $scenario in
    kill)
      notes+="$(kill_timeline "$work/$tag.outcomes" "$killed" "$restarted"); "
      ;;
    post) notes+="$(post_executions "$work/executions" "$work/$tag.outcomes"); " ;;
  esac
  if [ "$peer" = nginx ]; then notes+=$(nginx_reasons "$work/nginx-error.log")
  else notes+=$(fcgate_reasons "$work/fcgate.log"); fi
  if [ -n "${KEEP_WORK:-}" ]; then
    if [ "$peer" = nginx ]; then cp "$work/nginx-error.log" "$work/$tag.log"
    else cp "$work/fcgate.log" "$work/$tag.log"; fi
    [ "$scenario" != post ] || cp "$work/executions" "$work/$tag.executions"
  fi
  row="| $scenario | $peer | $requests | $non2xx | $socket | $notes |"
  echo "$row" >&2
}

[ -n "$quick" ] || wait_quiet
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
for scenario in $scenarios; do
  for peer in $peers; do
    run_scenario "$scenario" "$peer"
    rows+=("$row")
  done
done

mkdir -p "$bench_dir/results"
report=$bench_dir/results/$(date +%F)-faults.md
{
  echo "# Fault scenarios (issue 4): nginx keepalive vs fcgate, $(date '+%F %H:%M')"
  echo
  echo "- $(nginx -v 2>&1); $("$fpm_bin" -v | head -n1 | cut -d'(' -f1 | sed 's/ *$//'); fcgate $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') + working tree"
  echo "- $(nproc) CPUs, load average before: $load_before${quick:+; --quick (durations halved)}"
  echo "- php-fpm pm.max_children 4 on 127.0.0.1; nginx worker_processes 2, keepalive 2, fastcgi_keep_conn on;"
  echo "  fcgate --upstream --root only${FCGATE_ARGS:+ plus $FCGATE_ARGS}; bench/faults/client.py, $connections keep-alive connections"
  echo "- requests: every request sent, including those in flight when the time was up (answers"
  echo "  awaited up to 30 s); socket errors/timeouts: requests that got no HTTP answer"
  echo
  echo "| scenario | peer | requests | non-2xx | socket errors/timeouts | notes |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$report"
log "written to $report"
