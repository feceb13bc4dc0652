//! The connection pool of one backend, shared by every runtime thread.
//!
//! It owns the cap: `open` counts slots — idle connections, leased ones, connects in progress
//! and slots granted to a waiter — and never exceeds `max_conns`. A checkout takes the most
//! recently used idle connection (it is the one least likely to have been closed by the
//! backend), else opens a connection if a slot is free, else waits in a FIFO queue. A returning
//! connection goes straight to the oldest waiter (direct hand-off: one wake-up, no thundering
//! herd); a slot freed by a closed connection is granted to the oldest waiter the same way.
//!
//! # Races and how they are closed
//!
//! - *Idle connection closed by the backend.* Its driver marks it closed and then calls
//!   [`PoolShared::forget_idle`]; a checkout that pops it first sees `is_closed()` and drops it.
//!   Whichever comes first under the lock frees the slot; the other finds nothing to do.
//! - *Waiter gives up (timeout, client gone) just as it is granted something.* Its guard takes
//!   the lock: if the waiter is still queued it is removed; if not, the grant was already sent
//!   and is taken back out of the channel and returned to the pool. A grant is never lost.
//! - *Checkout cancelled while connecting.* The slot is held by a guard that frees it on drop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::connection::{Connection, ConnectionId, RequestBody, ResponseStream};
use super::error::ClientError;
use super::PoolConfig;
use crate::net::Address;

/// A capped pool of connections to one backend. Cloning shares the pool.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<PoolShared>,
}

/// The pool's live figures, for tests, logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// The cap in force.
    pub max_conns: usize,
    /// Slots in use: idle + busy + connecting.
    pub open: usize,
    /// Connections parked, ready for the next request.
    pub idle: usize,
    /// Requests waiting in the queue for a connection.
    pub waiting: usize,
    /// Connections established so far.
    pub opened: u64,
    /// Checkouts served by an already open connection.
    pub reused: u64,
    /// Requests that waited `queue_timeout` and gave up.
    pub queue_timeouts: u64,
    /// Connects that failed or timed out.
    pub connect_failures: u64,
}

struct PoolShared {
    address: Address,
    config: PoolConfig,
    state: Mutex<PoolState>,
    next_connection_id: AtomicU64,
    opened: AtomicU64,
    reused: AtomicU64,
    queue_timeouts: AtomicU64,
    connect_failures: AtomicU64,
}

#[derive(Default)]
struct PoolState {
    /// Parked connections, most recently used last.
    idle: Vec<IdleConnection>,
    /// Slots taken; see the module docs. Never above `max_conns`.
    open: usize,
    /// Requests waiting for a connection, oldest first.
    waiters: VecDeque<Waiter>,
    next_waiter_id: u64,
}

struct IdleConnection {
    connection: Connection,
    since: Instant,
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<Grant>,
}

/// What a waiter is handed: a connection, or the right to open one.
enum Grant {
    Connection(Connection),
    OpenSlot,
}

impl Pool {
    /// A pool for `address`. Starts the idle reaper, so it must be called inside a tokio runtime.
    pub fn new(address: Address, config: PoolConfig) -> Pool {
        let shared = Arc::new(PoolShared {
            address,
            config,
            state: Mutex::new(PoolState::default()),
            next_connection_id: AtomicU64::new(1),
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            queue_timeouts: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        });
        tokio::spawn(reap_idle_connections(Arc::downgrade(&shared)));
        Pool { shared }
    }

    /// The backend this pool connects to.
    pub fn address(&self) -> &Address {
        &self.shared.address
    }

    /// The settings in force.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// A connection for one request: an idle one, a new one, or one handed over after waiting
    /// in the queue for at most `queue_timeout`. Cancel-safe: dropping the future leaves the
    /// queue and frees whatever it held.
    pub async fn checkout(&self) -> Result<Lease, ClientError> {
        let shared = &self.shared;
        let waiter = {
            let mut state = shared.lock();
            while let Some(idle) = state.idle.pop() {
                if idle.connection.is_closed() {
                    state.open -= 1;
                    continue;
                }
                drop(state);
                return Ok(self.lease(idle.connection, true));
            }
            if state.open < shared.config.max_conns {
                state.open += 1;
                None
            } else {
                let id = state.next_waiter_id;
                state.next_waiter_id += 1;
                let (sender, receiver) = oneshot::channel();
                state.waiters.push_back(Waiter { id, grant: sender });
                Some(WaitGuard {
                    shared: Arc::clone(shared),
                    id,
                    receiver,
                    settled: false,
                })
            }
        };
        let grant = match waiter {
            None => Grant::OpenSlot,
            Some(waiter) => waiter.wait(shared.config.queue_timeout).await?,
        };
        match grant {
            Grant::Connection(connection) => Ok(self.lease(connection, true)),
            Grant::OpenSlot => self.connect().await,
        }
    }

