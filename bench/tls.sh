#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/tls.sh: fcgate's TLS (rustls, aws-lc-rs) against nginx's and h2o's (OpenSSL), each in front
# of one php-fpm pool serving hello.php, with the same certificate and key, on this machine, in one
# run.
#
# Peers (PEERS, the ones fcgate is compared with; fcgate always runs), one at a time on their own
# loopback port (fcgate PORT_BASE+1, nginx PORT_BASE+2, nginx-keepalive PORT_BASE+3, h2o
# PORT_BASE+4, php-fpm PORT_BASE+90), each set up as in bench/run (peers.sh: WORKERS workers or
# threads, access log off) plus a TLS listener with the certificate:
#   fcgate           `listen = "127.0.0.1:PORT tls"` and [tls] the certificate; its cap from the
#                    pool's pm.max_children; tickets and a session cache are its defaults.
#   nginx            `listen PORT ssl http2`, the certificate, `ssl_protocols TLSv1.2 TLSv1.3`
#                    (nginx 1.22's default has no TLS 1.3; fcgate's is 1.2 and 1.3),
#                    `ssl_session_cache shared:SSL:10m` and `ssl_session_tickets on`. No upstream
#                    keepalive (nginx's default): a FastCGI connection per request.
#   nginx-keepalive  the same with upstream keepalive + fastcgi_keep_conn. It can pin every php-fpm
#                    worker with idle cached connections while a new one waits in php-fpm's listen
#                    queue until fastcgi_read_timeout (60 s, then a 504): bench/run's "answered"
#                    column shows it; here it shows as stalled clients (s_time) or in-flight
#                    requests left unanswered (h2load).
#   h2o              `listen: {ssl: {certificate-file, key-file, minimum-version: TLSv1.2}}`, its
#                    session resumption defaults (cache and tickets); persistent FastCGI
#                    connections (fastcgi.timeout.keepalive), one per request in flight, no cap.
# The certificates are made for each run: a CA and a leaf for bench.test, localhost and 127.0.0.1
# signed by it, of each kind in CERTS (ecdsa: P-256; rsa: 2048 bits); every peer sends leaf + CA
# as its chain.
#
# Loads (LOADS), each run ROUNDS times with the peers interleaved (nginx h2o fcgate nginx …),
# on a freshly started peer, after a warm-up of WARMUP requests, for DURATION:
#   full     full TLS handshakes/s: a new connection per request. HANDSHAKE_CLIENTS parallel
#            `openssl s_time -new` processes, each one connection at a time: TCP connect, full
#            TLS 1.3 handshake (X25519 + the certificate's signature), one GET /hello.php
#            (HTTP/1.1, Connection: close), read to the close. No resumption: -new gives every
#            connection a fresh session (wrk and h2load would resume: they keep the session
#            across reconnects, seen in nginx's $ssl_session_reused). Once per certificate in
#            CERTS. A client whose answer does not come stalls (its connection is counted when
#            it ends, and it is an error).
#   resumed  the same with `s_time -reuse`: each process resumes one session over and over
#            (TLS 1.3 PSK with X25519: no certificate, no signature). First certificate only.
#   h1       keep-alive HTTP/1.1 over TLS (ALPN http/1.1): h2load --h1 with CONNECTIONS
#            connections; one full handshake per connection at the start, then requests only.
#   h2       HTTP/2 over TLS (ALPN h2): h2load with H2_CONNECTIONS connections x H2_STREAMS
#            concurrent streams. First certificate only.
# s_time sends no SNI, and the h2load loads connect to 127.0.0.1 the same way: both servers
# present their only certificate. Every start is checked first: curl (verifying the chain and the
# name bench.test) over HTTP/1.1 and HTTP/2, and the s_time request sent by `openssl s_client`
# (200, "Hello, world!", and its size: the s_time loads' bytes read must be a whole multiple).
# Per run: requests/s (= handshakes/s for full and resumed), p50 and p99 (h2load only: s_time
# reports none), errors, connections that resumed (s_time marks each one), the gateway's CPU
# per request (utime + stime from /proc/PID/stat of all its processes: fcgate's one, nginx's
# master and workers, over the measured load) and its peak RSS. The load generators share the
# machine's cores with the gateway and php-fpm: CPU per request is the cleaner comparison.
#
# Prints a markdown table per load (medians over the rounds, spreads, ratio fcgate / each peer),
# writes it to bench/results/NAME.md and the rounds to NAME.tsv (NAME: tls, tls-quick with
# --quick, or --name), replacing the previous run's, and adds a row to bench/results/HISTORY.md.
#
#   bench/tls.sh [--quick] [--rounds N] [--duration 10s] [--loads full,resumed,h1,h2]
#                [--certs ecdsa,rsa] [--peers nginx,nginx-keepalive,h2o] [--no-build | --pgo]
#                [--name NAME] [--dry-run]
#
# --dry-run prints what the run would install, the configs it would write, the processes it
# would start and the loads it would run (one round), and does none of it; no root needed.
# --quick is one round of 3 s, without waiting for a quiet machine. --pgo measures the shipped
# (PGO) build, made first by bench/pgo.sh; --pgo --no-build the one made before.
# Environment: ROUNDS (3), DURATION (10s), LOADS, CERTS, CONNECTIONS (64), H2_CONNECTIONS (32),
# H2_STREAMS (10), HANDSHAKE_CLIENTS (16), WARMUP (1000), PEERS (nginx nginx-keepalive h2o),
# PHP_CHILDREN (8), WORKERS (nproc), LOAD_THREADS (2), PORT_BASE (19500), RESULTS_DIR
# (bench/results; a scratch directory keeps a trial run out of the results and HISTORY.md) and
# KEEP_WORK=1 (keep the work directory: configs, logs, load output). Before measuring it waits
# (at most LOAD_WAIT, 300 s) for the 1-minute load average to drop below LOAD_MAX (1).
# tls.tsv columns: test (LOAD-CERT) peer round requests/s p50_ms p99_ms errors cpu_us_per_request
# requests resumed rss_kib note ("-" where the tool gives no figure; empty requests/s: not run).
# Needs root (but for --dry-run): apt-get for nginx, h2o, php-fpm, h2load (nghttp2-client), curl.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/backends.sh"
source "$bench_dir/lib/peers.sh"
source "$bench_dir/lib/measure.sh"  # run_load, parse_h2load, rss_kib
source "$bench_dir/lib/install.sh"

