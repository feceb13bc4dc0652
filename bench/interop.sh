#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/interop.sh: the Interop issue's check. fcgate's bundled demo FastCGI app (`fcgate
# demo-app`: FCGI_MPXS_CONNS=1, FCGI_MAX_CONNS=256, FCGI_MAX_REQS=16384) behind every peer
# gateway, each in app mode (everything to the backend), one at a time, with a fresh demo app
# on a unix socket for every peer:
#   nginx            peers.sh's, no upstream keepalive
#   nginx-keepalive  peers.sh's, upstream keepalive + fastcgi_keep_conn on
#   haproxy          peers.sh's fcgi-app (option keep-conn, http-reuse always) plus, here,
#                    option mpxs-conns and option get-values
#   h2o lighttpd apache fcgate   peers.sh's (Apache: mod_proxy_fcgi enablereuse=on)
#   cgi-fcgi         `cgi-fcgi -bind -connect SOCKET` from libfcgi-bin, as a CGI-to-FastCGI
#                    client: CGI variables in the environment, the body on stdin (one request
#                    per process; bench/interop.py runs it)
# (caddy, peers.sh's too, runs with --peers caddy if it is installed; Debian has no package.)
#
# Checks per peer, each request with curl --max-time MAX_TIME (20 s):
#   GET      GET /interop/get?alpha=1&beta=two%20words&gamma: 200, the page says `method: GET`
#            and `uri: ` with that path and query
#   POST     1 MiB of random bytes (seed 1; bench/interop.py) POSTed: 200, the page says
#            `body bytes: 1048576` and the FNV-1a 64 bench/interop.py computed
#   5 MiB    GET ?bytes=5242880: 200, exactly 5242880 bytes, sha256 equal to the pattern's
#   headers  X-Demo on the page (page) and on the bytes answer (bytes); ?status=404 answers
#            404 and ?status=503 answers 503
#   load     CLIENTS (200) HTTP/1.1 keep-alive clients, REQUESTS (5000) GETs in all, one at a
#            time per connection (bench/interop.py load; not for cgi-fcgi): ok / non-2xx /
#            errors / hung (+ wrong: a 2xx carrying another request's page). Hung: no complete
#            answer within HANG_SECONDS (10 s). A request finding its kept-alive connection
#            closed before any answer is retried once on a new one (noted, not an error). Not
#            h2load: nghttp2 1.52's h2load records no status for a status line without a
#            reason phrase (`HTTP/1.1 200 `, valid, from HAProxy; `HTTP/1.1 200` from nginx)
#            and fails every such answer; the demo app's `Status: 200` has no reason phrase.
#            The whole load is bounded at LOAD_LIMIT (120 s).
#   backend  connections the demo app accepted during the load, and the most open at once.
#            Counted from the demo app's own log (RUST_LOG fcgi::server=debug logs one line as
#            each connection ends): after the load the peer is stopped and every connection
#            has ended, so opened = lines then - lines before the load - connections open
#            before it (ss -x on the socket). The peak is ss -x sampled every 0.2 s.
#
# Prints a markdown table and writes it to RESULTS_DIR (bench/results)/interop.md (replacing
# the previous run's; a row goes to HISTORY.md there), with the versions and every peer's
# configuration. Installs missing Debian packages (as
# root: nginx-light, haproxy, h2o, lighttpd, apache2, libfcgi-bin, curl, iproute2,
# python3); a peer whose package cannot be installed is reported as skipped, with
# the reason. Cleans up everything it started on exit. A full run takes about 30 s.
#
#   bench/interop.sh [--peers nginx,nginx-keepalive,haproxy,h2o,lighttpd,apache,cgi-fcgi,fcgate]
#                    [--no-build] [--dry-run]
#
# --dry-run prints what would be installed, written, started and run, and does none of it.
# Environment: PORT_BASE (19100: the peer's port; one peer at a time), CLIENTS, REQUESTS,
# PHP_CHILDREN (8: the connection cap peers.sh gives nginx-keepalive, HAProxy, Apache and
# fcgate, as in bench/run), WORKERS (2: worker processes/threads), KEEP_WORK=1 keeps configs
# and logs, RESULTS_DIR.
set -euo pipefail
export LC_ALL=C

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
source "$bench_dir/lib/harness.sh"   # set_args, dry run, lock, publish_result
source "$bench_dir/lib/process.sh"   # log, die, wait_port, wait_socket, port_free, stop_tree, kill_run
source "$bench_dir/lib/backends.sh"  # backend_address, open_backend_connections, wait_backend_idle
source "$bench_dir/lib/peers.sh"     # start_peer, peer_note, peer_available, write_*
source "$bench_dir/lib/install.sh"   # package_for, missing_packages, install_packages

