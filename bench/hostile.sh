#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/hostile.sh: the hardening issue's bench. Hostile clients against fcgate and nginx side
# by side: RSS, open descriptors, temp-file bytes, php-fpm's listen queue and the latency of a
# normal request during each attack.
#
# Attacks (bench/hostile.py, Python stdlib clients), each for DURATION (10 s):
#   idle-h2       1000 connections send the HTTP/2 preface + an empty SETTINGS, then stay idle.
#                 The peer runs under `ulimit -n 1024` for this one (fcgate derives its
#                 max_client_connections from that limit: 480).
#   body-stall    200 HTTP/1.1 `POST /hello.php`, Content-Length: 1000000, 4 bytes sent, stall.
#   no-read       3 clients GET a 50 MB response (big.php) and never read it.
#   h2-rst-flood  one HTTP/2 connection: HEADERS for /sleep.php?ms=200 and at once RST_STREAM
#                 (CANCEL), every 10 ms (a new connection if the server closes it).
#   h1-leave      100 HTTP/1.1 clients, one every 10 ms, GET /sleep.php?ms=200 and close after
#                 30 ms; then the rest of DURATION to let the consequences show.
#   h2-headers-stall  500 HTTP/2 connections send HEADERS for /hello.php without END_HEADERS
#                 (a header block never finished) and stay. Both peers get
#                 client_header_timeout 5s for this one, which bounds a header block in
#                 progress in each (fcgate: idle HTTP/2 connections; nginx 1.22: its h2 read).
#   h2-post-stall 10 HTTP/2 connections open 100 POST /hello.php streams each,
#                 content-length: 1000000, 4 bytes of DATA, then stall (client_body_timeout).
# Peers, one at a time, each in front of a php-fpm pool started fresh for every (attack, peer):
# pm = static, 4 children, unix socket.
#   fcgate  its defaults (cap from the pool's pm.max_children) except client_body_timeout and
#           send_timeout = 5s, so their effect shows within a 10 s attack
#   nginx   peers.sh's nginx-keepalive (2 workers, upstream keepalive 2 per worker,
#           fastcgi_keep_conn on) plus client_body_timeout 5s; send_timeout 5s. nginx 1.22 cannot
#           serve h2c and HTTP/1.1 on one port, so it gets a second `listen ... http2` port for
#           the HTTP/2 attacks.
# During each attack, once a second: the peer's VmRSS and open descriptors (nginx: master and
# workers summed), the bytes of regular files it holds open that are deleted or in its temp
# directories (spooled bodies), and php-fpm's listen queue (ss Recv-Q of its socket); the
# maximum of each is reported. A probe requests /hello.php with curl (--max-time 5) every
# 200 ms, over HTTP/2 prior knowledge on the attacked port for the h2 attacks, else HTTP/1.1:
# median and max time_total (a failed probe counts with its time: a timeout at ~5000 ms), and
# failures. Then, 1 s after the attack ended, one more probe (recovery), and for h1-leave and
# h2-rst-flood the sleep.php scripts php-fpm started by then (each logs a line to
# env[EXECUTION_LOG] as it starts).
#
# Prints a markdown table and writes it to RESULTS_DIR (bench/results)/hostile.md (replacing
# the previous run's) and a row to HISTORY.md there. Needs root to install missing Debian
# packages (nginx-light, php-fpm, curl, iproute2, python3). Cleans up everything it started on
# exit. --dry-run prints what would be installed, written, started and run, and does none of it.
#
#   bench/hostile.sh [--duration 10]
#                    [--attacks idle-h2,body-stall,no-read,h2-rst-flood,h1-leave,h2-headers-stall,h2-post-stall]
#                    [--peers fcgate,nginx] [--no-build] [--dry-run]
#
# Environment: PORT_BASE (19000: fcgate +2, nginx +1, nginx h2 +3), KEEP_WORK=1 keeps configs
# and logs, RESULTS_DIR, LOAD_MAX (1.5) and LOAD_WAIT (300 s; 0 skips): wait, bounded, for a
# quiet machine first. Each row takes DURATION + 3 to 5 s (php-fpm and peer start and stop,
# recovery, the last probes): a full default run about 3.5 min, after the build and the wait.
set -euo pipefail
export LC_ALL=C

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
all_attacks="idle-h2 body-stall no-read h2-rst-flood h1-leave h2-headers-stall h2-post-stall"
ATTACKS=$all_attacks
PEERS="fcgate nginx"
DURATION=10
build=1
PORT_BASE=${PORT_BASE:-19000}
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-300}
PHP_CHILDREN=4       # php-fpm pm.max_children (backends.sh)
WORKERS=2            # nginx worker_processes (peers.sh)
CLIENT_TIMEOUT=5     # client_body_timeout and send_timeout, seconds, both peers
PROBE_TIMEOUT=5      # curl --max-time of every probe
PROBE_INTERVAL=0.2
IDLE_H2_NOFILE=1024  # the peer's `ulimit -n` during idle-h2
STREAMS_PER_CONNECTION=100  # h2-post-stall (bench/hostile.py's STREAMS)

