#!/usr/bin/env bash
# bench/scale-out.sh: three fcgate instances in front of two "backend hosts", on one machine.
# Each backend host is a network namespace behind a veth pair with 1 ms each way (tc netem, or
# bench/nfq-delay.c where the kernel has no sch_netem), running php-fpm with 4 static workers
# on TCP port 9000. The instances (in the root namespace, on ports PORT, +1, +2) find the hosts
# by DNS: dnsmasq on loopback answers php.scale.test with both addresses from a hosts file, and
# each instance asks it again every second (`resolver`, `resolve_interval`); each is told the
# pool's size (max_conns = 4) and its status page (php_fpm_status_path, pm.status_path), where
# it sees other clients waiting in a remote pool's listen queue. Scenarios, each ROUNDS times, SECONDS_EACH s of load:
#   all        wrk -c16 on all three at once
#   bursts     one instance after the other, SECONDS_EACH / 2 s each, the next starting as the
#              previous stops; its first request timed alone with curl
#   restart    all three loaded; the second instance is killed halfway and started again
#   dns        all three loaded; halfway, host b leaves the hosts file (dnsmasq re-reads it)
# Per instance: requests, its share, wrk's p99 and timeouts, non-2xx answers; per host: the
# backend connections open at the end of the load and (dns) how long host b kept any.
# Prints a markdown table (medians over the rounds, and the range) and writes it to
# bench/results/scale-out.md (replacing the previous run's) and a row to
# bench/results/HISTORY.md. Needs root (namespaces); installs wrk, curl, dnsmasq-base, iproute2
# if missing. Run it on a quiet machine.
#
#   bench/scale-out.sh [--no-build] [--dry-run]     # ROUNDS=3 SECONDS_EACH=6 by default
#
# --dry-run prints what would be installed, written, started and run, and does none of it.
# Environment: ROUNDS, SECONDS_EACH, PORT (19800), DNS_PORT (19853), LOAD_MAX and LOAD_WAIT
# (wait until the load average is below LOAD_MAX, at most LOAD_WAIT s).
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-6}
PORT=${PORT:-19800}
DNS_PORT=${DNS_PORT:-19853}
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-120}
NAME=php.scale.test
build=1

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # find_fpm, write_fpm_conf, start_fpm, create_netns
source "$bench_dir/lib/peers.sh"     # write_fcgate_toml, start_peer_process

while [ $# -gt 0 ]; do
  common_arg "$1"
  shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
[[ $SECONDS_EACH =~ ^[4-9]$|^[1-9][0-9]+$ ]] || die "SECONDS_EACH must be at least 4"
[ -n "$dry_run" ] || [ "$(id -u)" = 0 ] || die "network namespaces need root"

ensure_packages wrk curl dnsmasq ip ss
bench_lock
find_fpm
make_work fcgate-scale-out
hosts=(a b)
declare -A host_ip=([a]=10.231.77.2 [b]=10.231.78.2) gateway_ip=([a]=10.231.77.1 [b]=10.231.78.1)
declare -A fpm_of=() delayer_of=()
instance_pids=("" "" "")
dns_pid=""
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  local pid host
  for pid in "${instance_pids[@]}" "$dns_pid" "${fpm_of[@]}"; do
    stop_tree "$pid"
  done
  for host in "${hosts[@]}"; do
    use_host "$host"
    delayer_pid=${delayer_of[$host]:-}
    delete_netns
  done
  kill_run "$work"
  rm -rf "$work"
}
trap cleanup EXIT
prepare_fcgate "$build"
www="$work/www"
[ -n "$dry_run" ] || { cp -r "$bench_dir/www" "$www"; chmod -R a+rX "$www"; }

# backend_host HOST: namespace fcgso-HOST behind veth fso-HOST0/1 with 1 ms each way (bench/run's
# create_netns, on HOST's names and addresses), and php-fpm on HOST's address, port 9000.
backend_host() {
  use_host "$1"
  delayer_pid=""
  create_netns
  delayer_of[$1]=${delayer_pid:-}
  write_fpm_conf "$work/fpm-$1.conf" listen="${host_ip[$1]}:9000" children=4 \
    extra="pm.status_path = /fpm-status"
  start_fpm "$work/fpm-$1.conf" netns="$netns"
  fpm_of[$1]=${fpm_pid:-}
}

# use_host HOST: points backends.sh's namespace variables at HOST's.
use_host() {
  netns=fcgso-$1 veth_host=fso-${1}0 veth_ns=fso-${1}1
  veth_host_ip=${gateway_ip[$1]} veth_ns_ip=${host_ip[$1]}
}

# name_hosts HOST...: the hosts file dnsmasq answers php.scale.test from; re-read on SIGHUP.
name_hosts() {
  local host
  for host in "$@"; do echo "${host_ip[$host]} $NAME"; done | write_config "$work/hosts"
  [ -n "$dry_run" ] || chmod 644 "$work/hosts"
  [ -z "$dns_pid" ] || act kill -HUP "$dns_pid"
}

