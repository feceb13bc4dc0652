//! The pool of one backend as a pure state machine: every slot, connection and waiter it
//! accounts for, and every rule about them, in one type that is fed events and returns effects.
//!
//! A *slot* is a connection the backend may be holding a worker for: an idle connection, one
//! leased to a request, a shared (multiplexed) one, a connect in progress or granted to a waiter,
//! a GET_VALUES probe, a connection retiring (its last request sent without KEEP_CONN, the
//! backend not done closing it). `open()` is their sum — counted from the lists, never kept as
//! a separate counter that could drift — and never exceeds the effective cap (`capacity.rs`)
//! except while the cap is coming down, when returning connections are closed instead of reused
//! until it holds again. A checkout takes the most recently used idle connection (the one least
//! likely to have been closed by the backend), else opens one if a slot is free and nobody
//! waits, else joins a FIFO queue of at most `max_queue`. A returning connection goes straight
//! to the oldest waiter (direct hand-off: one wake-up, no thundering herd); a freed slot is
//! granted to the oldest waiter the same way.
//!
//! Nothing here reads a clock or touches a socket: `now` comes with each event, and what must
//! happen outside comes back as [`Effect`]s, in order (`effects.rs`). The pool handle
//! (`pool/mod.rs`) holds this state under its lock and carries them out.
//!
//! One type, its events grouped by file: here the type, checkouts, waiters and connects, and
//! the slot rules every event ends with (`fill_from_queue`, `grant_request_slots`);
//! `returns.rs` requests ending, the backend closing connections, idle expiry; `backend.rs`
//! what the backend shows (saturation, FCGI_OVERLOADED, close patterns, GET_VALUES answers,
//! multiplexing on and off); `figures.rs` the figures and the invariants. `tests/` drives it
//! with fake connections and a clock that moves only when told.

mod backend;
mod figures;
mod returns;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use self::backend::HandshakeSupport;
pub(crate) use self::backend::HandshakeVerdict;
use super::effects::{
    Checkout, ConnectFailure, Effect, Grant, PooledConnection, RequestEnd, Return, WaiterId,
};
use super::shared::{Budget, SharedConnections};
use crate::client::capacity::{CapReduction, CapSource, Capacity};
use crate::client::connection::ConnectionId;
use crate::client::multiplex::MultiplexState;
use crate::client::pool_config::{Multiplexing, PoolConfig};
use crate::client::probe::BackendValues;

pub(crate) type Effects<C> = Vec<Effect<C>>;

/// The settings the state decides by.
struct Limits {
    cap_configured: bool,
    max_queue: usize,
    max_idle: usize,
    keepalive_requests: u64,
    keepalive_timeout: Duration,
    worker_idle_timeout: Duration,
    keepalive_time: Duration,
    max_reqs_per_conn: usize,
    multiplex: Multiplexing,
    keep_conn: bool,
}

struct Idle<C> {
    connection: C,
    since: Instant,
    opened_at: Instant,
}

/// A connection of its own, held by a request (or granted to a waiter).
struct Leased {
    id: ConnectionId,
    opened_at: Instant,
    /// A fresh connection whose first request has no answer yet: it may still be waiting in
    /// the backend's listen queue, where a look at the queue counts it among the waiting.
    awaiting_answer: bool,
}

/// Figures only counted, never decided by.
#[derive(Default)]
struct Counters {
    opened: u64,
    reused: u64,
    queue_timeouts: u64,
    queue_rejections: u64,
    connect_failures: u64,
    saturation_events: u64,
    overloaded: u64,
    listen_queue_full: u64,
    yielded: u64,
}

/// What a GET_VALUES probe came back with.
pub(crate) enum ProbeOutcome {
    Answered(BackendValues),
    /// No answer in time, or the connection failed: the backend said nothing.
    Unanswered,
    /// An answer that could not be read, or the probe was cancelled.
    Unusable,
}

pub(crate) struct PoolState<C> {
    limits: Limits,
    capacity: Capacity,
    multiplex: MultiplexState,
    /// Parked connections, most recently used last.
    idle: Vec<Idle<C>>,
    leased: Vec<Leased>,
    /// Open connections while multiplexing is on (`idle` stays empty then).
    shared: SharedConnections<C>,
    /// Connects in progress, and open slots granted to waiters not yet connecting.
    connecting: usize,
    probing: usize,
    /// Retired connections whose sockets are not closed yet.
    retiring: Vec<ConnectionId>,
    /// Requests waiting for a connection, oldest first.
    waiters: VecDeque<WaiterId>,
    next_waiter: WaiterId,
    /// Requests that ended cleanly, ever.
    completed: u64,
    /// Fresh connections whose first request went unanswered while others were served.
    stuck: Vec<ConnectionId>,
    /// Smoothed wait for a fresh connection's first answer; sets the saturation bound.
    first_response_average: Duration,
    /// (request count, closes in a row at that count) of connections the backend closed.
    close_pattern: (u64, u32),
    /// Requests per connection the backend showed it allows; 0 until learned.
    learned_keepalive_requests: u64,
    /// The last connect failed: ask the backend's limits again once it is back.
    unreachable: bool,
    /// When a look at the backend's listen queue last found other clients waiting there.
    others_waiting_seen: Option<Instant>,
    /// Busy connections to close as their requests end, for other clients waiting there.
    yield_budget: usize,
    /// Whether the backend answers FCGI_GET_VALUES asked on a new connection.
    handshakes: HandshakeSupport,
    /// New connections closed unanswered while still in the backend's listen queue, oldest
    /// first. They stay there until the backend accepts them and finds them closed, and must
    /// not be taken for other clients meanwhile; gone once a later connection is answered (the
    /// queue is FIFO) or the queue is seen empty.
    ghosts: Vec<ConnectionId>,
    backend_values: Option<BackendValues>,
    counters: Counters,
}

