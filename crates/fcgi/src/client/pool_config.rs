//! The settings of one backend's connection pool and their defaults.
//!
//! The defaults are chosen for a stock php-fpm pool (Debian ships `pm.max_children = 5`):
//! the reasons are in `docs/configuration.md`.

use std::time::Duration;

/// A connection cap the operator gave, and where they gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfiguredCap {
    /// The cap.
    pub value: usize,
    /// For the log: `max_conns`, or e.g. `pm.max_children = 5 in /etc/php/8.2/fpm/pool.d/www.conf`.
    pub origin: String,
}

impl ConfiguredCap {
    /// A cap set with the `max_conns` setting.
    pub fn setting(value: usize) -> ConfiguredCap {
        ConfiguredCap {
            value,
            origin: "max_conns".to_owned(),
        }
    }
}

/// How one backend's pool opens, reuses, caps and retires connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Hard cap on open connections to the backend, busy and idle together. `None` lets the
    /// pool learn it from the backend (FCGI_MAX_CONNS) or use [`PoolConfig::DEFAULT_MAX_CONNS`];
    /// either way the pool lowers it when the backend shows it serves fewer.
    pub max_conns: Option<ConfiguredCap>,
    /// Idle connections kept beyond this are closed, least recently used first; `None` keeps
    /// as many as the cap allows.
    pub max_idle: Option<usize>,
    /// Requests waiting for a connection beyond this are refused at once.
    pub max_queue: usize,
    /// Requests sent on one connection before it is retired.
    pub keepalive_requests: u64,
    /// An idle connection unused this long is closed.
    pub keepalive_timeout: Duration,
    /// A connection older than this is retired after its current request.
    pub keepalive_time: Duration,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Longest silence from the backend while a request is in flight.
    pub read_timeout: Duration,
    /// Longest time one write to the backend may stall.
    pub send_timeout: Duration,
    /// Longest time a request waits in the queue for a connection.
    pub queue_timeout: Duration,
    /// Send FCGI_KEEP_CONN and pool connections; false opens a connection per request.
    pub keep_conn: bool,
    /// TCP keepalive probes on backend sockets (nginx's `fastcgi_socket_keepalive`).
    pub socket_keepalive: bool,
    /// After FCGI_ABORT_REQUEST for a request whose client went away, wait this long for the
    /// backend's END_REQUEST and keep the connection; zero closes it at once.
    pub abort_drain_timeout: Duration,
}

impl PoolConfig {
    /// The cap when nothing is configured or learned: below Debian's stock php-fpm pool
    /// (`pm.max_children = 5`), so a stock pool never hangs and keeps a worker for others.
    pub const DEFAULT_MAX_CONNS: usize = 4;

    /// A configuration with an explicit cap (tests and embedders).
    pub fn with_max_conns(max_conns: usize) -> PoolConfig {
        PoolConfig {
            max_conns: Some(ConfiguredCap::setting(max_conns)),
            ..PoolConfig::default()
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_conns: None,
            max_idle: None,
            max_queue: 4096,
            keepalive_requests: 10_000,
            keepalive_timeout: Duration::from_secs(60),
            keepalive_time: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            queue_timeout: Duration::from_secs(30),
            keep_conn: true,
            socket_keepalive: false,
            abort_drain_timeout: Duration::ZERO,
        }
    }
}
