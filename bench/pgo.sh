#!/usr/bin/env bash
# bench/pgo.sh: a release build of fcgate optimised with a profile of its own request path (PGO).
# It is the shipped build: scripts/package puts this binary in the Debian package.
# fcgate's CPU per request goes more to instruction-cache misses than to instructions: its code
# path runs through hyper, tokio, http and bytes, laid out by the compiler without knowing which
# branches are hot (bench/results/speed-profile.md). Profile-guided optimisation lays out and
# inlines by a profile of a real run. Trained on hello.php alone it cut instructions per request
# there by 25% and instruction-cache misses by 76% (bench/hotpath.sh), and CPU per request by 9%
# over HTTP/1.1 and 12% over h2c against the plain release build (interleaved rounds, workers =
# 1). The broader training below costs hello.php 1% more instructions than that; in bench/run it
# takes 3-13% off the release build's CPU per request in front of php-fpm, 9% on a static file
# and 5% over h2c, and is level on the demo app (bench/results/speed-pgo-shipped.md).
#
# Three steps, each logged:
#   1. an instrumented build (-Cprofile-generate), in target/pgo-generate;
#   2. its training, workers = 1 and the access log off, every load h2load's and each required to
#      be answered in full: the instrumented fcgate in front of php-fpm (bench/www) over
#        HTTP/1.1: hello.php (SECS seconds), a 64 KiB POST, a static file, a gzip-compressed page;
#        h2c: hello.php one and ten streams a connection;
#        TLS (a self-signed certificate made here): hello.php over HTTP/1.1 and HTTP/2;
#      then in front of the instrumented demo FastCGI app (`fcgate demo-app`) over HTTP/1.1;
#      each process stopped with SIGTERM, on which it exits cleanly and writes its profile;
#   3. the optimised build (-Cprofile-use), in target/pgo: the binary is target/pgo/release/fcgate.
# The profile is merged with llvm-profdata from the LLVM release rustc was built with (Debian's
# llvm-N, installed if missing, as root): a profile from another LLVM version is refused. Each
# build is a clean fat-LTO build (about 5 minutes on 2 cores), in its own target directory so
# the plain target/release is left alone.
#
#   bench/pgo.sh [--dry-run]
#
# Environment: SECS (15: the main load; the others a fifth of it), PORT (19500: the gateway;
# php-fpm on +1, the TLS listener on +2, the demo app on +3, the gateway in front of it on +4).
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
ensure_packages h2load curl openssl php-fpm "$profdata"
bench_lock
make_work fcgate-pgo
fpm_pid="" gateway_pid="" demo_pid=""
trap 'stop_tree "$demo_pid"; stop_gateway_run' EXIT

# cargo_build TARGET_DIR RUSTFLAGS: a release build of fcgate with those flags.
cargo_build() {
  local command=(env "RUSTFLAGS=$2" cargo build --release -p fcgate --locked --quiet --target-dir "$1")
  if [ -n "$dry_run" ]; then dry_say "build: (cd $repo && $(shown "${command[@]}"))"; return 0; fi
  (cd "$repo" && "${command[@]}") || die "cargo build ($2) failed"
}

# train ARGS...: one h2load load (ARGS after h2load's own); dies unless every request succeeded.
train() {
  if [ -n "$dry_run" ]; then show_load h2load "$@"; return 0; fi
  local out total succeeded
  out=$(h2load "$@" 2>&1) || die "h2load $* failed: $out"
  read -r total succeeded < <(awk '/^requests:/ {print $2, $8}' <<<"$out")
  [ -n "$total" ] && [ "$total" -gt 0 ] && [ "$succeeded" = "$total" ] ||
    die "training load answered ${succeeded:-none} of ${total:-no} requests (h2load $*): $out"
  log "trained: $succeeded requests (h2load $*)"
}

# stop_cleanly PID NAME: SIGTERM, then the exit status: a process killed before it exits writes no
# profile.
stop_cleanly() {
  [ -z "$dry_run" ] || return 0
  kill -TERM "$1"
  wait "$1" || die "the instrumented $2 did not exit cleanly (see $work/$2.log)"
}

log "1/3: instrumented build"
cargo_build "$repo/target/pgo-generate" "-Cprofile-generate=$work/profiles"
instrumented=$repo/target/pgo-generate/release/fcgate

log "2/3: training"
start_local_fpm $((PORT + 1))
act openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null
[ -n "$dry_run" ] || head -c 65536 /dev/zero >"$work/post.body"
write_fcgate_toml "$work/fcgate.toml" listen="127.0.0.1:$PORT,127.0.0.1:$((PORT + 2)) tls" upstream="127.0.0.1:$((PORT + 1))" \
  root="$bench_dir/www" php_fpm_config="$work/php-fpm.conf" access_log=off workers=1 \
  compression='scripts = true
encodings = ["gzip"]' \
  extra="[tls]
certificates = [{ cert = \"$work/tls.pem\", key = \"$work/tls.key\" }]"
spawn "$work/fcgate.log" "$instrumented" --config "$work/fcgate.toml"
gateway_pid=$spawned_pid
plain=http://127.0.0.1:$PORT tls=https://localhost:$((PORT + 2)) short=$((SECS / 5 + 1))
if [ -z "$dry_run" ]; then
  wait_port 127.0.0.1 "$PORT" || die "the instrumented fcgate did not start (see $work/fcgate.log)"
  curl -sf "$plain/hello.php" >/dev/null || die "no answer through the instrumented fcgate (see $work/fcgate.log)"
fi
train --h1 -c 64 -D "$SECS" "$plain/hello.php"
train --h1 -c 16 -D "$short" -d "$work/post.body" "$plain/post.php"
train --h1 -c 16 -D "$short" "$plain/small.css"
train --h1 -c 16 -D "$short" -H 'Accept-Encoding: gzip' "$plain/compressed.php"
train -c 64 -m 1 -D $((SECS / 3 + 1)) "$plain/hello.php"
train -c 8 -m 10 -D "$short" "$plain/hello.php"
train --h1 -c 16 -D "$short" "$tls/hello.php"
train -c 16 -m 1 -D "$short" "$tls/hello.php"
stop_cleanly "$gateway_pid" fcgate
gateway_pid=""

spawn "$work/demo.log" "$instrumented" demo-app --listen "127.0.0.1:$((PORT + 3))"
demo_pid=$spawned_pid
write_fcgate_toml "$work/demo.toml" listen="127.0.0.1:$((PORT + 4))" upstream="127.0.0.1:$((PORT + 3))" \
  max_conns=8 access_log=off workers=1
spawn "$work/fcgate.log" "$instrumented" --config "$work/demo.toml"
gateway_pid=$spawned_pid
if [ -z "$dry_run" ]; then
  wait_port 127.0.0.1 $((PORT + 4)) || die "the instrumented fcgate did not start (see $work/fcgate.log)"
fi
train --h1 -c 64 -D "$short" "http://127.0.0.1:$((PORT + 4))/demo"
stop_cleanly "$gateway_pid" fcgate
gateway_pid=""
stop_cleanly "$demo_pid" demo
demo_pid=""
[ -n "$dry_run" ] || compgen -G "$work/profiles/*.profraw" >/dev/null || die "the training wrote no profile"

log "3/3: optimised build"
act "$profdata" merge -o "$work/fcgate.profdata" "$work/profiles"
cargo_build "$repo/target/pgo" "-Cprofile-use=$work/fcgate.profdata"
log "built $repo/target/pgo/release/fcgate"
