# Installs the tools and peers that are missing, from Debian's packages only. Services the
# packages would start (nginx, apache2, lighttpd, h2o, caddy, haproxy, php-fpm on their stock
# ports) are kept from starting by a policy-rc.d that exists only while apt-get runs.

# package_for COMMAND: the Debian package that provides it.
package_for() {
  case $1 in
    nginx)
      # nginx-light is bookworm's small build; later releases fold it into nginx.
      if apt-cache show nginx-light >/dev/null 2>&1; then echo nginx-light; else echo nginx; fi ;;
    apache2) echo apache2 ;;
    php-fpm) echo php-fpm ;;
    nft) echo nftables ;;
    ip | tc) echo iproute2 ;;
    gnuplot) echo gnuplot-nox ;;
    ss) echo iproute2 ;;
    ps) echo procps ;;
    h2load) echo nghttp2-client ;;
    *) echo "$1" ;;
  esac
}

ensure_packages() {
  local missing=() command
  for command in h2load wrk curl nft ip tc ss ps gnuplot nginx haproxy caddy h2o lighttpd apache2; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$(package_for "$command")")
  done
  compgen -G '/usr/sbin/php-fpm*' >/dev/null || missing+=(php-fpm)
  [ ${#missing[@]} -gt 0 ] || return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by fcgate bench/run while it installs packages\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  local status=0 packages
  mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
  apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${packages[@]}" >/dev/null || status=$?
  [ -n "$added_policy" ] && rm -f "$policy"
  [ "$status" = 0 ] || die "apt-get install failed ($status)"
}

# ensure_nfq_delay_tools: what building and running bench/nfq-delay.c takes, installed only
# on kernels without sch_netem.
ensure_nfq_delay_tools() {
  local missing=()
  command -v cc >/dev/null || missing+=(gcc libc6-dev)
  [ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || missing+=(libnetfilter-queue-dev)
  command -v iptables >/dev/null || missing+=(iptables)
  [ ${#missing[@]} -gt 0 ] || return 0
  log "installing ${missing[*]} (NFQUEUE delay: this kernel has no sch_netem)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

# versions: one line per tool, for the report header.
versions() {
  local fpm
  fpm=$(find /usr/sbin -maxdepth 1 -name 'php-fpm*' | sort | tail -n1)
  first_line() { "$@" 2>&1 | head -n1 | sed 's/ - .*//; s/^/- /' || true; }
  first_line nginx -v
  first_line haproxy -v
  first_line caddy version | sed 's/^- /- caddy /'
  first_line h2o --version
  first_line lighttpd -v
  first_line apache2 -v
  [ -z "$fpm" ] || first_line "$fpm" -v
  first_line h2load --version
  first_line wrk -v  # wrk prints its version with the usage and exits 1
}
