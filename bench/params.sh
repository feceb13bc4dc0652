#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# bench/params.sh: the FastCGI params an app gets from nginx and from fcgate, side by side.
#
# The app is a few lines of Python (written to the work directory) that answers every request
# with the params exactly as they arrived, one NAME=VALUE a line: what the gateway sent, not
# what a language runtime made of it (PHP adds entries of its own, PHP_SELF and REQUEST_TIME,
# and php-fpm's cgi.fix_pathinfo rewrites the script and path ones). nginx uses Debian's stock
# files, as installed; fcgate its defaults. Three setups, each an nginx and an fcgate on the
# same app:
#   php   PHP mode: nginx with snippets/fastcgi-php.conf (fastcgi.conf, so fastcgi_params plus
#         SCRIPT_FILENAME, and PATH_INFO from fastcgi_split_path_info), server_name localhost,
#         also on h2c with prior knowledge; fcgate with root (an empty params.php in both roots)
#   app   app mode: nginx `location / { include fastcgi_params; }`, also on h2c; fcgate
#         without a root (everything to the app)
#   auth  the php setup behind HTTP Basic authentication (nginx auth_basic, an fcgate
#         [[rule]] with auth_basic; one bcrypt htpasswd line for both)
# Cases: get (GET /params.php?a=1&b=two), post (a form POST to /params.php?q=1), path-info
# (GET /params.php/users/7?x=1), h2 (the GET over h2c) in php and app; auth: the GET with the
# user's credentials. For each, the params only one side sent and the ones whose values
# differ, and any param a side sent twice. REMOTE_PORT (the client's) and SERVER_SOFTWARE (the
# product) are not compared; the servers' ports appear as PORT. Prints markdown and writes
# bench/results/params.md (replacing the previous run's) and a row to bench/results/HISTORY.md.
#
# Needs root to install nginx and curl from Debian if missing, and python3. --dry-run prints
# what would be installed, written, started and run, and does none of it.
#
#   bench/params.sh [--no-build] [--dry-run]
set -euo pipefail
export LC_ALL=C

bench_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$bench_dir")
source "$bench_dir/lib/harness.sh"
source "$bench_dir/lib/process.sh"
source "$bench_dir/lib/install.sh"
source "$bench_dir/lib/peers.sh"     # write_nginx_conf, write_fcgate_toml, start_peer_process
PORT_BASE=${PORT_BASE:-18700}
build=1
# `htpasswd -nbB bench params-secret`: bcrypt, which both nginx (crypt(3), libxcrypt) and
# fcgate (which takes nothing weaker) check.
# shellcheck disable=SC2016 # a bcrypt hash, not an expansion
htpasswd_line='bench:$2y$05$FCZUZFbs10SxMEj9Glrz8Os.eMZUMH9uW1wzTW2SVlcmdnAg/rudm'
credentials=bench:params-secret

while [ $# -gt 0 ]; do
  case $1 in
    *) common_arg "$1" ;;
  esac
  shift
done

ensure_packages nginx curl python3
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
  mkdir -p "$work/www"
  : >"$work/www/params.php"  # both gateways check that the script exists; the app runs none
  printf '%s\n' "$htpasswd_line" >"$work/htpasswd"
  cat >"$work/params_app.py" <<'PYTHON'
"""A FastCGI responder that answers each request with its params as they arrived, one
NAME=VALUE a line in the order sent; control bytes are shown as \\xNN. Listens on argv[1]."""
import os
import re
import socketserver
import struct
import sys


def pairs(data):
    """FastCGI name-value pairs (1.0 section 3.4)."""
    at = 0
    while at < len(data):
        lengths = []
        for _ in range(2):
            if data[at] >> 7:
                lengths.append(struct.unpack_from(">I", data, at)[0] & 0x7FFFFFFF)
                at += 4
            else:
                lengths.append(data[at])
                at += 1
        name = data[at:at + lengths[0]]
        value = data[at + lengths[0]:at + lengths[0] + lengths[1]]
        at += lengths[0] + lengths[1]
        yield name, value


def shown(text):
    return re.sub(rb"[\x00-\x1f\x7f]", lambda m: b"\\x%02x" % m.group()[0], text)


def record(kind, request_id, content):
    return struct.pack(">BBHHBx", 1, kind, request_id, len(content), 0) + content


