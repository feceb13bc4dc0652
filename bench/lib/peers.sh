# The gateways under test: one config writer + starter per peer. Each runs in the foreground
# on its own loopback port in front of the current backend (backends.sh), in PHP mode (document
# root, *.php to the backend) or app mode (everything to the backend: the demo app).
#
# Every peer gets the same resources: $WORKERS worker processes/threads, and where it can cap
# or keep backend connections it is set up the way its documentation recommends for php-fpm,
# with at most $PHP_CHILDREN connections in total (one per php-fpm worker).
#
# start_peer NAME MODE PORT sets peer_pid. peer_note NAME says how the peer is configured.

all_peers="nginx nginx-keepalive haproxy caddy h2o lighttpd apache fcgate"
# Not run unless asked for (--peers): what fcgate's own operations features cost, measured
# against plain `fcgate` in the same run.
extra_peers="fcgate-log fcgate-metrics"

peer_note() {
  case $1 in
    nginx) echo "nginx, no upstream keepalive (its default): a connection per request" ;;
    nginx-keepalive) echo "nginx, upstream keepalive $((PHP_CHILDREN / WORKERS)) per worker (pm.max_children / worker_processes) + fastcgi_keep_conn on" ;;
    haproxy) echo "HAProxy fcgi-app, option keep-conn, http-reuse always, server maxconn $PHP_CHILDREN pool-max-conn $PHP_CHILDREN" ;;
    caddy) echo "Caddy php_fastcgi / reverse_proxy transport fastcgi (defaults)" ;;
    h2o) echo "h2o fastcgi.connect, fastcgi.timeout.keepalive 20s (persistent connections)" ;;
    lighttpd) echo "lighttpd mod_fastcgi (defaults)" ;;
    apache) echo "Apache event MPM, mod_proxy_fcgi enablereuse=on max=$((PHP_CHILDREN / WORKERS)) per process x $WORKERS processes" ;;
    fcgate) echo "fcgate, cap from the pool's pm.max_children (php_fpm_config; max_conns $PHP_CHILDREN for the demo app), defaults otherwise" ;;
    fcgate-log) echo "fcgate as above, access log on: combined format to a file" ;;
    fcgate-metrics) echo "fcgate as above, admin listener on and /metrics scraped once a second (curl) during the load" ;;
  esac
}

# peer_available NAME: empty if the peer's program is installed, else why not.
peer_available() {
  local program
  case $1 in
    nginx | nginx-keepalive) program=nginx ;;
    apache) program=apache2 ;;
    fcgate | fcgate-log | fcgate-metrics) [ -x "$work/bin/fcgate" ] || echo "fcgate was not built"; return 0 ;;
    *) program=$1 ;;
  esac
  command -v "$program" >/dev/null || echo "$program is not installed"
}

start_peer() {
  local name=$1 mode=$2 port=$3 dir="$work/peers/$1"
  mkdir -p "$dir"
  "write_$(tr - _ <<<"$name")" "$mode" "$port" "$dir"
  case $name in
    nginx | nginx-keepalive) nginx -c "$dir/nginx.conf" -g 'daemon off;' >"$dir/out.log" 2>&1 & ;;
    haproxy) haproxy -db -f "$dir/haproxy.cfg" >"$dir/out.log" 2>&1 & ;;
    caddy) XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" HOME="$dir" \
             caddy run --adapter caddyfile --config "$dir/Caddyfile" >"$dir/out.log" 2>&1 & ;;
    h2o) h2o -c "$dir/h2o.conf" >"$dir/out.log" 2>&1 & ;;
    lighttpd) lighttpd -D -f "$dir/lighttpd.conf" >"$dir/out.log" 2>&1 & ;;
    apache) apache2 -f "$dir/apache.conf" -DFOREGROUND >"$dir/out.log" 2>&1 & ;;
    fcgate | fcgate-log) RUST_LOG=warn "$work/bin/fcgate" --config "$dir/fcgate.toml" >"$dir/out.log" 2>&1 & ;;
    fcgate-metrics)
      # The scraper runs as a child of the process that becomes fcgate, so stop_tree ends both.
      (
        while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$((port + 1000))/metrics" || true; done &
        RUST_LOG=warn exec "$work/bin/fcgate" --config "$dir/fcgate.toml" >"$dir/out.log" 2>&1
      ) &
      ;;
  esac
  peer_pid=$!
}

write_nginx() { write_nginx_conf "$@" ""; }
write_nginx_keepalive() { write_nginx_conf "$@" "keepalive $((PHP_CHILDREN / WORKERS));"; }

write_nginx_conf() {
  local mode=$1 port=$2 dir=$3 keepalive=$4 keep_conn="" location
  [ -n "$keepalive" ] && keep_conn="fastcgi_keep_conn on;"
  if [ "$mode" = php ]; then
    location="location ~ \\.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      $keep_conn
      fastcgi_pass backend;
    }"
  else
    location="location / { include /etc/nginx/fastcgi_params; $keep_conn fastcgi_pass backend; }"
  fi
  cat >"$dir/nginx.conf" <<EOF
worker_processes $WORKERS;
error_log $dir/error.log warn;
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
  upstream backend { server $(backend_address prefixed); $keepalive }
  server {
    listen 127.0.0.1:$port;
    root $www;
    $location
  }
}
EOF
}