for host in "${hosts[@]}"; do backend_host "$host"; done
name_hosts a b
spawn "$work/dnsmasq.log" "$(command -v dnsmasq || echo /usr/sbin/dnsmasq)" --keep-in-foreground \
  --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1 --port="$DNS_PORT" \
  --addn-hosts="$work/hosts" --local=/scale.test/ --local-ttl=1 --pid-file= --log-facility=-
dns_pid=$spawned_pid
if [ -z "$dry_run" ]; then
  for host in "${hosts[@]}"; do
    wait_port "${host_ip[$host]}" 9000 || die "php-fpm on host $host did not start (see $work/fpm-$host.log)"
  done
fi
wait_quiet "$LOAD_MAX" "$LOAD_WAIT"

# start_instance I: fcgate number I (0..2) on PORT + I.
start_instance() {
  local i=$1 dir="$work/instance-$1"
  [ -n "$dry_run" ] || mkdir -p "$dir"
  write_fcgate_toml "$dir/fcgate.toml" listen="127.0.0.1:$((PORT + i))" upstream="$NAME:9000" \
    root="$www" max_conns=4 access_log=off \
    upstream_extra="php_fpm_status_path = \"/fpm-status\"
resolver = [\"127.0.0.1:$DNS_PORT\"]
resolve_interval = \"1s\"
queue_timeout = \"5s\""
  start_peer_process fcgate "$dir" "$((PORT + i))"
  instance_pids[i]=$peer_pid
  [ -n "$dry_run" ] || wait_port 127.0.0.1 "$((PORT + i))" || die "fcgate $i did not start (see $dir/out.log)"
}
stop_instance() { stop_tree "${instance_pids[$1]}"; instance_pids[$1]=""; }

url() { echo "http://127.0.0.1:$((PORT + $1))/hello.php"; }
load() { wrk -t1 -c16 --latency -d"$2s" "$(url "$1")"; }
# backend_connections HOST: established connections to php-fpm on HOST.
backend_connections() {
  ip netns exec "fcgso-$1" ss -tnH state established "( sport = :9000 )" 2>/dev/null | wc -l
}
# wrk_figures FILE: "requests p99_ms timeouts non2xx" from wrk --latency output.
wrk_figures() {
  awk 'function ms(v) {if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000}
       /requests in/ {r = $1}
       /^ +99%/ {p = ms($2)}
       /timeout/ {t = $NF}
       /Non-2xx/ {n = $NF}
       END {printf "%s %.1f %s %s\n", r, p, t + 0, n + 0}' "$1"
}
# record SCENARIO I FILE [FIRST_MS]: a line "SCENARIO I requests p99 timeouts non2xx first_ms".
record() {
  printf '%s %s %s %s\n' "$1" "$2" "$(wrk_figures "$3")" "${4:--}" >>"$work/figures"
}
# first_request I: ms for one request to instance I, alone.
first_request() {
  local seconds
  seconds=$(curl -s -o /dev/null --max-time 10 -w '%{time_total}' "$(url "$1")" || echo 10)
  awk -v s="$seconds" 'BEGIN {printf "%.1f", s * 1000}'
}
# hosts_record SCENARIO: a line "SCENARIO hosts a_connections b_connections b_drained_s".
hosts_record() {
  printf '%s hosts %s %s %s\n' "$1" "$(backend_connections a)" "$(backend_connections b)" \
    "${2:--}" >>"$work/figures"
}

round() {
  local scenario=$1 n=$2 dir="$work/$1-$2" i pids=()
  for i in 0 1 2; do start_instance "$i"; done
  if [ -n "$dry_run" ]; then
    show_load wrk -t1 -c16 --latency -d"${SECONDS_EACH}s" "$(url 0)"
    dry_say "load: the same on $(url 1) and $(url 2), by scenario"
  else
    mkdir -p "$dir"
    local half=$((SECONDS_EACH / 2)) drained=-
    case $scenario in
      all)
        for i in 0 1 2; do load "$i" "$SECONDS_EACH" >"$dir/$i" 2>&1 & pids+=($!); done
        sleep $((SECONDS_EACH - 1)); hosts_record "$scenario"
        wait "${pids[@]}"
        for i in 0 1 2; do record "$scenario" "$i" "$dir/$i"; done ;;
      bursts)
        for i in 0 1 2; do
          local first
          first=$(first_request "$i")
          load "$i" "$half" >"$dir/$i" 2>&1
          record "$scenario" "$i" "$dir/$i" "$first"
        done
        hosts_record "$scenario" ;;
      restart)
        for i in 0 2; do load "$i" "$SECONDS_EACH" >"$dir/$i" 2>&1 & pids+=($!); done
        load 1 "$half" >"$dir/1-before" 2>&1 & pids+=($!)
        sleep "$half"
        stop_instance 1
        start_instance 1
        local first
        first=$(first_request 1)
        load 1 $((SECONDS_EACH - half - 1)) >"$dir/1" 2>&1
        wait "${pids[@]}"
        hosts_record "$scenario"
        for i in 0 1 2; do record "$scenario" "$i" "$dir/$i" "$([ "$i" = 1 ] && echo "$first" || echo -)"; done ;;
      dns)
        for i in 0 1 2; do load "$i" "$SECONDS_EACH" >"$dir/$i" 2>&1 & pids+=($!); done
        sleep "$half"
        name_hosts a
        local started=$SECONDS
        while [ "$(backend_connections b)" -gt 0 ] && [ $((SECONDS - started)) -lt "$SECONDS_EACH" ]; do
          sleep 0.2
        done
        drained=$((SECONDS - started))
        wait "${pids[@]}"
        hosts_record "$scenario" "$drained"
        for i in 0 1 2; do record "$scenario" "$i" "$dir/$i"; done
        name_hosts a b ;;
    esac
  fi
  for i in 0 1 2; do stop_instance "$i"; done
  [ -n "$dry_run" ] || sleep 1  # the workers see the closes and accept again
}

