# shellcheck shell=bash disable=SC2034,SC2154 # a library: the scripts sourcing it set and read its variables
# The backends peers are measured against: php-fpm pools (every script's php-fpm config is
# written here), fcgate's demo FastCGI app, and bench/run's four backends: php-fpm on TCP, on a
# unix socket, or on TCP in a network namespace behind a veth pair with netem delay (the
# "remote" case), and the demo app. One backend runs at a time; peers come and go in front of it.
#
# start_backend sets: backend_pid, backend_kind (tcp|unix), backend_host, backend_port,
# backend_socket. fpm_args / fpm_start_args: extra write_fpm_conf / start_fpm arguments.

netns=fcgbench
veth_host=fcgb0
veth_ns=fcgb1
# A /30 used only between the two ends of the veth pair; nothing else is ever addressed.
veth_host_ip=10.231.76.1
veth_ns_ip=10.231.76.2
fpm_args=()
fpm_start_args=()

# find_fpm: sets fpm_bin, the newest /usr/sbin/php-fpm* (a placeholder in a dry run without it).
find_fpm() {
  fpm_bin=$(find /usr/sbin -maxdepth 1 -name 'php-fpm*' 2>/dev/null | sort | tail -n1)
  [ -n "$fpm_bin" ] || [ -z "${dry_run:-}" ] || fpm_bin=/usr/sbin/php-fpm
  [ -n "$fpm_bin" ] || die "php-fpm not found"
}

# write_fpm_conf FILE listen=ADDR [children=N] [pm=static|ondemand] [max_requests=N] [backlog=N]
#                [extra=LINES]: one pool, named after the work directory (its workers carry the
# name: kill_run finds them), its log and pid file beside FILE.
write_fpm_conf() {
  local file=$1 listen="" children=${PHP_CHILDREN:-8} pm=static max_requests=0 backlog=4096 extra=""
  shift
  set_args "$@"
  local idle=""
  [ "$pm" = ondemand ] && idle="pm.process_idle_timeout = 1s"
  write_config "$file" <<EOF
[global]
error_log = ${file%.conf}.log
pid = ${file%.conf}.pid
daemonize = no
[${work##*/}]
listen = $listen
listen.backlog = $backlog
; peers drop root for their workers (nginx: nobody, Apache: www-data)
listen.mode = 0666
pm = $pm
$idle
pm.max_children = $children
pm.max_requests = $max_requests
$extra
EOF
}

# start_fpm FILE [ini=no] [netns=NAME]: php-fpm in the foreground (-F) as root (-R) on FILE (an
# absolute path: SIGUSR2 makes the master exec itself again), without php.ini with ini=no (-n),
# in network namespace NAME if given. Output to FILE's .out; sets fpm_pid.
start_fpm() {
  local file=$1 ini=yes netns=""
  shift
  set_args "$@"
  local command=("$fpm_bin" -F -R)
  [ "$ini" = no ] && command+=(-n)
  command+=(-y "$file")
  [ -z "$netns" ] || command=(ip netns exec "$netns" "${command[@]}")
  spawn "${file%.conf}.out" "${command[@]}"
  fpm_pid=$spawned_pid
}

# start_local_fpm PORT: php-fpm with the default pool (PHP_CHILDREN static children) on
# 127.0.0.1:PORT, its config and log in $work, waited for until it listens; sets fpm_pid.
start_local_fpm() {
  find_fpm
  write_fpm_conf "$work/php-fpm.conf" listen="127.0.0.1:$1"
  start_fpm "$work/php-fpm.conf"
  wait_port 127.0.0.1 "$1" || die "php-fpm did not start (see $work/php-fpm.out)"
}

# start_demo LISTEN LOG [ENV=VALUE...]: fcgate's demo FastCGI app on LISTEN (HOST:PORT or
# unix:PATH); sets demo_pid. A unix socket is made writable by peers' unprivileged workers.
start_demo() {
  local listen=$1 log_file=$2
  shift 2
  # shellcheck disable=SC2016 # expanded by sh -c
  spawn "$log_file" env "$@" sh -c 'umask 000; exec "$0" demo-app --listen "$1"' "$fcgate_bin" "$listen"
  demo_pid=$spawned_pid
}

# start_backend KIND: php-tcp | php-unix | php-remote | demo (bench/run's backends)
start_backend() {
  backend_socket=""
  backend_host=127.0.0.1
  backend_port=$fpm_port
  backend_kind=tcp
  case $1 in
    php-tcp)
      write_fpm_conf "$work/php-fpm.conf" listen="127.0.0.1:$fpm_port" "${fpm_args[@]}"
      start_fpm "$work/php-fpm.conf" "${fpm_start_args[@]}"
      backend_pid=$fpm_pid
      ;;
    php-unix)
      backend_kind=unix
      backend_socket="$work/php-fpm.sock"
      write_fpm_conf "$work/php-fpm.conf" listen="$backend_socket" "${fpm_args[@]}"
      start_fpm "$work/php-fpm.conf" "${fpm_start_args[@]}"
      backend_pid=$fpm_pid
      ;;
    php-remote)
      create_netns
      backend_host=$veth_ns_ip
      write_fpm_conf "$work/php-fpm.conf" listen="$veth_ns_ip:$fpm_port" "${fpm_args[@]}"
      start_fpm "$work/php-fpm.conf" netns="$netns" "${fpm_start_args[@]}"
      backend_pid=$fpm_pid
      ;;
    demo)
      backend_port=$demo_port
      start_demo "127.0.0.1:$demo_port" "$work/demo.out"
      backend_pid=$demo_pid
      ;;
    *) die "unknown backend $1" ;;
  esac
  if [ "$backend_kind" = unix ]; then
    wait_socket "$backend_socket" || die "php-fpm did not create $backend_socket (see $work/php-fpm.log)"
  else
    wait_port "$backend_host" "$backend_port" || die "backend $1 not listening on $backend_host:$backend_port"
  fi
  [ -n "${dry_run:-}" ] || log "backend $1 up (pid $backend_pid)"
}

