//! The settings of one backend's connection pool and their defaults.
//!
//! The defaults are chosen for a stock php-fpm pool (Debian ships `pm.max_children = 5`):
//! the reasons are in `docs/configuration.md`.

use std::time::Duration;

/// How one backend's pool opens, reuses, caps and retires connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Hard cap on open connections to the backend, busy and idle together.
    pub max_conns: usize,
    /// Idle connections kept beyond this are closed, least recently used first.
    pub max_idle: usize,
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
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_conns: 4,
            max_idle: 4,
            keepalive_requests: 10_000,
            keepalive_timeout: Duration::from_secs(60),
            keepalive_time: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            queue_timeout: Duration::from_secs(30),
            keep_conn: true,
        }
    }
}