write_haproxy() {
  local mode=$1 port=$2 dir=$3
  cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread $WORKERS
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout queue 60s
fcgi-app php
  docroot $www
  index index.php
  option keep-conn
frontend web
  bind 127.0.0.1:$port
  default_backend app
backend app
  use-fcgi-app php
  # Without these, idle connections parked per thread let HAProxy open more than php-fpm has
  # workers and a run now and then stalls at a few requests/s (seen here 1 run in 4).
  http-reuse always
  server backend $(backend_address plain) proto fcgi maxconn $PHP_CHILDREN pool-max-conn $PHP_CHILDREN
EOF
}

write_caddy() {
  local mode=$1 port=$2 dir=$3 handler
  if [ "$mode" = php ]; then
    handler="root * $www
  php_fastcgi $(backend_address prefixed | sed 's|^unix:|unix/|')"
  else
    handler="reverse_proxy $(backend_address prefixed | sed 's|^unix:|unix/|') {
    transport fastcgi
  }"
  fi
  cat >"$dir/Caddyfile" <<EOF
{
  admin off
  auto_https off
}
http://127.0.0.1:$port {
  bind 127.0.0.1
  $handler
}
EOF
}

write_h2o() {
  local mode=$1 port=$2 dir=$3 connect user=""
  if [ "$backend_kind" = unix ]; then
    connect="fastcgi.connect: { port: $backend_socket, type: unix }"
  else
    connect="fastcgi.connect: { host: $backend_host, port: $backend_port, type: tcp }"
  fi
  # h2o refuses to run as root; as nobody it opens its error log after dropping privileges.
  [ "$(id -u)" = 0 ] && user="user: nobody" && chmod 777 "$dir"
  if [ "$mode" = php ]; then
    cat >"$dir/h2o.conf" <<EOF
num-threads: $WORKERS
error-log: $dir/error.log
$user
listen: { host: 127.0.0.1, port: $port }
hosts:
  default:
    paths:
      /:
        file.dir: $www
        file.custom-handler:
          extension: .php
          $connect
          fastcgi.timeout.keepalive: 20000
EOF
  else
    cat >"$dir/h2o.conf" <<EOF
num-threads: $WORKERS
error-log: $dir/error.log
$user
listen: { host: 127.0.0.1, port: $port }
hosts:
  default:
    paths:
      /:
        $connect
        fastcgi.timeout.keepalive: 20000
EOF
  fi
}

write_lighttpd() {
  local mode=$1 port=$2 dir=$3 target
  if [ "$backend_kind" = unix ]; then
    target="\"socket\" => \"$backend_socket\""
  else
    target="\"host\" => \"$backend_host\", \"port\" => $backend_port"
  fi
  local match='".php"' check=enable
  [ "$mode" = app ] && match='"/"' && check=disable
  cat >"$dir/lighttpd.conf" <<EOF
server.document-root = "$www"
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

write_apache() {
  local mode=$1 port=$2 dir=$3 modules=/usr/lib/apache2/modules handler user=""
  local per_process=$((PHP_CHILDREN / WORKERS)) target proxy_name
  if [ "$backend_kind" = unix ]; then
    target="unix:$backend_socket|fcgi://localhost/"
    proxy_name="fcgi://localhost/"
  else
    target="fcgi://$backend_host:$backend_port/"
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
  mkdir -p "$dir/run"
  cat >"$dir/apache.conf" <<EOF
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
# A fixed set of $WORKERS processes, so each one's pool of $per_process connections adds up
# to at most $PHP_CHILDREN (one per php-fpm worker).
StartServers $WORKERS
ServerLimit $WORKERS
ThreadsPerChild 64
MaxRequestWorkers $((WORKERS * 64))
MinSpareThreads 1
MaxSpareThreads $((WORKERS * 64))
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 60
DocumentRoot $www
<Directory $www>
  Require all granted
</Directory>
$handler
EOF
}

# In front of php-fpm fcgate reads the pool's own config, as a deployment would, and takes its
# cap from pm.max_children ($PHP_CHILDREN); the demo app announces FCGI_MAX_CONNS 256, so there
# the cap is given as max_conns: the same $PHP_CHILDREN connections as every other peer.
write_fcgate_log() { write_fcgate "$@" "access_log = \"$3/access.log\""; }
write_fcgate_metrics() { write_fcgate "$@" "admin_listen = \"127.0.0.1:$(($2 + 1000))\""; }

write_fcgate() {
  local mode=$1 port=$2 dir=$3 extra=${4:-} root="" cap="max_conns = $PHP_CHILDREN"
  if [ "$mode" = php ]; then
    root="root = \"$www\""
    cap="php_fpm_config = \"$work/php-fpm.conf\""
  fi
  # access_log off, as the nginx peers: logging costs CPU per request either way (fcgate-log's
  # extra setting turns it on instead).
  cat >"$dir/fcgate.toml" <<EOF
listen = "127.0.0.1:$port"
$(grep -q '^access_log' <<<"$extra" || echo 'access_log = "off"')
$extra
$root

[upstream]
servers = ["$(backend_address prefixed)"]
$cap
EOF
}
