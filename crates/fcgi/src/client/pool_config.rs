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

/// Whether requests may share a connection (FastCGI 1.0 §3.3 request ids; FCGI_MPXS_CONNS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Multiplexing {
    /// One request per connection at a time, whatever the backend says.
    Off,
    /// Multiplex when the backend announces FCGI_MPXS_CONNS=1 through FCGI_GET_VALUES.
    #[default]
    Auto,
    /// Multiplex unless the backend announces FCGI_MPXS_CONNS=0: also for backends that do not
    /// answer FCGI_GET_VALUES. Requests wait for the answer, so none is sent concurrently to a
    /// backend that says no.
    On,
    /// Multiplex from the first request without asking. A backend that turns out not to
    /// multiplex (FCGI_CANT_MPX_CONN, or a protocol error with several requests in flight)
    /// switches it off for good, and the refused requests go again on their own connection.
    Force,
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
    /// An idle connection that holds a worker of the backend's — one that does not multiplex
    /// (php-fpm, php-cgi, fcgiwrap, most FastCGI libraries) gives each connection a process —
    /// is closed after this, if `keepalive_timeout` has not come first: it keeps that worker
    /// from every other client of the backend (another gateway, nginx beside it, a cron job).
    pub worker_idle_timeout: Duration,
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
    /// Whether several requests may share one connection.
    pub multiplex: Multiplexing,
    /// Most requests in flight on one multiplexed connection. The backend's own figure
    /// (FCGI_MAX_REQS / FCGI_MAX_CONNS) lowers it.
    pub max_reqs_per_conn: usize,
    /// Response bytes the backend may send for one request ahead of its reader. Past it, on a
    /// multiplexed connection, the request alone is aborted (FCGI_ABORT_REQUEST) and its reader
    /// gets an error — the connection is never paused for one reader, so this is the flow
    /// control FastCGI lacks; on a connection of its own the request pauses the socket instead.
    pub max_request_buffer: usize,
    /// php-fpm's `pm.status_path`, for a backend on another host: its listen queue cannot be
    /// read from here, so the pool asks php-fpm's status page for it (on a connection of its
    /// own) to see other clients waiting for workers. `None`: not asked.
    pub php_fpm_status_path: Option<String>,
}

impl PoolConfig {
    /// The cap when nothing is configured or learned: below Debian's stock php-fpm pool
    /// (`pm.max_children = 5`), so a stock pool never hangs and keeps a worker for others.
    pub const DEFAULT_MAX_CONNS: usize = 4;
    /// Requests per multiplexed connection unless the backend or the operator says fewer.
    pub const DEFAULT_MAX_REQS_PER_CONN: usize = 64;
    /// Unread response bytes per request before it is aborted: far above what a reader that
    /// keeps up (the gateway's spool) ever leaves behind.
    pub const DEFAULT_MAX_REQUEST_BUFFER: usize = 8 << 20;
    /// Long enough to carry a connection across the gaps of a busy pool, short enough that
    /// another client of the backend gets its worker well within a second.
    pub const DEFAULT_WORKER_IDLE_TIMEOUT: Duration = Duration::from_millis(250);

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
            worker_idle_timeout: PoolConfig::DEFAULT_WORKER_IDLE_TIMEOUT,
            keepalive_time: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            queue_timeout: Duration::from_secs(30),
            keep_conn: true,
            socket_keepalive: false,
            abort_drain_timeout: Duration::ZERO,
            multiplex: Multiplexing::Auto,
            max_reqs_per_conn: PoolConfig::DEFAULT_MAX_REQS_PER_CONN,
            max_request_buffer: PoolConfig::DEFAULT_MAX_REQUEST_BUFFER,
            php_fpm_status_path: None,
        }
    }
}
