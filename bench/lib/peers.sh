# shellcheck shell=bash disable=SC2034,SC2154,SC2153 # a library: the scripts sourcing it set and read its variables
# The gateways under test, every script's config for each written here once: one writer per
# peer, taking what differs (port, upstream, keepalive, workers, mode) as NAME=VALUE arguments,
# and start_peer, which writes bench/run's setup of a peer in front of the current backend
# (backends.sh) and starts it in the foreground on its own loopback port, in PHP mode (document
# root, *.php to the backend) or app mode (everything to the backend: the demo app).
#
# bench/run's setup gives every peer the same resources: $WORKERS worker processes/threads, and
# where it can cap or keep backend connections it is set up the way its documentation
# recommends for php-fpm, with at most $PHP_CHILDREN connections in total (one per php-fpm
# worker).
#
# An upstream is written HOST:PORT or unix:PATH everywhere; each writer spells it its peer's way.
# start_peer NAME MODE PORT [WRITER ARGS...] sets peer_pid. peer_note NAME says how bench/run
# configures the peer.

all_peers="nginx nginx-keepalive haproxy caddy h2o lighttpd apache fcgate"
# Not run unless asked for (--peers): what fcgate's own operations features cost, measured
# against plain `fcgate` in the same run.
# fcgate-baseline is fcgate as above from another build (FCGATE_BASELINE=path to its binary):
# a change measured against the build before it, the two interleaved round by round; with
# FCGATE_BASELINE_OLD=1 for a build older than the `workers` setting.
# fcgate-rules is fcgate with the 20 [[rule]]s below, none of which matches the measured path:
# what evaluating them costs a request that passes them all.
# floor is bench/floor-gateway.c: the socket calls a keep-alive hello.php request takes and
# nothing else, the CPU per request no gateway goes below (hello and hello-unix, WORKERS=1).
extra_peers="fcgate-log fcgate-metrics fcgate-baseline fcgate-rules floor"
# fcgate's log filter and extra command-line flags (faults.sh: FCGATE_ARGS), for every fcgate peer.
fcgate_rust_log=warn
fcgate_flags=()

# fcgate-rules' rules: bench/rules-20.toml, shared with crates/fcgate/benches/rules.rs (the
# same 20 rules measured alone, without the network). No if_missing (it would add a stat per
# request) and no auth_basic (it needs a password file).
fcgate_bench_rules=$(cat "$bench_dir/rules-20.toml")

peer_note() {
  case $1 in
    nginx) echo "nginx, no upstream keepalive (its default): a connection per request" ;;
    nginx-keepalive) echo "nginx, upstream keepalive $((PHP_CHILDREN / WORKERS)) per worker (pm.max_children / worker_processes) + fastcgi_keep_conn on" ;;
    haproxy) echo "HAProxy fcgi-app, option keep-conn, http-reuse always, server maxconn $PHP_CHILDREN pool-max-conn $PHP_CHILDREN" ;;
    caddy) echo "Caddy php_fastcgi / reverse_proxy transport fastcgi (defaults)" ;;
    h2o) echo "h2o fastcgi.connect, fastcgi.timeout.keepalive 20s (persistent connections)" ;;
    lighttpd) echo "lighttpd mod_fastcgi (defaults)" ;;
    apache) echo "Apache event MPM, mod_proxy_fcgi enablereuse=on max=$((PHP_CHILDREN / WORKERS)) per process x $WORKERS processes" ;;
    fcgate) echo "fcgate, cap from the pool's pm.max_children (php_fpm_config; max_conns $PHP_CHILDREN for the demo app), workers $WORKERS, defaults otherwise" ;;
    fcgate-log) echo "fcgate as above, access log on: combined format to a file" ;;
    fcgate-metrics) echo "fcgate as above, admin listener on and /metrics scraped once a second (curl) during the load" ;;
    fcgate-baseline) echo "fcgate as above, the build in FCGATE_BASELINE (${FCGATE_BASELINE:-unset})" ;;
    floor) echo "bench/floor-gateway.c, one thread: hello.php's socket calls and nothing else (one FastCGI request built at start-up, the head only searched for its end, $PHP_CHILDREN kept connections, a FIFO queue); the floor under every gateway's CPU a request" ;;
    fcgate-rules) echo "fcgate as above with 20 [[rule]]s (10 prefix, 8 regex, 2 exact: deny, static, internal, headers, return, rewrite) of which none matches the measured path, after the built-in dotfile rule (bench/rules-20.toml)" ;;
  esac
}

