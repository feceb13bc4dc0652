//! One connection held for one request, and how it goes back to the pool.
//!
//! [`Lease::send_request`] turns the lease into a [`ResponseStream`], which hands the connection
//! back at END_REQUEST by itself. A stream dropped before that — the client went away — sends
//! FCGI_ABORT_REQUEST and then closes the connection, or, with `abort_drain_timeout`, waits that
//! long for the backend's END_REQUEST and keeps the connection. Any other request that did not end
//! cleanly (an error, a timeout) leaves the connection in an unknown state: it is closed.
//!
//! A lease on a multiplexed connection holds one request slot on it, never the connection
//! itself: giving up on its request sends FCGI_ABORT_REQUEST and leaves the connection to the
//! other requests. The request's id stays taken until the backend's END_REQUEST for it
//! (`request_ids.rs`), and its slot until then too, within `read_timeout`.

use std::sync::Arc;
use std::time::Duration;

use super::connection::events::{Events, FirstResponseWatch, ResponseObserver};
use super::connection::{Connection, ConnectionId, RequestBody, RequestKey, ResponseEvent};
use super::error::{ClientError, ConnectionFailure, ErrorKind};
use super::pool_config::PoolConfig;
use crate::net::Address;

/// The shortest wait before a fresh connection's silence counts as a sign of saturation.
const MIN_SATURATION_BOUND: Duration = Duration::from_millis(250);
/// Silence is judged against this many times the usual wait for a first answer.
const SATURATION_FACTOR: u32 = 4;
/// However slow the backend usually is, judge a silent fresh connection within this.
const MAX_SATURATION_BOUND: Duration = Duration::from_secs(10);

/// How long a fresh connection may stay silent before that counts as a sign of saturation,
/// given the usual wait for a fresh connection's first answer.
pub(crate) fn saturation_bound(usual_wait: Duration) -> Duration {
    (usual_wait * SATURATION_FACTOR).clamp(MIN_SATURATION_BOUND, MAX_SATURATION_BOUND)
}

/// What a lease needs from the pool it came from: its settings, and where the connection
/// goes when the request ends. The pool implements it; a lease never sees the pool's state.
pub(crate) trait LeaseOwner: ResponseObserver {
    fn address(&self) -> &Address;
    fn config(&self) -> &PoolConfig;
    /// Requests per connection in force (configured, or learned from the backend's closes).
    fn keepalive_requests(&self) -> u64;
    /// Whether the backend answers FCGI_GET_VALUES on a request connection (see
    /// [`Lease::set_unrepeatable`]).
    fn answers_handshakes(&self) -> bool;
    /// The usual wait for a fresh connection's first answer, and the requests completed so far.
    fn first_response_baseline(&self) -> (Duration, u64);
    /// A connection of its own comes back.
    fn returned(&self, connection: Connection, how: Return);
    /// A request on a shared connection is over.
    fn shared_request_ended(&self, connection: &Connection, end: RequestEnd);
}

/// How a request on a connection of its own ended, as far as the pool is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Return {
    /// END_REQUEST arrived; `keep` when it was sent with FCGI_KEEP_CONN (else the backend
    /// closes the connection, and the pool waits for that before it counts the slot free).
    Completed { keep: bool },
    /// Handed to a waiter that had given up: back to the pool, no request carried.
    Unused,
    /// The connection is in an unknown state (an error, an abort): its holder closes it (after
    /// an FCGI_ABORT_REQUEST, if any, is out) and the slot is free.
    Lost,
}

/// How a request on a shared connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestEnd {
    /// END_REQUEST arrived.
    Completed,
    /// Given up (client gone, timeout, failure) or never sent.
    Abandoned,
}

/// One connection, held for one request.
pub struct Lease {
    connection: Option<Connection>,
    pool: Arc<dyn LeaseOwner>,
    reused: bool,
    keep_conn: bool,
    /// One request slot on a connection shared with other requests.
    multiplexed: bool,
    /// The request's id once sent: what to abort when it is given up.
    request: Option<RequestKey>,
    /// See [`Lease::set_unrepeatable`].
    unrepeatable: bool,
}