    /// Current figures.
    pub fn stats(&self) -> PoolStats {
        let shared = &self.shared;
        let state = shared.lock();
        PoolStats {
            max_conns: shared.config.max_conns,
            open: state.open,
            idle: state.idle.len(),
            waiting: state.waiters.len(),
            opened: shared.opened.load(Ordering::Relaxed),
            reused: shared.reused.load(Ordering::Relaxed),
            queue_timeouts: shared.queue_timeouts.load(Ordering::Relaxed),
            connect_failures: shared.connect_failures.load(Ordering::Relaxed),
        }
    }

    /// Requests this backend has on its plate: busy connections plus waiters. The gateway
    /// sends a new request to the server with the fewest.
    pub fn outstanding(&self) -> usize {
        let state = self.shared.lock();
        state.open - state.idle.len() + state.waiters.len()
    }

    /// Closes every idle connection (shutdown). Busy ones finish their request first.
    pub fn close_idle(&self) {
        let mut state = self.shared.lock();
        for idle in std::mem::take(&mut state.idle) {
            idle.connection.close();
            self.shared.free_slot(&mut state);
        }
    }

    fn lease(&self, connection: Connection, reused: bool) -> Lease {
        if reused {
            self.shared.reused.fetch_add(1, Ordering::Relaxed);
        }
        Lease {
            connection: Some(connection),
            pool: Arc::clone(&self.shared),
            reused,
            // A connection that carried no request yet is as reusable as the config allows.
            keep_conn: self.shared.config.keep_conn,
        }
    }

    async fn connect(&self) -> Result<Lease, ClientError> {
        let shared = &self.shared;
        let slot = SlotGuard {
            shared: Some(Arc::clone(shared)),
        };
        let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(shared);
        let on_closed = Box::new(move |id| {
            if let Some(shared) = weak.upgrade() {
                shared.forget_idle(id);
            }
        });
        let config = &shared.config;
        let opened = tokio::time::timeout(
            config.connect_timeout,
            Connection::open(&shared.address, id, config.send_timeout, on_closed),
        )
        .await;
        match opened {
            Ok(Ok(connection)) => {
                slot.keep();
                shared.opened.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(backend = %shared.address, connection = id, "connected");
                Ok(self.lease(connection, false))
            }
            Ok(Err(source)) => {
                shared.connect_failures.fetch_add(1, Ordering::Relaxed);
                Err(ClientError::Connect {
                    address: shared.address.clone(),
                    source,
                })
            }
            Err(_) => {
                shared.connect_failures.fetch_add(1, Ordering::Relaxed);
                Err(ClientError::ConnectTimeout {
                    address: shared.address.clone(),
                    timeout: config.connect_timeout,
                })
            }
        }
    }
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Nothing in a critical section panics; a poisoned lock still holds consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot stops being used: it goes to the oldest waiter, who will open a connection.
    fn free_slot(&self, state: &mut PoolState) {
        if let Some(Grant::OpenSlot) = grant_to_oldest_waiter(state, Grant::OpenSlot) {
            state.open -= 1;
        }
    }

    /// A connection that finished its request cleanly comes back: to the oldest waiter, else
    /// on top of the idle stack.
    fn put_back(&self, connection: Connection) {
        let mut state = self.lock();
        if connection.is_closed() {
            self.free_slot(&mut state);
            return;
        }
        let Some(Grant::Connection(connection)) =
            grant_to_oldest_waiter(&mut state, Grant::Connection(connection))
        else {
            return;
        };
        state.idle.push(IdleConnection {
            connection,
            since: Instant::now(),
        });
        if state.idle.len() > self.config.max_idle {
            let least_recent = state.idle.remove(0);
            least_recent.connection.close();
            self.free_slot(&mut state);
        }
    }

    fn give_back(&self, grant: Grant) {
        match grant {
            Grant::Connection(connection) => self.put_back(connection),
            Grant::OpenSlot => self.free_slot(&mut self.lock()),
        }
    }

    /// Called by a connection's driver when it stops. Only an idle connection is the pool's
    /// to forget; a leased one is released by its lease.
    fn forget_idle(&self, id: ConnectionId) {
        let mut state = self.lock();
        if let Some(position) = state
            .idle
            .iter()
            .position(|idle| idle.connection.id() == id)
        {
            state.idle.remove(position);
            self.free_slot(&mut state);
            tracing::debug!(backend = %self.address, connection = id, "idle connection closed by the backend; dropped from the pool");
        }
    }