# peer_program NAME: the command that runs a peer other than fcgate (what install.sh installs).
peer_program() {
  case $1 in
    nginx | nginx-keepalive) echo nginx ;;
    apache) echo apache2 ;;
    floor) echo cc ;;
    *) echo "$1" ;;
  esac
}

# peer_available NAME: empty if the peer's program is installed, else why not.
peer_available() {
  local program
  case $1 in
    fcgate | fcgate-log | fcgate-metrics | fcgate-rules) [ -n "${dry_run:-}" ] || [ -x "$fcgate_bin" ] || echo "fcgate was not built"; return 0 ;;
    fcgate-baseline) [ -n "${dry_run:-}" ] || [ -x "${FCGATE_BASELINE:-}" ] || echo "FCGATE_BASELINE is not an executable"; return 0 ;;
  esac
  program=$(peer_program "$1")
  [ -n "${dry_run:-}" ] || command -v "$program" >/dev/null || echo "$program is not installed"
}

# start_peer NAME MODE PORT [ARGS...]: bench/run's config of NAME in front of the current
# backend, with ARGS (NAME=VALUE) laid over it, written to $work/peers/NAME and started.
start_peer() {
  local name=$1 mode=$2 port=$3 dir="$work/peers/$1" upstream
  shift 3
  [ -n "${dry_run:-}" ] || mkdir -p "$dir"
  upstream=$(backend_address prefixed)
  local common=(mode="$mode" port="$port" upstream="$upstream" workers="$WORKERS" root="$www")
  case $name in
    nginx) write_nginx_conf "$dir" "${common[@]}" "$@" ;;
    nginx-keepalive) write_nginx_conf "$dir" "${common[@]}" keepalive=$((PHP_CHILDREN / WORKERS)) "$@" ;;
    haproxy) write_haproxy_cfg "$dir" "${common[@]}" max_conns="$PHP_CHILDREN" "$@" ;;
    caddy) write_caddyfile "$dir" "${common[@]}" "$@" ;;
    h2o) write_h2o_conf "$dir" "${common[@]}" "$@" ;;
    lighttpd) write_lighttpd_conf "$dir" "${common[@]}" "$@" ;;
    apache) write_apache_conf "$dir" "${common[@]}" per_process=$((PHP_CHILDREN / WORKERS)) "$@" ;;
    fcgate | fcgate-log | fcgate-metrics | fcgate-baseline | fcgate-rules)
      # In front of php-fpm fcgate reads the pool's own config, as a deployment would, and
      # takes its cap from pm.max_children; the demo app announces FCGI_MAX_CONNS 256, so there
      # the cap is given as max_conns: the same $PHP_CHILDREN connections as every other peer.
      # access_log off, as the nginx peers: logging costs CPU per request either way.
      local args=(listen="127.0.0.1:$port" upstream="$upstream" access_log=off)
      if [ "$mode" = php ]; then args+=(root="$www" php_fpm_config="$work/php-fpm.conf")
      else args+=(max_conns="$PHP_CHILDREN"); fi
      [ "$name" = fcgate-log ] && args+=(access_log="$dir/access.log")
      [ "$name" = fcgate-metrics ] && args+=(admin_listen="127.0.0.1:$((port + 1000))")
      [ "$name" = fcgate-rules ] && args+=(rules="$fcgate_bench_rules")
      # $WORKERS runtime threads, as every peer gets $WORKERS processes or threads. A baseline
      # build from before the setting (FCGATE_BASELINE_OLD=1) gets tokio's environment variable
      # instead; that is the multi-thread scheduler even for one thread, where `workers = 1`
      # runs the current-thread one, so a recent baseline gets the setting like fcgate.
      if [ "$name" != fcgate-baseline ] || [ -z "${FCGATE_BASELINE_OLD:-}" ]; then
        args+=(workers="$WORKERS")
      fi
      write_fcgate_toml "$dir/fcgate.toml" "${args[@]}" "$@"
      ;;
    floor)
      # No config: its command line is all it takes. Built once a run.
      [ "$mode" = php ] || die "floor serves hello.php only"
      [ -n "${dry_run:-}" ] || [ -x "$work/bin/floor-gateway" ] || { mkdir -p "$work/bin" &&
        cc -O2 -Wall -o "$work/bin/floor-gateway" "$bench_dir/floor-gateway.c"; } || die "cannot build bench/floor-gateway.c"
      ;;
    *) die "unknown peer $name" ;;
  esac
  start_peer_process "$name" "$dir" "$port"
}