interop_peers="nginx nginx-keepalive haproxy h2o lighttpd apache cgi-fcgi fcgate"
PEERS=$interop_peers
PORT_BASE=${PORT_BASE:-19100}
CLIENTS=${CLIENTS:-200}
REQUESTS=${REQUESTS:-5000}
PHP_CHILDREN=${PHP_CHILDREN:-8}
WORKERS=${WORKERS:-2}
MAX_TIME=20          # curl --max-time of every check request, seconds
HANG_SECONDS=10      # a load request not answered within this is hung
LOAD_LIMIT=120       # the load as a whole, seconds
POST_SIZE=1048576
POST_SEED=1
BIG_SIZE=5242880
GET_PATH='/interop/get?alpha=1&beta=two%20words&gamma'
build=1

while [ $# -gt 0 ]; do
  arg=$1 value=""
  case $arg in
    --*=*) value=${arg#*=}; arg=${arg%%=*} ;;
    --peers) [ $# -ge 2 ] || die "$arg needs a value"; value=$2; shift ;;
  esac
  case $arg in
    --peers) PEERS=$value ;;
    *) common_arg "$1" ;;
  esac
  shift
done
PEERS=$(tr ', ' '\n' <<<"$PEERS" | awk 'NF && !seen[$0]++' | tr '\n' ' ')
for p in $PEERS; do
  [[ " $all_peers cgi-fcgi " == *" $p "* ]] || die "unknown peer $p (peers: $interop_peers caddy)"
done
[[ $CLIENTS =~ ^[1-9][0-9]*$ && $REQUESTS =~ ^[1-9][0-9]*$ ]] || die "CLIENTS and REQUESTS must be positive numbers"
(( PHP_CHILDREN % WORKERS == 0 )) || die "PHP_CHILDREN must be a multiple of WORKERS (per-worker pools)"
port=$PORT_BASE

# ------------------------------------------------------------------------------------------
# Tools and peers

declare -A skip_reason=()

# peer_package PEER: the Debian package that provides it (none: not packaged, or built here).
peer_package() {
  case $1 in
    nginx | nginx-keepalive) package_for nginx ;;
    apache) package_for apache2 ;;
    cgi-fcgi) echo libfcgi-bin ;;
    haproxy | h2o | lighttpd) echo "$1" ;;
    *) echo none ;;
  esac
}

# apt_install PACKAGE...: install_packages, quietly; the last error line on failure.
apt_install() {
  apt_log=$work_tmp/apt.log
  install_packages "$@" || { grep -E '^E:' "$apt_log" | tail -n1; return 1; }
}