source "$bench_dir/lib/harness.sh"   # set_args, dry run, lock, wait_quiet, publish_result
source "$bench_dir/lib/process.sh"   # log, die, wait_port, wait_socket, port_free, descendants, stop_tree, kill_run
source "$bench_dir/lib/backends.sh"  # start_backend php-unix, write_fpm_conf
source "$bench_dir/lib/peers.sh"     # start_peer, write_nginx_conf, write_fcgate_toml
source "$bench_dir/lib/install.sh"   # ensure_packages

while [ $# -gt 0 ]; do
  arg=$1 value=""
  case $arg in
    --*=*) value=${arg#*=}; arg=${arg%%=*} ;;
    --duration | --attacks | --peers)
      [ $# -ge 2 ] || die "$arg needs a value"; value=$2; shift ;;
  esac
  case $arg in
    --duration) DURATION=${value%s} ;;
    --attacks) ATTACKS=${value//,/ } ;;
    --peers) PEERS=${value//,/ } ;;
    *) common_arg "$1" ;;
  esac
  shift
done
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration must be whole seconds, at least 1"
for a in $ATTACKS; do [[ " $all_attacks " == *" $a "* ]] || die "unknown attack $a"; done
for p in $PEERS; do [[ $p == fcgate || $p == nginx ]] || die "unknown peer $p"; done

fpm_port=$PORT_BASE  # backends.sh wants it; php-fpm listens on a unix socket here
nginx_port=$((PORT_BASE + 1))
fcgate_port=$((PORT_BASE + 2))
nginx_h2_port=$((PORT_BASE + 3))

# ------------------------------------------------------------------------------------------
# The backend and the peers: bench/lib's, with what this bench adds.

# php-fpm: backends.sh's pool, plus the log every sleep.php appends to as it starts.
# nginx: peers.sh's nginx-keepalive, plus the 5 s client timeouts and an h2c port.
# fcgate: peers.sh's config (cap from the pool's pm.max_children), plus the 5 s client timeouts.
# h2-headers-stall: both also get client_header_timeout 5s, so that the effect shows within a
# 10 s attack (defaults: fcgate 30 s, nginx 60 s).
peer_args() {  # PEER ATTACK: the writer arguments this bench lays over peers.sh's config, NUL-ended
  local fcgate_header="" nginx_header=""
  if [ "$2" = h2-headers-stall ]; then
    fcgate_header=$'\n'"client_header_timeout = \"${CLIENT_TIMEOUT}s\""
    nginx_header=" client_header_timeout ${CLIENT_TIMEOUT}s;"
  fi
  case $1 in
    nginx) printf '%s\0' "h2_port=$nginx_h2_port" \
      "extra_http=client_body_timeout ${CLIENT_TIMEOUT}s; send_timeout ${CLIENT_TIMEOUT}s;$nginx_header" ;;
    fcgate) printf '%s\0' "extra=client_body_timeout = \"${CLIENT_TIMEOUT}s\"
send_timeout = \"${CLIENT_TIMEOUT}s\"$fcgate_header" ;;
  esac
}

peer_program() { [ "$1" = nginx ] && echo nginx-keepalive || echo "$1"; }