impl<C: PooledConnection> PoolState<C> {
    pub(crate) fn new(config: &PoolConfig) -> Self {
        let capacity = match &config.max_conns {
            Some(cap) => Capacity::new(cap.value, CapSource::Configured(cap.origin.clone())),
            None => Capacity::new(PoolConfig::DEFAULT_MAX_CONNS, CapSource::Default),
        };
        PoolState {
            limits: Limits {
                cap_configured: config.max_conns.is_some(),
                max_queue: config.max_queue,
                max_idle: config.max_idle.unwrap_or(usize::MAX),
                keepalive_requests: config.keepalive_requests,
                keepalive_timeout: config.keepalive_timeout,
                worker_idle_timeout: config.worker_idle_timeout,
                keepalive_time: config.keepalive_time,
                max_reqs_per_conn: config.max_reqs_per_conn,
                multiplex: config.multiplex,
                keep_conn: config.keep_conn,
            },
            capacity,
            multiplex: MultiplexState::new(
                config.multiplex,
                config.keep_conn,
                config.max_reqs_per_conn,
            ),
            idle: Vec::new(),
            leased: Vec::new(),
            shared: SharedConnections::new(),
            connecting: 0,
            probing: 0,
            retiring: Vec::new(),
            waiters: VecDeque::new(),
            next_waiter: 0,
            completed: 0,
            stuck: Vec::new(),
            first_response_average: Duration::ZERO,
            close_pattern: (0, 0),
            learned_keepalive_requests: 0,
            unreachable: false,
            others_waiting_seen: None,
            yield_budget: 0,
            handshakes: HandshakeSupport::Unknown,
            ghosts: Vec::new(),
            backend_values: None,
            counters: Counters::default(),
        }
    }

    // ---- checking out -------------------------------------------------------------------

    /// A request wants a connection. `fresh`: a retry after a pooled connection turned out
    /// dead, when the other pooled ones may be just as dead — it gets a new connection, an
    /// idle one is closed to make room.
    pub(crate) fn checkout(
        &mut self,
        now: Instant,
        fresh: bool,
        fx: &mut Effects<C>,
    ) -> Checkout<C> {
        self.take(now, fresh, false, fx)
    }

    /// A checkout by a request that had a connect slot already and lost it — its new
    /// connection found no worker (`handshake_unanswered`): it waited longest, so if it must
    /// wait again, it does so first in line.
    pub(crate) fn checkout_again(&mut self, now: Instant, fx: &mut Effects<C>) -> Checkout<C> {
        self.take(now, false, true, fx)
    }