# ensure_tools: what the checks need (no bench without them), then every requested peer that is
# missing; a peer that cannot be installed gets a skip_reason.
ensure_tools() {
  local missing=() peer package
  mapfile -t missing < <(missing_packages curl ss python3 flock)
  local peer_missing=()
  for peer in $PEERS; do
    package=$(peer_package "$peer")
    [ "$package" != none ] || continue
    if [ "$peer" = cgi-fcgi ]; then
      command -v cgi-fcgi >/dev/null || peer_missing+=("$package")
    else
      [ -z "$(dry_run='' peer_available "$peer")" ] || peer_missing+=("$package")
    fi
  done
  [ $((${#missing[@]} + ${#peer_missing[@]})) -gt 0 ] || return 0
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  fi
  [ ${#peer_missing[@]} -gt 0 ] || return 0
  mapfile -t peer_missing < <(printf '%s\n' "${peer_missing[@]}" | sort -u)
  apt_install "${peer_missing[@]}" && return 0
  for package in "${peer_missing[@]}"; do  # one by one: one that fails skips only its peers
    local error
    error=$(apt_install "$package") && continue
    for peer in $PEERS; do
      [ "$(peer_package "$peer")" = "$package" ] && skip_reason[$peer]="apt-get install $package failed: ${error:-?}"
    done
  done
}

# ------------------------------------------------------------------------------------------
# The demo app and the peers: backends.sh's and peers.sh's, with what this bench adds.

# start_demo_in DIR: a fresh demo app on DIR/demo.sock (backends.sh's start_demo), its
# variables set as start_backend sets them (bench/run's `demo` backend listens on TCP only).
# fcgi::server=debug logs a line as each connection ends: the connection count.
start_demo_in() {
  local dir=$1
  backend_kind=unix backend_socket="$dir/demo.sock" backend_host="" backend_port=""
  [ -n "$dry_run" ] || rm -f "$backend_socket"
  start_demo "unix:$backend_socket" "$dir/demo.log" RUST_LOG=warn,fcgi::server=debug
  backend_pid=$demo_pid
  wait_socket "$backend_socket" 100 || die "the demo app did not create $backend_socket (see $dir/demo.log)"
}
# Not backends.sh's stop_backend: that also deletes bench/run's network namespace.
stop_demo() { stop_tree "${backend_pid:-}"; backend_pid=""; }

# demo_connections_ended DIR: connections the demo app has seen end so far.
demo_connections_ended() { grep -c 'FastCGI connection \(closed\|dropped\)' "$1/demo.log" || true; }

# HAProxy: peers.sh's fcgi-app plus `option mpxs-conns` (several requests at once on one
# connection; the demo app announces FCGI_MPXS_CONNS=1) and `option get-values` (ask the app's
# limits with FCGI_GET_VALUES), which the Interop issue asks to exercise; bench/run measures
# HAProxy without them.
peer_args() { [ "$1" != haproxy ] || echo multiplex=on; }

interop_note() {
  case $1 in
    haproxy) echo "$(peer_note haproxy); plus (this bench) option mpxs-conns and option get-values in the fcgi-app" ;;
    cgi-fcgi) echo "cgi-fcgi -bind -connect SOCKET (libfcgi-bin): one process per request, CGI variables in a clean environment, the body on stdin (bench/interop.py)" ;;
    *) peer_note "$1" ;;
  esac
}

peer_log() {  # PEER: the peer's error log (peers.sh's configs), else its captured output
  case $1 in
    nginx | nginx-keepalive | h2o | lighttpd | apache) echo "$work/peers/$1/error.log" ;;
    cgi-fcgi) echo "$dir/cgi-fcgi.err" ;;
    *) echo "$work/peers/$1/out.log" ;;
  esac
}

# log_digest FILE: how many lines the peer logged besides starting and stopping, and the
# commonest two (numbers folded), for the notes.
quiet_lines='^$|fcgate listening on|received SIGTERM|is ready to serve|server started|server stopped|resuming normal operations|AH00094: Command line|caught SIGTERM|[Ss]topping|[Pp]roxy .* started'
log_digest() {
  local lines
  lines=$(grep -cvE "$quiet_lines" "$1" 2>/dev/null || true)
  [ "${lines:-0}" -gt 0 ] || { echo "logged nothing (besides starting and stopping)"; return; }
  printf 'logged %s lines' "$lines"
  grep -vE "$quiet_lines" "$1" | sed "s/\x1b\[[0-9;]*m//g; s|$work/|…/|g" |
    sed -E 's/^\[[^]]*\] //; s/^[0-9/: -]+\[([a-z]+)\] [0-9#]+: \*?[0-9]* ?/[\1] /; s/, client: .*//' |
    sed -E 's/[0-9]+/N/g' | cut -c1-120 | sort | uniq -c | sort -rn | head -n2 |
    awk '{n = $1; $1 = ""; sub(/^ /, ""); gsub(/[`|]/, "'\''"); printf "%s %dx `%s`", (NR == 1 ? ", commonest:" : ","), n, $0}'
}