all_loads="full resumed h1 h2"
all_certs="ecdsa rsa"
all_others="nginx nginx-keepalive h2o"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
LOADS=${LOADS:-$all_loads}
CERTS=${CERTS:-$all_certs}
CONNECTIONS=${CONNECTIONS:-64}
H2_CONNECTIONS=${H2_CONNECTIONS:-32}
H2_STREAMS=${H2_STREAMS:-10}
HANDSHAKE_CLIENTS=${HANDSHAKE_CLIENTS:-16}
WARMUP=${WARMUP:-1000}
PHP_CHILDREN=${PHP_CHILDREN:-8}
WORKERS=${WORKERS:-$(nproc)}
LOAD_THREADS=${LOAD_THREADS:-2}
LOADGEN=h2load  # measure.sh's run_load: h2load's per-request percentiles
PORT_BASE=${PORT_BASE:-19500}
LOAD_MAX=${LOAD_MAX:-1}
LOAD_WAIT=${LOAD_WAIT:-300}
PEERS=${PEERS:-$all_others}
build=1
name=""
quick=""

while [ $# -gt 0 ]; do
  arg=$1 value=""
  case $arg in
    --*=*) value=${arg#*=}; arg=${arg%%=*} ;;
    --rounds | --duration | --loads | --certs | --peers | --name)
      [ $# -ge 2 ] || die "$arg needs a value"; value=$2; shift ;;
  esac
  case $arg in
    --quick) ROUNDS=1 DURATION=3s LOAD_WAIT=0 quick=1 ;;
    --rounds) ROUNDS=$value ;;
    --duration) DURATION=$value ;;
    --loads) LOADS=${value//,/ } ;;
    --certs) CERTS=${value//,/ } ;;
    --peers) PEERS=${value//,/ } ;;
    --name) name=$value ;;
    *) common_arg "$arg" ;;
  esac
  shift
done
LOADS=$(tr ', ' '\n' <<<"$LOADS" | awk 'NF && !seen[$0]++' | tr '\n' ' ')
CERTS=$(tr ', ' '\n' <<<"$CERTS" | awk 'NF && !seen[$0]++' | tr '\n' ' ')
OTHERS=$(tr ', ' '\n' <<<"$PEERS" | awk 'NF && $0 != "fcgate" && !seen[$0]++' | tr '\n' ' ')
for p in $OTHERS; do [[ " $all_others " == *" $p "* ]] || die "unknown peer $p (peers: $all_others)"; done
[ -n "${OTHERS// /}" ] || die "no peers to compare fcgate with"
# The order of a round: the others, then fcgate.
PEERS="$OTHERS fcgate"
for l in $LOADS; do [[ " $all_loads " == *" $l "* ]] || die "unknown load $l (loads: $all_loads)"; done
for c in $CERTS; do [[ " $all_certs " == *" $c "* ]] || die "unknown certificate $c (certs: $all_certs)"; done
[ -n "${LOADS// /}" ] || die "no loads"
[ -n "${CERTS// /}" ] || die "no certificates"
for v in ROUNDS CONNECTIONS H2_CONNECTIONS H2_STREAMS HANDSHAKE_CLIENTS WARMUP; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive number"
done
case $DURATION in
  *s) duration_seconds=${DURATION%s} ;;
  *m) duration_seconds=$((${DURATION%m} * 60)) ;;
  *) duration_seconds=$DURATION; DURATION=${DURATION}s ;;
esac
[[ $duration_seconds =~ ^[1-9][0-9]*$ ]] || die "DURATION must be whole seconds or minutes (10s, 1m)"
(( PHP_CHILDREN % WORKERS == 0 )) || die "PHP_CHILDREN must be a multiple of WORKERS (nginx's keepalive per worker)"
[[ -z $name || $name =~ ^[A-Za-z0-9_-]+$ ]] || die "--name takes letters, digits, - and _"
[ -n "$name" ] || name=tls${quick:+-quick}
[ -n "$dry_run" ] || [ "$(id -u)" = 0 ] || die "bench/tls.sh needs root (apt-get; nginx and php-fpm as root)"

