# shellcheck shell=bash disable=SC2034,SC2154 # a library: the scripts sourcing it set and read its variables
# Installs the tools and peers that are missing, from Debian's packages only, for every script
# in bench/ (each names the commands it needs).

# package_for COMMAND: the Debian package that provides it.
package_for() {
  case $1 in
    nginx)
      # nginx-light is bookworm's small build; later releases fold it into nginx.
      if apt-cache show nginx-light >/dev/null 2>&1; then echo nginx-light; else echo nginx; fi ;;
    apache2) echo apache2 ;;
    php-fpm) echo php-fpm ;;
    nft) echo nftables ;;
    ip | tc | ss) echo iproute2 ;;
    gnuplot) echo gnuplot-nox ;;
    ps) echo procps ;;
    h2load) echo nghttp2-client ;;
    cgi-fcgi) echo libfcgi-bin ;;
    dnsmasq) echo dnsmasq-base ;;  # the binary, without the service
    flock) echo util-linux ;;
    cc) printf '%s\n' gcc libc6-dev ;;  # bench/floor-gateway.c
    llvm-profdata-*) echo "llvm-${1#llvm-profdata-}" ;;  # llvm-profdata-22 is in llvm-22
    *) echo "$1" ;;
  esac
}

# missing_packages COMMAND...: the packages providing the commands that are not installed, one
# a line, each once (php-fpm is looked for as /usr/sbin/php-fpm*, its versioned name).
missing_packages() {
  local command
  for command in "$@"; do
    if [ "$command" = php-fpm ]; then
      compgen -G '/usr/sbin/php-fpm*' >/dev/null || echo php-fpm
    else
      command -v "$command" >/dev/null 2>&1 || package_for "$command"
    fi
  done | awk '!seen[$0]++'
}

# install_packages PACKAGE...: apt-get install, as root, with the packages' services (nginx,
# apache2, lighttpd, h2o, caddy, haproxy, php-fpm on their stock ports) kept from starting by a
# policy-rc.d that exists only while apt-get runs. In a dry run: says what it would install.
install_packages() {
  [ $# -gt 0 ] || return 0
  if [ -n "${dry_run:-}" ]; then dry_say "install (apt-get, as root): $*"; return 0; fi
  [ "$(id -u)" = 0 ] || die "missing $*; run as root to install them"
  command -v apt-get >/dev/null || die "missing $* and no apt-get to install them"
  log "installing $*"
  local policy=/usr/sbin/policy-rc.d added_policy="" status=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by fcgate bench/ while it installs packages\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  [ -n "${apt_updated:-}" ] || timeout 600 apt-get update -qq || log "apt-get update failed; installing from the lists at hand"
  apt_updated=1
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "$@" \
    >"${apt_log:-/dev/null}" 2>&1 || status=$?
  [ -n "$added_policy" ] && rm -f "$policy"
  return "$status"
}

# ensure_packages COMMAND...: installs what provides the missing ones, or dies.
ensure_packages() {
  local packages
  mapfile -t packages < <(missing_packages "$@")
  install_packages "${packages[@]}" || die "apt-get install ${packages[*]} failed"
}

# The commands bench/run needs: its tools and every peer.
run_commands=(h2load wrk curl nft ip tc ss ps gnuplot nginx haproxy caddy h2o lighttpd apache2 php-fpm)

# ensure_nfq_delay_tools: what building and running bench/nfq-delay.c takes, installed only
# on kernels without sch_netem.
ensure_nfq_delay_tools() {
  local missing=()
  command -v cc >/dev/null || missing+=(gcc libc6-dev)
  [ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || missing+=(libnetfilter-queue-dev)
  command -v iptables >/dev/null || missing+=(iptables)
  [ ${#missing[@]} -gt 0 ] || return 0
  log "NFQUEUE delay: this kernel has no sch_netem"
  install_packages "${missing[@]}" || die "apt-get install ${missing[*]} failed"
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
