#!/usr/bin/env bash
# bench/params.sh: the FastCGI params PHP sees behind nginx and behind fcgate, side by side.
#
# One php-fpm pool; nginx with Debian's stock `snippets/fastcgi-php.conf` (fastcgi.conf, so
# fastcgi_params plus SCRIPT_FILENAME, and PATH_INFO from fastcgi_split_path_info), on HTTP/1.1
# and on h2c with prior knowledge; fcgate with --root on the same docroot. A script dumps
# $_SERVER sorted; for each case (GET with a query, a form POST, a PATH_INFO request, GET over
# h2) the script lists the entries only one side has and the ones whose values differ.
# Entries that must differ are not compared: REMOTE_PORT, SERVER_PORT, REQUEST_TIME(_FLOAT),
# SERVER_SOFTWARE (the products' names). Prints markdown and writes
# bench/results/<date>-params.md.
#
# Needs root to install nginx, php-fpm and curl from Debian if missing.
#
#   bench/params.sh [--no-build]
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
# shellcheck source-path=SCRIPTDIR
source "$bench_dir/lib/process.sh"  # log, die, wait_port, wait_socket, stop_tree
PORT_BASE=${PORT_BASE:-18700}
build=1
[ "${1:-}" = "--no-build" ] && build=0

for tool in nginx curl; do
  command -v "$tool" >/dev/null || {
    [ "$(id -u)" = 0 ] || die "$tool is missing; run as root to install it"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light curl </dev/null >&2
  }
done
fpm=$(command -v php-fpm || find /usr/sbin -name "php-fpm*" -type f 2>/dev/null | head -n1)
[ -x "$fpm" ] || die "php-fpm is missing (apt-get install php-fpm)"
[ -f /etc/nginx/snippets/fastcgi-php.conf ] || die "Debian's nginx snippets are missing"
if [ "$build" = 1 ]; then
  (cd "$repo" && cargo build --release -q -p fcgate)
fi
fcgate=$repo/target/release/fcgate

work=$(mktemp -d /tmp/fcgate-params.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do stop_tree "$pid"; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# nginx's workers run as an unprivileged user: they must reach the docroot and the socket.
chmod 755 "$work"
mkdir -p "$work/www"
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

cat >"$work/fpm.conf" <<EOF
[global]
error_log = $work/fpm.log
daemonize = no
[www]
listen = $work/php.sock
listen.mode = 0666
pm = static
pm.max_children = 2
clear_env = yes
EOF
"$fpm" -F -n -y "$work/fpm.conf" -R >"$work/fpm.out" 2>&1 &
pids+=($!)
wait_socket "$work/php.sock" || die "php-fpm did not start: $(cat "$work/fpm.out")"

h1=$PORT_BASE h2=$((PORT_BASE + 1)) gate=$((PORT_BASE + 2))
# The snippet includes fastcgi.conf relative to the configuration's directory.
ln -s /etc/nginx/fastcgi.conf /etc/nginx/snippets "$work/"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http {
  access_log off;
  client_body_temp_path $work/body;
  fastcgi_temp_path $work/fastcgi;
  proxy_temp_path $work/proxy;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  server {
    listen 127.0.0.1:$h1;
    listen 127.0.0.1:$h2 http2;
    server_name localhost;
    root $work/www;
    location ~ [^/]\.php(/|\$) {
      include snippets/fastcgi-php.conf;
      fastcgi_pass unix:$work/php.sock;
    }
  }
}
EOF
nginx -c "$work/nginx.conf" -g 'daemon off;' >"$work/nginx.out" 2>&1 &
pids+=($!)
"$fcgate" --listen "127.0.0.1:$gate" --root "$work/www" --upstream "unix:$work/php.sock" \
  >"$work/fcgate.out" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$h1" || die "nginx did not start: $(cat "$work/nginx.out" "$work/nginx-error.log")"
wait_port 127.0.0.1 "$gate" || die "fcgate did not start: $(cat "$work/fcgate.out")"

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

out="$repo/bench/results/$(date +%Y-%m-%d-%H%M)-params.md"
{
  echo "# \$_SERVER behind nginx and behind fcgate"
  echo
  echo "$(nginx -v 2>&1), $("$fpm" -v | head -n1), fcgate $(git -C "$repo" rev-parse --short HEAD)."
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
} | tee "$out"
log "written to $out"