    fn take(
        &mut self,
        now: Instant,
        fresh: bool,
        first_in_line: bool,
        fx: &mut Effects<C>,
    ) -> Checkout<C> {
        if self.multiplex.enabled() {
            // A fresh connection if a slot is free (a retry), else the least-loaded one.
            if !(fresh && self.slot_free()) {
                if let Some(connection) = self.shared.take_slot(&self.budget(), now) {
                    self.counters.reused += 1;
                    return Checkout::Shared(connection);
                }
            }
        }
        if fresh && !self.idle.is_empty() {
            // The least recently used is the likeliest to be dead; its slot is ours.
            fx.push(Effect::Close(self.idle.remove(0).connection));
            self.connecting += 1;
            return Checkout::Connect;
        }
        while let Some(idle) = self.idle.pop() {
            if idle.connection.is_closed() {
                // Its driver stopped and has not reported in yet: the slot is free now.
                self.fill_from_queue(fx);
                continue;
            }
            self.leased.push(Leased {
                id: idle.connection.id(),
                opened_at: idle.opened_at,
                awaiting_answer: false,
            });
            self.counters.reused += 1;
            return Checkout::Exclusive(idle.connection);
        }
        // First in line, it may take a free slot whoever waits behind it.
        if self.slot_free() || (first_in_line && self.open() < self.capacity.cap()) {
            self.connecting += 1;
            return Checkout::Connect;
        }
        if self.waiters.len() >= self.limits.max_queue && !first_in_line {
            self.counters.queue_rejections += 1;
            return Checkout::QueueFull;
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        if first_in_line {
            self.waiters.push_front(id);
        } else {
            self.waiters.push_back(id);
        }
        Checkout::Wait(id)
    }

    /// A waiter gave up (timeout, client gone). True when it was still queued; false when a
    /// grant is on its way to it already, which it must give back with [`Self::grant_returned`].
    pub(crate) fn waiter_left(&mut self, waiter: WaiterId, timed_out: bool) -> bool {
        if timed_out {
            self.counters.queue_timeouts += 1;
        }
        match self.waiters.iter().position(|id| *id == waiter) {
            Some(position) => {
                self.waiters.remove(position);
                true
            }
            None => false,
        }
    }

    /// A grant reached nobody (its waiter had gone): what it held comes back.
    pub(crate) fn grant_returned(&mut self, now: Instant, grant: Grant<C>, fx: &mut Effects<C>) {
        match grant {
            Grant::Connection(connection) => {
                self.returned(now, connection, Return::Unused, fx);
            }
            Grant::Request(connection) => {
                self.shared_request_ended(now, &connection, RequestEnd::Abandoned, fx);
            }
            Grant::OpenSlot => {
                self.connecting -= 1;
                self.fill_from_queue(fx);
            }
        }
    }

    /// A waiter that wanted a fresh connection was granted a pooled one: it is closed, and its
    /// slot becomes the waiter's connect.
    pub(crate) fn exchange_for_connect(&mut self, connection: C, fx: &mut Effects<C>) {
        let id = connection.id();
        if let Some(position) = self.leased.iter().position(|leased| leased.id == id) {
            self.leased.swap_remove(position);
            self.connecting += 1;
        }
        fx.push(Effect::Close(connection));
    }

    // ---- connecting ---------------------------------------------------------------------

    /// A connect in a slot from `checkout` (or an `OpenSlot` grant) succeeded; `answered`: the
    /// backend already answered on it (a handshake), so it is not waiting in the listen queue.
    /// Returns true when the connection is shared, carrying this request as its first.
    pub(crate) fn connected(
        &mut self,
        now: Instant,
        connection: C,
        answered: bool,
        fx: &mut Effects<C>,
    ) -> bool {
        self.connecting -= 1;
        self.counters.opened += 1;
        if std::mem::take(&mut self.unreachable) && self.wants_probe() {
            fx.push(Effect::Probe);
        }
        if self.multiplex.enabled() {
            fx.push(Effect::SetShared(connection.clone(), true));
            self.shared.push(connection, 1, now, now);
            self.grant_request_slots(now, fx);
            return true;
        }
        self.leased.push(Leased {
            id: connection.id(),
            opened_at: now,
            awaiting_answer: !answered,
        });
        false
    }

    pub(crate) fn connect_failed(
        &mut self,
        now: Instant,
        failure: ConnectFailure,
        fx: &mut Effects<C>,
    ) {
        match failure {
            ConnectFailure::ListenQueueFull => {
                self.counters.listen_queue_full += 1;
                let others = self.open() - 1;
                self.reduce_cap(now, others, CapReduction::ListenQueueFull, fx);
            }
            ConnectFailure::Failed => {
                self.counters.connect_failures += 1;
                self.unreachable = true;
            }
            ConnectFailure::Cancelled => {}
        }
        self.connecting -= 1;
        self.fill_from_queue(fx);
    }

    // ---- the rules behind the events ----------------------------------------------------------

    fn slot_free(&self) -> bool {
        self.open() < self.capacity.cap() && self.waiters.is_empty()
    }

    fn idle_count(&self) -> usize {
        self.idle.len() + self.shared.idle()
    }

    fn budget(&self) -> Budget {
        Budget {
            per_connection: self.multiplex.per_connection(),
            keepalive_requests: self.keepalive_requests(),
            keepalive_time: self.limits.keepalive_time,
        }
    }

    /// How long a connection of its own may sit idle: `worker_idle_timeout` while it may be
    /// holding a worker — the backend has not said it multiplexes — else `keepalive_timeout`.
    fn exclusive_idle_timeout(&self) -> Duration {
        let multiplexing_backend = self
            .backend_values
            .as_ref()
            .is_some_and(|values| values.mpxs_conns == Some(true));
        if multiplexing_backend {
            self.limits.keepalive_timeout
        } else {
            self.limits
                .worker_idle_timeout
                .min(self.limits.keepalive_timeout)
        }
    }

    /// Free slots go to the oldest waiters, as far as the cap allows.
    fn fill_from_queue(&mut self, fx: &mut Effects<C>) {
        while self.open() < self.capacity.cap() {
            let Some(waiter) = self.waiters.pop_front() else {
                return;
            };
            self.connecting += 1;
            fx.push(Effect::Grant {
                waiter,
                grant: Grant::OpenSlot,
            });
        }
    }

    /// Hands free request slots on shared connections to waiters, oldest first.
    fn grant_request_slots(&mut self, now: Instant, fx: &mut Effects<C>) {
        while !self.waiters.is_empty() {
            let Some(connection) = self.shared.take_slot(&self.budget(), now) else {
                return;
            };
            if let Some(waiter) = self.waiters.pop_front() {
                self.counters.reused += 1;
                fx.push(Effect::Grant {
                    waiter,
                    grant: Grant::Request(connection),
                });
            }
        }
    }
}
