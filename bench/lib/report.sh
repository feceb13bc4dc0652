# shellcheck shell=bash disable=SC2034,SC2154 # a library: the scripts sourcing it set and read its variables
# Turns the per-run rows ($work/runs.tsv) into the markdown table (medians over rounds, spread
# of requests/s) and one gnuplot chart per scenario (requests/s and p99 per peer).
#
# runs.tsv columns: scenario peer round rps p50_ms p99_ms errors backend_conns time_wait
#                   rss_kib open_at_end active cpu_us_per_request note   (backend_conns/time_wait
#                   "-" where not countable; an empty rps means the peer did not run, note says
#                   why; on a run, note says what the check found compressed, if anything)
# Scenarios in h2_scenarios (bench/run) ran over h2c with H2_STREAMS streams per connection:
# their answered figure is out of CONNECTIONS x H2_STREAMS streams.

# table RUNS: the markdown table on stdout, scenarios and peers in the order they ran.
table() {
  awk -F '\t' -v connections="$CONNECTIONS" -v h2="${h2_scenarios:-}" -v streams="${H2_STREAMS:-1}" '
    function median(list,   n, v, i, j, t) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) {
        t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
      }
      if (n == 0) return ""
      return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function minmax(list,   n, v, i, lo, hi) {
      n = split(list, v, " "); lo = v[1]; hi = v[1]
      for (i = 2; i <= n; i++) { if (v[i] + 0 < lo + 0) lo = v[i]; if (v[i] + 0 > hi + 0) hi = v[i] }
      return n > 1 ? sprintf("%d–%d", lo, hi) : "–"
    }
    {
      key = $1 SUBSEP $2
      if (!(key in seen)) { seen[key] = 1; order[++rows] = key }
      if ($14 != "") note[key] = $14
      if ($4 == "") next
      runs[key]++
      rps[key] = rps[key] " " $4; p50[key] = p50[key] " " $5; p99[key] = p99[key] " " $6
      errors[key] += $7; tw[key] = tw[key] " " $9; rss[key] = rss[key] " " $10
      open[key] = open[key] " " $11; active[key] = active[key] " " $12
      if ($13 != "") cpu[key] = cpu[key] " " $13
      if ($8 == "-") conns_na[key] = 1; else conns[key] = conns[key] " " $8
    }
    END {
      print "| scenario | peer | requests/s | spread | CPU µs/request | p50 ms | p99 ms | errors | answered conns | backend conns opened | TIME_WAIT | peak RSS MiB | note |"
      print "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
      for (r = 1; r <= rows; r++) {
        key = order[r]; split(key, part, SUBSEP)
        if (!runs[key]) {
          printf "| %s | %s | – | – | – | – | – | – | – | – | – | – | %s |\n", part[1], part[2], note[key]
          continue
        }
        if (conns_na[key]) { c = sprintf("n/a (%d kept open)", median(open[key])); t = "n/a" }
        else { c = sprintf("%d", median(conns[key])); t = sprintf("%d", median(tw[key])) }
        u = (key in cpu) ? sprintf("%.1f", median(cpu[key])) : "–"
        if (index(" " h2 " ", " " part[1] " ")) a = sprintf("%d/%d streams", median(active[key]), connections * streams)
        else a = sprintf("%d/%d", median(active[key]), connections)
        printf "| %s | %s | %d | %s | %s | %.2f | %.2f | %d | %s | %s | %s | %.1f | %s |\n",
          part[1], part[2], median(rps[key]), minmax(rps[key]), u, median(p50[key]),
          median(p99[key]), errors[key], a, c, t, median(rss[key]) / 1024, note[key]
      }
    }' "$1"
}

