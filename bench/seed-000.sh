#!/usr/bin/env bash
# bench/seed-000.sh: the hang from shared/seeds/000 ("keepalive connection to fastcgi backend
# hangs"), side by side. Two process-per-connection backends with 2 workers each:
#   php-fpm  pm = static, pm.max_children = 2   (php-fpm -F -R -n -y, TCP 127.0.0.1)
#   php-cgi  PHP_FCGI_CHILDREN=2 php-cgi -n -b 127.0.0.1:PORT
# and, one at a time in front of each, with the backend restarted fresh for every peer:
#   nginx-keepalive  worker_processes 2, upstream { keepalive 16; } + fastcgi_keep_conn on
#   fcgate           no capacity configured (no --max-conns, no php-fpm config): it must find
#                    the limit itself
# Load: wrk, CONNECTIONS (64) connections, DURATION (10 s), --timeout 5s, on hello.php.
#
# Columns: requests served (2xx), non-2xx, wrk timeouts, other socket errors, clients stalled
# (wrk connections that received nothing during the last 5 s of the run: requests stuck
# behind a pinned worker that wrk itself never reports), p50, p99, backend connections opened
# (SYNs to the backend port, counted by an nftables rule this script adds and removes), and
# backend connections open near the end of the run, with how many of them sat unaccepted in
# the backend's listen queue.
#
# Prints a markdown table and writes it to bench/results/seed-000.md (replacing the previous
# run's) and a row to bench/results/HISTORY.md. Needs root (nftables, apt-get); installs
# nginx-light, php-fpm, php-cgi, wrk, nftables from Debian if missing. Cleans up everything it
# started on exit. --dry-run prints what would be installed, written, started and run, and
# does none of it.
#
#   bench/seed-000.sh [--duration 10] [--connections 64] [--backends php-fpm,php-cgi]
#                     [--peers nginx-keepalive,fcgate] [--no-build] [--dry-run]
#
# Environment: PORT_BASE (18600: backend +90, peers +1, +2), KEEP_WORK=1 keeps configs and
# logs, LOAD_MAX (1.5) and LOAD_WAIT (300 s): wait, bounded, for a quiet machine first.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
BACKENDS=${BACKENDS:-php-fpm php-cgi}
PEERS=${PEERS:-nginx-keepalive fcgate}
PORT_BASE=${PORT_BASE:-18600}
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-300}
WRK_TIMEOUT=5
WRK_THREADS=2
WORKERS=2
build=1

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # write_fpm_conf, start_fpm
source "$bench_dir/lib/peers.sh"     # write_nginx_conf, write_fcgate_toml, start_peer_process
source "$bench_dir/lib/measure.sh"   # count_syns_to, syns, remove_syn_counter, to_ms

while [ $# -gt 0 ]; do
  arg=$1 value=""
  case $arg in
    --*=*) value=${arg#*=}; arg=${arg%%=*} ;;
    --duration | --connections | --backends | --peers)
      [ $# -ge 2 ] || die "$arg needs a value"; value=$2; shift ;;
  esac
  case $arg in
    --duration) DURATION=${value%s} ;;
    --connections) CONNECTIONS=$value ;;
    --backends) BACKENDS=${value//,/ } ;;
    --peers) PEERS=${value//,/ } ;;
    *) common_arg "$1" ;;
  esac
  shift
done
DURATION=${DURATION%s}
if ! [[ $DURATION =~ ^[0-9]+$ ]] || [ "$DURATION" -lt $((WRK_TIMEOUT + 2)) ]; then
  die "--duration must be whole seconds, at least $((WRK_TIMEOUT + 2)) (the stall window is ${WRK_TIMEOUT} s)"
fi
if ! [[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || [ "$CONNECTIONS" -lt "$WRK_THREADS" ]; then
  die "--connections must be a number >= $WRK_THREADS"
fi
for b in $BACKENDS; do [[ $b == php-fpm || $b == php-cgi ]] || die "unknown backend $b"; done
for p in $PEERS; do [[ $p == nginx-keepalive || $p == fcgate ]] || die "unknown peer $p"; done
[ -n "$dry_run" ] || [ "$(id -u)" = 0 ] || die "needs root (nftables counter, apt-get)"

php_port=$((PORT_BASE + 90))
fcgate_rust_log=info  # fcgate_log_summary reads its pool's info lines
declare -A peer_port=([nginx-keepalive]=$((PORT_BASE + 1)) [fcgate]=$((PORT_BASE + 2)))

# ------------------------------------------------------------------------------------------
# Backends and peers: bench/lib's, set up as the seed has them

backend_pid=""
start_php_backend() {
  case $1 in
    php-fpm)
      write_fpm_conf "$work/php-fpm.conf" listen="127.0.0.1:$php_port" children=2 backlog=511
      start_fpm "$work/php-fpm.conf" ini=no
      backend_pid=$fpm_pid
      ;;
    php-cgi)
      # PHP_FCGI_MAX_REQUESTS stays at php-cgi's default (500): each child exits and is
      # replaced after 500 requests, as in any stock php-cgi setup.
      spawn "$work/php-cgi.out" env PHP_FCGI_CHILDREN=2 php-cgi -n -b "127.0.0.1:$php_port"
      backend_pid=$spawned_pid
      ;;
  esac
  wait_port 127.0.0.1 "$php_port" 100 || die "$1 is not listening on 127.0.0.1:$php_port (see $work/$1.out)"
}