class Connection(socketserver.BaseRequestHandler):
    def handle(self):
        stream = self.request.makefile("rb")
        requests = {}
        while True:
            header = stream.read(8)
            if len(header) < 8:
                return
            _, kind, request_id, length, padding = struct.unpack(">BBHHBx", header)
            content = stream.read(length)
            stream.read(padding)
            if kind == 1:  # BEGIN_REQUEST: role, flags (FCGI_KEEP_CONN = 1)
                requests[request_id] = [b"", content[2] & 1]
            elif kind == 4:  # PARAMS
                requests[request_id][0] += content
            elif kind == 5 and not content:  # the end of STDIN: answer
                params, keep = requests.pop(request_id)
                body = b"".join(shown(n) + b"=" + shown(v) + b"\n" for n, v in pairs(params))
                out = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body
                answer = b"".join(
                    record(6, request_id, out[at:at + 65535]) for at in range(0, len(out), 65535)
                )
                answer += record(6, request_id, b"") + record(3, request_id, bytes(8))
                self.request.sendall(answer)
                if not keep:
                    return
            elif kind == 9:  # GET_VALUES: one request per connection
                self.request.sendall(record(10, 0, b"\x0f\x01FCGI_MPXS_CONNS0"))


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


if os.path.exists(sys.argv[1]):
    os.unlink(sys.argv[1])
server = Server(sys.argv[1], Connection)
os.chmod(sys.argv[1], 0o666)  # nginx's workers run as nobody
server.serve_forever()
PYTHON
fi

spawn "$work/app.log" python3 "$work/params_app.py" "$work/app.sock"
pids+=("$spawned_pid")
wait_socket "$work/app.sock" || die "the params app did not start: $(cat "$work/app.log")"

# setup NAME NGINX_PORT H2_PORT FCGATE_PORT NGINX_ARGS... -- FCGATE_ARGS...: an nginx and an
# fcgate in front of the app, both started.
setup() {
  local name=$1 nginx_port=$2 h2_port=$3 fcgate_port=$4 nginx_args=() fcgate_args=()
  shift 4
  while [ $# -gt 0 ] && [ "$1" != -- ]; do nginx_args+=("$1"); shift; done
  shift
  fcgate_args=("$@")
  local dir=$work/peers/$name
  [ -n "$dry_run" ] || mkdir -p "$dir/nginx" "$dir/fcgate"
  write_nginx_conf "$dir/nginx" port="$nginx_port" h2_port="$h2_port" workers=1 \
    upstream="unix:$work/app.sock" root="$work/www" log_level=error "${nginx_args[@]}"
  start_peer_process nginx "$dir/nginx" "$nginx_port"
  pids+=("$peer_pid")
  write_fcgate_toml "$dir/fcgate/fcgate.toml" listen="127.0.0.1:$fcgate_port" \
    upstream="unix:$work/app.sock" access_log=off "${fcgate_args[@]}"
  start_peer_process fcgate "$dir/fcgate" "$fcgate_port"
  pids+=("$peer_pid")
  wait_port 127.0.0.1 "$nginx_port" || die "nginx ($name) did not start: $(cat "$dir/nginx/out.log" "$dir/nginx/error.log")"
  wait_port 127.0.0.1 "$fcgate_port" || die "fcgate ($name) did not start: $(cat "$dir/fcgate/out.log")"
}

auth_rule="[[rule]]
prefix = \"/\"
auth_basic = \"params\"
auth_basic_user_file = \"$work/htpasswd\""
# Ports: php 0-2, app 3-5, auth 6-7 (nginx, nginx h2c, fcgate).
setup php "$PORT_BASE" $((PORT_BASE + 1)) $((PORT_BASE + 2)) mode=php-debian \
  extra_server="server_name localhost;" -- root="$work/www"
setup app $((PORT_BASE + 3)) $((PORT_BASE + 4)) $((PORT_BASE + 5)) mode=app \
  extra_server="server_name localhost;" --
setup auth $((PORT_BASE + 6)) "" $((PORT_BASE + 7)) mode=php-debian \
  extra_server="server_name localhost; auth_basic \"params\"; auth_basic_user_file $work/htpasswd;" \
  -- root="$work/www" rules="$auth_rule"

if [ -n "$dry_run" ]; then
  dry_say "requests, to each setup's nginx (h2: its h2c port) and fcgate: GET /params.php?a=1&b=two;" \
    "POST -d 'field=value&other=2' /params.php?q=1; GET /params.php/users/7?x=1;" \
    "GET --http2-prior-knowledge /params.php?a=1&b=two; auth: GET -u $credentials /params.php?a=1&b=two"
  echo
  publish_result params.md "" </dev/null
  exit 0
fi

# dump PORT CASE FILE: the params of one case, sorted, without the ones that must differ,
# the port PORT shown as PORT; FILE.twice gets the names sent more than once.
dump() {
  local port=$1 case=$2 file=$3 url="http://127.0.0.1:$1"
  case $case in
    get) curl -sS "$url/params.php?a=1&b=two" ;;
    post) curl -sS -d 'field=value&other=2' "$url/params.php?q=1" ;;
    path-info) curl -sS "$url/params.php/users/7?x=1" ;;
    h2) curl -sS --http2-prior-knowledge "$url/params.php?a=1&b=two" ;;
    auth) curl -sS -u "$credentials" "$url/params.php?a=1&b=two" ;;
  esac >"$file.raw"
  grep -Eq '^[A-Z_0-9]+=' "$file.raw" || die "no params from port $port ($case): $(head -c 300 "$file.raw")"
  cut -d= -f1 "$file.raw" | sort | uniq -d >"$file.twice"
  grep -E '^[A-Z_0-9]+=' "$file.raw" | grep -Ev '^(REMOTE_PORT|SERVER_SOFTWARE)=' |
    sed "s/=/\t/; s/\t$/\t(empty)/; s/:$port\$/:PORT/; s/^SERVER_PORT\t$port\$/SERVER_PORT\tPORT/" |
    sort
}