# chart RUNS SCENARIO SVG: requests/s and p99 (medians) per peer, side by side.
chart() {
  local runs=$1 scenario=$2 svg=$3 data clients=$CONNECTIONS load="$CONNECTIONS connections"
  if [[ " ${h2_scenarios:-} " == *" $scenario "* ]]; then
    clients=$((CONNECTIONS * H2_STREAMS)) load="h2c, $CONNECTIONS connections x $H2_STREAMS streams"
  fi
  data=$(mktemp "$work/chart.XXXXXX")
  awk -F '\t' -v s="$scenario" -v connections="$clients" '
    function median(list,   n, v, i, j, t) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) {
        t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
      }
      return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    $1 == s && $4 != "" {
      if (!($2 in rps)) order[++n] = $2
      rps[$2] = rps[$2] " " $4; p99[$2] = p99[$2] " " $6; answered[$2] = answered[$2] " " $12
    }
    END {
      for (i = 1; i <= n; i++) {
        peer = order[i]; a = median(answered[peer])
        # Peers that left connections unanswered get it written on their bars: their numbers
        # describe only the connections that were answered.
        label = a < 0.9 * connections ? sprintf("%d/%d answered", a, connections) : " "
        printf "\"%s\" %s %s \"%s\"\n", peer, median(rps[peer]), median(p99[peer]), label
      }
    }
  ' "$runs" >"$data"
  [ -s "$data" ] || return 0
  gnuplot <<EOF
set terminal svg size 1100,500 dynamic font "sans,12" background "white"
set output "$svg"
set multiplot layout 1,2 title "fcgate bench: $scenario ($load, median of $ROUNDS x $DURATION)"
set style data histograms
set style fill solid 0.85 border -1
set boxwidth 0.75
set xtics rotate by -35 nomirror
set ytics nomirror
set grid ytics
set yrange [0:*]
peer(label) = stringcolumn(1) . (strlen(stringcolumn(4)) > 1 ? " (" . stringcolumn(4) . ")" : "")
set title "requests/s (higher is better)"
plot "$data" using 2:xtic(peer(0)) notitle linecolor rgb "#3a6ea5"
set title "p99 latency, ms (lower is better)"
plot "$data" using 3:xtic(peer(0)) notitle linecolor rgb "#c0504d"
unset multiplot
EOF
}