# ------------------------------------------------------------------------------------------
# Requests and checks

# fetch NAME METHOD URI [BODY_FILE]: one request to the peer under test; head to $dir/NAME.head
# (curl -D), body to $dir/NAME.body. Prints "STATUS EXIT" (curl's or cgi-fcgi's exit code).
fetch() {
  local name=$1 method=$2 uri=$3 body=${4:-} status rc=0 args=()
  if [ "$peer" = cgi-fcgi ]; then
    [ -n "$body" ] && args=(--body "$body")
    status=$(python3 "$bench_dir/interop.py" cgi-fcgi "$backend_socket" "$method" "$uri" \
      "$dir/$name.head" "$dir/$name.body" "${args[@]}" --timeout "$MAX_TIME" 2>>"$dir/cgi-fcgi.err") || rc=$?
  else
    [ -n "$body" ] && args=(--data-binary "@$body" -H 'Content-Type: application/octet-stream')
    [ "$method" = GET ] || [ -n "$body" ] || args=(-X "$method")
    status=$(curl -sS --max-time "$MAX_TIME" -D "$dir/$name.head" -o "$dir/$name.body" \
      -w '%{http_code}' "${args[@]}" "http://127.0.0.1:$port$uri" 2>>"$dir/curl.err") || rc=$?
  fi
  echo "${status:-000} $rc"
}

# header NAME FIELD: the value of FIELD in $dir/NAME.head (last response block), or empty.
header() {
  awk -v f="$(tr '[:upper:]' '[:lower:]' <<<"$2")" '
    /^HTTP\// { v = "" }
    { line = $0; sub(/\r$/, "", line); i = index(line, ":")
      if (i && tolower(substr(line, 1, i - 1)) == f) { v = substr(line, i + 1); sub(/^ +/, "", v) } }
    END { print v }' "$dir/$1.head" 2>/dev/null || true
}

# page_has NAME LINE: the demo page in $dir/NAME.body has exactly LINE as a line.
page_has() { grep -qxF -- "$2" "$dir/$1.body" 2>/dev/null; }
page_line() { grep -m1 -- "^$2" "$dir/$1.body" 2>/dev/null | cut -c1-80 || true; }

# failed WHAT: records a failed check's details for the notes ($dir/fails: the checks run in
# command substitutions); prints the cell.
failed() { echo "$1" >>"$dir/fails"; echo "**FAIL** ($1)"; }

check_get() {
  local result
  result=$(fetch get GET "$GET_PATH")
  if [ "$result" != "200 0" ]; then failed "GET: status/exit $result"; return; fi
  page_has get "method: GET" || { failed "GET: $(page_line get 'method:' || echo 'no method line')"; return; }
  page_has get "uri: $GET_PATH" || { failed "GET: got \`$(page_line get 'uri:')\`"; return; }
  echo ok
}

check_post() {
  local result
  result=$(fetch post POST /interop/post "$work/post.bin")
  if [ "$result" != "200 0" ]; then failed "POST: status/exit $result"; return; fi
  page_has post "body bytes: $POST_SIZE" || { failed "POST: \`$(page_line post 'body bytes:')\`"; return; }
  page_has post "body fnv1a64: $post_fnv" || { failed "POST: \`$(page_line post 'body fnv1a64:')\`, expected $post_fnv"; return; }
  echo ok
}

