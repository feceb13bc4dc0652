# shellcheck shell=bash disable=SC2034,SC2154 # a library: the scripts sourcing it set and read its variables
# What every script in bench/ does around its measurement: named arguments for the config
# writers, --dry-run (print what would be written, installed, started and run; do none of it),
# the one-benchmark-at-a-time lock, waiting for a quiet machine, the private fcgate binary, and
# the results: bench/results/NAME (the latest of a suite) plus a row in bench/results/HISTORY.md.
#
# Expects: bench_dir, repo. Uses: dry_run (non-empty: dry run), work.

dry_run=${dry_run:-}

# usage: the calling script's header comment, its help text.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; /^# shellcheck /d; s/^# \{0,1\}//'; }

# common_arg ARG: the options every bench script takes (--no-build, --pgo, --dry-run, --help);
# any other argument is an error. --pgo measures the shipped build (bench/pgo.sh) instead of the
# plain release build; with --no-build too, the PGO binary built before (target/pgo), as it is.
# Sets build: 1 (build the release binary), "" (take it as built), pgo or pgo-built.
common_arg() {
  case $1 in
    --no-build) skip_build=1 ;;
    --pgo) want_pgo=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
  if [ -n "${want_pgo:-}" ]; then build=pgo${skip_build:+-built}
  elif [ -n "${skip_build:-}" ]; then build=""; fi
}
results_dir=${RESULTS_DIR:-$bench_dir/results}

# set_args NAME=VALUE...: assigns each VALUE to the caller's variable NAME, which the caller
# must have declared (local): a misspelt name is an error, not a silent default.
set_args() {
  local pair
  for pair in "$@"; do
    [[ $pair == *=* && -v ${pair%%=*} ]] || die "${FUNCNAME[1]}: unknown argument '$pair'"
    printf -v "${pair%%=*}" '%s' "${pair#*=}"
  done
}

# dry_say TEXT...: one line of the dry-run plan, on stdout.
dry_say() { printf '%s\n' "$*"; }

# shown COMMAND...: the command quoted as a shell would need it, for the plan.
shown() {
  local word quoted=()
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then quoted+=("$word"); else quoted+=("'${word//\'/\'\\\'\'}'"); fi
  done
  echo "${quoted[*]}"
}

# act COMMAND...: runs it; in a dry run prints it instead.
act() {
  if [ -n "$dry_run" ]; then dry_say "run: $(shown "$@")"; return 0; fi
  "$@"
}

# write_config FILE: stdin to FILE, without the blank lines settings not given leave; in a dry
# run printed in full, indented, under its path.
write_config() {
  if [ -n "$dry_run" ]; then
    dry_say "write $1:"
    sed '/^[[:space:]]*$/d; s/^/    /'
    return 0
  fi
  sed '/^[[:space:]]*$/d' >"$1"
}

# show_load COMMAND...: in a dry run, the load a script would run (the scripts run it themselves).
show_load() { dry_say "load: $(shown "$@")"; }

# bench_lock: one benchmark at a time on this machine, every script in bench/ takes this lock
# (a user who cannot open it, where a script runs without root, is told and goes on).
# A script that another one runs (bench/run --pgo runs bench/pgo.sh) holds its parent's lock.
bench_lock() {
  local lock=/run/lock/fcgate-bench.lock
  [ -z "$dry_run" ] || return 0
  [ -z "${FCGATE_BENCH_LOCK_HELD:-}" ] || return 0
  if ! { exec 9>>"$lock"; } 2>/dev/null; then
    log "warning: cannot open $lock; not waiting for other benchmarks"
    return 0
  fi
  if ! flock -n 9; then
    log "another benchmark holds $lock; waiting (at most 30 min)"
    flock -w 1800 9 || die "another benchmark still holds $lock after 30 min"
  fi
  export FCGATE_BENCH_LOCK_HELD=1
}

# wait_quiet MAX SECONDS: until the 1-minute load average is below MAX, at most SECONDS (0:
# not at all). Others' builds and tests share these cores; measuring during them measures
# nothing. Sets load_before (the three load averages when measuring begins).
wait_quiet() {
  local max=$1 limit=$2 start=$SECONDS load
  if [ -n "$dry_run" ]; then
    [ "$limit" -gt 0 ] && dry_say "wait: until the 1-minute load average < $max (at most $limit s)"
    load_before="(dry run)"
    return 0
  fi
  while [ "$limit" -gt 0 ]; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$load" -v m="$max" 'BEGIN {exit !(l < m)}' && break
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      log "warning: load average still $load >= $max after $limit s; measuring anyway"
      break
    fi
    log "load average $load >= $max; waiting (at most $limit s)"
    sleep 10
  done
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
}