# start_peer_process NAME DIR PORT: starts the peer on the config written in DIR; sets peer_pid.
start_peer_process() {
  local name=$1 dir=$2 port=$3
  case $name in
    nginx*) spawn "$dir/out.log" nginx -c "$dir/nginx.conf" -g 'daemon off;' ;;
    haproxy) spawn "$dir/out.log" haproxy -db -f "$dir/haproxy.cfg" ;;
    caddy) spawn "$dir/out.log" env XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" HOME="$dir" \
             caddy run --adapter caddyfile --config "$dir/Caddyfile" ;;
    h2o) spawn "$dir/out.log" h2o -c "$dir/h2o.conf" ;;
    lighttpd) spawn "$dir/out.log" lighttpd -D -f "$dir/lighttpd.conf" ;;
    apache) spawn "$dir/out.log" apache2 -f "$dir/apache.conf" -DFOREGROUND ;;
    floor) spawn "$dir/out.log" "$work/bin/floor-gateway" "$port" "$(backend_address prefixed)" "$www" "$PHP_CHILDREN" ;;
    fcgate-metrics)
      # The scraper runs as a child of the process that becomes fcgate, so stop_tree ends both.
      # shellcheck disable=SC2016 # expanded by bash -c
      spawn "$dir/out.log" env RUST_LOG="$fcgate_rust_log" NO_COLOR=1 bash -c \
        'while sleep 1; do curl -s -o /dev/null "$1" || true; done & shift; exec "$@"' scraper \
        "http://127.0.0.1:$((port + 1000))/metrics" "$fcgate_bin" --config "$dir/fcgate.toml" "${fcgate_flags[@]}" ;;
    fcgate-baseline) spawn "$dir/out.log" env RUST_LOG="$fcgate_rust_log" NO_COLOR=1 TOKIO_WORKER_THREADS="$WORKERS" \
               "${FCGATE_BASELINE:-FCGATE_BASELINE}" --config "$dir/fcgate.toml" "${fcgate_flags[@]}" ;;
    fcgate*) spawn "$dir/out.log" env RUST_LOG="$fcgate_rust_log" NO_COLOR=1 \
               "$fcgate_bin" --config "$dir/fcgate.toml" "${fcgate_flags[@]}" ;;
    *) die "unknown peer $name" ;;
  esac
  peer_pid=$spawned_pid
}

# upstream_parts ADDRESS: sets the caller's up_host, up_port, up_socket from HOST:PORT or unix:PATH.
upstream_parts() {
  up_host="" up_port="" up_socket=""
  if [[ $1 == unix:* ]]; then up_socket=${1#unix:}; else up_host=${1%:*} up_port=${1##*:}; fi
}

# write_nginx_conf DIR port=N upstream=ADDR [keepalive=N (per worker; empty: none)] [workers=N]
#   [mode=php|app|php-debian] [root=DIR] [log_level=LEVEL] [h2_port=N (a second, h2c-only
#   listener)] [listen_options=WORDS (after the listener's address: "ssl http2")]
#   [extra_http=LINES] [extra_server=LINES]
# php-debian: Debian's snippets/fastcgi-php.conf (PATH_INFO split), as its stock site does;
# the snippet's include of fastcgi.conf is relative to DIR, so DIR links to /etc/nginx's.
write_nginx_conf() {
  local dir=$1 port="" upstream="" keepalive="" workers=${WORKERS:-2} mode=php root=${www:-} \
    log_level=warn h2_port="" listen_options="" extra_http="" extra_server=""
  shift
  set_args "$@"
  local keep_conn="" keepalive_line="" location h2_listen=""
  [ -n "$keepalive" ] && keep_conn="fastcgi_keep_conn on;" keepalive_line="keepalive $keepalive;"
  [ -n "$h2_port" ] && h2_listen="listen 127.0.0.1:$h2_port http2;"
  case $mode in
    php) location="location ~ \\.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      $keep_conn
      fastcgi_pass backend;
    }" ;;
    php-debian)
      location="location ~ [^/]\\.php(/|\$) {
      include snippets/fastcgi-php.conf;
      $keep_conn
      fastcgi_pass backend;
    }"
      act ln -sf /etc/nginx/fastcgi.conf /etc/nginx/snippets "$dir/" ;;
    app) location="location / { include /etc/nginx/fastcgi_params; $keep_conn fastcgi_pass backend; }" ;;
    *) die "nginx: unknown mode $mode" ;;
  esac
  write_config "$dir/nginx.conf" <<EOF