check_big() {
  local result size sum length
  result=$(fetch big GET "/interop/big?bytes=$BIG_SIZE")
  size=$(stat -c %s "$dir/big.body" 2>/dev/null || echo 0)
  if [ "$result" != "200 0" ]; then failed "5 MiB: status/exit $result, $size bytes"; return; fi
  [ "$size" = "$BIG_SIZE" ] || { failed "5 MiB: $size bytes"; return; }
  sum=$(sha256sum "$dir/big.body" | cut -d' ' -f1)
  [ "$sum" = "$big_sha256" ] || { failed "5 MiB: sha256 $sum"; return; }
  length=$(header big Content-Length)
  if [ "$length" = "$BIG_SIZE" ]; then echo ok
  else echo "ok (Content-Length: ${length:-none}, $(header big Transfer-Encoding))"; fi
}

check_headers() {
  local page bytes r404 r503 cell=ok
  page=$(header get X-Demo)
  bytes=$(header big X-Demo)
  r404=$(fetch s404 GET "/interop/status?status=404")
  r503=$(fetch s503 GET "/interop/status?status=503")
  [ "$page" = page ] && [ "$bytes" = bytes ] ||
    cell=$(failed "X-Demo: page '${page}', bytes '${bytes}'")
  [ "${r404%% *}" = 404 ] || cell=$(failed "?status=404 gave ${r404%% *}")
  [ "${r503%% *}" = 503 ] || cell=$(failed "?status=503 gave ${r503%% *}")
  [ "$(header s503 X-Demo)" = page ] || [ "$cell" != ok ] || cell="ok (no X-Demo on the 503)"
  # RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]; the second SP
  # is there even without a reason (strict parsers need it). cgi-fcgi's
  # head is bench/interop.py's rendering: there the app's own Status header is what it sent.
  local name line
  if [ "$peer" = cgi-fcgi ]; then
    line=$(header s404 Status)
    [[ $line =~ ^[0-9]{3}\ [^\ ] ]] ||
      echo "the app's own \`Status: $line\` has no reason phrase (RFC 3875 6.3.3 asks for one); cgi-fcgi passes it on as is" >>"$dir/remarks"
  else
    for name in get s404 s503; do
      line=$(grep -a '^HTTP/' "$dir/$name.head" 2>/dev/null | tail -n1 | tr -d '\r')
      [[ $line =~ ^HTTP/[0-9.]+\ [0-9]{3}\  ]] && continue
      cell=$(failed "status line \`$line\`: no SP after the code, RFC 9112 4")
      break
    done
  fi
  echo "$cell"
}

# sample_open FLAG OUT: the most backend connections open at once (ss -x), every 0.2 s while
# FLAG exists.
sample_open() {
  local peak=0 now
  while [ -e "$1" ]; do
    now=$(open_backend_connections)
    [ "$now" -gt "$peak" ] && peak=$now && echo "$peak" >"$2"
    sleep 0.2
  done
}

# run_load: bench/interop.py's load client against the peer; sets load_cell and load_note.
run_load() {
  local status=0 line
  timeout -k 5 $((LOAD_LIMIT + 10)) python3 "$bench_dir/interop.py" load "$port" --clients "$CLIENTS" \
    --requests "$REQUESTS" --hang "$HANG_SECONDS" --limit "$LOAD_LIMIT" >"$dir/load.out" 2>&1 || status=$?
  line=$(grep -m1 '^ok=' "$dir/load.out" || true)
  if [ -z "$line" ]; then
    load_cell="**FAIL** (load client: no summary, exit $status)"
    echo "load: bench/interop.py load exited $status without a summary: $(tail -n1 "$dir/load.out")" >>"$dir/fails"
    return
  fi
  local ok=0 non2xx=0 errors=0 hung=0 wrong=0 retried=0 no_sp=0 unstarted=0 rps=0 pair
  for pair in $line; do
    case ${pair%%=*} in
      ok | non2xx | errors | hung | wrong | retried | no_sp | unstarted | rps) printf -v "${pair%%=*}" '%s' "${pair#*=}" ;;
    esac
  done
  load_cell="$ok/$non2xx/$errors/$hung"
  [ "$wrong" = 0 ] || load_cell="$load_cell + $wrong wrong"
  [ "$ok" = "$REQUESTS" ] || load_cell="**$load_cell**"
  load_note="load $rps req/s"
  [ "$retried" -gt 0 ] && load_note="$load_note, $retried retried (reused connection closed by the peer before an answer)"
  [ "$unstarted" -gt 0 ] && load_note="$load_note, $unstarted not started within ${LOAD_LIMIT} s"
  [ "$no_sp" -gt 0 ] && load_note="$load_note, $no_sp status lines without the SP after the code"
  [ "$status" = 0 ] || load_note="$load_note, load client exited $status"
  if [ "$ok" != "$REQUESTS" ]; then
    echo "load: $ok of $REQUESTS ok ($line); $(grep -v '^ok=' "$dir/load.out" | head -n3 | cut -c1-200 | tr '\n' ';')" >>"$dir/fails"
  fi
}