# prepare_fcgate BUILD: builds fcgate if BUILD says so (1: the plain release build; pgo: the PGO
# build of bench/pgo.sh, which the Debian package ships; "" and pgo-built: the one already built),
# then copies the binary to $work/bin/fcgate: a rebuild in the tree during the run must not change
# what is measured. Sets fcgate_bin.
prepare_fcgate() {
  local built=$repo/target/release/fcgate
  [[ $1 != pgo* ]] || built=$repo/target/pgo/release/fcgate
  fcgate_bin=$work/bin/fcgate
  if [ -n "$dry_run" ]; then
    if [ "$1" = pgo ]; then dry_say "build: $bench_dir/pgo.sh"
    elif [ "$1" = 1 ]; then dry_say "build: (cd $repo && cargo build --release -p fcgate)"; fi
    dry_say "copy: $built -> $fcgate_bin"
    return 0
  fi
  if [ "$1" = pgo ]; then
    log "building fcgate with PGO (bench/pgo.sh, about 10 minutes)"
    "$bench_dir/pgo.sh" || die "bench/pgo.sh failed"
  elif [ "$1" = 1 ]; then
    log "building fcgate (release)"
    (cd "$repo" && cargo build --release -p fcgate --quiet) || die "cargo build failed"
  fi
  [ -x "$built" ] || die "no $built (build it, or drop --no-build)"
  mkdir -p "$work/bin"
  cp "$built" "$fcgate_bin"
}

# binary_described BUILD: what the results say of the binary measured, after its commit.
binary_described() {
  [ -z "$dry_run" ] || return 0
  case $1 in
    pgo) echo " (the PGO build, bench/pgo.sh)" ;;
    pgo-built) echo " (the PGO build of bench/pgo.sh from --no-build, built $(date -r "$repo/target/pgo/release/fcgate" '+%Y-%m-%d %H:%M'))" ;;
    "") echo " (binary from --no-build, built $(date -r "$repo/target/release/fcgate" '+%Y-%m-%d %H:%M'))" ;;
  esac
}

# make_work PREFIX: the run's work directory (nothing is created in a dry run). Sets work.
make_work() {
  if [ -n "$dry_run" ]; then work=/tmp/$1.DRY-RUN; return 0; fi
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$work"  # peers' workers run as nobody or www-data
}

# commit_described: the commit measured, and whether crates/ had uncommitted changes.
commit_described() {
  local commit
  commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$repo" diff --quiet HEAD -- crates 2>/dev/null || commit="$commit + uncommitted changes"
  echo "$commit"
}

# publish_result NAME HEADLINE: stdin becomes bench/results/NAME, the latest of its suite (git
# history keeps the earlier ones), and HISTORY.md gets a row: date, suite, HEADLINE, NAME.
# NAME is the suite's name plus .md: run.md, faults.md, seed-000.md.
# Prints the report. In a dry run says where it would go.
publish_result() {
  local name=$1 headline=$2 suite=${1%.md} history=$results_dir/HISTORY.md
  if [ -n "$dry_run" ]; then
    dry_say "results: $results_dir/$name, and a row in $history"
    cat >/dev/null
    return 0
  fi
  mkdir -p "$results_dir"
  cat >"$results_dir/$name"
  [ -s "$history" ] || history_header >"$history"
  # shellcheck disable=SC2016 # markdown backquotes
  printf '| %s | %s | %s | `%s` |\n' "$(date '+%Y-%m-%d %H:%M')" "$suite" \
    "$(tr '|\n' '/ ' <<<"$headline" | sed 's/ *$//')" "$name" >>"$history"
  cat "$results_dir/$name"
  log "written $results_dir/$name; a row added to $history"
}

history_header() {
  cat <<'EOF'
# Benchmark history

One row per run of a bench/ script, with its headline figures. bench/results keeps only the
latest file of each suite (run.md, faults.md, seed-000.md, …), which the next run of that suite
replaces; every earlier file is in git history under the name in the last column
(`git log --all -- bench/results/NAME` finds it, `git show COMMIT:bench/results/NAME` prints it).

Headlines: run, median requests/s of fcgate and of the fastest other peer per scenario (or of
each fcgate variant); faults, failed (non-2xx or no answer) of all requests per peer; seed-000,
requests served, wrk timeouts and clients stalled; multiplex, requests/s and backend
connections opened; ops-cost, requests/s and gateway CPU per request; hostile, failed probes of
all; interop, failed checks and the load's ok/non-2xx/errors/hung; params, params that differ
between nginx and fcgate; queue-memory, bytes per connection or queued request.

| date | suite | headline | file |
|---|---|---|---|
EOF
}