peer_pid=""
stop_peer() { stop_tree "$peer_pid"; peer_pid=""; }
# Not backends.sh's stop_backend: that also deletes bench/run's network namespace.
stop_fpm() { stop_tree "${backend_pid:-}"; backend_pid=""; }

write_docroot() {
  [ -z "$dry_run" ] || return 0
  mkdir -p "$www"
  cp "$bench_dir/www/hello.php" "$www/hello.php"
  cat >"$www/sleep.php" <<'EOF'
<?php
// ms=N: log one line to env[EXECUTION_LOG] as soon as the script starts (so abandoned scripts
// are counted too), then hold the worker for N milliseconds.
file_put_contents(getenv('EXECUTION_LOG'), getmypid() . "\n", FILE_APPEND | LOCK_EX);
$ms = max(0, (int)($_GET['ms'] ?? 0));
usleep($ms * 1000);
header('Content-Type: text/plain');
echo "slept ", $ms, " ms\n";
EOF
  cat >"$www/big.php" <<'EOF'
<?php
// 50 MB (50 * 2^20 bytes) written in 64 KiB chunks, no Content-Length from the script.
header('Content-Type: application/octet-stream');
$chunk = str_repeat('0123456789abcdef', 4096);
for ($i = 0; $i < 800; $i++) {
    echo $chunk;
}
EOF
}

# ------------------------------------------------------------------------------------------
# Measurements

# peer_sample PID: "rss_kib fds temp_bytes" summed over PID and its descendants. Temp bytes:
# regular files held open that are deleted (fcgate's spools, nginx's temp files once unlinked)
# or in nginx's client_body_temp_path or fastcgi_temp_path (not the peers' logs next to them).
peer_sample() {
  local rss=0 fds=0 temp=0 pid value
  for pid in $(descendants "$1"); do
    value=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    rss=$((rss + ${value:-0}))
    value=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    fds=$((fds + value))
    value=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 \( -lname '*(deleted)' -o -lname "$work/peers/*/client_body/*" \
      -o -lname "$work/peers/*/fastcgi/*" \) \
      -print0 2>/dev/null | xargs -0 -r stat -L -c '%F %s' 2>/dev/null |
      awk '/^regular/ {n += $NF} END {print n + 0}')
    temp=$((temp + value))
  done
  echo "$rss $fds $temp"
}

# listen_queue: connections waiting in php-fpm's listen queue (Recv-Q of its listening socket).
listen_queue() {
  ss -xlnH 2>/dev/null | awk -v path="$backend_socket" '$5 == path {n += $3} END {print n + 0}'
}

# sampler DIR: one line "rss_kib fds temp_bytes queue" a second while DIR/running exists.
sampler() {
  local dir=$1
  while [ -e "$dir/running" ]; do
    echo "$(peer_sample "$peer_pid") $(listen_queue)" >>"$dir/samples.txt"
    sleep 1
  done
}

# probe CURL_ARGS... URL: "http_code time_total exitcode"; never fails.
probe() {
  curl -s -o /dev/null --max-time "$PROBE_TIMEOUT" -w '%{http_code} %{time_total} %{exitcode}\n' "$@" ||
    true
}

# probe_loop DIR CURL_ARGS... URL: a probe every PROBE_INTERVAL while DIR/running exists, each
# in the background so that a slow answer does not thin out the probing; waits for the last.
probe_loop() {
  local dir=$1
  shift
  while [ -e "$dir/running" ]; do
    probe "$@" >>"$dir/probes.txt" &
    sleep "$PROBE_INTERVAL"
  done
  wait
}