worker_processes $workers;
error_log $dir/error.log $log_level;
pid $dir/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/client_body;
  fastcgi_temp_path $dir/fastcgi;
  proxy_temp_path $dir/proxy;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  # Bodies and responses up to fcgate's in-memory limits stay in memory here too.
  client_body_buffer_size 128k;
  fastcgi_buffers 32 8k;
  $extra_http
  upstream backend { server $upstream; $keepalive_line }
  server {
    listen 127.0.0.1:$port${listen_options:+ $listen_options};
    $h2_listen
    root $root;
    $extra_server
    $location
  }
}
EOF
}

# write_haproxy_cfg DIR port=N upstream=ADDR max_conns=N [workers=N] [root=DIR] [multiplex=on
#   (option mpxs-conns + option get-values in the fcgi-app)]
write_haproxy_cfg() {
  local dir=$1 port="" upstream="" max_conns="" workers=${WORKERS:-2} root=${www:-} mode="" multiplex=""
  shift
  set_args "$@"
  local options="option keep-conn"
  [ -n "$multiplex" ] && options+=$'\n  option mpxs-conns\n  option get-values'
  # HAProxy spells a unix socket as a bare path.
  write_config "$dir/haproxy.cfg" <<EOF
global
  nbthread $workers
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout queue 60s
fcgi-app php
  docroot $root
  index index.php
  $options
frontend web
  bind 127.0.0.1:$port
  default_backend app
backend app
  use-fcgi-app php
  # Without these, idle connections parked per thread let HAProxy open more than php-fpm has
  # workers and a run now and then stalls at a few requests/s (seen here 1 run in 4).
  http-reuse always
  server backend ${upstream#unix:} proto fcgi maxconn $max_conns pool-max-conn $max_conns
EOF
}

# write_caddyfile DIR port=N upstream=ADDR [mode=php|app] [root=DIR] [encode=ENCODER (a line
#   of the encode block: "gzip 5"; empty: no compression)]
# In PHP mode static files are served from the root (file_server), as Caddy's docs pair it with
# php_fastcgi and as every other peer does.
write_caddyfile() {
  local dir=$1 port="" upstream="" mode=php root=${www:-} workers="" encode=""
  shift
  set_args "$@"
  local handler target=${upstream/#unix:/unix/} encode_block=""
  [ -z "$encode" ] || encode_block="encode {
    $encode
  }"
  if [ "$mode" = php ]; then
    handler="root * $root
  php_fastcgi $target
  file_server"
  else
    handler="reverse_proxy $target {
    transport fastcgi
  }"
  fi
  write_config "$dir/Caddyfile" <<EOF
{
  admin off
  auto_https off
}
http://127.0.0.1:$port {
  bind 127.0.0.1
  $encode_block
  $handler
}
EOF
}

# write_h2o_conf DIR port=N upstream=ADDR [mode=php|app] [workers=N] [root=DIR]
#   [ssl="KEY: VALUE, …" (the listener's ssl mapping: certificate-file, key-file, …)]
write_h2o_conf() {
  local dir=$1 port="" upstream="" mode=php workers=${WORKERS:-2} root=${www:-} ssl=""
  shift
  set_args "$@"
  local connect user="" up_host up_port up_socket
  upstream_parts "$upstream"
  if [ -n "$up_socket" ]; then
    connect="fastcgi.connect: { port: $up_socket, type: unix }"
  else
    connect="fastcgi.connect: { host: $up_host, port: $up_port, type: tcp }"
  fi
  # h2o refuses to run as root; as nobody it opens its error log after dropping privileges.
  if [ "$(id -u)" = 0 ]; then
    user="user: nobody"
    [ -n "${dry_run:-}" ] || chmod 777 "$dir"
  fi
  local paths
  if [ "$mode" = php ]; then
    paths="        file.dir: $root
        file.custom-handler:
          extension: .php
          $connect
          fastcgi.timeout.keepalive: 20000"
  else
    paths="        $connect
        fastcgi.timeout.keepalive: 20000"
  fi
  write_config "$dir/h2o.conf" <<EOF
num-threads: $workers
error-log: $dir/error.log
$user
listen: { host: 127.0.0.1, port: $port${ssl:+, ssl: { $ssl \}} }
hosts:
  default:
    paths:
      /:
$paths
EOF
}

# write_lighttpd_conf DIR port=N upstream=ADDR [mode=php|app] [root=DIR]
write_lighttpd_conf() {
  local dir=$1 port="" upstream="" mode=php root=${www:-} workers=""
  shift
  set_args "$@"
  local target up_host up_port up_socket match='".php"' check=enable
  upstream_parts "$upstream"
  if [ -n "$up_socket" ]; then
    target="\"socket\" => \"$up_socket\""
  else
    target="\"host\" => \"$up_host\", \"port\" => $up_port"
  fi
  [ "$mode" = app ] && match='"/"' && check=disable
  write_config "$dir/lighttpd.conf" <<EOF
server.document-root = "$root"
server.bind = "127.0.0.1"
server.port = $port
server.pid-file = "$dir/lighttpd.pid"
server.errorlog = "$dir/error.log"
server.upload-dirs = ( "$dir" )
server.max-keep-alive-requests = 1000000
server.max-fds = 16384
server.modules += ( "mod_fastcgi" )
fastcgi.server = ( $match => (( $target, "check-local" => "$check" )) )
EOF
}

