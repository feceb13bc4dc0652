//! Servers written as host names: resolving them (A and AAAA) into one server per address, and
//! resolving them again while the gateway runs, so addresses that appear become servers and
//! addresses that vanish drain — what a Kubernetes headless Service or Consul DNS needs.
//!
//! The name servers are `upstream.resolver` (nginx's `resolver`), else /etc/resolv.conf's. A
//! name is asked again every `upstream.resolve_interval` (nginx's `valid=`), else when its
//! answer's TTL runs out, held within [`TTL_FLOOR`]..[`TTL_CEILING`]. A round that fails, or
//! finds no address, keeps the last good addresses of that name and warns once, as nginx does;
//! at start and on reload a name that does not resolve (and has no last good set) is an error.
//!
//! Resolution is hickory-resolver's, not the system's getaddrinfo: getaddrinfo says nothing
//! of TTLs, cannot be pointed at a chosen name server, and blocks a thread per lookup. hickory
//! is a full stub resolver on tokio, already the resolver of the Rust networking crates
//! (reqwest's optional one), MIT/Apache-2.0.
//!
//! Unix and IP-literal servers never come here: an upstream without host names has no resolver
//! and no task. What a change does to the pools is `upstream.rs`'s business ([`Upstream`]).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use fcgi::net::Address;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use super::server_set::ServerSet;
use super::Upstream;
use crate::config::{ResolutionConfig, UpstreamConfig};

/// The shortest wait between two rounds when the TTL decides: a TTL of 0 (dnsmasq's default
/// for its own hosts, Consul's default) would otherwise mean asking in a loop.
pub const TTL_FLOOR: Duration = Duration::from_secs(1);
/// The longest: with a TTL of a day (or /etc/hosts, which has none) an address that vanished
/// would otherwise keep being tried, and a new one ignored, for that long.
pub const TTL_CEILING: Duration = Duration::from_secs(300);
/// After a round that failed, without `resolve_interval`: soon, but not in a loop against a
/// name server that is down (each try already waits out its timeout).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The host name and port of a server written `name:port`; `None` for a unix path or an IP
/// address, which are used as they are.
pub fn host_name(address: &Address) -> Option<(&str, u16)> {
    let Address::Tcp(host_port) = address else {
        return None;
    };
    let (host, port) = host_port.rsplit_once(':')?;
    if host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// Why the servers could not be resolved at start or on reload.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The system's resolver configuration could not be read.
    #[error("cannot read the system's resolver configuration (/etc/resolv.conf): {0}")]
    SystemConfig(String),
    /// A server's host name gave no address.
    #[error("upstream.servers[{entry}]: `{name}` does not resolve: {reason}")]
    Unresolved {
        /// Its position in `upstream.servers`.
        entry: usize,
        /// The server as written.
        name: String,
        /// The resolver's answer.
        reason: String,
    },
}

/// The resolver of one generation's upstream.
#[derive(Clone)]
pub(crate) struct NameResolver {
    resolver: TokioResolver,
    interval: Option<Duration>,
    timeout: Duration,
    /// The system's configuration (no `resolver` set): what getaddrinfo would answer too.
    system: bool,
}

/// The addresses one name has now, and for how long the answer holds.
struct Answer {
    addresses: Vec<Address>,
    ttl: Duration,
}

impl NameResolver {
    fn new(config: &ResolutionConfig) -> Result<NameResolver, ResolveError> {
        let mut builder = if config.name_servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|error| ResolveError::SystemConfig(error.to_string()))?
        } else {
            let name_servers = config
                .name_servers
                .iter()
                .map(|server| {
                    let connection = |mut connection: ConnectionConfig| {
                        connection.port = server.port();
                        connection
                    };
                    NameServerConfig::new(
                        server.ip(),
                        true,
                        vec![
                            connection(ConnectionConfig::udp()),
                            connection(ConnectionConfig::tcp()),
                        ],
                    )
                })
                .collect();
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            );
            // Chosen name servers are the only source, as nginx's `resolver`.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        };
        let options = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Each try may take the whole timeout; the lookup as a whole is bounded in `lookup`.
        options.timeout = config.timeout;
        options.positive_min_ttl = Some(TTL_FLOOR);
        options.positive_max_ttl = Some(TTL_CEILING);
        let resolver = builder
            .build()
            .map_err(|error| ResolveError::SystemConfig(error.to_string()))?;
        Ok(NameResolver {
            resolver,
            interval: config.resolve_interval,
            timeout: config.timeout,
            system: config.name_servers.is_empty(),
        })
    }

    /// Asks the name servers (never hickory's cache: `resolve_interval` may be shorter than
    /// the TTL, and a round must see a change as soon as it is asked for).
    async fn lookup(&self, host: &str, port: u16) -> Result<Answer, String> {
        self.resolver.clear_cache();
        let answer = tokio::time::timeout(self.timeout, self.resolver.lookup_ip(host))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|error| error.to_string())?;
        let mut ips: Vec<IpAddr> = answer.iter().collect();
        ips.sort_unstable();
        ips.dedup();
        if ips.is_empty() {
            return Err("no A or AAAA record".to_owned());
        }
        Ok(Answer {
            addresses: servers_for(host, port, ips, self.system),
            ttl: answer
                .valid_until()
                .saturating_duration_since(Instant::now()),
        })
    }

    fn next_round(&self, shortest_ttl: Option<Duration>) -> Duration {
        next_round(self.interval, shortest_ttl)
    }
}

