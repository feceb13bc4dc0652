//! What the pool's state machine asks of the world: the inputs it is fed besides its events (the
//! facts a connection handle knows about itself) and the effects it returns.
//!
//! The state (`state/`) never touches a socket, a channel or a clock: each event comes in with
//! `now`, and whatever must happen outside — hand something to a waiter, close or retire a
//! connection, mark it shared, start a GET_VALUES probe, write a log line — comes back as an
//! [`Effect`] that the pool handle (`pool/mod.rs`) carries out. Tests feed events and read effects.

use std::time::Duration;

use crate::client::capacity::CapReduction;
use crate::client::connection::ConnectionId;
pub(crate) use crate::client::lease::{RequestEnd, Return};

/// What the pool state needs to know about a connection handle; the real one is
/// `connection::Connection`, tests use a plain fake.
pub(crate) trait PooledConnection: Clone {
    /// The connection's id within its pool.
    fn id(&self) -> ConnectionId;
    /// True once the connection can carry nothing more (its driver stopped).
    fn is_closed(&self) -> bool;
    /// Requests started on it so far.
    fn requests_started(&self) -> u64;
    /// Requests the backend finished on it, once it has closed.
    fn requests_ended(&self) -> u64;
    /// The backend closed it right after an END_REQUEST, as a worker exiting after its last
    /// request does.
    fn closed_right_after_end(&self) -> bool;
}

/// A queued checkout, by the order it joined the queue.
pub(crate) type WaiterId = u64;

/// What a waiter is handed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Grant<C> {
    /// A connection of its own.
    Connection(C),
    /// A request slot on a shared connection, already counted in its `in_flight`.
    Request(C),
    /// The right to open a connection: a slot is counted for it.
    OpenSlot,
}

/// What a checkout gets at once.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checkout<C> {
    /// An idle connection of its own.
    Exclusive(C),
    /// A request slot on a shared connection.
    Shared(C),
    /// A slot to open a new connection in; report the outcome with `connected` or
    /// `connect_failed`.
    Connect,
    /// Queued: a [`Grant`] for this waiter will come as an effect, or it leaves the queue.
    Wait(WaiterId),
    /// `max_queue` requests are waiting already.
    QueueFull,
}

/// How a connect ended; the slot taken for it is given back unless it succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectFailure {
    /// connect(2) said the backend's listen queue is full: busy, not gone.
    ListenQueueFull,
    /// Refused, timed out, unreachable.
    Failed,
    /// The checkout went away while connecting.
    Cancelled,
}

/// Something to carry out, in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect<C> {
    Grant {
        waiter: WaiterId,
        grant: Grant<C>,
    },
    /// Close now; requests in flight on it fail.
    Close(C),
    /// Its last request went out without KEEP_CONN: let the backend close it first.
    Retire(C),
    /// Requests share it from now on (`true`), or it is exclusive again (`false`).
    SetShared(C, bool),
    /// Ask the backend for its limits (FCGI_GET_VALUES) in the background.
    Probe,
    /// Something for the log.
    Notice(Notice),
}

/// What the pool learnt or did that an operator should be able to read in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    CapRaised {
        cap: usize,
    },
    CapLowered {
        reason: CapReduction,
        from: usize,
        to: usize,
    },
    CapFromBackend {
        max_conns: usize,
    },
    NoMaxConnsAnnounced {
        cap: usize,
    },
    MaxConnsOfOneNotTrusted {
        cap: usize,
    },
    ClosePatternLearned {
        requests: u64,
    },
    IdleClosedByBackend {
        connection: ConnectionId,
    },
    /// Other clients wait in the backend's listen queue: idle connections were closed, and
    /// `yielding` busy ones go back when their requests end.
    SharingWithOthers {
        others: usize,
        idle_closed: usize,
        yielding: usize,
    },
    IdleExpired {
        exclusive: usize,
        shared: usize,
    },
    StuckConnectionServed {
        connection: ConnectionId,
        waited: Duration,
    },
    Saturated {
        connection: ConnectionId,
        idle_closed: usize,
        cap: usize,
    },
    /// A new connection's FCGI_GET_VALUES went unanswered while others were served: it is
    /// closed, and the request it was for goes back to the head of the queue.
    NoWorkerForNewConnection {
        connection: ConnectionId,
        cap: usize,
    },
    /// The backend does not answer FCGI_GET_VALUES on a new connection: requests go out on new
    /// connections without waiting for proof that a worker took them.
    HandshakeIgnored,
    Overloaded {
        connection: ConnectionId,
    },
    PerConnectionLowered {
        connection: ConnectionId,
        per_connection: usize,
    },
    PerConnectionRaised {
        per_connection: usize,
    },
    CannotMultiplex {
        connection: ConnectionId,
    },
    MultiplexingOn {
        why: &'static str,
        per_connection: usize,
    },
    MultiplexingOff {
        why: &'static str,
    },
    MultiplexingAsConfigured,
    MultiplexOnButRefused,
}