# run_one ATTACK PEER: appends one row to $work/rows.tsv and notes to $work/notes.md.
run_one() {
  local attack=$1 peer=$2 dir="$work/runs/$1-$2" port attack_port url check nofile
  local curl_args=() attack_status=0
  if [ -n "$dry_run" ]; then
    printf '\n== %s / %s\n' "$attack" "$peer"
  else
    mkdir -p "$dir"
    : >"$work/executions.log"
    rm -f "$work/php-fpm.sock"  # a stale one would pass for the new php-fpm's
  fi
  start_backend php-unix
  port=$fcgate_port
  [ "$peer" = nginx ] && port=$nginx_port
  attack_port=$port
  if [[ $attack == *h2* ]]; then
    curl_args=(--http2-prior-knowledge)
    [ "$peer" = nginx ] && attack_port=$nginx_h2_port
  fi
  url="http://127.0.0.1:$attack_port/hello.php"

  nofile=$(ulimit -Sn)
  [ "$attack" = idle-h2 ] && ulimit -Sn "$IDLE_H2_NOFILE"
  [ "$attack" != idle-h2 ] || [ -z "$dry_run" ] || dry_say "(the peer under ulimit -n $IDLE_H2_NOFILE)"
  local extra
  mapfile -t -d '' extra < <(peer_args "$peer" "$attack")
  start_peer "$(peer_program "$peer")" php "$port" "${extra[@]}"
  ulimit -Sn "$nofile"
  local peer_dir
  peer_dir="$work/peers/$(peer_program "$peer")"
  wait_port 127.0.0.1 "$port" 100 || die "$peer is not listening on 127.0.0.1:$port (see $peer_dir/out.log)"
  [ "$attack_port" = "$port" ] || wait_port 127.0.0.1 "$attack_port" 100 ||
    die "$peer is not listening on 127.0.0.1:$attack_port"
  if [ -n "$dry_run" ]; then
    show_load timeout -k 2 $((DURATION + 20)) python3 "$bench_dir/hostile.py" "$attack" --host 127.0.0.1 \
      --port "$attack_port" --duration "$DURATION"
    dry_say "probe: every ${PROBE_INTERVAL} s during the attack and once 1 s after it:" \
      "$(shown curl -s -o /dev/null --max-time "$PROBE_TIMEOUT" "${curl_args[@]}" "$url")"
    stop_peer
    stop_fpm
    return
  fi
  check=$(probe "${curl_args[@]}" "$url")
  log "$attack / $peer: check request: ${check%% *}; attacking 127.0.0.1:$attack_port for ${DURATION} s"
  [ "${check%% *}" = 200 ] || echo "- $attack / $peer: the check request before the attack got \`$check\`." >>"$work/notes.md"

  : >"$dir/samples.txt"
  : >"$dir/probes.txt"
  touch "$dir/running"
  sampler "$dir" &
  sampler_pid=$!
  probe_loop "$dir" "${curl_args[@]}" "$url" &
  probe_pid=$!
  timeout -k 2 $((DURATION + 20)) python3 "$bench_dir/hostile.py" "$attack" --host 127.0.0.1 \
    --port "$attack_port" --duration "$DURATION" >"$dir/attack.out" 2>"$dir/attack.err" || attack_status=$?
  rm -f "$dir/running"
  sleep 1
  local recovery
  recovery=$(probe "${curl_args[@]}" "$url")
  local scripts="–"
  [[ $attack == h1-leave || $attack == h2-rst-flood ]] && scripts=$(wc -l <"$work/executions.log")
  wait "$probe_pid" "$sampler_pid" 2>/dev/null || true
  probe_pid="" sampler_pid=""

  local summary
  summary=$(tail -n1 "$dir/attack.out")
  [ "$attack_status" = 0 ] || summary="exited with $attack_status: $(tail -n1 "$dir/attack.err") $summary"
  local log_file="$peer_dir/out.log"
  [ "$peer" = nginx ] && log_file="$peer_dir/error.log"
  echo "- $attack / $peer: attack client: \`${summary:-no output}\`; $(log_digest "$peer" "$log_file")" >>"$work/notes.md"

  stop_peer
  stop_fpm
  mv "$peer_dir" "$dir/peer"

  # Row: attack peer probe_median probe_max failures probes timeouts recovery_ms recovery_ok
  #      rss_mb fds temp_mb queue scripts
  local probes rest
  probes=$(awk '{ms = $2 * 1000; n++; t[n] = ms; if (ms > max) max = ms
                 if ($1 != 200 || $3 != 0) fail++; if ($3 == 28) timeouts++}
                END {
                  if (n == 0) { print "– – 0 0 0"; exit }
                  for (i = 2; i <= n; i++) for (j = i; j > 1 && t[j - 1] > t[j]; j--) { x = t[j]; t[j] = t[j - 1]; t[j - 1] = x }
                  m = (n % 2) ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
                  printf "%.1f %.1f %d %d %d\n", m, max, fail, n, timeouts
                }' "$dir/probes.txt")
  rest=$(awk -v r="$recovery" 'BEGIN {split(r, p, " "); printf "%.1f %s", p[2] * 1000, (p[1] == 200 && p[3] == 0) ? "ok" : "fail:" p[1] "/" p[3]}')
  rest="$rest $(awk '{if ($1 > r) r = $1; if ($2 > f) f = $2; if ($3 > t) t = $3; if ($4 > q) q = $4}
                     END {printf "%.1f %d %.1f %d", r / 1024, f, t / 1048576, q}' "$dir/samples.txt")"
  printf '%s\t%s\t%s\t%s\t%s\n' "$attack" "$peer" "$probes" "$rest" "$scripts" | tr ' ' '\t' >>"$work/rows.tsv"
  log "$attack / $peer: probes (median max failures of total, timeouts) $probes; recovery, RSS MB," \
    "fds, temp MB, queue: $rest; scripts $scripts"
}