first_cert=${CERTS%% *}
# The runs: LOAD-CERT, full once per certificate, the others on the first one.
TESTS=""
for l in $LOADS; do
  if [ "$l" = full ]; then for c in $CERTS; do TESTS+="full-$c "; done
  else TESTS+="$l-$first_cert "; fi
done

fpm_port=$((PORT_BASE + 90))
declare -A peer_port=([fcgate]=$((PORT_BASE + 1)) [nginx]=$((PORT_BASE + 2))
  [nginx-keepalive]=$((PORT_BASE + 3)) [h2o]=$((PORT_BASE + 4)))

# What each s_time connection sends. s_time writes "GET <page> HTTP/1.0\r\n\r\n": this page ends
# the request line itself and adds headers, so that the request is a browser's HTTP/1.1 one
# (with Host, and Connection: close, the server closing when it has answered).
s_time_page=$'/hello.php HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\nX-Bench:'
s_time_request=$'GET /hello.php HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\nX-Bench: HTTP/1.0\r\n\r\n'
expect="Hello, world!"

# One benchmark at a time on this machine (bench/run's lock and state file: a run killed before
# its trap fired leaves its work directory named there, and everything it started is ended here).
bench_lock
state_file=/run/lock/fcgate-bench.workdir
if [ -z "$dry_run" ] && [ -s "$state_file" ]; then
  stale=$(cat "$state_file")
  log "cleaning up after an interrupted run ($stale)"
  kill_run "$stale"
  rm -rf "$stale"
fi

work=""
peer_pid=""
s_time_pids=()
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  local pid
  for pid in "${s_time_pids[@]}"; do kill "$pid" 2>/dev/null; done
  stop_tree "$peer_pid"
  stop_tree "${backend_pid:-}"
  if [ -n "$work" ]; then
    kill_run "$work"
    if [ -n "${KEEP_WORK:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
  fi
  rm -f "$state_file"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mapfile -t peer_programs < <(for p in $OTHERS; do peer_program "$p"; done)
ensure_packages h2load curl openssl "${peer_programs[@]}" php-fpm ss ps
find_fpm
make_work fcgate-bench-tls
www="$work/www"
if [ -z "$dry_run" ]; then
  echo "$work" >"$state_file"
  cp -r "$bench_dir/www" "$www"
  chmod -R a+rX "$www"
  mkdir -p "$work/certs"
fi
prepare_fcgate "$build"
measured_commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
measured_commit+=$(binary_described "$build")
for p in $PEERS; do
  port_free "${peer_port[$p]}" || die "port ${peer_port[$p]} ($p) is taken; set PORT_BASE"
done
port_free "$fpm_port" || die "port $fpm_port (php-fpm) is taken; set PORT_BASE"

# make_certificate KIND: $work/certs/KIND-{ca.pem,key.pem,chain.pem}: a CA and a leaf of KIND
# (ecdsa: P-256, rsa: 2048 bits) for bench.test, localhost and 127.0.0.1; the chain is leaf + CA,
# the two certificates a site sends (its own and the intermediate's).
make_certificate() {
  local kind=$1 dir="$work/certs" key_args
  case $kind in
    ecdsa) key_args=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) key_args=(-algorithm RSA -pkeyopt rsa_keygen_bits:2048) ;;
  esac
  write_config "$dir/$kind-leaf.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:bench.test, DNS:localhost, IP:127.0.0.1
EOF
  act openssl genpkey "${key_args[@]}" -out "$dir/$kind-ca.key"
  act openssl req -x509 -new -key "$dir/$kind-ca.key" -subj "/CN=fcgate bench $kind CA" -days 30 \
    -addext "basicConstraints = critical, CA:TRUE" -addext "keyUsage = critical, keyCertSign, cRLSign" \
    -out "$dir/$kind-ca.pem"
  act openssl genpkey "${key_args[@]}" -out "$dir/$kind-key.pem"
  act openssl req -new -key "$dir/$kind-key.pem" -subj /CN=bench.test -out "$dir/$kind-leaf.csr"
  act openssl x509 -req -in "$dir/$kind-leaf.csr" -CA "$dir/$kind-ca.pem" -CAkey "$dir/$kind-ca.key" \
    -CAcreateserial -days 30 -extfile "$dir/$kind-leaf.ext" -out "$dir/$kind-leaf.pem"
  if [ -n "$dry_run" ]; then
    dry_say "write $dir/$kind-chain.pem: $kind-leaf.pem + $kind-ca.pem"
  else
    cat "$dir/$kind-leaf.pem" "$dir/$kind-ca.pem" >"$dir/$kind-chain.pem"
  fi
}

# start_tls_peer PEER CERT PORT: bench/run's setup of PEER (peers.sh) with a TLS listener on PORT
# and CERT's chain and key; sets peer_pid.
start_tls_peer() {
  local peer=$1 chain="$work/certs/$2-chain.pem" key="$work/certs/$2-key.pem" port=$3
  case $peer in
    fcgate)
      start_peer fcgate php "$port" listen="127.0.0.1:$port tls" extra="[tls]
