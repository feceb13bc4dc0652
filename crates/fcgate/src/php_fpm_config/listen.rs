//! Whether a pool's `listen` value names the socket fcgate connects to. php-fpm reads `listen`
//! as TCP when it holds a `:` or only digits (`fpm_sockets_domain_from_address`), binding every
//! address for a bare port; anything else is a unix socket path.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use fcgi::net::Address;

/// True when a connect to `address` reaches a php-fpm socket bound as `listen`.
pub(super) fn serves(listen: &str, address: &Address) -> bool {
    match (Listen::parse(listen), address) {
        (Listen::Unix(listen), Address::Unix(path)) => same_socket_path(&listen, path),
        (Listen::Tcp { host, port }, Address::Tcp(host_port)) => {
            let Some((connect_host, connect_port)) = split_host_port(host_port) else {
                return false;
            };
            connect_port == port && host.accepts(&Host::connecting_to(connect_host))
        }
        _ => false,
    }
}

enum Listen {
    Unix(PathBuf),
    Tcp { host: Host, port: u16 },
    Unusable,
}

impl Listen {
    fn parse(listen: &str) -> Listen {
        let listen = listen.trim();
        if !listen.is_empty() && listen.bytes().all(|b| b.is_ascii_digit()) {
            return match listen.parse() {
                Ok(port) => Listen::Tcp {
                    host: Host::Any,
                    port,
                },
                Err(_) => Listen::Unusable,
            };
        }
        if !listen.contains(':') {
            return Listen::Unix(PathBuf::from(listen));
        }
        match split_host_port(listen) {
            Some((host, port)) => Listen::Tcp {
                host: Host::listening_on(host),
                port,
            },
            None => Listen::Unusable,
        }
    }
}

/// `host:port` split at the last `:`, brackets taken off an IPv6 host.
fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port.parse().ok()?))
}

#[derive(Debug, PartialEq, Eq)]
enum Host {
    /// Every local address: a bare port, `*`, `0.0.0.0`, `[::]`.
    Any,
    Loopback(Family),
    Ip(IpAddr),
    Name(String),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Family {
    V4,
    V6,
    /// `localhost`, which resolves to both.
    Either,
}

impl Host {
    fn listening_on(host: &str) -> Host {
        match host.parse::<IpAddr>() {
            _ if host.is_empty() || host == "*" => Host::Any,
            Ok(ip) if ip.is_unspecified() => Host::Any,
            _ => Host::named(host),
        }
    }

    fn connecting_to(host: &str) -> Host {
        match host.parse::<IpAddr>() {
            // A connect to 0.0.0.0 or :: reaches this machine, as loopback does.
            Ok(ip) if ip.is_unspecified() => Host::Loopback(family_of(ip)),
            _ => Host::named(host),
        }
    }

    fn named(host: &str) -> Host {
        match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => Host::Loopback(family_of(ip)),
            Ok(ip) => Host::Ip(ip),
            Err(_) if host.eq_ignore_ascii_case("localhost") => Host::Loopback(Family::Either),
            Err(_) => Host::Name(host.to_ascii_lowercase()),
        }
    }

    /// Whether a socket bound to `self` accepts a connect to `target`. A name is compared as
    /// written: resolving it is not this module's business, and the caller falls back to the
    /// only pool when nothing matches.
    fn accepts(&self, target: &Host) -> bool {
        match (self, target) {
            (Host::Any, _) => true,
            (Host::Loopback(bound), Host::Loopback(target)) => {
                bound == target || *bound == Family::Either || *target == Family::Either
            }
            (bound, target) => bound == target,
        }
    }
}

fn family_of(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// Equal as written, or once symlinks in the directories are resolved (`/var/run` is often a
/// link to `/run`). A relative `listen` is relative to a prefix this reader cannot know (php-fpm's
/// `-p`), so it matches any socket path that ends with it.
fn same_socket_path(listen: &Path, connect: &Path) -> bool {
    if listen.is_relative() {
        return !listen.as_os_str().is_empty() && connect.ends_with(listen);
    }
    listen == connect || resolved(listen).is_some_and(|listen| Some(listen) == resolved(connect))
}

fn resolved(socket: &Path) -> Option<PathBuf> {
    let directory = std::fs::canonicalize(socket.parent()?).ok()?;
    Some(directory.join(socket.file_name()?))
}
