//! The figures a pool exposes: for tests now, for logs and metrics.

use super::probe::BackendValues;

/// The pool's live figures, for tests, logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// The effective cap in force now.
    pub cap: usize,
    /// The most the cap may rise to.
    pub ceiling: usize,
    /// Where the ceiling came from (`max_conns`, a php-fpm pool file, FCGI_MAX_CONNS, the default).
    pub cap_source: String,
    /// Why the cap is below the ceiling, if it is: `saturation`, `overloaded` or
    /// `listen_queue_full`.
    pub cap_reduced_by: Option<String>,
    /// Slots in use: idle + busy + connecting.
    pub open: usize,
    /// Connections parked, ready for the next request.
    pub idle: usize,
    /// Slots in use by requests (and connects in progress).
    pub busy: usize,
    /// Requests waiting in the queue for a connection.
    pub waiting: usize,
    /// Requests share connections now.
    pub multiplexing: bool,
    /// Requests per shared connection in force.
    pub max_reqs_per_conn: usize,
    /// Requests in flight on shared connections.
    pub multiplexed_in_flight: usize,
    /// Connections established so far.
    pub opened: u64,
    /// Checkouts served by an already open connection.
    pub reused: u64,
    /// Requests that waited `queue_timeout` and gave up.
    pub queue_timeouts: u64,
    /// Requests refused at once because `max_queue` were already waiting.
    pub queue_rejections: u64,
    /// Connects that failed or timed out.
    pub connect_failures: u64,
    /// Fresh connections left unanswered while others were served.
    pub saturation_events: u64,
    /// FCGI_OVERLOADED answers.
    pub overloaded: u64,
    /// Connects refused because the backend's listen queue was full.
    pub listen_queue_full: u64,
    /// Busy connections closed as their requests ended, for other clients of the backend
    /// seen waiting in its listen queue.
    pub yielded: u64,
    /// What the backend announced through FCGI_GET_VALUES, if asked and answered.
    pub backend_values: Option<BackendValues>,
    /// Requests per connection in force (configured, or learned from the backend's closes).
    pub keepalive_requests: u64,
}