certificates = [{ cert = \"$chain\", key = \"$key\" }]" ;;
    nginx | nginx-keepalive)
      # nginx 1.22 enables TLS 1.3 only when told (its default became TLSv1.2 TLSv1.3 in 1.23.4).
      start_peer "$peer" php "$port" listen_options="ssl http2" extra_server="ssl_certificate $chain;
    ssl_certificate_key $key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;" ;;
    h2o)
      start_peer h2o php "$port" ssl="certificate-file: $chain, key-file: $key, minimum-version: TLSv1.2" ;;
  esac
}

runs="$work/runs.tsv"
negotiated="$work/negotiated"
[ -n "$dry_run" ] || { : >"$runs"; : >"$negotiated"; }

record() {  # record TEST PEER ROUND [FIELDS…] NOTE: one line of runs.tsv
  local IFS=$'\t'
  echo "$*" >>"$runs"
}

# probe PORT CERT DIR: curl over HTTP/1.1 and over HTTP/2 (verifying the chain against CERT's CA
# and the name bench.test), then the s_time request through openssl s_client (verifying the chain
# and 127.0.0.1): each must answer 200 with "Hello, world!". Sets probe_bytes, the size of the
# answer to the s_time request, and probe_tls (protocol, cipher, key exchange, signature); or,
# when it fails three times (half a second apart), probe_error.
probe() {
  for _ in 1 2 3; do
    probe_once "$@" && return 0
    sleep 0.5
  done
  return 1
}
probe_once() {
  local port=$1 ca="$work/certs/$2-ca.pem" dir=$3 version code
  probe_error=""
  for version in 1.1 2; do
    code=$(curl -sS -m 10 --http"$version" --cacert "$ca" --resolve "bench.test:$port:127.0.0.1" \
      -o "$dir/probe.body" -w '%{http_code} %{http_version}' "https://bench.test:$port/hello.php" \
      2>"$dir/probe.err" || true)
    if [ "$code" != "200 $version" ] || ! grep -qF "$expect" "$dir/probe.body"; then
      probe_error="HTTP/$version over TLS answers '${code:-nothing}': $(cat "$dir/probe.err" "$dir/probe.body" 2>/dev/null | head -c 160 | tr -s '\n\t|' '   ')"
      return 1
    fi
  done
  # -brief, unlike -quiet, does not imply -ign_eof: without it s_client may quit at the end of
  # its input, before the answer.
  printf '%s' "$s_time_request" | timeout 10 openssl s_client -brief -ign_eof -noservername \
    -connect "127.0.0.1:$port" -CAfile "$ca" -verify_ip 127.0.0.1 -verify_return_error \
    >"$dir/probe.raw" 2>"$dir/probe.tls" || true
  if ! head -n1 "$dir/probe.raw" | grep -q '^HTTP/1.1 200' || ! grep -qF "$expect" "$dir/probe.raw"; then
    probe_error="the s_time request answers '$(head -n1 "$dir/probe.raw" | tr -d '\r')': $(grep -v '^depth\|^verify' "$dir/probe.tls" | head -c 160 | tr -s '\n\t|' '   ')"
    return 1
  fi
  probe_bytes=$(wc -c <"$dir/probe.raw")
  probe_tls=$(awk -F ': *' '
    /^Protocol version/ {p = $2} /^Ciphersuite/ {c = $2} /^Server Temp Key/ {k = $2}
    /^Signature type/ {s = $2} /^Hash used/ {h = $2}
    END {printf "%s, %s, key exchange %s, signature %s %s", p, c, k, s, h}' "$dir/probe.tls")
}

# cpu_ticks PID...: utime + stime of the processes (all their threads), in clock ticks, summed.
cpu_ticks() {
  local pid total=0 ticks
  for pid in "$@"; do
    # The fields after the command name, which is in parentheses and may hold spaces.
    ticks=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + ${ticks:-0}))
  done
  echo "$total"
}

# s_time_command MODE PORT: one s_time process of a handshake load (MODE: new or reuse).
s_time_command() {
  load_cmd=(timeout $((duration_seconds + 60)) openssl s_time -connect "127.0.0.1:$2" "-$1"
    -time "$duration_seconds" -www "$s_time_page")
}