# compare NGINX_PORT FCGATE_PORT CASE: the markdown of one case.
compare() {
  local nginx_port=$1 fcgate_port=$2 case=$3 n=$work/nginx-$1-$3 f=$work/fcgate-$2-$3
  dump "$nginx_port" "$case" "$n" >"$n.txt"
  dump "$fcgate_port" "$case" "$f" >"$f.txt"
  echo
  echo "### $case"
  echo
  echo "| param | nginx | fcgate |"
  echo "|---|---|---|"
  join -t "$(printf '\t')" -a1 -a2 -e '(absent)' -o 0,1.2,2.2 "$n.txt" "$f.txt" |
    awk -F '\t' '$2 != $3 { printf "| %s | %s | %s |\n", $1, $2, $3 }'
  echo
  echo "$(wc -l <"$n.txt") params from nginx, $(wc -l <"$f.txt") from fcgate (compared ones)."
  [ ! -s "$n.twice" ] || echo "Sent twice by nginx: $(tr '\n' ' ' <"$n.twice" | sed 's/ $//')."
  [ ! -s "$f.twice" ] || echo "Sent twice by fcgate: $(tr '\n' ' ' <"$f.twice" | sed 's/ $//')."
}

{
  echo "# FastCGI params from nginx and from fcgate"
  echo
  echo "$(nginx -v 2>&1), Debian's /etc/nginx/fastcgi_params and snippets/fastcgi-php.conf as"
  echo "installed ($(dpkg-query -W -f '${Package} ${Version}' nginx-common 2>/dev/null || echo 'nginx-common ?'));"
  echo "fcgate $(commit_described). The app prints the params as they arrived (bench/params.sh)."
  echo "Not compared: REMOTE_PORT, SERVER_SOFTWARE; each server's own port is shown as PORT."
  echo "Only the params that differ are listed; \"(empty)\" is sent with an empty value."
  echo
  echo "## php: nginx snippets/fastcgi-php.conf, fcgate root"
  for case in get post path-info h2; do
    nginx_port=$PORT_BASE
    [ "$case" = h2 ] && nginx_port=$((PORT_BASE + 1))
    compare "$nginx_port" $((PORT_BASE + 2)) "$case"
  done
  echo
  echo "## app: nginx location / with fastcgi_params, fcgate without a root"
  for case in get post path-info h2; do
    nginx_port=$((PORT_BASE + 3))
    [ "$case" = h2 ] && nginx_port=$((PORT_BASE + 4))
    compare "$nginx_port" $((PORT_BASE + 5)) "$case"
  done
  echo
  echo "## auth: the php setup with HTTP Basic authentication"
  compare $((PORT_BASE + 6)) $((PORT_BASE + 7)) auth
} >"$work/report.md"
# The headline: per setup and case, how many params differ.
headline=$(awk '/^## / {s = $2; sub(":", "", s)} /^### / {c = (s == $2 ? s : s " " $2); order[++k] = c; n[c] = 0}
                /^[|] [A-Z_0-9]+ [|]/ {n[c]++}
                END {for (i = 1; i <= k; i++) printf "%s%s %d", (i > 1 ? ", " : ""), order[i], n[order[i]]
                     print " params differ"}' "$work/report.md")
publish_result params.md "$headline" <"$work/report.md"
