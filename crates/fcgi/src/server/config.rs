//! What an application-side server promises its clients: the limits it advertises through
//! GET_VALUES (FastCGI 1.0 §4.1) and the ones it enforces per request, per connection and for
//! the whole server.
//!
//! What to announce, and why: the rule in `fcgi::server`'s documentation (mod.rs), where
//! rustdoc shows it.

/// Limits of an application-side FastCGI server. Keep `max_reqs_per_conn` at least `max_reqs`:
/// some clients put FCGI_MAX_REQS requests on one connection ([`crate::server`] says why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Connections served at once (`FCGI_MAX_CONNS`). At the limit a new connection takes the
    /// place of the longest-idle one, which is closed (its client sees an idle close, which
    /// every pool handles), so idle pooled connections never keep a newcomer waiting in the
    /// listen backlog; only while every connection is busy do new ones wait there. Enforced by
    /// [`serve`](super::serve); 0 is treated as 1.
    pub max_conns: u32,
    /// Requests in progress at once in the whole server, over all its connections
    /// (`FCGI_MAX_REQS`, FastCGI 1.0 §4.1); beyond it a request is refused with OVERLOADED.
    /// Enforced by [`serve`](super::serve), not by a lone
    /// [`serve_connection`](super::serve_connection). 0 is treated as 1.
    pub max_reqs: u32,
    /// Requests in progress at once on one multiplexed connection; beyond it a request is
    /// refused with OVERLOADED. Without multiplexing the bound is 1. 0 is treated as 1.
    pub max_reqs_per_conn: u32,
    /// Run several requests of one connection concurrently (`FCGI_MPXS_CONNS`). When false a
    /// second BEGIN_REQUEST during a request is refused with CANT_MPX_CONN.
    pub mpxs_conns: bool,
    /// What GET_VALUES says for `FCGI_MPXS_CONNS` when it should differ from `mpxs_conns`:
    /// `None` tells the truth. A lying application, for testing how clients fall back.
    pub announced_mpxs_conns: Option<bool>,
    /// Largest PARAMS stream of one request, in encoded bytes; over it the connection is dropped.
    pub max_params_bytes: usize,
    /// Largest STDIN stream of one request; over it the connection is dropped.
    pub max_stdin_bytes: usize,
    /// Close the connection after this many requests on it (like php-fpm `pm.max_requests`);
    /// `None` = never.
    pub close_after_requests: Option<u64>,
    /// With `close_after_requests`: each connection closes after up to this many more, drawn at
    /// random — like php-fpm workers that also served other clients, whose counts per
    /// connection differ, so a client cannot learn one.
    pub close_after_requests_jitter: u64,
    /// With `close_after_requests`: how long the connection lingers after its last END_REQUEST
    /// before it closes, as a php worker runs its shutdown first. A client may hand it another
    /// request in between, which is then lost.
    pub close_after_requests_delay: std::time::Duration,
    /// Answer GET_VALUES and other management records (§4). `false` ignores them silently, as
    /// applications that never implemented them do — for testing clients against such apps.
    pub answer_management_records: bool,
}

impl ServerConfig {
    /// The bound on requests in progress on one connection, as enforced.
    pub fn requests_per_connection(&self) -> usize {
        if self.mpxs_conns {
            self.max_reqs_per_conn.max(1) as usize
        } else {
            1
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_conns: 64,
            // FCGI_MAX_REQS / FCGI_MAX_CONNS (64) is the share a dividing client puts on each
            // connection; a client that reads FCGI_MAX_REQS per connection may put all of them
            // on one, and is not refused (the rule in `fcgi::server`'s documentation).
            max_reqs: 64 * 64,
            max_reqs_per_conn: 64 * 64,
            mpxs_conns: false,
            announced_mpxs_conns: None,
            max_params_bytes: 1 << 20,
            max_stdin_bytes: 64 << 20,
            close_after_requests: None,
            close_after_requests_jitter: 0,
            close_after_requests_delay: std::time::Duration::ZERO,
            answer_management_records: true,
        }
    }
}