/// The servers a name's addresses make: one per address — except for one IPv4 and one IPv6
/// address both on loopback (`localhost` is 127.0.0.1 and ::1 in most /etc/hosts). That is one
/// backend on this host, listening on one of them or on both (php-fpm's `listen = 9000` binds
/// `[::]`, which takes IPv4 too): two servers would give it the cap twice, its surplus waiting
/// in its listen queue. It stays one server under its name, whose connects try the two in the
/// system's order — when `system` says the system resolves names as this resolver does (no
/// `resolver` set), else the connects could not find the name. (Several IPv4 loopback aliases,
/// 127.0.0.2 and 127.0.0.3, are backends of their own.)
fn servers_for(host: &str, port: u16, ips: Vec<IpAddr>, system: bool) -> Vec<Address> {
    let one_host_both_families = system
        && ips.len() == 2
        && ips.iter().filter(|ip| ip.is_ipv4()).count() == 1
        && ips.iter().all(IpAddr::is_loopback);
    if one_host_both_families {
        return vec![Address::Tcp(format!("{host}:{port}"))];
    }
    ips.into_iter()
        .map(|ip| Address::Tcp(SocketAddr::new(ip, port).to_string()))
        .collect()
}

/// How long until the next round: `resolve_interval` if set, else the shortest TTL of this
/// round's answers (`None` when a name failed) within bounds.
fn next_round(interval: Option<Duration>, shortest_ttl: Option<Duration>) -> Duration {
    match (interval, shortest_ttl) {
        (Some(interval), _) => interval,
        (None, Some(ttl)) => ttl.clamp(TTL_FLOOR, TTL_CEILING),
        (None, None) => RETRY_AFTER_FAILURE,
    }
}

/// Where every entry of `upstream.servers` points now: its own address, or what its name
/// resolved to; with the resolver that keeps it so, when there are names.
pub(crate) struct Discovered {
    /// Per entry, in order: the addresses of its servers.
    pub(crate) endpoints: Vec<Vec<Address>>,
    /// `None` when no entry is a host name: no resolver, no task.
    pub(crate) resolver: Option<NameResolver>,
    /// When the names are to be asked again.
    pub(crate) next_round: Duration,
}

/// Resolves every host name in `config` (start and reload). On reload a name that fails keeps
/// the addresses `previous` has for the same name, with a warning; otherwise it is an error.
pub(crate) async fn discover(
    config: &UpstreamConfig,
    previous: Option<&ServerSet>,
) -> Result<Discovered, ResolveError> {
    let has_names = config
        .servers
        .iter()
        .any(|server| host_name(&server.address).is_some());
    if !has_names {
        return Ok(Discovered {
            endpoints: config
                .servers
                .iter()
                .map(|server| vec![server.address.clone()])
                .collect(),
            resolver: None,
            next_round: Duration::ZERO,
        });
    }
    let resolver = NameResolver::new(&config.resolution)?;
    let mut endpoints = Vec::with_capacity(config.servers.len());
    let mut shortest_ttl: Option<Duration> = None;
    for (entry, server) in config.servers.iter().enumerate() {
        let Some((host, port)) = host_name(&server.address) else {
            endpoints.push(vec![server.address.clone()]);
            continue;
        };
        let name = server.address.to_string();
        match resolver.lookup(host, port).await {
            Ok(answer) => {
                tracing::info!(server = %name, addresses = %list(&answer.addresses), "resolved");
                shortest_ttl = Some(shortest_ttl.map_or(answer.ttl, |ttl| ttl.min(answer.ttl)));
                endpoints.push(answer.addresses);
            }
            Err(reason) => {
                let last_good = previous.map(|set| last_good_by_name(set, &name));
                match last_good {
                    Some(addresses) if !addresses.is_empty() => {
                        tracing::warn!(
                            server = %name,
                            "cannot resolve ({reason}); keeping its last addresses: {}",
                            list(&addresses)
                        );
                        endpoints.push(addresses);
                    }
                    _ => {
                        return Err(ResolveError::Unresolved {
                            entry,
                            name,
                            reason,
                        })
                    }
                }
            }
        }
    }
    Ok(Discovered {
        endpoints,
        next_round: resolver.next_round(shortest_ttl),
        resolver: Some(resolver),
    })
}