# run_peer PEER: appends one row to $work/rows.md and notes to $work/notes.md.
run_peer() {
  peer=$1 dir="$work/runs/$1"
  local get post big headers load_cell="–" load_note="" conns="–" reason
  [ -z "$dry_run" ] || printf '\n== %s\n' "$peer"
  if [ -z "$dry_run" ]; then
    mkdir -p "$dir"
    : >"$dir/fails"
    : >"$dir/remarks"
  fi
  reason=${skip_reason[$peer]:-$(peer_available "$peer")}
  if [ -n "$reason" ]; then
    log "$peer: skipped ($reason)"
    echo "| $peer | skipped | – | – | – | – | – | $reason |" >>"$work/rows.md"
    return
  fi
  start_demo_in "$dir"
  if [ "$peer" != cgi-fcgi ]; then
    # shellcheck disable=SC2046 # none or one NAME=VALUE
    start_peer "$peer" app "$port" $(peer_args "$peer")
    if ! wait_port 127.0.0.1 "$port" 100; then
      log "$peer: not listening on 127.0.0.1:$port"
      echo "| $peer | **did not start** | – | – | – | – | – | $(tail -n1 "$(peer_log "$peer")" 2>/dev/null | cut -c1-150 | tr '|`' "/'") |" >>"$work/rows.md"
      stop_tree "$peer_pid"; peer_pid=""; stop_demo
      return
    fi
  fi
  if [ -n "$dry_run" ]; then
    if [ "$peer" = cgi-fcgi ]; then
      dry_say "checks: $(shown python3 "$bench_dir/interop.py" cgi-fcgi "$backend_socket" GET "$GET_PATH") … and the same for POST, 5 MiB, statuses"
    else
      dry_say "checks: $(shown curl -sS --max-time "$MAX_TIME" "http://127.0.0.1:$port$GET_PATH"), POST 1 MiB, 5 MiB, statuses"
      show_load timeout -k 5 $((LOAD_LIMIT + 10)) python3 "$bench_dir/interop.py" load "$port" --clients "$CLIENTS" \
        --requests "$REQUESTS" --hang "$HANG_SECONDS" --limit "$LOAD_LIMIT"
    fi
    stop_tree "$peer_pid"; peer_pid=""; stop_demo
    return
  fi
  get=$(check_get)
  post=$(check_post)
  big=$(check_big)
  headers=$(check_headers)
  log "$peer: GET $get; POST $post; 5 MiB $big; headers/status $headers"

  local ended_before open_before peak=0 ended_after
  if [ "$peer" != cgi-fcgi ]; then
    ended_before=$(demo_connections_ended "$dir")
    open_before=$(open_backend_connections)
    echo 0 >"$dir/peak"
    touch "$dir/loading"
    sample_open "$dir/loading" "$dir/peak" &
    sampler_pid=$!
    run_load
    rm -f "$dir/loading"
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=""
    peak=$(cat "$dir/peak")
    stop_tree "$peer_pid"; peer_pid=""
    wait_backend_idle  # every connection ended: the demo app has logged each
    sleep 0.3
    ended_after=$(demo_connections_ended "$dir")
    conns="$((ended_after - ended_before - open_before)) (peak $peak open)"
    log "$peer: load ok/non-2xx/errors/hung $load_cell; backend connections $conns"
  fi
  stop_demo

  local notes=() dropped
  [ -n "$load_note" ] && notes+=("$load_note")
  dropped=$(grep -c 'FastCGI connection dropped' "$dir/demo.log" || true)
  [ "${dropped:-0}" -gt 0 ] && notes+=("demo app: $dropped connections dropped ($(grep -m1 'FastCGI connection dropped' "$dir/demo.log" | sed 's/.*error=//' | cut -c1-80))")
  grep -qE ' (WARN|ERROR) ' "$dir/demo.log" && notes+=("demo app warned: $(grep -m1 -E ' (WARN|ERROR) ' "$dir/demo.log" | cut -c1-120)")
  [ -s "$dir/curl.err" ] && notes+=("curl: $(sort "$dir/curl.err" | uniq -c | head -n2 | tr -s ' \n' ' ')")
  [ -s "$dir/remarks" ] && mapfile -t -O "${#notes[@]}" notes <"$dir/remarks"
  notes+=("$peer $(log_digest "$(peer_log "$peer")")")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$peer" "$get" "$post" "$big" "$headers" \
    "$load_cell" "$conns" "$(printf '%s\n' "${notes[@]}" | paste -sd '\t' | sed 's/\t/; /g' | tr '|' '/')" >>"$work/rows.md"
  sed "s/^/- $peer: /" "$dir/fails" >>"$work/notes.md"
}

