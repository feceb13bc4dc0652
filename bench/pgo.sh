#!/usr/bin/env bash
# bench/pgo.sh: a release build of fcgate optimised with a profile of its own request path (PGO).
# fcgate's CPU per request goes more to instruction-cache misses than to instructions: its code
# path runs through hyper, tokio, http and bytes, laid out by the compiler without knowing which
# branches are hot (bench/results/speed-profile.md). Profile-guided optimisation lays out and
# inlines by a profile of a real run. On hello.php through php-fpm it cut instructions per request
# by 25% and instruction-cache misses by 76% (bench/hotpath.sh), and CPU per request by 9% over
# HTTP/1.1 and 12% over h2c against the plain release build (interleaved rounds, workers = 1).
#
# Three steps, each logged:
#   1. an instrumented build (-Cprofile-generate), in target/pgo-generate;
#   2. its training: the instrumented fcgate (workers = 1, access log off) in front of php-fpm
#      serving bench/www/hello.php, loaded SECS seconds over HTTP/1.1 and SECS/3 over h2c
#      (h2load -c 64), then stopped with SIGTERM, on which it exits cleanly and writes its profile;
#   3. the optimised build (-Cprofile-use), in target/pgo: the binary is target/pgo/release/fcgate.
# The profile is merged with llvm-profdata from the LLVM release rustc was built with (Debian's
# llvm-N, installed if missing, as root): a profile from another LLVM version is refused. Each
# build is a clean fat-LTO build (about 5 minutes on 2 cores), in its own target directory so
# the plain target/release is left alone.
#
#   bench/pgo.sh [--dry-run]
#
# Environment: SECS (15), PORT (19500: the gateway; php-fpm on +1).
set -euo pipefail
bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
SECS=${SECS:-15}
PORT=${PORT:-19500}
build=1
# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # start_local_fpm
source "$bench_dir/lib/peers.sh"     # write_fcgate_toml

while [ $# -gt 0 ]; do
  common_arg "$1"
  shift
done
[[ $SECS =~ ^[1-9][0-9]*$ ]] || die "SECS must be a positive number of seconds"
[ -n "$build" ] || die "--no-build makes no sense here: the point is the two builds"

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9][0-9]*\)\..*/\1/p')
[ -n "$llvm_major" ] || die "rustc -vV names no LLVM version"
profdata=llvm-profdata-$llvm_major
ensure_packages h2load curl php-fpm "$profdata"
bench_lock
make_work fcgate-pgo
fpm_pid="" gateway_pid=""
trap stop_gateway_run EXIT

# cargo_build TARGET_DIR RUSTFLAGS: a release build of fcgate with those flags.
cargo_build() {
  local command=(env "RUSTFLAGS=$2" cargo build --release -p fcgate --quiet --target-dir "$1")
  if [ -n "$dry_run" ]; then dry_say "build: (cd $repo && $(shown "${command[@]}"))"; return 0; fi
  (cd "$repo" && "${command[@]}") || die "cargo build ($2) failed"
}

log "1/3: instrumented build"
cargo_build "$repo/target/pgo-generate" "-Cprofile-generate=$work/profiles"

log "2/3: training on hello.php"
start_local_fpm $((PORT + 1))
write_fcgate_toml "$work/fcgate.toml" listen="127.0.0.1:$PORT" upstream="127.0.0.1:$((PORT + 1))" \
  root="$bench_dir/www" max_conns=8 access_log=off workers=1
spawn "$work/fcgate.log" "$repo/target/pgo-generate/release/fcgate" --config "$work/fcgate.toml"
gateway_pid=$spawned_pid
url=http://127.0.0.1:$PORT/hello.php
loads=("h2load --h1 -c 64 -D $SECS $url" "h2load -c 64 -m 1 -D $((SECS / 3 + 1)) $url")
if [ -n "$dry_run" ]; then
  # shellcheck disable=SC2086 # the load is words
  for load in "${loads[@]}"; do show_load $load; done
else
  wait_port 127.0.0.1 "$PORT" || die "the instrumented fcgate did not start (see $work/fcgate.log)"
  curl -sf "$url" >/dev/null || die "no answer through the instrumented fcgate (see $work/fcgate.log)"
  for load in "${loads[@]}"; do
    # shellcheck disable=SC2086 # the load is words
    answered=$($load | awk '/^requests:/ {print $8 " of " $2}')
    log "trained: $answered requests answered ($load)"
  done
  kill -TERM "$gateway_pid"
  wait "$gateway_pid" || die "the instrumented fcgate did not exit cleanly (see $work/fcgate.log)"
  gateway_pid=""
  compgen -G "$work/profiles/*.profraw" >/dev/null || die "the training wrote no profile"
fi

log "3/3: optimised build"
act "$profdata" merge -o "$work/fcgate.profdata" "$work/profiles"
cargo_build "$repo/target/pgo" "-Cprofile-use=$work/fcgate.profdata"
log "built $repo/target/pgo/release/fcgate"
