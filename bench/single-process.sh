#!/usr/bin/env bash
# bench/single-process.sh: fcgate with nothing configured in front of a FastCGI app that has one
# process keeping its one connection (libfcgi honours FCGI_KEEP_CONN): 64 clients at once. The
# gateway must find out that the app serves one connection at a time, and no request may wait
# on a connection the app has not taken. In turn:
#   now      this build
#   before   with FCGATE_BASELINE=/path/to/an/older/fcgate: that build
# Apps: "perl" — Perl's FCGI (Debian's libfcgi-perl), tests/interop/perl_fcgi.pl with one
# process; "fcgiwrap" — fcgiwrap -c 1 running a shell CGI script. Each ROUNDS times: wrk -t2 -c64
# --latency for SECONDS_EACH s on a freshly started gateway (so the learning is measured too).
# Per build and app: requests, wrk's p99 and slowest request, timeouts, non-2xx answers.
# Prints a markdown table (medians over the rounds, and the range) and writes it to
# bench/results/single-process.md (replacing the previous run's) and a row to
# bench/results/HISTORY.md. Installs wrk, curl, libfcgi-perl and fcgiwrap if missing (as root);
# run it on a quiet machine.
#
#   bench/single-process.sh [--no-build] [--dry-run]     # ROUNDS=3 SECONDS_EACH=4 by default
#
# --dry-run prints what would be installed, written, started and run, and does none of it.
# Environment: ROUNDS, SECONDS_EACH, PORT (19700), FCGATE_BASELINE, LOAD_MAX and LOAD_WAIT
# (wait until the load average is below LOAD_MAX, at most LOAD_WAIT s).
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-4}
PORT=${PORT:-19700}
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-120}
build=1

# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/peers.sh"  # write_fcgate_toml, start_peer_process

while [ $# -gt 0 ]; do
  common_arg "$1"
  shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
[[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]] || die "SECONDS_EACH must be a positive number"

ensure_packages wrk curl fcgiwrap
perl -MFCGI -e 1 2>/dev/null || install_packages libfcgi-perl || die "apt-get install libfcgi-perl failed"
bench_lock
make_work fcgate-single-process
app_pid="" gateway_pid=""
cleanup() {
  set +e
  [ -z "$dry_run" ] || return 0
  stop_tree "$gateway_pid"
  stop_tree "$app_pid"
  kill_run "$work"
  rm -rf "$work"
}
trap cleanup EXIT
prepare_fcgate "$build"
socket="$work/app.sock"
script="$work/hello.cgi"
if [ -z "$dry_run" ]; then
  printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nhello\\n"\n' >"$script"
  chmod 755 "$script"
fi
fcgiwrap_bin=$(command -v fcgiwrap || echo /usr/sbin/fcgiwrap)
wait_quiet "$LOAD_MAX" "$LOAD_WAIT"

# start_app APP: the one-process app on $socket; sets app_pid.
start_app() {
  rm -f "$socket"
  case $1 in
    perl) spawn "$work/app.log" perl "$repo/crates/fcgate/tests/interop/perl_fcgi.pl" "$socket" 1 ;;
    fcgiwrap) spawn "$work/app.log" "$fcgiwrap_bin" -c 1 -s "unix:$socket" ;;
  esac
  [ -n "$dry_run" ] && return 0
  app_pid=$spawned_pid
  wait_socket "$socket" || die "$1 did not start (see $work/app.log)"
}

# The request each app answers: perl_fcgi.pl echoes ?word=; fcgiwrap runs SCRIPT_FILENAME.
url() { echo "http://127.0.0.1:$PORT/?op=echo&word=x"; }

# wrk_figures FILE: "requests p99_ms max_ms timeouts non2xx" from wrk --latency output.
wrk_figures() {
  awk 'function ms(v) {if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000}
       /requests in/ {r = $1}
       /^ +Latency +[0-9]/ {m = ms($4)}
       /^ +99%/ {p = ms($2)}
       /timeout/ {t = $NF}
       /Non-2xx/ {n = $NF}
       END {printf "%s %.1f %.1f %s %s\n", r, p, m, t + 0, n + 0}' "$1"
}

