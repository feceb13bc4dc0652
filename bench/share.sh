#!/usr/bin/env bash
# bench/share.sh: two fcgate instances on one php-fpm pool (4 static workers, unix socket), both
# told its size (max_conns = 4), loaded at once: do they share the workers? In turn:
#   now      this build
#   before   with FCGATE_BASELINE=/path/to/an/older/fcgate: that build
# Scenarios, each ROUNDS times: "both" — wrk -c16 on each for SECONDS s at the same time;
# "join" — the first loaded alone for a second, then the second joins (its first request timed
# with curl, then wrk -c16 on both for the rest). Per instance: requests served, wrk's p99 and
# timeouts, and the connections each handed over (fcgate_backend_connections_yielded_total).
# Prints a markdown table (medians over the rounds, and the range) and writes it to
# bench/results/share.md (replacing the previous run's) and a row to bench/results/HISTORY.md.
# Installs wrk and curl if missing (as root); run it on a quiet machine.
#
#   bench/share.sh [--no-build] [--dry-run]     # ROUNDS=3 SECONDS_EACH=4 by default
#
# --dry-run prints what would be installed, written, started and run, and does none of it.
# Environment: ROUNDS, SECONDS_EACH, PORT (19600: the first fcgate; the second on +1),
# FCGATE_BASELINE, LOAD_MAX and LOAD_WAIT (wait until the load average is below LOAD_MAX, at
# most LOAD_WAIT s).
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-4}
PORT=${PORT:-19600}
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-120}
build=1

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # find_fpm, write_fpm_conf, start_fpm
source "$bench_dir/lib/peers.sh"     # write_fcgate_toml, start_peer_process

while [ $# -gt 0 ]; do
  common_arg "$1"
  shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
[[ $SECONDS_EACH =~ ^[2-9][0-9]*$ ]] || die "SECONDS_EACH must be at least 2"

ensure_packages wrk curl
bench_lock
find_fpm
make_work fcgate-share
fpm_pid="" first_pid="" second_pid=""
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  stop_tree "$second_pid"
  stop_tree "$first_pid"
  stop_tree "$fpm_pid"
  kill_run "$work"
  rm -rf "$work"
}
trap cleanup EXIT
prepare_fcgate "$build"
www="$work/www"
socket="$work/php-fpm.sock"
if [ -z "$dry_run" ]; then
  cp -r "$bench_dir/www" "$www"
  chmod -R a+rX "$www"
fi
write_fpm_conf "$work/php-fpm.conf" listen="$socket" children=4
start_fpm "$work/php-fpm.conf"
wait_socket "$socket" || die "php-fpm did not start (see $work/php-fpm.log)"
wait_quiet "$LOAD_MAX" "$LOAD_WAIT"

# start_gateway NAME PORT PEER: fcgate (PEER fcgate or fcgate-baseline) on PORT, its metrics on
# PORT + 1000; sets peer_pid.
start_gateway() {
  local dir="$work/$1"
  [ -n "$dry_run" ] || mkdir -p "$dir"
  write_fcgate_toml "$dir/fcgate.toml" listen="127.0.0.1:$2" upstream="unix:$socket" \
    root="$www" max_conns=4 access_log=off admin_listen="127.0.0.1:$(($2 + 1000))"
  start_peer_process "$3" "$dir" "$2"
  wait_port 127.0.0.1 "$2" || die "fcgate did not start (see $dir/out.log)"
}

url() { echo "http://127.0.0.1:$1/hello.php"; }
yielded() {
  curl -s "http://127.0.0.1:$(($1 + 1000))/metrics" |
    awk '/^fcgate_backend_connections_yielded_total/ {n += $NF} END {print n + 0}'
}
# wrk_figures FILE: "requests p99_ms timeouts" from wrk --latency output.
wrk_figures() {
  awk '/requests in/ {r = $1}
       /^ +99%/ {v = $2; if (v ~ /us$/) p = v / 1000; else if (v ~ /ms$/) p = v + 0; else p = v * 1000}
       /timeout/ {t = $NF}
       END {printf "%s %.1f %s\n", r, p, t + 0}' "$1"
}