# run_s_time MODE PORT DIR: HANDSHAKE_CLIENTS s_time processes at once; sets result to
# "requests/s - - errors connections resumed bytes_read stalled". Each process opens connections
# until time(NULL) passes its start second + DURATION, so they are all started just after the
# same whole second, which makes the run DURATION + 1 s less that fraction. A process that
# cannot connect stops (an error); one whose last connection waits long for its answer (its
# "real seconds" well past the others') is a stalled client (an error too: the run's rate counts
# it for the whole run). Each process prints a mark per connection: r resumed, * a new session.
# (Run in this shell, not a subshell: cleanup ends the processes in s_time_pids.)
run_s_time() {
  local mode=$1 port=$2 dir=$3 i pid failed=0 now start_second t0 launched
  s_time_command "$mode" "$port"
  rm -f "$dir"/s_time.*.out
  now=$(date +%s%N)
  start_second=$((now / 1000000000 + 1))
  sleep "$(awk -v n="$now" -v s="$start_second" 'BEGIN {printf "%.3f", s + 0.02 - n / 1e9}')"
  t0=$(date +%s%N)
  for i in $(seq "$HANDSHAKE_CLIENTS"); do
    "${load_cmd[@]}" >"$dir/s_time.$i.out" 2>&1 9>&- </dev/null &
    s_time_pids+=("$!")
  done
  launched=$(date +%s%N)
  for pid in "${s_time_pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
  s_time_pids=()
  [ $((launched / 1000000000)) = "$start_second" ] ||
    log "warning: the s_time clients took until the next second to start: the rate is up to 1 s off"
  result=$(cat "$dir"/s_time.*.out | awk -v run_ns=$(((start_second + duration_seconds + 1) * 1000000000 - t0)) \
    -v failed="$failed" -v limit=$((duration_seconds + 2)) '
    /connections in .* real seconds/ {connections += $1; if ($4 > limit) stalled++}
    /connections\/user sec, bytes read/ {bytes += $NF}
    /^[*r]+$/ {resumed += gsub(/r/, "")}
    END {printf "%.0f - - %d %d %d %d %d\n", connections / (run_ns / 1e9), failed + stalled, connections,
      resumed, bytes, stalled}')
}

# h2_command PORT DIR: the h2 load (load_cmd): h2load, ALPN h2, H2_CONNECTIONS x H2_STREAMS.
h2_command() {
  load_cmd=(timeout $((duration_seconds + 60)) h2load -t"$LOAD_THREADS" -c"$H2_CONNECTIONS"
    -m"$H2_STREAMS" -D"$duration_seconds" --log-file="$2/requests.log" "https://127.0.0.1:$1/hello.php")
}

# run_h2load LOAD PORT DIR: the h1 load (measure.sh's run_load: h2load --h1, CONNECTIONS) or the
# h2 one; prints "requests/s p50_ms p99_ms errors succeeded - - - answered", answered: how many
# requests were being answered at a time, on average (parse_h2load).
run_h2load() {
  local load=$1 port=$2 dir=$3 url="https://127.0.0.1:$2/hello.php" result succeeded
  if [ "$load" = h1 ]; then
    result=$(run_load "$url" "" "$dir")
  else
    h2_command "$port" "$dir"
    rm -f "$dir/requests.log"  # h2load appends
    "${load_cmd[@]}" >"$dir/load.out" 2>&1 || log "h2load exited with $?"
    result=$(parse_h2load "$dir/load.out" "$dir/requests.log")
  fi
  succeeded=$(awk '/^requests:/ {gsub(/,/, ""); print $8}' "$dir/load.out")
  read -r rps p50 p99 errors active <<<"$result"
  echo "$rps $p50 $p99 $errors ${succeeded:-0} - - - $active"
}

# measure TEST PEER ROUND: one run of TEST (LOAD-CERT) on a freshly started PEER.
measure() {
  local test=$1 peer=$2 round=$3 load=${1%-*} cert=${1#*-} port=${peer_port[$2]} dir="$work/peers/$2"
  local reason warmup pid pids before after result rps p50 p99 errors answered resumed bytes stalled active cpu rss note=""
  reason=$(peer_available "$peer")
  if [ -n "$reason" ]; then record "$test" "$peer" "$round" "" "" "" "" "" "" "" "" "not run: $reason"; return; fi
  start_tls_peer "$peer" "$cert" "$port"
  warmup=(h2load --h1 -t1 -c8 -n"$WARMUP" "https://127.0.0.1:$port/hello.php")
  if [ -n "$dry_run" ]; then
    dry_say "check: curl --http1.1 and --http2 --cacert $cert-ca.pem https://bench.test:$port/hello.php, and the s_time request through openssl s_client (expect \"$expect\")"
    show_load "${warmup[@]}"
    case $load in
      full | resumed)
        if [ "$load" = full ]; then s_time_command new "$port"; else s_time_command reuse "$port"; fi
        dry_say "load: $HANDSHAKE_CLIENTS at once: $(shown "${load_cmd[@]:0:$((${#load_cmd[@]} - 1))}") $(printf %q "$s_time_page")" ;;
      h1) load_command "https://127.0.0.1:$port/hello.php" "" "$dir"; show_load "${load_cmd[@]}" ;;
      h2) h2_command "$port" "$dir"; show_load "${load_cmd[@]}" ;;
    esac
    return
  fi
  if ! wait_listening "$port" 100; then
    reason="did not start: $(cat "$dir/out.log" "$dir/error.log" 2>/dev/null | grep -v '^\s*$' | tail -n1 | tr '|\t' '  ' | cut -c1-160)"
    stop_tree "$peer_pid"; peer_pid=""
    log "$test $peer: $reason"
    record "$test" "$peer" "$round" "" "" "" "" "" "" "" "" "$reason"
    return
  fi
  if ! probe "$port" "$cert" "$dir"; then
    reason="wrong response: $probe_error"
    stop_tree "$peer_pid"; peer_pid=""
    wait_backend_idle
    log "$test $peer: $reason"
    record "$test" "$peer" "$round" "" "" "" "" "" "" "" "" "$reason"
    return
  fi
  grep -q "^$peer $cert " "$negotiated" || echo "$peer $cert $probe_tls" >>"$negotiated"
  "${warmup[@]}" >"$dir/warmup.out" 2>&1 || log "$test $peer: the warm-up failed (see $dir/warmup.out)"
  mapfile -t pids < <(descendants "$peer_pid")
  before=$(cpu_ticks "${pids[@]}")
  case $load in
    full) run_s_time new "$port" "$dir" ;;
    resumed) run_s_time reuse "$port" "$dir" ;;
    h1 | h2) result=$(run_h2load "$load" "$port" "$dir") ;;
  esac
  after=$(cpu_ticks "${pids[@]}")
  rss=$(rss_kib "$peer_pid")
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || note="a gateway process exited during the load"; done
  stop_tree "$peer_pid"; peer_pid=""
  read -r rps p50 p99 errors answered resumed bytes stalled active <<<"$result"
  if [ "$load" = h1 ] || [ "$load" = h2 ]; then
    [ "$rps" != 0 ] || sed "s/^/    h2load: /" "$dir/load.out" >&2
    # As in bench/run: requests that never complete count nowhere else.
    local concurrency=$CONNECTIONS
    [ "$load" = h1 ] || concurrency=$((H2_CONNECTIONS * H2_STREAMS))
    [ "$((active * 10))" -ge "$((concurrency * 9))" ] ||
      note+="${note:+; }$active of $concurrency requests in flight answered on average"
    grep -q "^$peer $load " "$negotiated" ||
      echo "$peer $load $(awk -F ': *' '/^TLS Protocol/ {p = $2} /^Cipher/ {c = $2} /^Server Temp Key/ {k = $2}
        /^Application protocol/ {a = $2} END {printf "%s, %s, key exchange %s, ALPN %s", p, c, k, a}' "$dir/load.out")" >>"$negotiated"
  else
    # Every answer to the s_time request is the probe's size; anything else is an error page.
    if [ "$bytes" != $((answered * probe_bytes)) ]; then
      note+="${note:+; }read $bytes bytes for $answered answers of $probe_bytes"
    fi
    [ "$stalled" = 0 ] || note+="${note:+; }$stalled of $HANDSHAKE_CLIENTS clients stalled: a connection waited past the run's end for its answer"
    [ "$errors" = "$stalled" ] || note+="${note:+; }$((errors - stalled)) of $HANDSHAKE_CLIENTS s_time processes failed: $(grep -hv '^[*r]*$' "$dir"/s_time.*.out | grep -iv 'connections\|collecting\|timing\|starting' | sort | uniq -c | sort -rn | head -n1 | tr -s ' \t|' '   ' | cut -c1-120 || true)"
    [ "$load" = resumed ] || [ "$resumed" = 0 ] || note+="${note:+; }$resumed connections resumed"
    [ "$load" = full ] || [ "$resumed" = "$answered" ] || note+="${note:+; }only $resumed of $answered resumed"
  fi
  cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$answered" \
    'BEGIN {if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-"}')
  log "$test r$round $peer: $rps/s, p50 $p50 ms, p99 $p99 ms, errors $errors, $answered requests, resumed $resumed, CPU $cpu µs/request, RSS $((rss / 1024)) MiB${note:+ ($note)}"
  record "$test" "$peer" "$round" "$rps" "$p50" "$p99" "$errors" "$cpu" "$answered" "$resumed" "$rss" "$note"
  wait_backend_idle
}

