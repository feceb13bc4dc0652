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
# Prints one markdown table and writes it to bench/results/faults.md (replacing the previous
# run's) and a row to bench/results/HISTORY.md. Needs root to install missing Debian packages
# (nginx-light, php-fpm).
#
#   bench/faults.sh [--quick] [--scenarios max-requests,ondemand,…] [--peers nginx,fcgate]
#                   [--no-build] [--dry-run]
#
# --quick halves every duration and skips the wait for a quiet machine. Otherwise the run waits
# (at most LOAD_WAIT seconds, 600) for the 1-minute load average to drop below LOAD_MAX (1.5).
# --dry-run prints what would be installed, written, started and run, and does none of it.
# KEEP_WORK=1 keeps the work directory (configs, logs, outcomes). FCGATE_ARGS adds flags to
# fcgate's command line (the report says so). Ports: PORT_BASE (18800; bench/run uses 18400…,
# seed-000.sh 18600…), php-fpm on it, nginx on +1, fcgate on +2.
set -euo pipefail
export LC_ALL=C

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"
source "$bench_dir/lib/peers.sh"
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
PHP_CHILDREN=4
WORKERS=2  # nginx worker_processes; keepalive 2 each: 4 connections at most, one per php-fpm child

while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 LOAD_WAIT=0 ;;
    --scenarios) [ $# -ge 2 ] || die "--scenarios needs a value"; scenarios=${2//,/ }; shift ;;
    --peers) [ $# -ge 2 ] || die "--peers needs a value"; peers=${2//,/ }; shift ;;
    *) common_arg "$1" ;;
  esac
  shift
done
for s in $scenarios; do [[ " $all_scenarios " == *" $s "* ]] || die "unknown scenario $s"; done
for p in $peers; do [[ " nginx fcgate " == *" $p "* ]] || die "unknown peer $p"; done

# seconds N: a scenario's N seconds, halved by --quick.
seconds() { if [ -n "$quick" ]; then awk -v n="$1" 'BEGIN { print n / 2 }'; else echo "$1"; fi; }

fpm_port=$PORT_BASE
declare -A peer_port=([nginx]=$((PORT_BASE + 1)) [fcgate]=$((PORT_BASE + 2)))
fcgate_rust_log=info
# shellcheck disable=SC2206 # FCGATE_ARGS is a list of flags
fcgate_flags=(${FCGATE_ARGS:-})

ensure_packages python3 curl nginx ss php-fpm
find_fpm
bench_lock
for port in "$fpm_port" "${peer_port[@]}"; do
  port_free "$port" || die "port $port is taken; set PORT_BASE"
done

make_work fcgate-faults
www=$work/www
fpm_pid="" peer_pid="" load_pid=""
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  # shellcheck disable=SC2046 # pids, one a word
  [ -z "$load_pid" ] || kill $(children "$load_pid") "$load_pid" 2>/dev/null
  stop_tree "$peer_pid"
  stop_tree "$fpm_pid"
  kill_run "$work"
  if [ -n "${KEEP_WORK:-}" ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

prepare_fcgate "$build"
if [ -z "$dry_run" ]; then
  mkdir -p "$www" "$work/peers/nginx" "$work/peers/fcgate"
  cp "$bench_dir/www/hello.php" "$bench_dir/faults/append.php" "$www/"
fi
# The peers' configs do not change between scenarios: written once.
write_nginx_conf "$work/peers/nginx" port="${peer_port[nginx]}" upstream="127.0.0.1:$fpm_port" \
  keepalive=2 workers="$WORKERS" root="$www" log_level=error
write_fcgate_toml "$work/peers/fcgate/fcgate.toml" listen="127.0.0.1:${peer_port[fcgate]}" \
  upstream="127.0.0.1:$fpm_port" root="$www"

# fpm_pool POOL: php-fpm's config for one scenario, written and started; waits for its port by
# looking it up (ss), not by connecting: a probe connection would take a worker for nothing.
#   static: pm static 4 | recycling: static 4, pm.max_requests 10 | ondemand: 4, idle 1 s
fpm_pool() {
  local args=()
  case $1 in
    static) ;;
    recycling) args=(max_requests=10) ;;
    ondemand) args=(pm=ondemand) ;;
    *) die "unknown pool $1" ;;
  esac
  write_fpm_conf "$work/php-fpm.conf" listen="127.0.0.1:$fpm_port" children=4 backlog=511 \
    extra="env[FAULTS_EXECUTIONS] = $work/executions" "${args[@]}"
  start_php
}

