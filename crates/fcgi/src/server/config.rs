//! What an application-side server promises its clients: the limits it advertises through
//! GET_VALUES (FastCGI 1.0 §4.1) and the ones it enforces per request and per connection.

/// Limits of an application-side FastCGI server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Connections served at once (`FCGI_MAX_CONNS`); further ones wait in the listen backlog.
    /// 0 is treated as 1.
    pub max_conns: u32,
    /// Requests accepted at once on one connection when multiplexing (`FCGI_MAX_REQS`); more
    /// are refused with OVERLOADED.
    pub max_reqs: u32,
    /// Run several requests of one connection concurrently (`FCGI_MPXS_CONNS`). When false a
    /// second BEGIN_REQUEST during a request is refused with CANT_MPX_CONN.
    pub mpxs_conns: bool,
    /// Largest PARAMS stream of one request, in encoded bytes; over it the connection is dropped.
    pub max_params_bytes: usize,
    /// Largest STDIN stream of one request; over it the connection is dropped.
    pub max_stdin_bytes: usize,
    /// Close the connection after this many requests on it (like php-fpm `pm.max_requests`);
    /// `None` = never.
    pub max_requests_per_conn: Option<u64>,
    /// Answer GET_VALUES and other management records (§4). `false` ignores them silently, as
    /// applications that never implemented them do — for testing clients against such apps.
    pub answer_management_records: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_conns: 64,
            max_reqs: 64,
            mpxs_conns: false,
            max_params_bytes: 1 << 20,
            max_stdin_bytes: 64 << 20,
            max_requests_per_conn: None,
            answer_management_records: true,
        }
    }
}