for c in $CERTS; do
  [ -z "$dry_run" ] || printf '\n== certificate %s\n' "$c"
  if [ -n "$dry_run" ]; then make_certificate "$c"
  else make_certificate "$c" >>"$work/certs/openssl.log" 2>&1 || die "openssl could not make the $c certificate (see $work/certs/openssl.log)"; fi
done
[ -z "$dry_run" ] || printf '\n== php-fpm\n'
start_backend php-tcp
wait_quiet "$LOAD_MAX" "$LOAD_WAIT"
[ -z "$dry_run" ] || ROUNDS=1  # every round starts the same processes on the same configs
[ -n "$dry_run" ] || log "settings: rounds $ROUNDS, duration $DURATION, tests $TESTS, php-fpm children $PHP_CHILDREN, workers $WORKERS"
for test in $TESTS; do
  [ -z "$dry_run" ] || printf '\n== %s\n' "$test"
  for round in $(seq "$ROUNDS"); do
    for peer in $PEERS; do
      [ -z "$dry_run" ] || dry_say "-- $peer"
      measure "$test" "$peer" "$round"
    done
  done
done
stop_tree "${backend_pid:-}"
backend_pid=""

if [ -n "$dry_run" ]; then
  echo
  publish_result "$name.md" "" </dev/null
  dry_say "(and $name.tsv)"
  exit 0
fi

