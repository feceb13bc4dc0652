# shellcheck shell=bash disable=SC2034,SC2154 # a library: the scripts sourcing it set and read its variables
# What one run of one peer measures: requests/s, p50, p99 and errors (h2load, or wrk); the backend
# connections the peer opened (SYNs to the backend port, counted by an nftables rule this file
# adds and removes); TIME_WAIT sockets left toward the backend; the peer's peak RSS; the CPU
# time the peer's processes used per completed request.

nft_table=fcgate_bench

# count_syns_to PORT: an output-hook counter of connection attempts (SYN without ACK) to PORT.
# The output hook sees loopback traffic and the veth toward the namespace alike.
count_syns_to() {
  if [ -n "${dry_run:-}" ]; then
    dry_say "run: nft: table inet $nft_table, an output-hook counter of SYNs to port $1"
    return 0
  fi
  nft delete table inet "$nft_table" 2>/dev/null || true
  nft add table inet "$nft_table"
  nft add chain inet "$nft_table" out '{ type filter hook output priority 0; policy accept; }'
  nft add rule inet "$nft_table" out tcp dport "$1" tcp flags '&' '(syn|ack)' == syn counter
}

remove_syn_counter() { [ -n "${dry_run:-}" ] || nft delete table inet "$nft_table" 2>/dev/null || true; }

syns() {  # 0 when there is no counter (unix socket backends)
  { nft list chain inet "$nft_table" out 2>/dev/null || true; } |
    sed -n 's/.*packets \([0-9]*\).*/\1/p' | awk '{n += $1} END {print n + 0}'
}

# time_wait_sockets: connections to the backend port in TIME_WAIT, on either end, one a line:
# the "local peer" address pair and the seconds its TIME_WAIT has left.
time_wait_sockets() {
  {
    ss -tanoH state time-wait "( dport = :$backend_port or sport = :$backend_port )"
    if [ "$backend_host" = "$veth_ns_ip" ]; then
      ip netns exec "$netns" ss -tanoH state time-wait "( sport = :$backend_port )"
    fi
  } 2>/dev/null | awk '
    match($0, /timewait,[^,]*,/) {
      t = substr($0, RSTART + 9, RLENGTH - 10); left = 0
      if (t ~ /min/) { split(t, m, "min"); left = m[1] * 60; t = m[2] }
      if (t ~ /sec$/) { sub(/sec$/, "", t); left += t }
      print $(NF - 2), $(NF - 1), left
    }'
}

# time_wait_new BEFORE SECONDS: TIME_WAIT sockets now that entered TIME_WAIT since the BEFORE
# snapshot, taken SECONDS ago. A previous peer's sockets linger for 60 s and are left out; but
# on loopback the kernel reuses the address pair of a socket in TIME_WAIT for a new connection
# (tcp_tw_reuse), so a pair in BEFORE can be back in TIME_WAIT from this run. Such a pair
# counts when its time left says it entered TIME_WAIT during the run (Linux keeps it 60 s) and
# is more than the old socket's could still be. (Expired sockets not yet reaped show 0 left.)
time_wait_new() {
  time_wait_sockets | awk -v elapsed="$2" '
    NR == FNR { left[$1 " " $2] = $3; next }
    { pair = $1 " " $2 }
    !(pair in left) || ($3 >= 60 - elapsed - 1 && $3 > left[pair] - elapsed + 2) { n++ }
    END { print n + 0 }' "$1" -
}

# rss_kib PID: summed VmHWM (peak resident set) of PID and its descendants, in KiB.
rss_kib() {
  local total=0 pid hwm
  for pid in $(descendants "$1"); do
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    total=$((total + ${hwm:-0}))
  done
  echo "$total"
}

# sample_during_load PID RSS_OUT SYNS_OUT FLAG: every 0.25 s while the file FLAG exists
# (bounded), writes the largest rss_kib PID seen to RSS_OUT and the SYN count to SYNS_OUT.
# VmHWM is a per-process peak; sampling also catches processes that exit before the run ends.
# The SYN count is the last one taken while the load ran: connections a gateway opens when the
# load generator hangs up at the end are the end's doing, not the run's.
sample_during_load() {
  local pid=$1 rss_out=$2 syns_out=$3 flag=$4 peak=0 now
  for _ in $(seq $((4 * (duration_seconds + 60)))); do
    [ -e "$flag" ] || break
    syns >"$syns_out.new" && mv "$syns_out.new" "$syns_out"
    now=$(rss_kib "$pid")
    [ "$now" -gt "$peak" ] && peak=$now && echo "$peak" >"$rss_out"
    sleep 0.25
  done
}

# tree_cpu_ticks PID: user + system CPU ticks of PID and its descendants, with the children
# each has reaped (cutime + cstime: a worker that exits during the run still counts).
tree_cpu_ticks() {
  local total=0 pid ticks
  for pid in $(descendants "$1"); do
    # Fields after the command name, which may hold spaces: utime stime cutime cstime are the
    # 12th to 15th from the state on.
    ticks=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13 + $14 + $15}' || true)
    total=$((total + ${ticks:-0}))
  done
  echo "$total"
}

# cpu_us_per_request TICKS REQUESTS: CPU ticks spent over requests completed, in µs per request.
cpu_us_per_request() {
  awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "" }'
}

