# shellcheck shell=bash
# Processes for bench/faults.sh: the php-fpm pool each scenario needs, the two peers in front of
# it (nginx with upstream keepalive + fastcgi_keep_conn, fcgate with its defaults), and the
# signals the scenarios deliver. Only processes started here are ever signalled, by pid.
#
# Expects: work, fpm_bin, fpm_port, nginx_port, fcgate_port, fcgate_bin, www.
# Sets: fpm_pid, peer_pid, killed_at.

fpm_pid=""
peer_pid=""

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# listening PORT: true if something listens on 127.0.0.1:PORT. Looked up, not connected to:
# a probe connection would take a php-fpm worker for nothing.
listening() { [ -n "$(ss -tlnH "( sport = :$1 )" 2>/dev/null)" ]; }

wait_listening() {  # wait_listening PORT: bounded at 10 s
  for _ in $(seq 200); do listening "$1" && return 0; sleep 0.05; done
  return 1
}

# children PID: the direct children of PID (php-fpm's workers, nginx's workers).
children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

# write_fpm_conf POOL: the pool settings of one scenario.
#   static: pm static 4 | recycling: static 4, pm.max_requests 10 | ondemand: 4, idle 1 s
write_fpm_conf() {
  local pm
  case $1 in
    static) pm=$'pm = static\npm.max_requests = 0' ;;
    recycling) pm=$'pm = static\npm.max_requests = 10' ;;
    ondemand) pm=$'pm = ondemand\npm.process_idle_timeout = 1s\npm.max_requests = 0' ;;
    *) die "unknown pool $1" ;;
  esac
  cat >"$work/php-fpm.conf" <<EOF
[global]
error_log = $work/php-fpm.log
daemonize = no
[faults]
listen = 127.0.0.1:$fpm_port
listen.backlog = 511
pm.max_children = 4
$pm
env[FAULTS_EXECUTIONS] = $work/executions
EOF
}

# start_fpm: php-fpm in the foreground (-F) as root (-R) without php.ini (-n), same address
# every time. An absolute config path: SIGUSR2 makes the master exec itself again.
start_fpm() {
  listening "$fpm_port" && die "port $fpm_port taken before php-fpm started; set PORT_BASE"
  "$fpm_bin" -F -R -n -y "$work/php-fpm.conf" >>"$work/php-fpm.out" 2>&1 &
  fpm_pid=$!
  wait_listening "$fpm_port" || die "php-fpm not listening on $fpm_port (see $work/php-fpm.log)"
  kill -0 "$fpm_pid" 2>/dev/null || die "php-fpm exited at start (see $work/php-fpm.log)"
}

# stop_fpm: SIGTERM (php-fpm's fast shutdown), then SIGKILL whatever is left after 3 s.
stop_fpm() {
  [ -n "$fpm_pid" ] || return 0
  local workers
  workers=$(children "$fpm_pid")
  kill -TERM "$fpm_pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$fpm_pid" 2>/dev/null || break; sleep 0.1; done
  # shellcheck disable=SC2086
  kill -KILL "$fpm_pid" $workers 2>/dev/null || true
  wait "$fpm_pid" 2>/dev/null || true
  fpm_pid=""
}

# kill_fpm_hard: SIGKILL the master and its workers at once, as a crash or an OOM kill of the
# whole service would. Killing only the master would leave the workers serving the old socket.
# Sets killed_at (epoch seconds, client.py's clock) after the slow part, right before the signal.
kill_fpm_hard() {
  local workers
  workers=$(children "$fpm_pid")
  killed_at=$EPOCHREALTIME
  # shellcheck disable=SC2086
  kill -KILL "$fpm_pid" $workers 2>/dev/null || true
  wait "$fpm_pid" 2>/dev/null || true
  fpm_pid=""
}

reload_fpm() { kill -USR2 "$fpm_pid"; }

write_nginx_conf() {
  # keepalive = pm.max_children / worker_processes: 2 workers x 2 = 4 connections at most, so
  # neither worker can pin a php-fpm child the other is waiting for.
  cat >"$work/nginx.conf" <<EOF
worker_processes 2;
error_log $work/nginx-error.log;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream php { server 127.0.0.1:$fpm_port; keepalive 2; }
  server {
    listen 127.0.0.1:$nginx_port;
    root $www;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_keep_conn on;
      fastcgi_pass php;
    }
  }
}
EOF
}

# start_peer PEER: nginx (keepalive) or fcgate (defaults: --upstream and --root only, plus
# FCGATE_ARGS if set, to try a setting). The port is checked free first and the peer alive
# after: a port taken meanwhile by another bench would send the load to someone else's peer.
start_peer() {
  listening "$(peer_port "$1")" && die "port $(peer_port "$1") taken before $1 started; set PORT_BASE"
  case $1 in
    nginx)
      nginx -c "$work/nginx.conf" -g 'daemon off;' 2>>"$work/nginx-error.log" &
      peer_pid=$!
      wait_listening "$nginx_port" || die "nginx not listening (see $work/nginx-error.log)"
      ;;
    fcgate)
      # shellcheck disable=SC2086 # FCGATE_ARGS is a list of flags
      NO_COLOR=1 RUST_LOG=info "$fcgate_bin" --listen "127.0.0.1:$fcgate_port" --root "$www" \
        --upstream "127.0.0.1:$fpm_port" ${FCGATE_ARGS:-} >>"$work/fcgate.log" 2>&1 &
      peer_pid=$!
      wait_listening "$fcgate_port" || die "fcgate not listening (see $work/fcgate.log)"
      ;;
    *) die "unknown peer $1" ;;
  esac
  kill -0 "$peer_pid" 2>/dev/null || die "$1 exited at start (see $work/$1*.log)"
}

stop_peer() {
  [ -n "$peer_pid" ] || return 0
  local workers
  workers=$(children "$peer_pid")
  kill -TERM "$peer_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$peer_pid" 2>/dev/null || break; sleep 0.1; done
  # shellcheck disable=SC2086
  kill -KILL "$peer_pid" $workers 2>/dev/null || true
  wait "$peer_pid" 2>/dev/null || true
  peer_pid=""
}

peer_port() { if [ "$1" = nginx ]; then echo "$nginx_port"; else echo "$fcgate_port"; fi; }