# round VARIANT PEER APP N: appends "VARIANT APP requests p99 max timeouts non2xx" to
# $work/figures.
round() {
  local variant=$1 peer=$2 app=$3 n=$4 dir="$work/$1-$3-$4"
  start_app "$app"
  [ -n "$dry_run" ] || mkdir -p "$dir"
  local extra=""
  [ "$app" = perl ] || extra="[params]
SCRIPT_FILENAME = \"$script\""
  write_fcgate_toml "$dir/fcgate.toml" listen="127.0.0.1:$PORT" upstream="unix:$socket" \
    access_log=off upstream_extra="$extra"
  start_peer_process "$peer" "$dir" "$PORT"
  gateway_pid=$peer_pid
  local load=(wrk -t2 -c64 --latency -d"${SECONDS_EACH}s" "$(url)")
  if [ -n "$dry_run" ]; then
    show_load "${load[@]}"
  else
    wait_port 127.0.0.1 "$PORT" || die "fcgate did not start (see $dir/out.log)"
    "${load[@]}" >"$dir/wrk" 2>&1
    printf '%s %s %s\n' "$variant" "$app" "$(wrk_figures "$dir/wrk")" >>"$work/figures"
  fi
  stop_tree "$gateway_pid"
  stop_tree "$app_pid"
  gateway_pid="" app_pid=""
}

variants="now"
[ -z "${FCGATE_BASELINE:-}" ] || variants="now before"
for n in $(seq "$ROUNDS"); do
  for variant in $variants; do
    peer=fcgate
    [ "$variant" = now ] || peer=fcgate-baseline
    for app in perl fcgiwrap; do
      [ -n "$dry_run" ] && [ "$n" -gt 1 ] && continue
      [ -z "$dry_run" ] || printf '\n== %s, %s\n' "$variant" "$app"
      round "$variant" "$peer" "$app" "$n"
    done
  done
done

if [ -n "$dry_run" ]; then
  echo
  publish_result single-process.md "" </dev/null
  exit 0
fi

# cell VARIANT APP FIELD: "median (min–max)" of FIELD (3 requests, 4 p99, 5 slowest,
# 6 timeouts, 7 non-2xx) over the rounds.
cell() {
  awk -v v="$1" -v a="$2" -v f="$3" '$1 == v && $2 == a {print $f}' "$work/figures" | sort -g |
    awk '{a[NR] = $1} END {if (NR == 0) {print "–"; exit}
         printf "%s (%s–%s)", a[int((NR + 1) / 2)], a[1], a[NR]}'
}

report() {
  echo "# fcgate: a one-process FastCGI app under 64 clients, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "fcgate at $(commit_described), $(nproc) cores, nothing configured (default cap 4);"
  echo "the app on a unix socket with one process that keeps its connection. wrk -t2 -c64"
  echo "--latency, ${SECONDS_EACH} s, on a freshly started gateway. $ROUNDS rounds: median"
  echo "(min–max). Load before: $load_before."
  echo
  echo "| build | app | requests | p99 ms | slowest ms | wrk timeouts | non-2xx |"
  echo "|---|---|--:|--:|--:|--:|--:|"
  local variant app label
  for variant in $variants; do
    label=$variant
    [ "$variant" = now ] || label="before: $(basename "$FCGATE_BASELINE")"
    for app in perl fcgiwrap; do
      printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$app" "$(cell "$variant" "$app" 3)" \
        "$(cell "$variant" "$app" 4)" "$(cell "$variant" "$app" 5)" "$(cell "$variant" "$app" 6)" \
        "$(cell "$variant" "$app" 7)"
    done
  done
}
report >"$work/report.md"
slowest() { awk -v v="$1" -v a="$2" '$1 == v && $2 == a {print $5}' "$work/figures" | sort -g | tail -1; }
headline=$(for variant in $variants; do printf '%s: slowest %s ms (perl), %s ms (fcgiwrap); ' \
  "$variant" "$(slowest "$variant" perl)" "$(slowest "$variant" fcgiwrap)"; done)
publish_result single-process.md "${headline%; }" <"$work/report.md"
