# shellcheck shell=bash
# shellcheck shell=bash
# What bench/faults.sh reads back after a load: the per-request outcomes bench/faults/client.py
# wrote ("<id> <status|error:kind> <start> <seconds>"), the executions append.php logged, and
# why each peer said it failed (its own log). Pure text processing; nothing here touches a
# process.

# tally OUTCOMES...: four tab-separated fields over every load of a scenario: requests, non-2xx
# responses, socket errors and timeouts ("0" or "timeout 3, ConnectionResetError 1"), and
# notes (the non-2xx statuses, the slowest answer, answers slower than 5 s).
tally() {
  awk '
    { requests++; end = $3 + $4; if ($4 > slowest) slowest = $4; if ($4 > 5) slow++ }
    $2 ~ /^[0-9]+$/ { if ($2 < 200 || $2 > 299) { non2xx++; by_status[$2]++ }; next }
    { kind = substr($2, 7); errors[kind]++ }
    END {
      socket = ""
      for (kind in errors) socket = socket (socket == "" ? "" : ", ") kind " " errors[kind]
      notes = ""
      for (code in by_status) notes = notes code "×" by_status[code] "; "
      notes = notes sprintf("slowest answer %.2f s", slowest)
      if (slow) notes = notes sprintf(", %d took over 5 s", slow)
      printf "%d\t%d\t%s\t%s\n", requests, non2xx, (socket == "" ? "0" : socket), notes
    }' "$@"
}

# kill_timeline OUTCOMES KILLED RESTARTED: when 2xx answers stopped and came back, and when
# failures came, around a SIGKILL at KILLED and a restart begun at RESTARTED (epoch seconds).
# Times are from the kill, to 100 ms. Requests that got no answer at all (client timeout) are
# left out: they are in the socket errors/timeouts column, and would only stretch the timeline.
kill_timeline() {
  awk -v killed="$2" -v restarted="$3" '
    $2 == "error:timeout" { next }
    {
      t = int(($3 + $4 - killed) * 10 + 1000) - 1000  # floor, also below zero
      if ($2 ~ /^2[0-9][0-9]$/) ok[t]++; else bad[t]++
      seen[t] = 1
      if (first == "" || t < first) first = t
      if (last == "" || t > last) last = t
    }
    END {
      outage = ""; resumed = ""
      for (t = 0; t <= last; t++) if (!(ok[t] > 0)) { outage = t; break }
      if (outage != "") for (t = outage; t <= last; t++) if (ok[t] > 0) { resumed = t; break }
      first_bad = ""; last_bad = ""
      for (t = 0; t <= last; t++) if (bad[t] > 0) { if (first_bad == "") first_bad = t; last_bad = t }
      silence = 0; run = 0
      for (t = first; t <= last; t++) { if (t in seen) run = 0; else if (++run > silence) silence = run }
      if (outage == "") printf "2xx never stopped"
      else if (resumed == "") printf "no 2xx after +%.1f s", outage / 10
      else printf "no 2xx from +%.1f s to +%.1f s after the kill (restart began at +%.1f s)",
        outage / 10, resumed / 10, restarted - killed
      if (first_bad != "") printf "; error answers from +%.1f s to +%.1f s", first_bad / 10, last_bad / 10
      printf "; longest stretch with no answer at all %.1f s", silence / 10
    }' "$1"
}

# post_executions EXECUTIONS OUTCOMES: what the app ran (one id a line, from append.php)
# against what each client was told (bench/faults/client.py).
post_executions() {
  awk '
    FNR == NR { if ($1 ~ /^[0-9]+-[0-9]+$/) { runs++; ran[$1]++ }; next }
    {
      ok = ($2 ~ /^2[0-9][0-9]$/)
      if (ok) acked++
      if (ok && !($1 in ran)) phantom++
      if (!ok && ($1 in ran)) lost++
      if (!ok && !($1 in ran)) unexecuted++
    }
    END {
      for (id in ran) if (ran[id] > 1) duplicates++
      printf "%d executions for %d 2xx, %d requests run twice or more; failed: %d never reached the app, %d ran (answer lost)",
        runs, acked, duplicates, unexecuted, lost
      if (phantom) printf "; %d got 2xx but never ran (!)", phantom
    }' "$1" "$2"
}

# nginx_reasons LOG: its [error] lines grouped by cause, most frequent first. A line is logged
# for every upstream failure, also those nginx then retried successfully on a new connection.
nginx_reasons() {
  [ -s "$1" ] || { echo "nginx logged no errors"; return; }
  { grep '\[error\]' "$1" || true; } | sed -E 's/^.*\*[0-9]+ //; s/, client:.*//; s/ [0-9]+ bytes/ N bytes/' |
    sort | uniq -c | sort -rn | head -n 3 |
    awk 'BEGIN { printf "nginx log:" } { n = $1; $1 = ""; printf "%s %d×%s", (NR > 1 ? ";" : ""), n, $0 }
         END { if (NR == 0) printf " no errors" }'
}

# fcgate_reasons LOG: retries fcgate made, and the causes of the error responses it gave.
fcgate_reasons() {
  local retries
  retries=$(grep -c 'retrying\|trying another server' "$1" || true)
  printf 'fcgate log: %d retries' "$retries"
  { grep ' WARN ' "$1" || true; } | { grep 'status=' || true; } |
    sed -E 's/\x1b\[[0-9;]*m//g; s/^.*(fcgate|fcgi)[^ ]*: //; s/request=[0-9]+ //; s/ status=/ -> /' |
    sort | uniq -c | sort -rn | head -n 3 |
    awk '{ n = $1; $1 = ""; printf "; %d×%s", n, $0 }'
  echo
}