impl Lease {
    pub(super) fn new(
        connection: Connection,
        pool: Arc<dyn LeaseOwner>,
        reused: bool,
        multiplexed: bool,
    ) -> Lease {
        // A connection that carried no request yet is as reusable as the config allows.
        let keep_conn = pool.config().keep_conn;
        Lease {
            connection: Some(connection),
            pool,
            reused,
            keep_conn,
            multiplexed,
            request: None,
            unrepeatable: false,
        }
    }

    /// True when the connection is shared with other requests in flight.
    pub fn is_multiplexed(&self) -> bool {
        self.multiplexed
    }

    /// The connection's id, for logs.
    pub fn connection_id(&self) -> ConnectionId {
        self.connection.as_ref().map_or(0, Connection::id)
    }

    /// True when the connection carried an earlier request.
    pub fn was_reused(&self) -> bool {
        self.reused
    }

    /// The request must not run twice (a POST). On a connection that carried requests before,
    /// an FCGI_GET_VALUES goes ahead of it in the same write: a worker that closes the
    /// connection right after its last response (php-fpm's `pm.max_requests`, php-cgi's
    /// `PHP_FCGI_MAX_REQUESTS`) just as the request is handed it never answers that question,
    /// and since the backend reads its records in order, it never read the request either —
    /// so the failure says nothing was sent ([`ClientError::is_not_sent`]) and the request may
    /// go again on another connection. Costs the backend one short answer, no round trip; not
    /// done on a new connection (its handshake proved a worker), a shared one, or a backend
    /// that does not answer management records.
    pub fn set_unrepeatable(&mut self) {
        self.unrepeatable = true;
    }

    /// Sends the request. FCGI_KEEP_CONN is set unless the pool is configured without it or
    /// this is the connection's last request (`keepalive_requests`, `keepalive_time`): then the
    /// backend closes the connection itself, and the TIME_WAIT entry stays on its side.
    pub async fn send_request<F>(
        mut self,
        write_params: F,
        body: RequestBody,
    ) -> Result<ResponseStream, ClientError>
    where
        F: FnOnce(&mut dyn FnMut(&[u8], &[u8])),
    {
        let config = self.pool.config();
        let Some(connection) = self.connection.as_ref() else {
            return Err(ClientError::from(ErrorKind::Connection {
                address: self.pool.address().clone(),
                failure: ConnectionFailure::ClosedByGateway,
            }));
        };
        // Only a fresh connection the backend has not answered on yet (the pool's handshake)
        // can be sitting in its listen backlog.
        let maybe_in_backlog = connection.requests_started() == 0 && !connection.worker_confirmed();
        let last_request = connection.requests_started() + 1 >= self.pool.keepalive_requests()
            || connection.age() >= config.keepalive_time;
        // A shared connection is never ended by one of its requests: the pool drains it.
        self.keep_conn = self.multiplexed || (config.keep_conn && !last_request);
        let ask_first =
            self.unrepeatable && self.reused && !self.multiplexed && self.pool.answers_handshakes();
        let mut events = connection
            .send_request(
                self.keep_conn,
                ask_first,
                write_params,
                body,
                config.read_timeout,
            )
            .await?;
        self.request = Some(events.request);
        let watch = maybe_in_backlog.then(|| {
            let (usual_wait, completed_before) = self.pool.first_response_baseline();
            FirstResponseWatch {
                sent_at: tokio::time::Instant::now(),
                bound: saturation_bound(usual_wait),
                completed_before,
                looks: 0,
            }
        });
        events.observe(Arc::clone(&self.pool) as Arc<dyn ResponseObserver>, watch);
        Ok(ResponseStream {
            events: Some(events),
            lease: Some(self),
            done: false,
        })
    }

    /// The request ended with END_REQUEST: the connection goes back to the pool, or, when it
    /// was sent without KEEP_CONN, is left for the backend to close.
    pub fn release(mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.multiplexed {
            self.pool
                .shared_request_ended(&connection, RequestEnd::Completed);
            return;
        }
        let keep = self.keep_conn;
        self.pool.returned(connection, Return::Completed { keep });
    }
}

