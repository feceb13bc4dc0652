# The backends every peer is measured against: one php-fpm pool (TCP, unix socket, or TCP in a
# network namespace behind a veth pair with netem delay: the "remote" case) and fcgate's demo
# FastCGI app. One backend runs at a time; peers come and go in front of it.
#
# Sets: backend_pid, backend_kind (tcp|unix), backend_host, backend_port, backend_socket.

netns=fcgbench
veth_host=fcgb0
veth_ns=fcgb1
# A /30 used only between the two ends of the veth pair; nothing else is ever addressed.
veth_host_ip=10.231.76.1
veth_ns_ip=10.231.76.2

write_fpm_conf() {  # write_fpm_conf LISTEN
  cat >"$work/php-fpm.conf" <<EOF
[global]
error_log = $work/php-fpm.log
pid = $work/php-fpm.pid
daemonize = no
[${work##*/}]
listen = $1
listen.backlog = 4096
; peers drop root for their workers (nginx: nobody, Apache: www-data)
listen.mode = 0666
pm = static
pm.max_children = $PHP_CHILDREN
pm.max_requests = 0
EOF
}

# start_backend KIND: php-tcp | php-unix | php-remote | demo
start_backend() {
  backend_socket=""
  backend_host=127.0.0.1
  backend_port=$fpm_port
  backend_kind=tcp
  case $1 in
    php-tcp)
      write_fpm_conf "127.0.0.1:$fpm_port"
      "$fpm_bin" -F -R -y "$work/php-fpm.conf" >>"$work/php-fpm.out" 2>&1 &
      ;;
    php-unix)
      backend_kind=unix
      backend_socket="$work/php-fpm.sock"
      write_fpm_conf "$backend_socket"
      "$fpm_bin" -F -R -y "$work/php-fpm.conf" >>"$work/php-fpm.out" 2>&1 &
      ;;
    php-remote)
      create_netns
      backend_host=$veth_ns_ip
      write_fpm_conf "$veth_ns_ip:$fpm_port"
      ip netns exec "$netns" "$fpm_bin" -F -R -y "$work/php-fpm.conf" >>"$work/php-fpm.out" 2>&1 &
      ;;
    demo)
      backend_port=$demo_port
      "$work/bin/fcgate" demo-app --listen "127.0.0.1:$demo_port" >>"$work/demo.out" 2>&1 &
      ;;
    *) die "unknown backend $1" ;;
  esac
  backend_pid=$!
  if [ "$backend_kind" = unix ]; then
    wait_socket "$backend_socket" || die "php-fpm did not create $backend_socket (see $work/php-fpm.log)"
  else
    wait_port "$backend_host" "$backend_port" || die "backend $1 not listening on $backend_host:$backend_port"
  fi
  log "backend $1 up (pid $backend_pid)"
}

stop_backend() {
  [ -n "${backend_pid:-}" ] || return 0
  stop_tree "$backend_pid"
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
  ip netns add "$netns"
  ip link add "$veth_host" type veth peer name "$veth_ns"
  ip link set "$veth_ns" netns "$netns"
  ip addr add "$veth_host_ip/30" dev "$veth_host"
  ip -n "$netns" addr add "$veth_ns_ip/30" dev "$veth_ns"
  ip link set "$veth_host" up
  ip -n "$netns" link set "$veth_ns" up
  ip -n "$netns" link set lo up
  # 1 ms each way: a connect costs one more round trip, as it does between two hosts.
  if tc qdisc add dev "$veth_host" root netem delay 1ms 2>/dev/null; then
    ip netns exec "$netns" tc qdisc add dev "$veth_ns" root netem delay 1ms
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
  if [ -n "${delayer_pid:-}" ]; then stop_tree "$delayer_pid"; delayer_pid=""; fi
  ip link del "$veth_host" 2>/dev/null || true
  ip netns del "$netns" 2>/dev/null || true
}