# write_apache_conf DIR port=N upstream=ADDR per_process=N [mode=php|app] [workers=N] [root=DIR]
# (per_process: mod_proxy_fcgi's connection pool per process, max=)
write_apache_conf() {
  local dir=$1 port="" upstream="" per_process="" mode=php workers=${WORKERS:-2} root=${www:-}
  shift
  set_args "$@"
  local modules=/usr/lib/apache2/modules handler user="" target proxy_name
  if [[ $upstream == unix:* ]]; then
    target="$upstream|fcgi://localhost/"
    proxy_name="fcgi://localhost/"
  else
    target="fcgi://$upstream/"
    proxy_name=$target
  fi
  if [ "$mode" = php ]; then
    handler="<FilesMatch \"\\.php\$\">
  SetHandler \"proxy:$target\"
</FilesMatch>
<Proxy \"$proxy_name\" enablereuse=on max=$per_process>
</Proxy>"
  else
    handler="ProxyPass \"/\" \"$target\" enablereuse=on max=$per_process"
  fi
  [ "$(id -u)" = 0 ] && user="User www-data
Group www-data"
  [ -n "${dry_run:-}" ] || mkdir -p "$dir/run"
  write_config "$dir/apache.conf" <<EOF
ServerRoot $dir
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile $dir/apache.pid
DefaultRuntimeDir $dir/run
ErrorLog $dir/error.log
LogLevel warn
$user
LoadModule mpm_event_module $modules/mod_mpm_event.so
LoadModule authz_core_module $modules/mod_authz_core.so
LoadModule proxy_module $modules/mod_proxy.so
LoadModule proxy_fcgi_module $modules/mod_proxy_fcgi.so
# A fixed set of $workers processes, so each one's pool of $per_process connections adds up
# to at most $((workers * per_process)) (one per php-fpm worker).
StartServers $workers
ServerLimit $workers
ThreadsPerChild 64
MaxRequestWorkers $((workers * 64))
MinSpareThreads 1
MaxSpareThreads $((workers * 64))
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 60
DocumentRoot $root
<Directory $root>
  Require all granted
</Directory>
$handler
EOF
}

# write_fcgate_toml FILE listen=ADDR[,ADDR...] upstream=ADDR [root=DIR] [php_fpm_config=FILE]
#   [max_conns=N] [access_log=off|PATH] [admin_listen=ADDR] [workers=N] [multiplex=MODE] [extra=LINES]
#   [upstream_extra=LINES] [compression=LINES] [rules=TABLES]  (extra: top-level lines;
#   upstream_extra: lines in [upstream]; compression: lines in [compression]; rules: [[rule]]
#   tables, at the end)
# Settings left empty are left out: fcgate's defaults.
write_fcgate_toml() {
  local file=$1 listen="" upstream="" root="" php_fpm_config="" max_conns="" access_log="" \
    admin_listen="" workers="" multiplex="" extra="" upstream_extra="" compression="" rules=""
  shift
  set_args "$@"
  {
    if [[ $listen == *,* ]]; then echo "listen = [\"${listen//,/\", \"}\"]"; else echo "listen = \"$listen\""; fi
    [ -z "$access_log" ] || echo "access_log = \"$access_log\""
    [ -z "$admin_listen" ] || echo "admin_listen = \"$admin_listen\""
    [ -z "$workers" ] || echo "workers = $workers"
    [ -z "$root" ] || echo "root = \"$root\""
    [ -z "$extra" ] || echo "$extra"
    echo
    echo "[upstream]"
    echo "servers = [\"$upstream\"]"
    [ -z "$php_fpm_config" ] || echo "php_fpm_config = \"$php_fpm_config\""
    [ -z "$max_conns" ] || echo "max_conns = $max_conns"
    [ -z "$multiplex" ] || echo "multiplex = \"$multiplex\""
    [ -z "$upstream_extra" ] || echo "$upstream_extra"
    [ -z "$compression" ] || printf '\n[compression]\n%s\n' "$compression"
    [ -z "$rules" ] || printf '\n%s\n' "$rules"
  } | write_config "$file"
}