start_php() {
  port_free "$fpm_port" || die "port $fpm_port taken before php-fpm started; set PORT_BASE"
  start_fpm "$work/php-fpm.conf" ini=no
  wait_listening "$fpm_port" || die "php-fpm not listening on $fpm_port (see $work/php-fpm.log)"
  [ -n "$dry_run" ] || kill -0 "$fpm_pid" 2>/dev/null || die "php-fpm exited at start (see $work/php-fpm.log)"
}

# kill_fpm_hard: SIGKILL the master and its workers at once, as a crash or an OOM kill of the
# whole service would. Killing only the master would leave the workers serving the old socket.
# Sets killed (epoch seconds, client.py's clock) after the slow part, right before the signal.
kill_fpm_hard() {
  local workers
  workers=$(children "$fpm_pid")
  killed=$EPOCHREALTIME
  # shellcheck disable=SC2086
  kill -KILL "$fpm_pid" $workers 2>/dev/null || true
  wait "$fpm_pid" 2>/dev/null || true
  fpm_pid=""
}

# start_gateway PEER: its config written above; the port checked free first and the peer
# alive after: a port taken meanwhile by another bench would send the load to someone else's.
start_gateway() {
  local port=${peer_port[$1]}
  port_free "$port" || die "port $port taken before $1 started; set PORT_BASE"
  start_peer_process "$1" "$work/peers/$1" "$port"
  wait_listening "$port" || die "$1 not listening (see $work/peers/$1/)"
  [ -n "$dry_run" ] || kill -0 "$peer_pid" 2>/dev/null || die "$1 exited at start (see $work/peers/$1/)"
}

# peer_log PEER: where the peer says why a request failed.
peer_log() { if [ "$1" = nginx ]; then echo "$work/peers/nginx/error.log"; else echo "$work/peers/fcgate/out.log"; fi; }

# load NAME SECONDS [METHOD PATH]: one client.py run (GET /hello.php by default) against the
# current peer, every request's outcome in $work/NAME.outcomes.
load() {
  local command=("$bench_dir/faults/client.py" "${3:-GET}" "http://127.0.0.1:${peer_port[$peer]}${4:-/hello.php}"
    "$2" "$connections" "$work/$1.outcomes")
  if [ -n "$dry_run" ]; then show_load "${command[@]}"; return 0; fi
  "${command[@]}"
}

# The faults, 2 s into the load: a reload; a hard kill and, 2 s later, a restart (sets killed
# and restarted, epoch seconds).
reload_fault() { sleep "$(seconds 2)"; kill -USR2 "$fpm_pid"; }
kill_fault() {
  sleep "$(seconds 2)"
  kill_fpm_hard
  sleep "$(seconds 2)"
  restarted=$EPOCHREALTIME
  start_php
}

# load_in_background NAME SECONDS: load, in the background (sets load_pid; a dry run says it).
load_in_background() {
  if [ -n "$dry_run" ]; then load "$@"; load_pid=""; return 0; fi
  load "$@" &
  load_pid=$!
}