impl Lease {
    /// The request in flight was given up before its END_REQUEST.
    fn abandon(mut self, events: Events) {
        let drain = self.pool.config().abort_drain_timeout;
        let runtime = tokio::runtime::Handle::try_current();
        if self.multiplexed {
            if let Some(connection) = &self.connection {
                connection.abort(events.request, false);
            }
            // Sent: neither the drain nor a drop sends it again.
            self.request = None;
            // The slot stays taken until the backend confirms, as the id does.
            let within = drain.max(self.pool.config().read_timeout);
            if let Ok(runtime) = runtime {
                runtime.spawn(self.drain(events, within));
            }
            return;
        }
        match (&self.connection, runtime) {
            (Some(connection), Ok(runtime)) if !drain.is_zero() => {
                connection.abort(events.request, false);
                runtime.spawn(self.drain(events, drain));
            }
            (Some(connection), _) => {
                // The abort goes out first, then the connection closes: php-fpm ignores the
                // record while the script runs, but a closed socket makes the script's next
                // output fail, which is what frees the worker.
                connection.abort(events.request, true);
                if let Some(connection) = self.connection.take() {
                    self.pool.returned(connection, Return::Lost);
                }
            }
            (None, _) => {}
        }
    }

    /// Waits (bounded) for the backend to confirm the abort, then keeps the connection.
    async fn drain(mut self, mut events: Events, within: Duration) {
        let confirmed = tokio::time::timeout(within, async {
            loop {
                match events.next_event().await {
                    Ok(ResponseEvent::End(_)) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        if confirmed == Ok(true) && !self.multiplexed {
            self.release();
            return;
        }
        // The abort went out already; dropping the lease closes the connection, or gives back
        // its shared slot.
        self.request = None;
    }

    /// The request failed: an exclusive connection is closed; on a shared one only this
    /// request is given up.
    fn fail(mut self, error: &ClientError) {
        if !self.multiplexed {
            return; // dropping closes it
        }
        if let (Some(connection), Some(request), true) =
            (&self.connection, self.request, error.is_read_timeout())
        {
            connection.abort(request, false);
        }
        if let Some(connection) = self.connection.take() {
            self.pool
                .shared_request_ended(&connection, RequestEnd::Abandoned);
        }
    }
}

/// What the backend answers to one request, event by event. The connection goes back to the
/// pool by itself at END_REQUEST; dropping the stream before that aborts the request.
pub struct ResponseStream {
    /// `Some` until dropped; taken only to hand it to an abort.
    events: Option<Events>,
    /// `None` once the connection went back to the pool, or was closed.
    lease: Option<Lease>,
    /// END_REQUEST arrived or the request failed: nothing more will come.
    done: bool,
}

impl ResponseStream {
    /// The next event, or why none will come. After [`ResponseEvent::End`] do not call again.
    pub async fn next_event(&mut self) -> Result<ResponseEvent, ClientError> {
        let Some(events) = self.events.as_mut() else {
            return Err(ClientError::from(ErrorKind::RequestEnded));
        };
        if self.done {
            return Err(ClientError::from(ErrorKind::RequestEnded));
        }
        let event = events.next_event().await;
        self.settle(&event);
        event
    }

    /// The next event if one has already arrived; `None` when the backend has not sent more
    /// yet. Lets the caller answer small, finished responses without waiting or spooling.
    pub fn try_next_event(&mut self) -> Option<Result<ResponseEvent, ClientError>> {
        if self.done {
            return Some(Err(ClientError::from(ErrorKind::RequestEnded)));
        }
        let event = self.events.as_mut()?.try_next_event()?;
        self.settle(&event);
        Some(event)
    }

    fn settle(&mut self, event: &Result<ResponseEvent, ClientError>) {
        match event {
            Ok(ResponseEvent::End(_)) => {
                self.done = true;
                if let Some(lease) = self.lease.take() {
                    lease.release();
                }
            }
            Ok(_) => {}
            Err(error) => {
                // A request that failed leaves its connection in an unknown state.
                self.done = true;
                if let Some(lease) = self.lease.take() {
                    lease.fail(error);
                }
            }
        }
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let (Some(lease), Some(events)) = (self.lease.take(), self.events.take()) {
            lease.abandon(events);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.multiplexed {
            if let Some(request) = self.request {
                connection.abort(request, false);
            }
            self.pool
                .shared_request_ended(&connection, RequestEnd::Abandoned);
            return;
        }
        connection.close();
        self.pool.returned(connection, Return::Lost);
    }
}