# log_digest PEER LOG: how many lines the peer logged during the run, and its commonest ones.
log_digest() {
  local lines
  lines=$(grep -cv 'fcgate listening on' "$2" 2>/dev/null || true)
  [ "${lines:-0}" -gt 0 ] || { echo "$1 logged nothing (besides its start)."; return; }
  printf '%s logged %s lines' "$1" "$lines"
  sed 's/\x1b\[[0-9;]*m//g' "$2" | grep -v 'fcgate listening on' |
    sed -E 's/^[0-9/]+ [0-9:]+ \[([a-z]+)\] [0-9#]+: \*?[0-9]* ?/[\1] /; s/^[^ ]+ +([A-Z]+) +[^ ]+: /[\1] /' |
    sed -E 's/, client: .*//; s/[0-9]+/N/g' | cut -c1-110 | sort | uniq -c | sort -rn | head -n3 |
    awk '{n = $1; $1 = ""; sub(/^ /, ""); gsub(/`/, "'\''"); printf "%s %dx `%s`", (NR == 1 ? ", commonest:" : ";"), n, $0} END {print "."}'
}

table() {
  echo "| attack | peer | probe median ms | probe max ms | probe failures | recovery ms | max RSS MB | max fds | max temp-file MB | max listen queue | scripts run |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  awk -F '\t' '{
    failures = $5 "/" $6 ($7 > 0 ? " (" $7 " timeouts)" : "")
    recovery = ($9 == "ok") ? $8 : $8 " (" $9 ")"
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
      $1, $2, $3, $4, failures, recovery, $10, $11, $12, $13, $14
  }' "$work/rows.tsv"
}

# ------------------------------------------------------------------------------------------
# The run

ensure_packages nginx curl ss python3 php-fpm
find_fpm
bench_lock
for port in "$nginx_port" "$fcgate_port" "$nginx_h2_port"; do
  port_free "$port" || die "port $port is in use (set PORT_BASE)"
done