# describe_test TEST: the load's heading.
describe_test() {
  local cert
  case ${1#*-} in ecdsa) cert="ECDSA P-256 certificate" ;; rsa) cert="RSA-2048 certificate" ;; esac
  case ${1%-*} in
    full) echo "full handshakes/s, $cert (s_time -new, $HANDSHAKE_CLIENTS clients; a new connection per request)" ;;
    resumed) echo "resumed handshakes/s (s_time -reuse, $HANDSHAKE_CLIENTS clients; a new connection per request, TLS 1.3 PSK)" ;;
    h1) echo "HTTP/1.1 keep-alive over TLS, requests/s (h2load --h1, $CONNECTIONS connections), $cert" ;;
    h2) echo "HTTP/2 over TLS, requests/s (h2load, $H2_CONNECTIONS connections x $H2_STREAMS streams), $cert" ;;
  esac
}

# tables RUNS: per test, a row per peer (medians, spreads) and the ratios fcgate / each other peer.
# Prints "## TEST" sections; with "summary" as second argument, the one summary table instead (a
# row per test and other peer).
tables() {
  awk -F '\t' -v what="${2:-}" -v others="$OTHERS" '
    function sorted(list, v,   n, i, j, t) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) {
        t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
      }
      return n
    }
    function median(list,   n, v) {
      n = sorted(list, v)
      if (n == 0) return ""
      return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function spread(list, format,   n, v) {
      n = sorted(list, v)
      return n > 1 ? sprintf(format "–" format, v[1], v[n]) : "–"
    }
    function cell(list, format) { return list == "" ? "–" : sprintf(format, median(list)) }
    function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "–" : sprintf("%.2f×", a / b) }
    {
      key = $1 SUBSEP $2
      if (!($1 in seen_test)) { seen_test[$1] = 1; tests[++ntests] = $1 }
      if (!(key in seen)) { seen[key] = 1; peers[$1] = peers[$1] " " $2 }
      if ($12 != "") note[key] = note[key] (note[key] == "" ? "" : "; ") "r" $3 ": " $12
      if ($4 == "") next
      rps[key] = rps[key] " " $4; errors[key] += $7; rss[key] = rss[key] " " $11
      if ($5 != "-") { p50[key] = p50[key] " " $5; p99[key] = p99[key] " " $6 }
      if ($8 != "-") cpu[key] = cpu[key] " " $8
      if ($10 != "-") { resumed[key] += $10; done_[key] += $9; has_resumed[key] = 1 }
    }
    END {
      nothers = split(others, other, " ")
      if (what == "summary") {
        print "| load | peer | per second, fcgate | peer | fcgate / peer | CPU µs/request, fcgate | peer | fcgate / peer |"
        print "|---|---|--:|--:|--:|--:|--:|--:|"
        for (t = 1; t <= ntests; t++) for (o = 1; o <= nothers; o++) {
          f = tests[t] SUBSEP "fcgate"; n = tests[t] SUBSEP other[o]
          printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", tests[t], other[o], cell(rps[f], "%d"),
            cell(rps[n], "%d"), ratio(median(rps[f]), median(rps[n])), cell(cpu[f], "%.1f"),
            cell(cpu[n], "%.1f"), ratio(median(cpu[f]), median(cpu[n]))
        }
        exit
      }
      for (t = 1; t <= ntests; t++) {
        test = tests[t]
        printf "### %s\n\n", test
        print "| peer | per second | spread | CPU µs/request | spread | p50 ms | p99 ms | resumed | errors | peak RSS MiB | note |"
        print "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
        count = split(peers[test], list, " ")
        for (k = 1; k <= count; k++) {
          key = test SUBSEP list[k]
          if (rps[key] == "") { printf "| %s | – | – | – | – | – | – | – | – | – | %s |\n", list[k], note[key]; continue }
          printf "| %s | %d | %s | %s | %s | %s | %s | %s | %d | %.1f | %s |\n", list[k],
            median(rps[key]), spread(rps[key], "%d"), cell(cpu[key], "%.1f"), spread(cpu[key], "%.1f"),
            cell(p50[key], "%.2f"), cell(p99[key], "%.2f"),
            has_resumed[key] ? sprintf("%d/%d", resumed[key], done_[key]) : "–",
            errors[key], median(rss[key]) / 1024, note[key]
        }
        f = test SUBSEP "fcgate"
        for (o = 1; o <= nothers; o++) {
          n = test SUBSEP other[o]
          printf "| **fcgate / %s** | **%s** | | **%s** | | %s | %s | | | %s | |\n", other[o],
            ratio(median(rps[f]), median(rps[n])), ratio(median(cpu[f]), median(cpu[n])),
            ratio(median(p50[f]), median(p50[n])), ratio(median(p99[f]), median(p99[n])),
            ratio(median(rss[f]), median(rss[n]))
        }
        print ""
      }
    }' "$1"
}

# headline RUNS: HISTORY.md's summary: per test, fcgate's median and its ratio to each other
# peer's, with the ratio of CPU per request.
headline() {
  tables "$1" summary | awk -F ' *[|] *' 'NR > 2 {
      if ($2 != test) { printf "%s%s fcgate %s/s", (test != "" ? "; " : ""), $2, $4; test = $2; n = 0 }
      printf "%s %s %s (CPU %s)", (n++ ? "," : ":"), $3, $6, $9
    } END {print ""}'
}