# ------------------------------------------------------------------------------------------
# The run

work_tmp=$(mktemp -d /tmp/fcgate-interop-setup.XXXXXX)
trap 'rm -rf "$work_tmp"' EXIT
ensure_tools
bench_lock
port_free "$port" || die "port $port is in use (set PORT_BASE)"

make_work fcgate-interop
www=$work/www      # peers.sh's document root (HAProxy's fcgi-app docroot, nginx's root)
peer_pid="" backend_pid="" sampler_pid=""
cleanup() {
  set +e
  rm -rf "$work_tmp"
  [ -z "$dry_run" ] || return 0
  find "$work/runs" -name loading -delete 2>/dev/null
  stop_tree "$sampler_pid"
  stop_tree "$peer_pid"
  stop_demo
  kill_run "$work"  # anything left that names the work directory
  if [ -n "${KEEP_WORK:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

prepare_fcgate "$build"
if [ -z "$dry_run" ]; then
  mkdir -p "$www" "$work/runs"
  post_fnv=$(python3 "$bench_dir/interop.py" body "$work/post.bin" "$POST_SIZE" "$POST_SEED")
  big_sha256=$(python3 "$bench_dir/interop.py" pattern-sha256 "$BIG_SIZE")
  : >"$work/rows.md"
  : >"$work/notes.md"
fi

started_at=$SECONDS
for p in $PEERS; do run_peer "$p"; done
elapsed=$((SECONDS - started_at))
[ -z "$dry_run" ] || { echo; publish_result interop.md "" </dev/null; exit 0; }

version() {  # COMMAND...: its first line, or why not
  command -v "$1" >/dev/null || { echo "$1: not installed"; return; }
  "$@" 2>&1 | head -n1 | sed 's/ - a light.*//; s/ - https.*//; s/^Server version: //' || true
}
commit=$(commit_described)
# interop_headline: per peer, ok or the checks that failed, and the load's ok/non-2xx/errors/hung.
interop_headline() {
  awk -F ' [|] ' 'BEGIN {split("GET POST 5MiB headers", check, " ")}
    {sub(/^[|] /, "", $1); failed = ""
     for (i = 2; i <= 5; i++) if ($i !~ /^ok/) failed = failed (failed == "" ? "" : " ") check[i - 1]
     if ($2 ~ /skipped|did not start/) { gsub(/[*]/, "", $2); failed = $2 } else if (failed != "") failed = "not ok: " failed
     printf "%s%s %s, load %s", (NR > 1 ? "; " : ""), $1, (failed == "" ? "checks ok" : failed), $6}
    END {print " (ok/non-2xx/errors/hung)"}' "$work/rows.md"
}
{
  echo "# Interop: fcgate's demo FastCGI app behind every peer, $(date '+%Y-%m-%d %H:%M %Z')"
  echo
  echo "$(nproc) cores, $(uname -sr); the run took ${elapsed} s (bench/interop.sh)."
  echo "fcgate $commit; $(version nginx -v); $(version haproxy -v); $(version h2o --version);"
  echo "$(version lighttpd -v); $(version apache2 -v); libfcgi-bin (cgi-fcgi)" \
    "$(dpkg-query -W -f '${Version}' libfcgi-bin 2>/dev/null || echo 'not installed');"
  echo "$(version curl --version | cut -d' ' -f1-2); $(python3 --version)."
  echo
  echo "| peer | GET | POST 1 MiB | 5 MiB | headers/status | load ok/non-2xx/errors/hung | backend connections | notes |"
  echo "|---|---|---|---|---|---|---|---|"
  cat "$work/rows.md"
  echo
  echo "Backend: \`fcgate demo-app --listen unix:…/demo.sock\` (FCGI_MPXS_CONNS=1, FCGI_MAX_CONNS=256,"
  echo "FCGI_MAX_REQS=16384), a fresh one for every peer. Peers in app mode (everything to the backend),"
  echo "one at a time on 127.0.0.1:$port, $WORKERS workers/threads each, the connection cap"
  echo "$PHP_CHILDREN where peers.sh sets one:"
  echo
  for p in $PEERS; do echo "- $p: $(interop_note "$p")"; done
  echo
  echo "Checks (curl --max-time $MAX_TIME; cgi-fcgi through bench/interop.py): GET \`$GET_PATH\` must show"
  echo "that \`uri:\`; POST of $POST_SIZE random bytes (seed $POST_SEED) must show \`body bytes: $POST_SIZE\` and"
  echo "\`body fnv1a64: $post_fnv\`; \`?bytes=$BIG_SIZE\` must give exactly that many bytes with sha256"
  echo "$big_sha256; headers/status: X-Demo on the page and the bytes answer,"
  echo "\`?status=404\` gives 404, \`?status=503\` gives 503, status lines \`HTTP/1.x NNN SP [reason]\`."
  echo "Load: bench/interop.py load, $CLIENTS HTTP/1.1 keep-alive clients, $REQUESTS GETs of"
  echo "\`/interop/load?n=I\` in all, one at a time per connection; ok = 2xx carrying the page for"
  echo "its own request (else wrong); hung = no complete answer within ${HANG_SECONDS} s; a request whose"
  echo "reused connection the peer had closed is retried once on a new one (noted). Not h2load:"
  echo "nghttp2 1.52's h2load records no status for a status line without a reason phrase and"
  echo "counts each such answer as failed. Backend connections: accepted by the demo app during"
  echo "the load (its fcgi::server debug log, one line per connection ended, counted once the peer"
  echo "was stopped, minus those open before the load); peak: ss -x every 0.2 s."
  if [ -s "$work/notes.md" ]; then
    echo
    echo "Failed checks:"
    echo
    cat "$work/notes.md"
  fi
  if grep -q 'no SP after the code' "$work/notes.md"; then
    echo
    echo "A status line with no SP after the code: the demo app's \`Status:\` header has no reason phrase"
    echo "(\`Status: 200\`, as the cgi-fcgi row shows; RFC 3875 6.3.3 asks for \`Status: 200 OK\`) and the"
    echo "peer copied it into its status line as it was. Both ends of the pair: the app sends what CGI"
    echo "does not allow, the peer forwards it without the SP HTTP requires."
  fi
} | publish_result interop.md "$(interop_headline)"