stop_php_backend() {
  stop_tree "$backend_pid"
  backend_pid=""
  [ -z "$dry_run" ] || return 0
  # Until every connection to the old backend is gone (bounded): the next peer starts clean.
  for _ in $(seq 100); do
    [ -z "$(ss -tanH state connected exclude time-wait "( sport = :$php_port or dport = :$php_port )")" ] && return 0
    sleep 0.1
  done
  log "warning: connections to port $php_port still open 10 s after the backend stopped"
}

# start_gateway PEER: nginx-keepalive as the seed has it (16 idle connections kept per worker,
# far more than the backend's 2 workers), or fcgate with no capacity configured (no max_conns,
# no php_fpm_config): the cap must come from the backend itself.
peer_pid=""
start_gateway() {
  local port=${peer_port[$1]} dir="$work/peers/$1"
  [ -n "$dry_run" ] || mkdir -p "$dir"
  case $1 in
    nginx-keepalive)
      write_nginx_conf "$dir" port="$port" upstream="127.0.0.1:$php_port" keepalive=16 \
        workers="$WORKERS" root="$work/www" ;;
    fcgate)
      write_fcgate_toml "$dir/fcgate.toml" listen="127.0.0.1:$port" root="$work/www" \
        upstream="127.0.0.1:$php_port" access_log=off ;;
  esac
  start_peer_process "$1" "$dir" "$port"
  wait_port 127.0.0.1 "$port" 100 || die "$1 is not listening on 127.0.0.1:$port (see $dir/out.log)"
}

stop_peer() {
  stop_tree "$peer_pid"
  peer_pid=""
}

# ------------------------------------------------------------------------------------------
# Measurements

# client_bytes PORT: "local-address bytes-received" for every wrk connection to the peer.
client_bytes() {
  ss -tinHO state established "( dport = :$1 )" 2>/dev/null | awk '{
    local_address = ""; received = 0
    for (i = 1; i <= NF; i++) {
      if (local_address == "" && $i ~ /^127\.0\.0\.1:[0-9]+$/) local_address = $i
      if ($i ~ /^bytes_received:/) { split($i, part, ":"); received = part[2] }
    }
    if (local_address != "") print local_address, received
  }'
}

# backend_connections: "open queued": connections to the backend port (server ends, accepted
# or not) and the backend's listen queue (Recv-Q of a LISTEN socket: not yet accepted).
backend_connections() {
  local open queued
  open=$(ss -tnH state established "( sport = :$php_port )" | wc -l)
  queued=$(ss -tlnH "( sport = :$php_port )" | awk '{n += $2} END {print n + 0}')
  echo "$open $queued"
}