# round VARIANT PEER SCENARIO N: appends "VARIANT SCENARIO first|second requests p99 timeouts
# yielded [first_request_ms]" lines to $work/figures.
round() {
  local variant=$1 peer=$2 scenario=$3 n=$4 dir="$work/$1-$3-$4"
  start_gateway "$variant-first" "$PORT" "$peer"
  first_pid=$peer_pid
  start_gateway "$variant-second" $((PORT + 1)) "$peer"
  second_pid=$peer_pid
  local load=(wrk -t1 -c16 --latency)
  if [ -n "$dry_run" ]; then
    show_load "${load[@]}" -d"${SECONDS_EACH}s" "$(url "$PORT")"
    [ "$scenario" = both ] || dry_say "load: a second later, curl $(url $((PORT + 1)))"
    show_load "${load[@]}" -d"${SECONDS_EACH}s" "$(url $((PORT + 1)))"
  else
    mkdir -p "$dir"
    local joined="" load_pid
    if [ "$scenario" = both ]; then
      "${load[@]}" -d"${SECONDS_EACH}s" "$(url "$PORT")" >"$dir/first" 2>&1 &
      load_pid=$!
      "${load[@]}" -d"${SECONDS_EACH}s" "$(url $((PORT + 1)))" >"$dir/second" 2>&1
    else
      "${load[@]}" -d"$((SECONDS_EACH + 1))s" "$(url "$PORT")" >"$dir/first" 2>&1 &
      load_pid=$!
      sleep 1
      joined=$(curl -s -o /dev/null --max-time 5 -w '%{time_total}' "$(url $((PORT + 1)))" || true)
      joined=$(awk -v s="$joined" 'BEGIN {printf "%.1f", s * 1000}')
      "${load[@]}" -d"${SECONDS_EACH}s" "$(url $((PORT + 1)))" >"$dir/second" 2>&1
    fi
    wait "$load_pid"
    # shellcheck disable=SC2046 # word splitting wanted
    printf '%s %s first %s %s\n' "$variant" "$scenario" "$(wrk_figures "$dir/first")" \
      "$(yielded "$PORT")" >>"$work/figures"
    printf '%s %s second %s %s %s\n' "$variant" "$scenario" "$(wrk_figures "$dir/second")" \
      "$(yielded $((PORT + 1)))" "$joined" >>"$work/figures"
  fi
  stop_tree "$second_pid"
  stop_tree "$first_pid"
  second_pid="" first_pid=""
  [ -n "$dry_run" ] || sleep 1  # php-fpm's workers see the closes and accept again
}

variants="now"
[ -z "${FCGATE_BASELINE:-}" ] || variants="now before"
for n in $(seq "$ROUNDS"); do
  for variant in $variants; do
    peer=fcgate
    [ "$variant" = now ] || peer=fcgate-baseline
    for scenario in both join; do
      [ -n "$dry_run" ] && [ "$n" -gt 1 ] && continue
      [ -z "$dry_run" ] || printf '\n== %s, %s\n' "$variant" "$scenario"
      round "$variant" "$peer" "$scenario" "$n"
    done
  done
done

if [ -n "$dry_run" ]; then
  echo
  publish_result share.md "" </dev/null
  exit 0
fi

# cell VARIANT SCENARIO WHO FIELD: "median (min–max)" of FIELD (4 requests, 5 p99, 6 timeouts,
# 7 yielded, 8 first request) over the rounds.
cell() {
  awk -v v="$1" -v s="$2" -v w="$3" -v f="$4" '$1 == v && $2 == s && $3 == w && NF >= f {print $f}' \
    "$work/figures" | sort -g |
    awk '{a[NR] = $1} END {if (NR == 0) {print "–"; exit}
         printf "%s (%s–%s)", a[int((NR + 1) / 2)], a[1], a[NR]}'
}
# share VARIANT SCENARIO: the second instance's share of all requests, median over the rounds.
share() {
  awk -v v="$1" -v s="$2" '$1 == v && $2 == s && $3 == "first" {f = $4}
    $1 == v && $2 == s && $3 == "second" {print int(100 * $4 / (f + $4) + 0.5)}' "$work/figures" |
    sort -g | awk '{a[NR] = $1} END {printf "%s%%", a[int((NR + 1) / 2)]}'
}

report() {
  echo "# fcgate: two instances sharing one php-fpm pool, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "fcgate at $(commit_described), $(nproc) cores; php-fpm, 4 static workers, unix socket;"
  echo "each fcgate max_conns = 4. wrk -t1 -c16 --latency on each, ${SECONDS_EACH} s; \"join\": the"
  echo "second starts a second after the first (its first request timed alone with curl)."
  echo "$ROUNDS rounds: median (min–max). Load before: $load_before."
  echo
  echo "| build | scenario | instance | requests | p99 ms | wrk timeouts | connections handed over | first request ms | second's share |"
  echo "|---|---|---|--:|--:|--:|--:|--:|--:|"
  local variant scenario who label
  for variant in $variants; do
    label=$variant
    [ "$variant" = now ] || label="before: $(basename "$FCGATE_BASELINE")"
    for scenario in both join; do
      for who in first second; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$scenario" "$who" \
          "$(cell "$variant" "$scenario" "$who" 4)" "$(cell "$variant" "$scenario" "$who" 5)" \
          "$(cell "$variant" "$scenario" "$who" 6)" "$(cell "$variant" "$scenario" "$who" 7)" \
          "$([ "$who" = second ] && [ "$scenario" = join ] && cell "$variant" "$scenario" "$who" 8 || echo –)" \
          "$([ "$who" = second ] && share "$variant" "$scenario" || echo)"
      done
    done
  done
}
report >"$work/report.md"
headline=$(for variant in $variants; do printf '%s: second gets %s at once, %s joining; ' \
  "$variant" "$(share "$variant" both)" "$(share "$variant" join)"; done)
publish_result share.md "${headline%; }" <"$work/report.md"
