#!/usr/bin/env bash
# bench/params.sh: the FastCGI params PHP sees behind nginx and behind fcgate, side by side.
#
# One php-fpm pool; nginx with Debian's stock `snippets/fastcgi-php.conf` (fastcgi.conf, so
# fastcgi_params plus SCRIPT_FILENAME, and PATH_INFO from fastcgi_split_path_info), on HTTP/1.1
# and on h2c with prior knowledge; fcgate with --root on the same docroot. A script dumps
# $_SERVER sorted; for each case (GET with a query, a form POST, a PATH_INFO request, GET over
# h2) the script lists the entries only one side has and the ones whose values differ.
# Entries that must differ are not compared: REMOTE_PORT, SERVER_PORT, REQUEST_TIME(_FLOAT),
# SERVER_SOFTWARE (the products' names). Prints markdown and writes bench/results/params.md
# (replacing the previous run's) and a row to bench/results/HISTORY.md.
#
# Needs root to install nginx, php-fpm and curl from Debian if missing. --dry-run prints what
# would be installed, written, started and run, and does none of it.
#
#   bench/params.sh [--no-build] [--dry-run]
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/backends.sh"  # write_fpm_conf, start_fpm
source "$bench_dir/lib/peers.sh"     # write_nginx_conf, write_fcgate_toml, start_peer_process
PORT_BASE=${PORT_BASE:-18700}
build=1

while [ $# -gt 0 ]; do
  case $1 in
    *) common_arg "$1" ;;
  esac
  shift
done

ensure_packages nginx curl php-fpm
find_fpm
[ -n "$dry_run" ] || [ -f /etc/nginx/snippets/fastcgi-php.conf ] || die "Debian's nginx snippets are missing"
bench_lock

make_work fcgate-params
pids=()
cleanup() {
  [ -z "$dry_run" ] || return 0
  for pid in "${pids[@]}"; do stop_tree "$pid"; done
  kill_run "$work"
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
prepare_fcgate "$build"

if [ -z "$dry_run" ]; then
  mkdir -p "$work/www" "$work/peers/nginx" "$work/peers/fcgate"
  cat >"$work/www/params.php" <<'PHP'
<?php
header('Content-Type: text/plain');
$server = $_SERVER;
ksort($server);
foreach ($server as $name => $value) {
    if (is_string($value)) {
        echo $name, '=', $value, "\n";
    }
}
PHP
fi

write_fpm_conf "$work/php-fpm.conf" listen="$work/php.sock" children=2
start_fpm "$work/php-fpm.conf" ini=no
pids+=("$fpm_pid")
wait_socket "$work/php.sock" || die "php-fpm did not start: $(cat "$work/php-fpm.out")"

h1=$PORT_BASE h2=$((PORT_BASE + 1)) gate=$((PORT_BASE + 2))
# nginx as Debian's stock site has it: snippets/fastcgi-php.conf, plus h2c on a second port.
write_nginx_conf "$work/peers/nginx" mode=php-debian port="$h1" h2_port="$h2" workers=1 \
  upstream="unix:$work/php.sock" root="$work/www" log_level=error extra_server="server_name localhost;"
start_peer_process nginx "$work/peers/nginx" "$h1"
pids+=("$peer_pid")
write_fcgate_toml "$work/peers/fcgate/fcgate.toml" listen="127.0.0.1:$gate" root="$work/www" \
  upstream="unix:$work/php.sock"
start_peer_process fcgate "$work/peers/fcgate" "$gate"
pids+=("$peer_pid")
wait_port 127.0.0.1 "$h1" || die "nginx did not start: $(cat "$work/peers/nginx/out.log" "$work/peers/nginx/error.log")"
wait_port 127.0.0.1 "$gate" || die "fcgate did not start: $(cat "$work/peers/fcgate/out.log")"
if [ -n "$dry_run" ]; then
  dry_say "requests, to nginx (h2: port $h2) and to fcgate: GET /params.php?a=1&b=two;" \
    "POST -d 'field=value&other=2' /params.php?q=1; GET /params.php/users/7?x=1;" \
    "GET --http2-prior-knowledge /params.php?a=1"
  echo
  publish_result params.md "" </dev/null
  exit 0
fi

# dump PORT CASE: $_SERVER for one case, without the entries that must differ.
dump() {
  local case=$2 url="http://127.0.0.1:$1"
  case $case in
    get) curl -sS "$url/params.php?a=1&b=two" ;;
    post) curl -sS -d 'field=value&other=2' "$url/params.php?q=1" ;;
    path-info) curl -sS "$url/params.php/users/7?x=1" ;;
    h2) curl -sS --http2-prior-knowledge "$url/params.php?a=1" ;;
  esac | grep -E '^[A-Z_0-9]+=' | grep -Ev '^(REMOTE_PORT|SERVER_PORT|REQUEST_TIME|REQUEST_TIME_FLOAT|SERVER_SOFTWARE)=' |
    sed 's/=/\t/; s/\t$/\t(empty)/' | sort
}

{
  echo "# \$_SERVER behind nginx and behind fcgate"
  echo
  echo "$(nginx -v 2>&1), $("$fpm_bin" -v | head -n1), fcgate $(git -C "$repo" rev-parse --short HEAD)."
  echo "nginx: Debian's snippets/fastcgi-php.conf. Not compared: REMOTE_PORT, SERVER_PORT,"
  echo "REQUEST_TIME(_FLOAT), SERVER_SOFTWARE."
  for case in get post path-info h2; do
    nginx_port=$h1
    [ "$case" = h2 ] && nginx_port=$h2
    dump "$nginx_port" "$case" >"$work/nginx-$case.txt"
    dump "$gate" "$case" >"$work/fcgate-$case.txt"
    echo
    echo "## $case"
    echo
    echo "| param | nginx | fcgate |"
    echo "|---|---|---|"
    join -t "$(printf '\t')" -a1 -a2 -e '(absent)' -o 0,1.2,2.2 \
      "$work/nginx-$case.txt" "$work/fcgate-$case.txt" |
      awk -F '\t' '$2 != $3 { printf "| %s | %s | %s |\n", $1, $2, $3 }'
    echo
    echo "$(wc -l <"$work/nginx-$case.txt") entries behind nginx, $(wc -l <"$work/fcgate-$case.txt") behind fcgate."
  done
} >"$work/report.md"
# The headline: per case, how many params differ.
headline=$(awk '/^## / {c = $2; order[++k] = c; n[c] = 0} /^[|] [A-Z_0-9]+ [|]/ {n[c]++}
                END {for (i = 1; i <= k; i++) printf "%s%s %d", (i > 1 ? ", " : ""), order[i], n[order[i]]
                     print " params differ"}' "$work/report.md")
publish_result params.md "$headline" <"$work/report.md"
