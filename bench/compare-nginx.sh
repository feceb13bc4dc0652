#!/usr/bin/env bash
# fcgate vs nginx (fastcgi_keep_conn on + upstream keepalive) on one php-fpm pool, side by side.
#
# Starts php-fpm (TCP 127.0.0.1:9101, pm=static, 5 children) with a hello-world page, nginx and
# fcgate on loopback ports, runs the same bounded wrk load against each in turn (interleaved,
# ROUNDS times), and prints requests/s, p50, p99, errors and the backend connections each opened
# (SYNs to the php-fpm port, counted by an nftables rule the script adds and removes).
# Needs root (nft), Debian packages php-fpm nginx-light wrk nftables (installed if missing).
#
#   bench/compare-nginx.sh [ROUNDS=3] [DURATION=10s] [CONNECTIONS=32]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
duration=${2:-10s}
connections=${3:-32}
fpm_port=9101
nginx_port=8181
fcgate_port=8182

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v nft >/dev/null || need+=(nftables)
ls /usr/sbin/php-fpm* >/dev/null 2>&1 || need+=(php-fpm)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
fpm_bin=$(ls /usr/sbin/php-fpm* | head -n1)

cargo build --release -p fcgate >/dev/null 2>&1 || cargo build --release -p fcgate
work=$(mktemp -d)
pids=()
peer_pid=""
cleanup() {
  [ -n "$peer_pid" ] && kill "$peer_pid" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  nft delete table inet fcgate_bench 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/www"
echo '<?php echo "Hello, world!\n";' > "$work/www/hello.php"

cat > "$work/php-fpm.conf" <<EOF
[global]
error_log = $work/php-fpm.log
daemonize = no
[bench]
listen = 127.0.0.1:$fpm_port
listen.backlog = 511
pm = static
pm.max_children = 5
EOF
"$fpm_bin" -F -R -n -y "$work/php-fpm.conf" &
pids+=($!)

# nginx done right per the how-to: 2 workers x keepalive 2 = 4 <= pm.max_children.
cat > "$work/nginx.conf" <<EOF
worker_processes 2;
error_log $work/nginx-error.log;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream php { server 127.0.0.1:$fpm_port; keepalive 2; }
  server {
    listen 127.0.0.1:$nginx_port;
    root $work/www;
    location ~ \.php$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_keep_conn on;
      fastcgi_pass php;
    }
  }
}
EOF
# Each peer runs alone: two gateways holding persistent connections to the same 5 workers would
# pin them for each other (the very hang fcgate exists to prevent) and measure nothing useful.
start_peer() {
  case $1 in
    nginx-keepalive) nginx -c "$work/nginx.conf" -g 'daemon off;' & ;;
    fcgate) RUST_LOG=warn ./target/release/fcgate --listen "127.0.0.1:$fcgate_port" --root "$work/www" \
              --upstream "127.0.0.1:$fpm_port" --max-conns 4 >/dev/null & ;;
  esac
  peer_pid=$!
  wait_port "$2"
}
stop_peer() {
  kill "$peer_pid" 2>/dev/null || true
  wait "$peer_pid" 2>/dev/null || true
}
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "nothing listening on port $1" >&2; exit 1
}
wait_port $fpm_port

nft delete table inet fcgate_bench 2>/dev/null || true  # left over from an interrupted run
nft add table inet fcgate_bench
nft add chain inet fcgate_bench out '{ type filter hook output priority 0; }'
nft add rule inet fcgate_bench out tcp dport $fpm_port tcp flags '&' '(syn|ack)' == syn counter

syns() { nft list chain inet fcgate_bench out | sed -n 's/.*packets \([0-9]*\).*/\1/p' | awk '{n+=$1} END {print n+0}'; }
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}'; }

declare -A results
for round in $(seq "$rounds"); do
  for peer in nginx-keepalive fcgate; do
    port=$nginx_port; [ "$peer" = fcgate ] && port=$fcgate_port
    start_peer "$peer" "$port"
    syns_before=$(syns)
    out=$(wrk -t2 -c"$connections" -d"$duration" --latency "http://127.0.0.1:$port/hello.php")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
    p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
    errors=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {n+=1} END {print n+0}' <<<"$out")
    opened=$(( $(syns) - syns_before ))
    stop_peer
    results[$peer]+="$rps $p50 $p99 $errors $opened"$'\n'
    echo "round $round $peer: $rps req/s, p50 ${p50}ms, p99 ${p99}ms, errors $errors, backend connections $opened" >&2
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "| peer | requests/s (median) | p50 ms | p99 ms | errors | backend connections per run | spread req/s |"
echo "|---|---|---|---|---|---|---|"
for peer in nginx-keepalive fcgate; do
  rows=${results[$peer]}
  col() { awk -v c="$1" 'NF {print $c}' <<<"$rows"; }
  echo "| $peer | $(col 1 | median) | $(col 2 | median) | $(col 3 | median) | $(col 4 | median) | $(col 5 | median) | $(col 1 | sort -n | head -n1)–$(col 1 | sort -n | tail -n1) |"
done