/// Resolves the names again, every round, until the upstream is retired (a reload replaced
/// it, or shutdown) or dropped: the task holds only a [`Weak`] between rounds, so it can never
/// outlive the generation it serves.
pub(crate) async fn rediscover(upstream: Weak<Upstream>, resolver: NameResolver, first: Duration) {
    let Some(retired) = upstream.upgrade().map(|upstream| upstream.retired.clone()) else {
        return;
    };
    let mut delay = first;
    // Names whose last round failed: warned about once, not every round.
    let mut failing: HashSet<usize> = HashSet::new();
    loop {
        tokio::select! {
            () = retired.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        // Only this task changes the servers, so `current` stays the latest for the round.
        let (config, current) = match upstream.upgrade() {
            Some(upstream) => (Arc::clone(&upstream.config), upstream.servers()),
            None => return,
        };
        let mut endpoints = Vec::with_capacity(config.servers.len());
        let mut shortest_ttl: Option<Duration> = None;
        let mut any_failed = false;
        for (entry, server) in config.servers.iter().enumerate() {
            let Some((host, port)) = host_name(&server.address) else {
                endpoints.push(vec![server.address.clone()]);
                continue;
            };
            let lookup = tokio::select! {
                () = retired.cancelled() => return,
                lookup = resolver.lookup(host, port) => lookup,
            };
            match lookup {
                Ok(answer) => {
                    if failing.remove(&entry) {
                        tracing::info!(server = %server.address, "resolves again");
                    }
                    shortest_ttl = Some(shortest_ttl.map_or(answer.ttl, |ttl| ttl.min(answer.ttl)));
                    endpoints.push(answer.addresses);
                }
                Err(reason) => {
                    any_failed = true;
                    let last_good = last_good_by_entry(&current, entry);
                    if failing.insert(entry) {
                        tracing::warn!(
                            server = %server.address,
                            "cannot resolve ({reason}); keeping its last addresses: {}",
                            list(&last_good)
                        );
                    }
                    endpoints.push(last_good);
                }
            }
        }
        delay = resolver.next_round(if any_failed { None } else { shortest_ttl });
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        upstream.count_round(!any_failed);
        upstream.apply(&endpoints);
    }
}

fn last_good_by_entry(set: &ServerSet, entry: usize) -> Vec<Address> {
    set.iter()
        .filter(|server| server.entry == entry)
        .map(|server| server.pool.address().clone())
        .collect()
}

fn last_good_by_name(set: &ServerSet, name: &str) -> Vec<Address> {
    set.iter()
        .filter(|server| server.name.as_deref() == Some(name))
        .map(|server| server.pool.address().clone())
        .collect()
}

fn list(addresses: &[Address]) -> String {
    addresses
        .iter()
        .map(Address::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Address {
        Address::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn only_tcp_servers_written_with_a_name_are_host_names() {
        assert_eq!(
            host_name(&address("php.internal:9000")),
            Some(("php.internal", 9000))
        );
        assert_eq!(
            host_name(&address("localhost:9000")),
            Some(("localhost", 9000))
        );
        for literal in ["127.0.0.1:9000", "[::1]:9000", "unix:/run/php.sock"] {
            assert_eq!(host_name(&address(literal)), None, "{literal}");
        }
    }

    #[test]
    fn localhost_in_both_families_is_one_server_and_any_other_name_one_per_address() {
        let v4 = IpAddr::from([127, 0, 0, 1]);
        let v6 = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        assert_eq!(
            servers_for("localhost", 9000, vec![v4, v6], true),
            vec![address("localhost:9000")]
        );
        assert_eq!(
            servers_for("localhost", 9000, vec![v4, v6], false),
            vec![address("127.0.0.1:9000"), address("[::1]:9000")],
            "with name servers of its own, connects could not resolve the name"
        );
        let remote = IpAddr::from([10, 0, 0, 5]);
        assert_eq!(
            servers_for("php.internal", 9000, vec![v4, remote], true),
            vec![address("127.0.0.1:9000"), address("10.0.0.5:9000")]
        );
        let alias = IpAddr::from([127, 0, 0, 2]);
        assert_eq!(
            servers_for("app.test", 9000, vec![v4, alias], true),
            vec![address("127.0.0.1:9000"), address("127.0.0.2:9000")]
        );
    }

    #[test]
    fn the_interval_wins_over_the_ttl_and_the_ttl_is_held_within_bounds() {
        assert_eq!(next_round(None, Some(Duration::ZERO)), TTL_FLOOR);
        let half_minute = Duration::from_secs(30);
        assert_eq!(next_round(None, Some(half_minute)), half_minute);
        assert_eq!(
            next_round(None, Some(Duration::from_secs(86_400))),
            TTL_CEILING
        );
        assert_eq!(next_round(None, None), RETRY_AFTER_FAILURE);
        let fixed = Some(Duration::from_millis(200));
        assert_eq!(
            next_round(fixed, Some(half_minute)),
            Duration::from_millis(200)
        );
        assert_eq!(next_round(fixed, None), Duration::from_millis(200));
    }
}