# write_report FILE: header (when, where, what), the table, the charts, how to read it.
write_report() {
  local file=$1 peer protocol="" h1="" s
  for s in $SCENARIOS; do
    if [[ " ${h2_scenarios:-} " == *" $s "* ]]; then protocol+="${protocol:+, }$s"; else h1=1; fi
  done
  [ -z "$protocol" ] ||
    protocol="$protocol: HTTP/2 over cleartext with prior knowledge (h2c), $H2_STREAMS concurrent streams per connection"
  [ -z "$h1" ] || protocol="HTTP/1.1${protocol:+; $protocol}"
  {
    echo "# fcgate side-by-side benchmark, $(date '+%Y-%m-%d %H:%M %Z')"
    echo
    echo "fcgate at $measured_commit," \
      "$(nproc) cores, $(uname -sr), load average before the run: $load_before."
    echo "$LOADGEN ($protocol; $LOAD_THREADS threads) with $CONNECTIONS connections for $DURATION, $ROUNDS rounds, peers interleaved;" \
      "php-fpm pm=static, $PHP_CHILDREN children; every peer with $WORKERS workers/threads."
    echo
    echo "## Results"
    echo
    table "$runs"
    echo
    for chart_file in "${charts[@]}"; do echo "![${chart_file%.svg}]($chart_file)"; done
    echo
    echo "## Peers"
    echo
    for peer in $PEERS; do echo "- **$peer**: $(peer_note "$peer")"; done
    echo
    versions
    echo
    echo "## Reading the table"
    echo
    echo "- requests/s, CPU, p50, p99, TIME_WAIT, RSS: median over the rounds; spread: lowest–highest requests/s."
    echo "- CPU µs/request: user + system CPU time of the gateway's processes (master and workers,"
    echo "  with any they reaped) while the load ran, over the requests completed: the gateway's own"
    echo "  cost per request, whatever else shared the cores (h2load, php-fpm)."
    if [ "$LOADGEN" = wrk ]; then
      echo "- p50, p99: wrk's percentiles, which weigh slow connections far above their share of"
      echo "  requests (see bench/lib/measure.sh); answered conns is only a rough figure with wrk."
    else
      echo "- p50, p99: over every completed request (h2load's per-request log). wrk is not used by"
      echo "  default: its percentiles weigh slow connections far above their share of requests."
    fi
    echo "- errors: non-2xx responses + connection errors and timeouts, all rounds summed."
    echo "- answered conns: time spent answering completed requests / run time (Little's law): how many"
    echo "  of the $CONNECTIONS client connections had a request being answered, on average. A request"
    echo "  that never completes counts nowhere else (not an error, not a latency); well below"
    echo "  $CONNECTIONS means that many connections waited the whole run for an answer, and the"
    echo "  latencies describe only the rest."
    echo "- backend conns opened: SYNs to the backend port while the load ran (nftables counter)."
    echo "  A unix socket has no SYN to count: the column shows how many connections were still"
    echo "  open when the run ended instead (pooled ones stay open)."
    [[ " $PEERS " != *" floor "* ]] || echo "  floor opens its connections at start-up, before the load."
    echo "- TIME_WAIT: connections to the backend port in TIME_WAIT after the run, on either end,"
    echo "  that entered it during the run."
    echo "- peak RSS: VmHWM summed over the gateway's processes (a shared page counts once per process)."
    echo "- scenarios: hello = hello-world PHP page; sleep = a page that sleeps 10 ms; big = 100 KiB"
    echo "  response; post = 64 KiB request body; hello-unix = hello over php-fpm's unix socket;"
    echo "  demo = fcgate's demo FastCGI app (near-zero work: the gateway's own cost); remote = hello with"
    echo "  php-fpm in a network namespace behind a veth pair, 1 ms delay each way (${delay_method:-not run});"
    echo "  static-small = a 2 KB CSS file and static-big = a 1 MiB file, served from the document root"
    echo "  without PHP (requested without Accept-Encoding: sent as they are; nginx with sendfile on);"
    echo "  compressed = a 40 KB HTML page from PHP requested with Accept-Encoding: gzip, gzipped by"
    echo "  the gateway at level $GZIP_LEVEL at every peer (nginx gzip_comp_level, Caddy encode gzip,"
    echo "  fcgate [compression] gzip_level; the note gives the sizes the check got). Those three are"
    echo "  set up for fcgate, nginx and Caddy only. hello-h2 = hello over h2c (prior knowledge), h2load"
    echo "  with ${H2_STREAMS:-10} concurrent streams on each of the $CONNECTIONS connections, so its answered figure"
    echo "  is out of $((CONNECTIONS * ${H2_STREAMS:-10})) streams; nginx on a \`listen … http2\` listener (nginx 1.22 has"
    echo "  no HTTP/1.1 on it), h2o and fcgate on their plain listeners; set up for fcgate, nginx and h2o only."
  } >"$file"
}

# headline RUNS: HISTORY.md's summary of a run, per scenario: fcgate's median requests/s and the
# best other peer's (or, when only fcgate variants ran, each variant's).
headline() {
  awk -F '\t' '
    function median(list,   n, v, i, j, t) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) {
        t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
      }
      return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    $4 != "" {
      if (!($1 in seen)) { seen[$1] = 1; scenarios[++n] = $1 }
      key = $1 SUBSEP $2
      if (!(key in rps)) peers[$1] = peers[$1] " " $2
      rps[key] = rps[key] " " $4
    }
    END {
      for (i = 1; i <= n; i++) {
        s = scenarios[i]; fcgate = ""; best = ""; best_rps = -1; variants = ""
        count = split(peers[s], list, " ")
        for (k = 1; k <= count; k++) {
          p = list[k]; m = median(rps[s SUBSEP p])
          if (p == "fcgate") fcgate = sprintf("%d", m)
          else if (p ~ /^fcgate-/) variants = variants sprintf(", %s %d", p, m)
          else if (p != "floor" && m > best_rps) { best_rps = m; best = p }  # a floor, not a peer
        }
        line = s ": fcgate " (fcgate == "" ? "–" : fcgate)
        line = line (best != "" ? sprintf(", best peer %s %d", best, best_rps) : variants)
        printf "%s%s", (i > 1 ? "; " : ""), line
      }
      if (n) print " req/s"
    }' "$1"
}