for n in $(seq "$ROUNDS"); do
  for scenario in all bursts restart dns; do
    [ -n "$dry_run" ] && [ "$n" -gt 1 ] && continue
    [ -z "$dry_run" ] || printf '\n== %s\n' "$scenario"
    round "$scenario" "$n"
  done
done

if [ -n "$dry_run" ]; then
  echo
  publish_result scale-out.md "" </dev/null
  exit 0
fi

# cell SCENARIO WHO FIELD: "median (min–max)" of FIELD over the rounds.
cell() {
  awk -v s="$1" -v w="$2" -v f="$3" '$1 == s && $2 == w && $f != "-" {print $f}' "$work/figures" |
    sort -g | awk '{a[NR] = $1} END {if (NR == 0) {print "–"; exit}
      printf "%s (%s–%s)", a[int((NR + 1) / 2)], a[1], a[NR]}'
}
# share SCENARIO I: instance I's share of the scenario's requests, median over the rounds.
share() {
  awk -v s="$1" -v w="$2" '$1 == s && $2 ~ /^[0-9]$/ {
      round++; if (round % 3 == 1) {sum = 0; mine = 0}
      sum += $3; if ($2 == w) mine = $3
      if (round % 3 == 0) print int(100 * mine / sum + 0.5)}' "$work/figures" |
    sort -g | awk '{a[NR] = $1} END {printf "%s%%", a[int((NR + 1) / 2)]}'
}

report() {
  echo "# fcgate: three instances, two backend hosts, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "fcgate at $(commit_described), $(nproc) cores. Two backend hosts (network namespaces,"
  echo "$delay_method), php-fpm with 4 static workers each on TCP; the instances find them as"
  echo "\`$NAME\` (dnsmasq, asked every second), max_conns = 4 each. wrk -t1 -c16 --latency per"
  echo "instance, $SECONDS_EACH s (bursts: $((SECONDS_EACH / 2)) s each, one after the other)."
  echo "$ROUNDS rounds: median (min–max). Load before: $load_before."
  echo
  echo "| scenario | instance | requests | share | p99 ms | wrk timeouts | non-2xx | first request ms |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|"
  local scenario i
  for scenario in all bursts restart dns; do
    for i in 0 1 2; do
      printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$scenario" "$((i + 1))" \
        "$(cell "$scenario" "$i" 3)" "$(share "$scenario" "$i")" "$(cell "$scenario" "$i" 4)" \
        "$(cell "$scenario" "$i" 5)" "$(cell "$scenario" "$i" 6)" "$(cell "$scenario" "$i" 7)"
    done
  done
  echo
  echo "Backend connections at the end of the load (host a, host b), and for \`dns\` the seconds"
  echo "host b kept any after it left the hosts file:"
  echo
  echo "| scenario | host a | host b | host b drained in s |"
  echo "|---|--:|--:|--:|"
  for scenario in all bursts restart dns; do
    printf '| %s | %s | %s | %s |\n' "$scenario" "$(cell "$scenario" hosts 3)" \
      "$(cell "$scenario" hosts 4)" "$(cell "$scenario" hosts 5)"
  done
  echo
  echo "\`restart\`: instance 2 is killed halfway and started again; its row is the load after"
  echo "the restart, and its first request is the new process's first."
}
report >"$work/report.md"
headline="all at once: $(share all 0)/$(share all 1)/$(share all 2), timeouts $(cell all 0 5)/$(cell all 1 5)/$(cell all 2 5); dns: host b drained in $(cell dns hosts 5) s"
publish_result scale-out.md "$headline" <"$work/report.md"