stop_backend() {
  stop_tree "${backend_pid:-}"
  backend_pid=""
  delete_netns
}

# backend_address STYLE: the backend as each peer's config spells it.
#   plain: 127.0.0.1:9190 | /path.sock      prefixed: 127.0.0.1:9190 | unix:/path.sock
backend_address() {
  if [ "$backend_kind" = unix ]; then
    case $1 in
      plain) echo "$backend_socket" ;;
      prefixed) echo "unix:$backend_socket" ;;
    esac
  else
    echo "$backend_host:$backend_port"
  fi
}

# wait_backend_idle: after a peer stops, until every connection to the backend is closed on
# both ends (bounded), so the next peer finds every php-fpm worker free and its TIME_WAIT
# snapshot already holds this peer's sockets.
wait_backend_idle() {
  [ -z "${dry_run:-}" ] || return 0
  local open
  for _ in $(seq 100); do
    open=$(closing_backend_connections)
    [ "${open:-0}" -eq 0 ] && return 0
    sleep 0.1
  done
  log "warning: $open connections to the backend still not closed 10 s after the peer stopped"
}

# open_backend_connections: established connections to the backend, counted at the backend end.
open_backend_connections() {
  if [ "$backend_kind" = unix ]; then
    ss -xH state established 2>/dev/null | awk -v p="$backend_socket" '$4 == p' | wc -l
  elif [ "$backend_host" = "$veth_ns_ip" ]; then
    ip netns exec "$netns" ss -tnH state established "( sport = :$backend_port )" | wc -l
  else
    ss -tnH state established "( sport = :$backend_port )" | wc -l
  fi
}

# closing_backend_connections: backend connections in any state but TIME_WAIT, either end.
closing_backend_connections() {
  if [ "$backend_kind" = unix ]; then
    open_backend_connections
    return
  fi
  {
    ss -tanH state connected exclude time-wait "( dport = :$backend_port or sport = :$backend_port )"
    if [ "$backend_host" = "$veth_ns_ip" ]; then
      ip netns exec "$netns" ss -tanH state connected exclude time-wait "( sport = :$backend_port )"
    fi
  } 2>/dev/null | wc -l
}

create_netns() {
  delete_netns
  act ip netns add "$netns"
  act ip link add "$veth_host" type veth peer name "$veth_ns"
  act ip link set "$veth_ns" netns "$netns"
  act ip addr add "$veth_host_ip/30" dev "$veth_host"
  act ip -n "$netns" addr add "$veth_ns_ip/30" dev "$veth_ns"
  act ip link set "$veth_host" up
  act ip -n "$netns" link set "$veth_ns" up
  act ip -n "$netns" link set lo up
  # 1 ms each way: a connect costs one more round trip, as it does between two hosts. (A dry
  # run shows netem; without sch_netem the run uses start_nfq_delay instead.)
  if act tc qdisc add dev "$veth_host" root netem delay 1ms 2>/dev/null; then
    act ip netns exec "$netns" tc qdisc add dev "$veth_ns" root netem delay 1ms
    delay_method="tc netem delay 1ms on both ends of the veth pair"
  else
    start_nfq_delay
  fi
}

# start_nfq_delay: for kernels built without sch_netem. iptables in the namespace sends every
# packet crossing the veth (both directions) to an NFQUEUE that bench/nfq-delay.c holds 1 ms.
start_nfq_delay() {
  local queue=7 binary="$work/bin/nfq-delay"
  ensure_nfq_delay_tools
  [ -x "$binary" ] || cc -O2 -Wall -o "$binary" "$bench_dir/nfq-delay.c" -lnetfilter_queue -lnfnetlink ||
    die "cannot build bench/nfq-delay.c"
  ip netns exec "$netns" "$binary" "$queue" 1000 >>"$work/nfq-delay.out" 2>&1 &
  delayer_pid=$!
  for _ in $(seq 50); do  # bound to the queue yet? (until then packets would pass undelayed)
    # shellcheck disable=SC2016 # awk
    ip netns exec "$netns" awk -v q="$queue" '$1 == q {found = 1} END {exit !found}' \
      /proc/net/netfilter/nfnetlink_queue 2>/dev/null && break
    sleep 0.1
  done
  ip netns exec "$netns" iptables -A INPUT -i "$veth_ns" -j NFQUEUE --queue-num "$queue" --queue-bypass
  ip netns exec "$netns" iptables -A OUTPUT -o "$veth_ns" -j NFQUEUE --queue-num "$queue" --queue-bypass
  delay_method="no sch_netem in this kernel: NFQUEUE + bench/nfq-delay.c, 1 ms each way in the namespace"
}

# delay_alive: false if the NFQUEUE delayer died (packets would then pass undelayed).
delay_alive() {
  [ -z "${delayer_pid:-}" ] || kill -0 "$delayer_pid" 2>/dev/null
}

delete_netns() {
  [ -z "${dry_run:-}" ] || return 0
  if [ -n "${delayer_pid:-}" ]; then stop_tree "$delayer_pid"; delayer_pid=""; fi
  ip link del "$veth_host" 2>/dev/null || true
  ip netns del "$netns" 2>/dev/null || true
}