make_work fcgate-hostile
www=$work/www
fpm_args=(extra="env[EXECUTION_LOG] = $work/executions.log")
peer_pid="" backend_pid="" probe_pid="" sampler_pid=""
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  find "$work/runs" -name running -delete 2>/dev/null
  stop_tree "$probe_pid"
  stop_tree "$sampler_pid"
  stop_peer
  stop_fpm
  kill_run "$work"  # anything left that names the work directory (php-fpm workers: the pool)
  if [ -n "${KEEP_WORK:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

prepare_fcgate "$build"
[ -n "$dry_run" ] || mkdir -p "$work/runs"
write_docroot
if [ -z "$dry_run" ]; then
  : >"$work/rows.tsv"
  : >"$work/notes.md"
fi
wait_quiet "$LOAD_MAX" "$LOAD_WAIT"
started_at=$SECONDS

for attack in $ATTACKS; do
  for peer in $PEERS; do
    run_one "$attack" "$peer"
  done
done
elapsed=$((SECONDS - started_at))
[ -z "$dry_run" ] || { echo; publish_result hostile.md "" </dev/null; exit 0; }
commit=$(commit_described)
# hostile_headline: per attack, each peer's probe failures of all probes.
hostile_headline() {
  awk -F '\t' '{cell = sprintf("%s %s/%s", $2, $5, $6)
                 if ($1 != last) { printf "%s%s: %s", (NR > 1 ? "; " : ""), $1, cell; last = $1 }
                 else printf ", %s", cell}
                END {print " probes failed"}' "$work/rows.tsv"
}
{
  echo "# Hostile clients: fcgate and nginx side by side, $(date '+%Y-%m-%d %H:%M %Z')"
  echo
  echo "$(nproc) cores ($(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM,"
  echo "$(uname -sr); load average before: $load_before; the run took ${elapsed} s."
  echo "fcgate commit $commit; $(nginx -v 2>&1 | head -n1); $("$fpm_bin" -v | head -n1 | sed 's/ (.*//');"
  echo "$(curl --version | head -n1 | cut -d' ' -f1-2); $(python3 --version)."
  echo
  table
  echo
  echo "Settings:"
  echo
  echo "- Each attack runs ${DURATION} s (bench/hostile.py; the counts are in bench/hostile.sh's"
  echo "  header), against one peer at a time; php-fpm (pm = static, pm.max_children = $PHP_CHILDREN,"
  echo "  listen.backlog = 4096, unix socket) is started fresh for every row."
  echo "- fcgate: defaults, cap from the pool's pm.max_children (php_fpm_config), plus"
  echo "  \`client_body_timeout = \"${CLIENT_TIMEOUT}s\"\` and \`send_timeout = \"${CLIENT_TIMEOUT}s\"\` (defaults 60 s)."
  echo "- nginx: worker_processes $WORKERS, worker_connections 8192, upstream keepalive $((PHP_CHILDREN / WORKERS)) per worker +"
  echo "  fastcgi_keep_conn on, client_body_buffer_size 128k, fastcgi_buffers 32 8k, plus"
  echo "  \`client_body_timeout ${CLIENT_TIMEOUT}s; send_timeout ${CLIENT_TIMEOUT}s;\` (defaults 60 s): the same client"
  echo "  timeouts as fcgate, so the comparison is fair. nginx 1.22 serves h2c only on a"
  echo "  \`listen ... http2\` port of its own (no HTTP/1.1 there), so the h2 attacks and their"
  echo "  probes go to that port; fcgate serves both on one port."
  echo "- idle-h2: both peers started under \`ulimit -n $IDLE_H2_NOFILE\` (fcgate's max_client_connections"
  echo "  default is derived from it); the other attacks run under this shell's limit ($(ulimit -Sn))."
  echo "- h2-headers-stall: both peers also with \`client_header_timeout ${CLIENT_TIMEOUT}s\` (defaults: fcgate"
  echo "  30 s, nginx 60 s), which bounds an HTTP/2 header block never finished in each."
  echo "- h2-post-stall: ${STREAMS_PER_CONNECTION} streams per connection, below both peers' 128 concurrent streams;"
  echo "  response heads: the 408s (or other answers) the attack client saw, of all its streams."
  echo "- Probe: curl GET /hello.php every ${PROBE_INTERVAL} s during the attack, --max-time ${PROBE_TIMEOUT}; over"
  echo "  HTTP/2 prior knowledge on the attacked port for the h2 attacks. Median and max over all"
  echo "  probes, a failed one counted at its time_total (a timeout at ~${PROBE_TIMEOUT}000 ms); failures:"
  echo "  not a 200 or a curl error, of all probes. Recovery: one probe 1 s after the attack client"
  echo "  exited."
  echo "- Once a second during the attack, maxima of: VmRSS and open descriptors of the peer's"
  echo "  processes (nginx master + workers summed); temp-file MB: regular files those processes"
  echo "  hold open that are deleted or under nginx's temp paths (spooled bodies); the listen"
  echo "  queue: Recv-Q of php-fpm's listening socket (connections not yet accepted by a worker)."
  echo "- Scripts run (h1-leave, h2-rst-flood): sleep.php executions php-fpm had started by the"
  echo "  time the recovery probe ended (each logs a line as it starts; queued ones still"
  echo "  waiting are not counted)."
  echo
  echo "Per run:"
  echo
  cat "$work/notes.md"
} | publish_result hostile.md "$(hostile_headline)"