    fn reap(&self) {
        let mut state = self.lock();
        let config = &self.config;
        let mut expired = Vec::new();
        state.idle.retain(|idle| {
            let keep = !idle.connection.is_closed()
                && idle.since.elapsed() < config.keepalive_timeout
                && idle.connection.age() < config.keepalive_time;
            if !keep {
                expired.push(idle.connection.id());
                idle.connection.close();
            }
            keep
        });
        for _ in &expired {
            self.free_slot(&mut state);
        }
        if !expired.is_empty() {
            tracing::debug!(backend = %self.address, closed = expired.len(), "closed idle connections past keepalive_timeout or keepalive_time");
        }
    }
}

/// Hands `grant` to the oldest waiter still listening; returns it when there is none.
fn grant_to_oldest_waiter(state: &mut PoolState, mut grant: Grant) -> Option<Grant> {
    while let Some(waiter) = state.waiters.pop_front() {
        match waiter.grant.send(grant) {
            Ok(()) => return None,
            Err(returned) => grant = returned,
        }
    }
    Some(grant)
}

async fn reap_idle_connections(pool: Weak<PoolShared>) {
    let period = match pool.upgrade() {
        Some(shared) => (shared.config.keepalive_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1)),
        None => return,
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match pool.upgrade() {
            Some(shared) => shared.reap(),
            None => return,
        }
    }
}

/// A queued checkout. Dropping it leaves the queue, or returns what it was granted.
struct WaitGuard {
    shared: Arc<PoolShared>,
    id: u64,
    receiver: oneshot::Receiver<Grant>,
    settled: bool,
}

impl WaitGuard {
    async fn wait(mut self, timeout: Duration) -> Result<Grant, ClientError> {
        match tokio::time::timeout(timeout, &mut self.receiver).await {
            Ok(Ok(grant)) => {
                self.settled = true;
                Ok(grant)
            }
            // The sender lives in the queue until granted, and granting sends; a closed
            // channel cannot happen, but if it did, waiting longer would not help.
            Ok(Err(_)) | Err(_) => {
                self.shared.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(ClientError::QueueTimeout {
                    address: self.shared.address.clone(),
                    timeout,
                })
            }
        }
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        {
            let mut state = self.shared.lock();
            if let Some(position) = state.waiters.iter().position(|w| w.id == self.id) {
                state.waiters.remove(position);
                return;
            }
        }
        if let Ok(grant) = self.receiver.try_recv() {
            self.shared.give_back(grant);
        }
    }
}

/// A slot taken for a connect in progress; freed unless the connect succeeds.
struct SlotGuard {
    shared: Option<Arc<PoolShared>>,
}

impl SlotGuard {
    fn keep(mut self) {
        self.shared = None;
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.free_slot(&mut shared.lock());
        }
    }
}

/// One connection, held for one request. Call [`Lease::release`] after END_REQUEST; a lease
/// dropped without it closes the connection, because a request that did not end cleanly
/// leaves the connection in an unknown state.
pub struct Lease {
    connection: Option<Connection>,
    pool: Arc<PoolShared>,
    reused: bool,
    keep_conn: bool,
}

impl Lease {
    /// The connection's id, for logs.
    pub fn connection_id(&self) -> ConnectionId {
        self.connection.as_ref().map_or(0, Connection::id)
    }

    /// True when the connection carried an earlier request.
    pub fn was_reused(&self) -> bool {
        self.reused
    }

    /// Sends the request. FCGI_KEEP_CONN is set unless the pool is configured without it or
    /// this is the connection's last request (`keepalive_requests`, `keepalive_time`): then the
    /// backend closes the connection itself, and the TIME_WAIT entry stays on its side.
    pub async fn send_request<F>(
        &mut self,
        write_params: F,
        body: RequestBody,
    ) -> Result<ResponseStream, ClientError>
    where
        F: FnOnce(&mut dyn FnMut(&[u8], &[u8])),
    {
        let config = &self.pool.config;
        let Some(connection) = self.connection.as_ref() else {
            return Err(ClientError::Connection {
                address: self.pool.address.clone(),
                failure: super::ConnectionFailure::ClosedByGateway,
            });
        };
        let last_request = connection.requests_started() + 1 >= config.keepalive_requests
            || connection.age() >= config.keepalive_time;
        self.keep_conn = config.keep_conn && !last_request;
        connection
            .send_request(self.keep_conn, write_params, body, config.read_timeout)
            .await
    }

    /// The request ended with END_REQUEST: the connection goes back to the pool, or, when it
    /// was sent without KEEP_CONN, is left for the backend to close.
    pub fn release(mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.keep_conn {
            self.pool.put_back(connection);
        } else {
            connection.retire();
            self.pool.free_slot(&mut self.pool.lock());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.close();
            self.pool.free_slot(&mut self.pool.lock());
        }
    }
}