# fault WHAT COMMAND...: the fault a scenario delivers (in a dry run, said).
fault() {
  local what=$1
  shift
  if [ -n "$dry_run" ]; then dry_say "fault: $what"; return 0; fi
  "$@"
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
  [ -z "$dry_run" ] || printf '\n== %s / %s\n' "$scenario" "$peer"
  if [ -z "$dry_run" ]; then
    : >"$work/executions"
    : >"$(peer_log "$peer")"
  fi
  fpm_pool "$pool"
  start_gateway "$peer"
  if [ -z "$dry_run" ]; then
    local check
    check=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${peer_port[$peer]}/hello.php")
    [ "$check" = 200 ] || die "$peer answered $check to GET /hello.php before $scenario"
    log "$scenario: $peer"
  fi

  case $scenario in
    max-requests) load "$tag" "$(seconds 10)" ;;
    post) load "$tag" "$(seconds 10)" POST /append.php ;;
    ondemand)
      for burst in 1 2 3 4; do
        load "$tag-$burst" "$(seconds 2)"
        [ "$burst" = 4 ] || fault "pause $(seconds 2) s" sleep "$(seconds 2)"
      done
      ;;
    reload)
      load_in_background "$tag" "$(seconds 6)"
      fault "$(seconds 2) s into the load: kill -USR2 php-fpm's master (reload)" reload_fault
      [ -z "$load_pid" ] || wait "$load_pid"
      load_pid=""
      ;;
    kill)
      load_in_background "$tag" "$(seconds 10)"
      fault "$(seconds 2) s into the load: kill -KILL php-fpm's master and workers; $(seconds 2) s later the same php-fpm started again" \
        kill_fault
      [ -z "$load_pid" ] || wait "$load_pid"
      load_pid=""
      ;;
  esac
  stop_tree "$peer_pid"
  peer_pid=""
  stop_tree "$fpm_pid"
  fpm_pid=""
  [ -z "$dry_run" ] || return 0

  local requests non2xx socket
  IFS=$'\t' read -r requests non2xx socket notes < <(tally "$work/$tag"*.outcomes)
  notes+="; "
  case $scenario in
    kill) notes+="$(kill_timeline "$work/$tag.outcomes" "$killed" "$restarted"); " ;;
    post) notes+="$(post_executions "$work/executions" "$work/$tag.outcomes"); " ;;
  esac
  if [ "$peer" = nginx ]; then notes+=$(nginx_reasons "$(peer_log nginx)")
  else notes+=$(fcgate_reasons "$(peer_log fcgate)"); fi
  if [ -n "${KEEP_WORK:-}" ]; then
    cp "$(peer_log "$peer")" "$work/$tag.log"
    [ "$scenario" != post ] || cp "$work/executions" "$work/$tag.executions"
  fi
  row="| $scenario | $peer | $requests | $non2xx | $socket | $notes |"
  echo "$row" >&2
}

wait_quiet "$LOAD_MAX" "$LOAD_WAIT"
rows=()
for scenario in $scenarios; do
  for peer in $peers; do
    run_scenario "$scenario" "$peer"
    rows+=("${row:-}")
  done
done
[ -z "$dry_run" ] || { echo; publish_result faults.md "" </dev/null; exit 0; }

# faults_headline: per scenario, each peer's failed requests (non-2xx + no answer) of all.
faults_headline() {
  printf '%s\n' "${rows[@]}" | awk -F ' [|] ' '
    { split($5, parts, /[^0-9]+/); failed = $4; for (i in parts) failed += parts[i]
      cell = sprintf("%s %d/%d", $2, failed, $3)
      sub(/^[|] /, "", $1)
      if ($1 != last) { printf "%s%s: %s", (NR > 1 ? "; " : ""), $1, cell; last = $1 }
      else printf ", %s", cell }
    END { print " failed" }'
}

{
  echo "# Fault scenarios (issue 4): nginx keepalive vs fcgate, $(date '+%F %H:%M')"
  echo
  echo "- $(nginx -v 2>&1); $("$fpm_bin" -v | head -n1 | cut -d'(' -f1 | sed 's/ *$//'); fcgate $(commit_described)"
  echo "- $(nproc) CPUs, load average before: $load_before${quick:+; --quick (durations halved)}"
  echo "- php-fpm pm.max_children 4 on 127.0.0.1; nginx worker_processes 2, keepalive 2, fastcgi_keep_conn on;"
  echo "  fcgate listen, root and upstream only${FCGATE_ARGS:+ plus $FCGATE_ARGS}; bench/faults/client.py, $connections keep-alive connections"
  echo "- requests: every request sent, including those in flight when the time was up (answers"
  echo "  awaited up to 30 s); socket errors/timeouts: requests that got no HTTP answer"
  echo
  echo "| scenario | peer | requests | non-2xx | socket errors/timeouts | notes |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | publish_result faults.md "$(faults_headline)"