# versions_tls: the versions that matter here.
versions_tls() {
  local fpm
  fpm=$(find /usr/sbin -maxdepth 1 -name 'php-fpm*' | sort | tail -n1)
  if [[ " $OTHERS " == *" nginx"* ]]; then
    echo "- $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(nginx -V 2>&1 | grep -o 'built with OpenSSL [^ ]*' || true); $(openssl version)"
  fi
  if [[ " $OTHERS " == *" h2o "* ]]; then
    echo "- $(h2o --version 2>&1 | tr '\n' ' ' | sed 's/ *$//')"
  fi
  echo "- fcgate's TLS: $(awk '/^name = "(rustls|aws-lc-rs|aws-lc-sys|tokio-rustls)"$/ {n = $3; getline; printf "%s%s %s", (c++ ? ", " : ""), n, $3}' "$repo/Cargo.lock" | tr -d '"')"
  echo "- $("$fpm" -v 2>/dev/null | head -n1 | sed 's/ (.*//'), $(h2load --version 2>&1 | head -n1)"
}

write_tls_report() {
  echo "# fcgate TLS against $(echo "$OTHERS" | sed 's/ *$//; s/ /, /g') (OpenSSL), $(date '+%Y-%m-%d %H:%M %Z')"
  echo
  echo "fcgate at $measured_commit, $(nproc) cores, $(uname -sr), load average before the run: $load_before."
  echo "$ROUNDS rounds of $DURATION per load, peers interleaved, each started afresh per run and warmed up with"
  echo "$WARMUP requests; one php-fpm pool (pm=static, $PHP_CHILDREN children) serving hello.php; every"
  echo "peer with $WORKERS workers/threads. Same certificate and key for every peer (leaf + CA chain)."
  echo
  echo "## Ratios (medians)"
  echo
  tables "$runs" summary
  echo
  echo "## Per load"
  echo
  for test in $TESTS; do
    printf '**%s**: %s\n' "$test" "$(describe_test "$test")"
    tables "$runs" | awk -v t="### $test" '$0 == t {on = 1; next} /^### / {on = 0} on'
  done
  echo "## Setup"
  echo
  echo "- **fcgate**: $(peer_note fcgate); \`listen = \"127.0.0.1:PORT tls\"\`, \`[tls] certificates\` (tickets and a session cache: its defaults)."
  local peer
  for peer in $OTHERS; do
    case $peer in
      nginx | nginx-keepalive)
        echo "- **$peer**: $(peer_note "$peer"); \`listen PORT ssl http2\`, \`ssl_protocols TLSv1.2 TLSv1.3\`, \`ssl_session_cache shared:SSL:10m\`, \`ssl_session_tickets on\`, OpenSSL's defaults otherwise." ;;
      h2o)
        echo "- **h2o**: $(peer_note h2o); \`listen: {ssl: {certificate-file, key-file, minimum-version: TLSv1.2}}\`, its session resumption defaults (cache and tickets), OpenSSL's defaults otherwise." ;;
    esac
  done
  echo "- Negotiated (s_client probe for the s_time loads, h2load's report for h1 and h2):"
  sort "$negotiated" | sed 's/^\([^ ]*\) \([^ ]*\) /  - \1, \2: /'
  versions_tls
  echo
  echo "## Reading the tables"
  echo
  echo "- per second: requests/s; for full and resumed each request is a connection, so handshakes/s."
  echo "  Median over the rounds; spread: lowest–highest."
  echo "- CPU µs/request: utime + stime of the gateway's processes (/proc/PID/stat: fcgate's one process"
  echo "  with its threads, nginx's master and workers, h2o's processes) over the measured load, divided by the requests"
  echo "  answered. php-fpm and the load generators are not in it, but share the $(nproc) cores: requests/s"
  echo "  is what is left to the gateway, CPU per request what the gateway spends."
  echo "- full: \`openssl s_time -new\`, a fresh session for every connection (resumed must be 0/N): TCP"
  echo "  connect, full TLS 1.3 handshake, GET /hello.php with Connection: close, read to the close; no SNI."
  echo "  resumed: \`s_time -reuse\`, each client resuming one session (all N must be resumed). s_time"
  echo "  reports no latencies and no status codes: errors are clients that could not connect, and the"
  echo "  bytes read are checked against the probe's answer (a note says when they differ)."
  echo "- h1, h2: h2load; p50 and p99 over every completed request (h2load's per-request log); errors:"
  echo "  non-2xx answers + failed, errored and timed-out requests, all rounds summed. One full handshake per"
  echo "  connection at its start; no resumption."
  echo "- fcgate / PEER: ratio of the medians; above 1 is more for fcgate (better for per second, worse"
  echo "  for CPU, latencies and RSS)."
  echo "- peak RSS: VmHWM summed over the gateway's processes."
}

rm -f "$results_dir/$name.md" "$results_dir/$name.tsv"
mkdir -p "$results_dir"
cp "$runs" "$results_dir/$name.tsv"
write_tls_report >"$work/report.md"
publish_result "$name.md" "$(headline "$runs")" <"$work/report.md"
log "rounds: $name.tsv"