# completed_requests OUT_DIR RPS: requests completed in the last load (h2load's per-request log;
# with wrk, requests/s times the duration).
completed_requests() {
  if [ "$LOADGEN" = wrk ]; then echo $(($2 * duration_seconds)); return; fi
  wc -l <"$1/requests.log" 2>/dev/null || echo 0
}

to_ms() {
  awk '{v = $1
        if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v) }
        else if (v ~ /m$/) { sub(/m$/, "", v); v *= 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
        printf "%.2f", v}'
}

# load_command URL POST_BODY OUT_DIR [HEADER...]: sets load_cmd, the bounded closed-loop load
# (CONNECTIONS clients, DURATION) with $LOADGEN, each request with the HEADERs ("Name: value").
# HTTP/1.1, or with load_streams set (h2load only), HTTP/2: over cleartext with prior knowledge
# (h2c) for an http:// URL, load_streams concurrent streams on each connection (-m).
load_command() {
  local url=$1 post_body=$2 out=$3 limit=$((duration_seconds + 60)) header protocol=(--h1)
  shift 3
  if [ "$LOADGEN" = wrk ]; then
    [ -z "${load_streams:-}" ] || die "wrk speaks HTTP/1.1 only (load_streams is set)"
    load_cmd=(timeout "$limit" wrk -t"$LOAD_THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 2s --latency)
    [ -n "$post_body" ] && load_cmd+=(-s "$bench_dir/post.lua")
  else
    [ -z "${load_streams:-}" ] || protocol=(-m"$load_streams")
    load_cmd=(timeout "$limit" h2load "${protocol[@]}" -t"$LOAD_THREADS" -c"$CONNECTIONS" -D"$duration_seconds"
      --log-file="$out/requests.log")
    [ -n "$post_body" ] && load_cmd+=(-d "$post_body" -H 'Content-Type: application/octet-stream')
  fi
  for header in "$@"; do load_cmd+=(-H "$header"); done
  load_cmd+=("$url")
}

# run_load URL POST_BODY OUT_DIR [HEADER...]: load_command's load; prints "requests/s p50_ms
# p99_ms errors answered" (see parse_h2load).
run_load() {
  local out=$3
  load_command "$@"
  if [ "$LOADGEN" = wrk ]; then
    "${load_cmd[@]}" >"$out/load.out" 2>&1 || log "wrk exited with $?"
    parse_wrk "$out/load.out"
  else
    rm -f "$out/requests.log"  # h2load appends
    "${load_cmd[@]}" >"$out/load.out" 2>&1 || log "h2load exited with $?"
    parse_h2load "$out/load.out" "$out/requests.log"
  fi
}

# parse_h2load SUMMARY LOG: percentiles from the per-request log (one line per completed
# request: start µs, status, duration µs; the same over HTTP/1.1 and HTTP/2). answered is
# Little's law over that log: the summed time requests spent being answered / the run's length
# = how many of the CONNECTIONS clients (over HTTP/2: of the CONNECTIONS x streams) had a
# request being answered, on average. A client whose request never completes adds nothing
# anywhere else (not an error, not a latency), so a peer that leaves connections hanging for
# the whole run shows here: answered well below CONNECTIONS.
parse_h2load() {
  local summary=$1 requests=$2 rps failures
  rps=$(awk '/^finished in/ {gsub(/,/, ""); printf "%.0f", $4}' "$summary")
  failures=$(awk '/^requests:/ {gsub(/,/, ""); print $12 + $14}' "$summary")  # errored + timeout
  cut -f2,3 "$requests" 2>/dev/null | sort -t$'\t' -k2,2n | awk -F '\t' \
    -v rps="${rps:-0}" -v failures="${failures:-0}" -v seconds="$duration_seconds" '
    { latency[NR] = $2; total += $2; if ($1 < 200 || $1 > 299) non2xx++ }
    END {
      if (NR == 0) { printf "%s 0 0 %d 0\n", rps, failures; exit }
      printf "%s %.2f %.2f %d %.0f\n", rps, latency[int((NR - 1) * 0.50) + 1] / 1000,
        latency[int((NR - 1) * 0.99) + 1] / 1000, failures + non2xx, total / 1e6 / seconds
    }'
}

# parse_wrk FILE: the same five numbers from wrk --latency output. wrk's latency percentiles
# are not per-request here: a probe with 4 of 64 connections answering in 500 ms and the rest in
# 1 ms gave p99 403 ms, mean 13.7 ms (per request: p99 about 1 ms). So with wrk, answered is
# only a rough figure.
parse_wrk() {
  local out=$1 rps p50 p99 errors mean active
  rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$out")
  mean=$(awk '$1 == "Latency" {print $2; exit}' "$out" | to_ms)
  active=$(awk -v r="${rps:-0}" -v m="${mean:-0}" 'BEGIN {printf "%.0f", r * m / 1000}')
  p50=$(awk '$1 == "50%" {print $2}' "$out" | to_ms)
  p99=$(awk '$1 == "99%" {print $2}' "$out" | to_ms)
  # "Socket errors: connect 0, read 0, write 0, timeout 3" and "Non-2xx or 3xx responses: 7"
  errors=$(awk '/Socket errors:/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10}
                /Non-2xx or 3xx responses:/ {n += $NF}
                END {print n + 0}' "$out")
  echo "${rps:-0} ${p50:-0} ${p99:-0} $errors $active"
}