# run_one BACKEND PEER: appends one row to $work/rows.tsv.
run_one() {
  local backend=$1 peer=$2 port=${peer_port[$2]} out="$work/wrk-$1-$2.txt" check syns_before
  local wrk_pid stall_start stall_end stalled backend_end
  local wrk=(timeout -k 5 $((DURATION + 30)) wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s"
    --timeout "${WRK_TIMEOUT}s" --latency "http://127.0.0.1:$port/hello.php")
  [ -z "$dry_run" ] || printf '\n== %s / %s\n' "$backend" "$peer"
  start_php_backend "$backend"
  syns_before=$(syns)
  start_gateway "$peer"
  if [ -n "$dry_run" ]; then
    show_load "${wrk[@]}"
    stop_peer
    stop_php_backend
    return
  fi
  check=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/hello.php" || true)
  log "$backend / $peer: check request answered ${check:-nothing}; wrk -c$CONNECTIONS -d${DURATION}s"

  "${wrk[@]}" >"$out" 2>&1 &
  wrk_pid=$!
  # Two snapshots WRK_TIMEOUT apart, ending just before wrk stops: a wrk connection that
  # received no byte between them waited longer than wrk's timeout and is still waiting.
  sleep "$(awk -v d="$DURATION" -v t="$WRK_TIMEOUT" 'BEGIN {print d - t - 0.5}')"
  stall_start=$(client_bytes "$port")
  sleep "$WRK_TIMEOUT"
  stall_end=$(client_bytes "$port")
  backend_end=$(backend_connections)
  wait "$wrk_pid" || log "warning: wrk exited with $? (see $out)"
  stalled=$(awk 'NR == FNR {if (NF == 2) before[$1] = $2; next}
                 NF == 2 && ($1 in before) && before[$1] == $2 {n++}
                 END {print n + 0}' <(echo "$stall_start") <(echo "$stall_end"))
  local opened=$(( $(syns) - syns_before ))

  stop_peer
  stop_php_backend

  local total non2xx errors timeouts rps p50 p99
  total=$(awk '/ requests in / {print $1}' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
  # "Socket errors: connect 0, read 0, write 0, timeout 3"
  errors=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8}' "$out")
  timeouts=$(awk '/Socket errors:/ {gsub(/,/, ""); print $10}' "$out")
  rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$out")
  p50=$(awk '$1 == "50%" {print $2}' "$out" | to_ms)
  p99=$(awk '$1 == "99%" {print $2}' "$out" | to_ms)
  total=${total:-0} non2xx=${non2xx:-0} errors=${errors:-0} timeouts=${timeouts:-0}
  # wrk leaves requests over --timeout out of its latencies: none left, no percentiles.
  if [ $((total - timeouts)) -le 0 ]; then p50=–; p99=–; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$peer" \
    "$((total - non2xx))" "$non2xx" "$timeouts" "$errors" "$stalled" "${p50:-–}" "${p99:-–}" \
    "$opened" "$backend_end" "${rps:-0}" "$check" >>"$work/rows.tsv"
  log "$backend / $peer: served $((total - non2xx)), non-2xx $non2xx, timeouts $timeouts," \
    "errors $errors, stalled $stalled, p50 ${p50}ms, p99 ${p99}ms, opened $opened, backend at end $backend_end"
  [ "$check" = 200 ] || echo "- $backend / $peer: the check request before the load got ${check:-no answer}." >>"$work/notes.md"
  [ "$peer" = fcgate ] && fcgate_log_summary "$backend" "$work/peers/fcgate/out.log" >>"$work/notes.md"
  mv "$work/peers/$peer" "$work/peers/$peer-$backend"
}

# fcgate_log_summary BACKEND LOG: what fcgate's pool logged about its cap, backlog waits and
# warnings, as one markdown list item.
fcgate_log_summary() {
  sed 's/\x1b\[[0-9;]*m//g' "$2" | awk -v backend="$1" '
    function message(line) {  # drop "TIMESTAMP  LEVEL target: " and the per-event ids
      sub(/^[^ ]+ +[A-Z]+ +[^ ]+: /, "", line)
      gsub(/ (request|connection|idle_closed)=[0-9]+| backend=[^ ]+/, "", line)
      return line
    }
    function seconds(text) {
      if (text ~ /ms$/) { sub(/ms$/, "", text); return text / 1000 }
      if (text ~ /µs$|us$/) { sub(/(µs|us)$/, "", text); return text / 1000000 }
      sub(/s$/, "", text); return text + 0
    }
    /connection cap [0-9]/ { source = source (source == "" ? "" : ", then ") "\"" message($0) "\"" }
    /got no answer while others were served/ { saturation++ }
    /lowering the connection cap from/ { lowered++; cap = $0; sub(/.* to /, "", cap); sub(/ .*/, "", cap); caps[++moves] = cap }
    /raising the connection cap/ { raised++; cap = $0; sub(/.*cap=/, "", cap); sub(/ .*/, "", cap); caps[++moves] = cap }
    /waited in the backend.s backlog got a worker after/ {
      waits++; w = $0; sub(/.* after /, "", w); sub(/ .*/, "", w); w = seconds(w); if (w > longest) longest = w
    }
    / WARN / { warnings++; kind = message($0); gsub(/[0-9]+/, "N", kind); kinds[kind]++ }
    END {
      printf "- fcgate / %s: cap %s; saturation events %d; cap lowered %d and raised %d times",
        backend, (source == "" ? "source never logged" : source), saturation, lowered, raised
      if (moves) {
        low = high = caps[1]
        for (i = 2; i <= moves; i++) { if (caps[i] + 0 < low + 0) low = caps[i]; if (caps[i] + 0 > high + 0) high = caps[i] }
        printf " (between %s and %s, last %s)", low, high, caps[moves]
      }
      printf "; %d connections waited in the backlog for a worker", waits
      if (waits) printf " (longest %.2f s)", longest
      printf "; %d warnings", warnings
      n = 0
      for (kind in kinds) printf "%s%dx \"%s\"", (n++ ? ", " : ": "), kinds[kind], kind
      print "."
    }'
}

table() {
  echo "| backend | peer | requests served (2xx) | requests/s | non-2xx | wrk timeouts | socket errors | clients stalled ≥${WRK_TIMEOUT} s at end | p50 ms | p99 ms | backend conns opened | backend conns at end (unaccepted) |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  awk -F '\t' '{split($11, end, " "); printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) |\n",
                $1, $2, $3, $12, $4, $5, $6, $7, $8, $9, $10, end[1], end[2]}' "$work/rows.tsv"
}

