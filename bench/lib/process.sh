# shellcheck shell=bash disable=SC2034,SC2154 # a library: the scripts sourcing it set and read its variables
# Processes and ports for every script in bench/: start in the background, wait for a port, stop
# a process tree, and find everything a run started. Every process a run starts carries the
# run's work directory's unique name in its command line, which is how cleanup finds them (and
# only them), even after a run that was killed before its trap could fire. In a dry run
# (harness.sh) spawn prints the command and the waits succeed at once.

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# spawn LOG COMMAND...: COMMAND in the background, stdout and stderr appended to LOG; sets
# spawned_pid (empty in a dry run, where the command is printed instead).
spawn() {
  local log_file=$1
  shift
  spawned_pid=""
  if [ -n "${dry_run:-}" ]; then
    dry_say "start: $(shown "$@")  >> $log_file"
    return 0
  fi
  "$@" >>"$log_file" 2>&1 9>&- </dev/null &
  spawned_pid=$!
}

# wait_port HOST PORT [TENTHS]: true once something accepts on HOST:PORT, within TENTHS/10 s.
wait_port() {
  local host=$1 port=$2 tries=${3:-150}
  [ -z "${dry_run:-}" ] || return 0
  for _ in $(seq "$tries"); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# wait_socket PATH [TENTHS]: true once a unix socket exists at PATH.
wait_socket() {
  local path=$1 tries=${2:-150}
  [ -z "${dry_run:-}" ] || return 0
  for _ in $(seq "$tries"); do
    [ -S "$path" ] && return 0
    sleep 0.1
  done
  return 1
}

# port_free PORT: true if nothing listens on TCP PORT (any address). Looked up, not connected
# to: a probe connection would take a php-fpm worker for nothing.
port_free() {
  [ -n "${dry_run:-}" ] || [ -z "$(ss -tlnH "( sport = :$1 )" 2>/dev/null)" ]
}

# wait_listening PORT [TENTHS]: true once something listens on TCP PORT (looked up, as above).
wait_listening() {
  [ -z "${dry_run:-}" ] || return 0
  for _ in $(seq "${2:-100}"); do port_free "$1" || return 0; sleep 0.1; done
  return 1
}

# children PID: the direct children of PID (php-fpm's workers, nginx's workers).
children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

# descendants PID: PID and every process below it, one per line.
descendants() {
  local frontier=("$1") next pid
  echo "$1"
  for _ in 1 2 3 4; do  # gateways here are at most master -> workers deep; bounded anyway
    next=()
    for pid in "${frontier[@]}"; do
      while read -r child; do
        [ -n "$child" ] && next+=("$child") && echo "$child"
      done < <(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ')
    done
    [ ${#next[@]} -eq 0 ] && return 0
    frontier=("${next[@]}")
  done
}

# stop_tree PID: SIGTERM the process and its children, SIGKILL whatever is left after 3 s (h2o,
# for one, waits out its idle FastCGI keep-alive connections before it exits on SIGTERM).
stop_tree() {
  local pid=${1:-} tree
  [ -n "$pid" ] || return 0
  tree=$(descendants "$pid" | tr '\n' ' ')
  # shellcheck disable=SC2086
  kill -TERM $tree 2>/dev/null || true
  for _ in $(seq 30); do
    local alive=0
    for p in $tree; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $tree 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# pids_of_run DIR: processes whose command line names DIR's unique basename (everything this
# run started: php-fpm's workers carry it as their pool name).
pids_of_run() {
  local tag=${1##*/} proc args
  for proc in /proc/[0-9]*; do
    # Read with a builtin: a grep started here would carry DIR in its own command line.
    mapfile -d '' args <"$proc/cmdline" 2>/dev/null || continue
    [[ "${args[*]}" == *"$tag"* ]] && echo "${proc#/proc/}"
  done
  return 0
}

# kill_run DIR: ends every process of a run, politely first.
kill_run() {
  local dir=$1 pids
  pids=$(pids_of_run "$dir" | tr '\n' ' ')
  [ -n "${pids// /}" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 50); do
    pids=$(pids_of_run "$dir" | tr '\n' ' ')
    [ -n "${pids// /}" ] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

# stop_gateway_run: the EXIT trap of a script that runs one gateway ($gateway_pid) in front of
# php-fpm ($fpm_pid) in $work: stops both, kills whatever else of the run is left, removes $work.
stop_gateway_run() {
  set +e
  [ -z "${dry_run:-}" ] || return 0
  stop_tree "$gateway_pid"
  stop_tree "$fpm_pid"
  kill_run "$work"
  rm -rf "$work"
}
