//! The little a connection's handle, its driver and its requests' readers all read: identity,
//! counters and flags, each an atomic or a one-shot signal. Request ids, routes and the write
//! queue are not here: only the driver touches them (`state.rs`), so they need no lock.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::net::Address;

/// Identifies a connection within its pool, for logs and the pool's bookkeeping.
pub type ConnectionId = u64;

pub(crate) struct Shared {
    pub(crate) id: ConnectionId,
    pub(crate) address: Address,
    pub(crate) opened_at: Instant,
    /// Set by the driver once it has stopped.
    pub(crate) closed: AtomicBool,
    /// Requests started so far; also each request's `RequestKey::sequence`.
    pub(crate) requests_started: AtomicU64,
    /// Cancelled to close at once, by the handle (`close`) or by the driver when it stops.
    pub(crate) close: CancellationToken,
    /// The backend closed the connection right after an END_REQUEST (see `state.rs`).
    pub(crate) closed_right_after_end: AtomicBool,
    /// The backend answered on it before its first request (see `Connection::ask_values`).
    pub(crate) worker_confirmed: AtomicBool,
    /// Requests the backend finished on it, set when the driver stops.
    pub(crate) requests_ended: AtomicU64,
    /// Requests share this connection: a reader that falls behind costs its request, since
    /// pausing the socket would stall the others. Alone on it, a request pauses the socket.
    pub(crate) multiplexed: AtomicBool,
    /// Unread response bytes one request may have before that.
    pub(crate) max_request_buffer: usize,
    /// A reader took its request's unread bytes back under the bound: resume reading.
    pub(crate) reader_caught_up: Notify,
}

impl Shared {
    pub(crate) fn new(
        id: ConnectionId,
        address: &Address,
        max_request_buffer: usize,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            id,
            address: address.clone(),
            opened_at: Instant::now(),
            closed: AtomicBool::new(false),
            requests_started: AtomicU64::new(0),
            close: CancellationToken::new(),
            closed_right_after_end: AtomicBool::new(false),
            worker_confirmed: AtomicBool::new(false),
            requests_ended: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            max_request_buffer,
            reader_caught_up: Notify::new(),
        })
    }
}