# ------------------------------------------------------------------------------------------
# The run

ensure_packages wrk nft ss curl php-cgi php-fpm nginx
find_fpm
bench_lock
for port in "$php_port" "${peer_port[@]}"; do port_free "$port" || die "port $port is in use (set PORT_BASE)"; done

make_work fcgate-seed000
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  stop_tree "$peer_pid"
  stop_tree "$backend_pid"
  remove_syn_counter
  kill_run "$work"
  if [ -n "${KEEP_WORK:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

prepare_fcgate "$build"
if [ -z "$dry_run" ]; then
  mkdir -p "$work/www"
  printf '%s\n' '<?php echo "Hello, world!\n";' >"$work/www/hello.php"
  : >"$work/rows.tsv"
  : >"$work/notes.md"
fi
count_syns_to "$php_port"
wait_quiet "$LOAD_MAX" "$LOAD_WAIT"

for backend in $BACKENDS; do
  for peer in $PEERS; do
    run_one "$backend" "$peer"
  done
done

[ -z "$dry_run" ] || { echo; publish_result seed-000.md "" </dev/null; exit 0; }
commit=$(commit_described)
# seed_headline: per backend and peer, requests served, wrk timeouts and clients stalled.
seed_headline() {
  awk -F '\t' '{printf "%s%s / %s: %s served, %s timeouts, %s stalled", (NR > 1 ? "; " : ""), $1, $2, $3, $5, $7}
                END {print ""}' "$work/rows.tsv"
}
{
  echo "# seed 000: keepalive to a 2-worker FastCGI backend, $(date '+%Y-%m-%d %H:%M %Z')"
  echo
  echo "fcgate commit $commit, $(nproc) cores, $(uname -sr), load average before: $load_before."
  echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --timeout ${WRK_TIMEOUT}s on hello.php; one run per row, the"
  echo "backend started fresh for each."
  echo
  table
  echo
  cat "$work/notes.md"
  echo
  echo "- php-fpm: pm = static, pm.max_children = 2, pm.max_requests = 0, listen.backlog = 511, run"
  echo "  with -n (no php.ini). php-cgi: PHP_FCGI_CHILDREN=2, -n, PHP_FCGI_MAX_REQUESTS at its"
  echo "  default of 500 (a child exits after 500 requests and is replaced, closing its connection)."
  echo "- nginx-keepalive: worker_processes $WORKERS, \`upstream { keepalive 16; }\`, fastcgi_keep_conn on,"
  echo "  other settings at their defaults (fastcgi_read_timeout 60 s)."
  echo "- fcgate: \`--root --upstream\` only; its cap comes from FCGI_GET_VALUES, the default, and"
  echo "  saturation detection (RUST_LOG=info; the summary above is from its log)."
  echo "- requests served: responses with status < 400 (wrk counts >= 400 as non-2xx)."
  echo "- wrk timeouts: responses that arrived later than ${WRK_TIMEOUT} s. wrk never counts a request"
  echo "  that is still unanswered when the run ends, so a hang shows in the next column instead."
  echo "- clients stalled: wrk connections that received no byte during the last ${WRK_TIMEOUT} s of the run."
  echo "- p50, p99: wrk's latencies of the requests answered within ${WRK_TIMEOUT} s."
  echo "- backend conns opened: SYNs to the backend port from the peer's start to the run's end"
  echo "  (the check request and any FCGI_GET_VALUES connection included; a SYN retransmitted"
  echo "  because the listen queue was full would count twice)."
  echo "- backend conns at end: connections to the backend port 0.5 s before wrk stopped;"
  echo "  in brackets, those not yet accepted by any worker (the listen socket's queue)."
  echo
  echo "- $(nginx -v 2>&1 | head -n1)"
  echo "- $("$fpm_bin" -v | head -n1)"
  echo "- $(php-cgi -n -v | head -n1)"
  echo "- $(wrk -v 2>&1 | head -n1)"
} | publish_result seed-000.md "$(seed_headline)"
