//! The connection pool of one backend, shared by every runtime thread.
//!
//! It owns the cap: `open` counts slots — idle connections, leased ones, connects in progress,
//! a GET_VALUES probe, and slots granted to a waiter — and never exceeds the effective cap
//! (`capacity.rs`) except while the cap is coming down, when returning connections are closed
//! instead of reused until it holds again. A checkout takes the most recently used idle
//! connection (the one least likely to have been closed by the backend), else opens a
//! connection if a slot is free, else waits in a FIFO queue of at most `max_queue`. A returning
//! connection goes straight to the oldest waiter (direct hand-off: one wake-up, no thundering
//! herd); a freed slot is granted to the oldest waiter the same way.
//!
//! # Races and how they are closed
//!
//! - *Idle connection closed by the backend.* Its driver marks it closed and then calls
//!   [`PoolShared::forget_closed`]; a checkout that pops it first sees `is_closed()` and drops it.
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

use super::capacity::{CapReduction, CapSource, Capacity};
use super::connection::{Connection, ConnectionId};
use super::driver::{ClosedReport, DriverSettings};
use super::error::ClientError;
use super::lease::Lease;
use super::multiplex::{MultiplexState, RequestEnd, SharedConnection};
use super::probe::{self, BackendValues, ProbeError};
use super::stats::PoolStats;
use super::waiting::{Grant, SlotGuard, WaitGuard, Waiter};
use super::PoolConfig;
use crate::net::Address;

/// How long a GET_VALUES probe may take; it holds a slot (and maybe a worker) meanwhile.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Backend closes at the same request count, in a row, before that count is adopted.
const CLOSE_PATTERN_EVIDENCE: u32 = 3;
/// Pause between connects refused because the backend's listen queue is full.
const LISTEN_QUEUE_BACKOFF: Duration = Duration::from_millis(10);

/// A capped pool of connections to one backend. Cloning shares the pool.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<PoolShared>,
}

pub(super) struct PoolShared {
    pub(super) address: Address,
    pub(super) config: PoolConfig,
    state: Mutex<PoolState>,
    next_connection_id: AtomicU64,
    opened: AtomicU64,
    reused: AtomicU64,
    pub(super) queue_timeouts: AtomicU64,
    /// `keepalive_requests` learned from the backend's closes; 0 until learned.
    learned_keepalive_requests: AtomicU64,
    queue_rejections: AtomicU64,
    connect_failures: AtomicU64,
    /// True once the first FCGI_GET_VALUES probe has ended (answered or not), or at once when
    /// there is none: what a caller waits for before announcing readiness.
    first_probe_done: tokio::sync::watch::Sender<bool>,
}

pub(super) struct PoolState {
    /// Parked connections, most recently used last.
    pub(super) idle: Vec<IdleConnection>,
    /// Slots taken; see the module docs.
    pub(super) open: usize,
    /// Requests waiting for a connection, oldest first.
    pub(super) waiters: VecDeque<Waiter>,
    next_waiter_id: u64,
    pub(super) capacity: Capacity,
    /// Requests that ended cleanly, ever.
    pub(super) completed: u64,
    /// Fresh connections whose first request went unanswered while others were served.
    pub(super) stuck: Vec<ConnectionId>,
    /// Smoothed wait for a fresh connection's first answer; sets the saturation bound.
    pub(super) first_response_average: Duration,
    pub(super) saturation_events: u64,
    pub(super) overloaded: u64,
    listen_queue_full: u64,
    backend_values: Option<BackendValues>,
    /// The last connect failed: ask the backend's limits again once it is back.
    unreachable: bool,
    /// (request count, closes in a row at that count) of idle connections the backend closed.
    close_pattern: (u64, u32),
    /// Connections retired (sent without KEEP_CONN) whose sockets are not closed yet.
    retiring: Vec<ConnectionId>,
    /// Whether requests share connections, and how many per connection.
    pub(super) multiplex: MultiplexState,
    /// Open connections while multiplexing is on (`idle` stays empty then).
    pub(super) shared: Vec<SharedConnection>,
}

pub(super) struct IdleConnection {
    pub(super) connection: Connection,
    since: Instant,
}

enum Step {
    Lease(Lease),
    Shared(Connection),
    Connect,
    Wait(WaitGuard),
}

impl Pool {
    /// A pool for `address`. Starts the idle reaper, and — when no cap is configured — asks the
    /// backend for its limits, so it must be called inside a tokio runtime.
    pub fn new(address: Address, config: PoolConfig) -> Pool {
        let capacity = match &config.max_conns {
            Some(cap) => Capacity::new(cap.value, CapSource::Configured(cap.origin.clone())),
            None => Capacity::new(PoolConfig::DEFAULT_MAX_CONNS, CapSource::Default),
        };
        let multiplex =
            MultiplexState::new(config.multiplex, config.keep_conn, config.max_reqs_per_conn);
        let probe = config.max_conns.is_none() || multiplex.wants_backend_values();
        if config.max_conns.is_none() {
            tracing::info!(backend = %address, "connection cap {} ({}) until the backend answers FCGI_GET_VALUES", capacity.cap(), capacity.source());
        } else {
            tracing::info!(backend = %address, "connection cap {} from {}", capacity.cap(), capacity.source());
        }
        let shared = Arc::new(PoolShared {
            address,
            config,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiters: VecDeque::new(),
                next_waiter_id: 0,
                capacity,
                completed: 0,
                stuck: Vec::new(),
                first_response_average: Duration::ZERO,
                saturation_events: 0,
                overloaded: 0,
                listen_queue_full: 0,
                backend_values: None,
                unreachable: false,
                close_pattern: (0, 0),
                retiring: Vec::new(),
                multiplex,
                shared: Vec::new(),
            }),
            next_connection_id: AtomicU64::new(1),
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            queue_timeouts: AtomicU64::new(0),
            learned_keepalive_requests: AtomicU64::new(0),
            queue_rejections: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            first_probe_done: tokio::sync::watch::Sender::new(!probe),
        });
        tokio::spawn(reap_idle_connections(Arc::downgrade(&shared)));
        if probe {
            PoolShared::start_probe(&shared);
        }
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
        self.checkout_with(false).await
    }

    /// Like [`Pool::checkout`], but always on a newly opened connection: for a retry after a
    /// pooled connection turned out dead, when the other pooled ones may be just as dead (a
    /// backend recycling its workers). An idle connection is closed to make room.
    pub async fn checkout_fresh(&self) -> Result<Lease, ClientError> {
        self.checkout_with(true).await
    }

    async fn checkout_with(&self, fresh: bool) -> Result<Lease, ClientError> {
        let deadline = tokio::time::Instant::now() + self.shared.config.queue_timeout;
        let mut backoff = LISTEN_QUEUE_BACKOFF;
        loop {
            let grant = match self.step(fresh)? {
                Step::Lease(lease) => return Ok(lease),
                Step::Shared(connection) => return Ok(self.shared_lease(connection, true)),
                Step::Connect => Grant::OpenSlot,
                Step::Wait(waiter) => waiter.wait(deadline).await?,
            };
            let error = match grant {
                Grant::Connection(connection) if fresh => {
                    // Its slot is ours: open a new connection in it instead.
                    connection.close();
                    match self.connect().await {
                        Ok(lease) => return Ok(lease),
                        Err(error) => error,
                    }
                }
                Grant::Connection(connection) => return Ok(self.lease(connection, true)),
                Grant::Request(connection) => return Ok(self.shared_lease(connection, true)),
                Grant::OpenSlot => match self.connect().await {
                    Ok(lease) => return Ok(lease),
                    Err(error) => error,
                },
            };
            // A full listen queue means the backend is busy, not gone: wait and try again.
            if !error.is_listen_queue_full() || tokio::time::Instant::now() + backoff > deadline {
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    fn step(&self, fresh: bool) -> Result<Step, ClientError> {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.multiplex.enabled() {
            // A fresh connection if a slot is free (a retry), else the least-loaded one.
            let free_slot = state.open < state.capacity.cap() && state.waiters.is_empty();
            if !(fresh && free_slot) {
                if let Some(connection) = shared.take_request_slot(&mut state) {
                    return Ok(Step::Shared(connection));
                }
            }
        }
        if fresh && !state.idle.is_empty() {
            // The least recently used is the likeliest to be dead; its slot is ours.
            state.idle.remove(0).connection.close();
            return Ok(Step::Connect);
        }
        while let Some(idle) = state.idle.pop() {
            if idle.connection.is_closed() {
                state.open -= 1;
                continue;
            }
            drop(state);
            return Ok(Step::Lease(self.lease(idle.connection, true)));
        }
        if state.open < state.capacity.cap() && state.waiters.is_empty() {
            state.open += 1;
            return Ok(Step::Connect);
        }
        if state.waiters.len() >= shared.config.max_queue {
            shared.queue_rejections.fetch_add(1, Ordering::Relaxed);
            return Err(ClientError::QueueFull {
                address: shared.address.clone(),
                max_queue: shared.config.max_queue,
            });
        }
        let id = state.next_waiter_id;
        state.next_waiter_id += 1;
        let (sender, receiver) = oneshot::channel();
        state.waiters.push_back(Waiter { id, grant: sender });
        Ok(Step::Wait(WaitGuard {
            shared: Arc::clone(shared),
            id,
            receiver,
            settled: false,
        }))
    }

    /// A health check: one FCGI_GET_VALUES round trip on a management connection, no
    /// application request. `None` when every slot is in use — the backend is busy serving,
    /// which says enough.
    pub async fn probe(&self, timeout: Duration) -> Option<Result<BackendValues, ProbeError>> {
        PoolShared::probe(&self.shared, timeout).await
    }

    /// Current figures.
    pub fn stats(&self) -> PoolStats {
        let shared = &self.shared;
        let state = shared.lock();
        PoolStats {
            cap: state.capacity.cap(),
            ceiling: state.capacity.ceiling(),
            cap_source: state.capacity.source().to_string(),
            cap_reduced_by: state
                .capacity
                .reduced_by()
                .map(|reason| reason.as_str().to_owned()),
            open: state.open,
            idle: idle_count(&state),
            busy: state.open.saturating_sub(idle_count(&state)),
            waiting: state.waiters.len(),
            multiplexing: state.multiplex.enabled(),
            max_reqs_per_conn: state.multiplex.per_connection(),
            multiplexed_in_flight: PoolShared::shared_in_flight(&state),
            opened: shared.opened.load(Ordering::Relaxed),
            reused: shared.reused.load(Ordering::Relaxed),
            queue_timeouts: shared.queue_timeouts.load(Ordering::Relaxed),
            queue_rejections: shared.queue_rejections.load(Ordering::Relaxed),
            connect_failures: shared.connect_failures.load(Ordering::Relaxed),
            saturation_events: state.saturation_events,
            overloaded: state.overloaded,
            listen_queue_full: state.listen_queue_full,
            backend_values: state.backend_values.clone(),
            keepalive_requests: shared.keepalive_requests(),
        }
    }

    /// Requests this backend has on its plate: busy connections plus waiters. The gateway
    /// sends a new request to the server with the fewest.
    pub fn outstanding(&self) -> usize {
        let state = self.shared.lock();
        let exclusive_busy = state
            .open
            .saturating_sub(state.idle.len() + state.shared.len());
        exclusive_busy + PoolShared::shared_in_flight(&state) + state.waiters.len()
    }

    /// Returns once the backend has answered the first FCGI_GET_VALUES probe, or it failed (at
    /// most about a second), or at once when the pool does not probe: from then on the cap and
    /// the multiplexing mode are what the backend said.
    pub async fn first_probe(&self) {
        let mut done = self.shared.first_probe_done.subscribe();
        let _ = done.wait_for(|done| *done).await;
    }

    /// Closes every idle connection (shutdown). Busy ones finish their request first.
    pub fn close_idle(&self) {
        let mut state = self.shared.lock();
        self.shared.close_all_idle(&mut state);
    }

    fn lease(&self, connection: Connection, reused: bool) -> Lease {
        if reused {
            self.shared.reused.fetch_add(1, Ordering::Relaxed);
        }
        Lease::new(connection, Arc::clone(&self.shared), reused, false)
    }

    /// A lease on a request slot already counted in the shared connection's `in_flight`.
    fn shared_lease(&self, connection: Connection, reused: bool) -> Lease {
        if reused {
            self.shared.reused.fetch_add(1, Ordering::Relaxed);
        }
        Lease::new(connection, Arc::clone(&self.shared), reused, true)
    }

    async fn connect(&self) -> Result<Lease, ClientError> {
        let shared = &self.shared;
        let slot = SlotGuard {
            shared: Some(Arc::clone(shared)),
        };
        let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(shared);
        let config = &shared.config;
        let settings = DriverSettings {
            send_timeout: config.send_timeout,
            max_request_buffer: config.max_request_buffer,
            on_closed: Box::new(move |report| {
                if let Some(shared) = weak.upgrade() {
                    shared.forget_closed(report);
                }
            }),
        };
        let opened = tokio::time::timeout(
            config.connect_timeout,
            Connection::open(&shared.address, id, config.socket_keepalive, settings),
        )
        .await;
        let error = match opened {
            Ok(Ok(connection)) => {
                slot.keep();
                shared.opened.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(backend = %shared.address, connection = id, "connected");
                let mut state = shared.lock();
                if std::mem::take(&mut state.unreachable) && shared.wants_probe(&state) {
                    PoolShared::start_probe(shared);
                }
                if state.multiplex.enabled() {
                    shared.add_shared(&mut state, connection.clone(), 1);
                    drop(state);
                    return Ok(self.shared_lease(connection, false));
                }
                drop(state);
                return Ok(self.lease(connection, false));
            }
            // connect(2) on a unix socket whose listen queue is full fails with EAGAIN.
            Ok(Err(source)) if source.kind() == std::io::ErrorKind::WouldBlock => {
                let mut state = shared.lock();
                state.listen_queue_full += 1;
                let others = state.open - 1;
                shared.reduce_cap(&mut state, others, CapReduction::ListenQueueFull);
                return Err(ClientError::ListenQueueFull {
                    address: shared.address.clone(),
                });
            }
            Ok(Err(source)) => ClientError::Connect {
                address: shared.address.clone(),
                source,
            },
            Err(_) => ClientError::ConnectTimeout {
                address: shared.address.clone(),
                timeout: config.connect_timeout,
            },
        };
        shared.connect_failures.fetch_add(1, Ordering::Relaxed);
        shared.lock().unreachable = true;
        Err(error)
    }
}

impl PoolShared {
    pub(super) fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Nothing in a critical section panics; a poisoned lock still holds consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot stops being used; the oldest waiters get the free slots the cap allows.
    pub(super) fn free_slot(&self, state: &mut PoolState) {
        state.open -= 1;
        self.fill_from_queue(state);
    }

    fn fill_from_queue(&self, state: &mut PoolState) {
        while state.open < state.capacity.cap() {
            let Some(waiter) = state.waiters.pop_front() else {
                return;
            };
            state.open += 1;
            if waiter.grant.send(Grant::OpenSlot).is_err() {
                state.open -= 1;
            }
        }
    }

    /// A connection that finished its request cleanly comes back: closed when the cap is
    /// coming down, else to the oldest waiter, else on top of the idle stack — or, while
    /// multiplexing is on, into the shared list.
    pub(super) fn put_back(&self, connection: Connection) {
        let mut state = self.lock();
        if connection.is_closed() {
            // Closed by the backend right after its END_REQUEST.
            self.free_slot(&mut state);
            self.learn_close_pattern(&mut state, &connection);
            return;
        }
        if state.open > state.capacity.cap() {
            connection.close();
            self.free_slot(&mut state);
            return;
        }
        if state.multiplex.enabled() {
            self.add_shared(&mut state, connection, 0);
            return;
        }
        let mut grant = Grant::Connection(connection);
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.grant.send(grant) {
                Ok(()) => return,
                Err(returned) => grant = returned,
            }
        }
        let Grant::Connection(connection) = grant else {
            return;
        };
        state.idle.push(IdleConnection {
            connection,
            since: Instant::now(),
        });
        let max_idle = self.config.max_idle.unwrap_or(usize::MAX);
        if state.idle.len() > max_idle {
            let least_recent = state.idle.remove(0);
            least_recent.connection.close();
            self.free_slot(&mut state);
        }
    }

    /// Records a cleanly ended request; under demand this may raise the cap.
    pub(super) fn request_completed(&self, state: &mut PoolState) {
        state.completed += 1;
        let demand = !state.waiters.is_empty();
        if state.capacity.record_success(demand, Instant::now()) {
            tracing::info!(backend = %self.address, cap = state.capacity.cap(), "requests succeed under demand; raising the connection cap");
            self.fill_from_queue(state);
        }
    }

    pub(super) fn reduce_cap(&self, state: &mut PoolState, serving: usize, reason: CapReduction) {
        let before = state.capacity.cap();
        if state.capacity.reduce(serving, reason, Instant::now()) {
            tracing::warn!(
                backend = %self.address,
                "{reason:?}: the backend serves fewer connections than the pool held; \
                 lowering the connection cap from {before} to {}",
                state.capacity.cap()
            );
        }
    }

    pub(super) fn close_all_idle(&self, state: &mut PoolState) -> usize {
        let idle = std::mem::take(&mut state.idle);
        let count = idle.len() + self.reap_shared(state, true);
        for parked in idle {
            parked.connection.close();
            self.free_slot(state);
        }
        count
    }

    pub(super) fn give_back(&self, grant: Grant) {
        match grant {
            Grant::Connection(connection) => self.put_back(connection),
            Grant::Request(connection) => {
                self.end_shared_request(&connection, RequestEnd::Abandoned)
            }
            Grant::OpenSlot => self.free_slot(&mut self.lock()),
        }
    }

    /// A connection whose last request went out without KEEP_CONN: the backend closes it. Its
    /// slot stays taken until the socket is gone, so a worker still closing it is never counted
    /// free — the backend never holds more connections than the cap.
    pub(super) fn retire(&self, connection: &Connection) {
        connection.retire();
        let mut state = self.lock();
        // The driver marks itself closed before it reports in; checked under the lock, either
        // this sees it closed or `forget_closed` will find the entry.
        if connection.is_closed() {
            self.free_slot(&mut state);
        } else {
            state.retiring.push(connection.id());
        }
    }

    /// Called by a connection's driver when it stops. A retiring, idle or shared connection is
    /// the pool's to forget; a leased one is released by its lease.
    fn forget_closed(&self, report: ClosedReport) {
        let id = report.connection;
        let mut state = self.lock();
        if report.multiplexing_refused {
            self.stop_multiplexing(
                &mut state,
                "a protocol error with several requests in flight",
            );
        }
        if self.forget_shared(&mut state, id) {
            return;
        }
        if let Some(position) = state.retiring.iter().position(|retiring| *retiring == id) {
            state.retiring.swap_remove(position);
            self.free_slot(&mut state);
            return;
        }
        if let Some(position) = state
            .idle
            .iter()
            .position(|idle| idle.connection.id() == id)
        {
            let closed = state.idle.remove(position).connection;
            self.free_slot(&mut state);
            tracing::debug!(backend = %self.address, connection = id, "idle connection closed by the backend; dropped from the pool");
            self.learn_close_pattern(&mut state, &closed);
        }
    }

    /// A backend that keeps closing pooled connections after exactly N requests (php-fpm's
    /// `pm.max_requests`, php-cgi's `PHP_FCGI_MAX_REQUESTS`) is telling us when: from then on
    /// connections are retired at N, their last request sent without KEEP_CONN, so none is
    /// handed out in the instant between the backend's END_REQUEST and its close.
    fn learn_close_pattern(&self, state: &mut PoolState, closed: &Connection) {
        if !closed.closed_right_after_end() {
            // An idle timeout or a restart, not a worker's last request: no pattern to learn.
            return;
        }
        let requests = closed.requests_started();
        if requests == 0 || requests >= self.keepalive_requests() {
            state.close_pattern = (0, 0);
            return;
        }
        if state.close_pattern.0 == requests {
            state.close_pattern.1 += 1;
        } else {
            state.close_pattern = (requests, 1);
        }
        if state.close_pattern.1 >= CLOSE_PATTERN_EVIDENCE
            && self
                .learned_keepalive_requests
                .swap(requests, Ordering::Relaxed)
                != requests
        {
            tracing::info!(backend = %self.address, "the backend closes connections after {requests} requests (pm.max_requests?); retiring them at {requests}");
        }
    }

    /// Requests per connection in force: the configured `keepalive_requests`, or fewer when
    /// the backend showed it closes connections sooner.
    pub(super) fn keepalive_requests(&self) -> u64 {
        match self.learned_keepalive_requests.load(Ordering::Relaxed) {
            0 => self.config.keepalive_requests,
            learned => learned.min(self.config.keepalive_requests),
        }
    }

    fn reap(&self) {
        let mut state = self.lock();
        let shared_closed = self.reap_shared(&mut state, false);
        if shared_closed > 0 {
            tracing::debug!(backend = %self.address, closed = shared_closed, "closed idle multiplexed connections");
        }
        let config = &self.config;
        let mut expired = 0;
        state.idle.retain(|idle| {
            let keep = !idle.connection.is_closed()
                && idle.since.elapsed() < config.keepalive_timeout
                && idle.connection.age() < config.keepalive_time;
            if !keep {
                expired += 1;
                idle.connection.close();
            }
            keep
        });
        for _ in 0..expired {
            self.free_slot(&mut state);
        }
        if expired > 0 {
            tracing::debug!(backend = %self.address, closed = expired, "closed idle connections past keepalive_timeout or keepalive_time");
        }
    }

    /// Whether the backend's FCGI_GET_VALUES answer would change anything: the cap when none is
    /// configured, multiplexing when its mode asks.
    fn wants_probe(&self, state: &PoolState) -> bool {
        self.config.max_conns.is_none() || state.multiplex.wants_backend_values()
    }

    fn learn_multiplexing(&self, state: &mut PoolState, values: &BackendValues) {
        let was = state.multiplex.enabled();
        if state
            .multiplex
            .learned(values, self.config.max_reqs_per_conn)
        {
            let why = state.multiplex.reason(values.mpxs_conns);
            tracing::info!(backend = %self.address, per_connection = state.multiplex.per_connection(), "multiplexing: requests share connections ({why})");
            self.share_idle_connections(state);
        } else if was && !state.multiplex.enabled() {
            self.stop_multiplexing(state, "FCGI_MPXS_CONNS=0");
        } else if !state.multiplex.enabled() && self.config.multiplex == super::Multiplexing::On {
            tracing::warn!(backend = %self.address, "multiplex = on, but the backend announces FCGI_MPXS_CONNS=0: one request per connection");
        }
    }

    /// The backend does not multiplex: no more shared connections, for good.
    pub(super) fn stop_multiplexing(&self, state: &mut PoolState, why: &str) {
        if !state.multiplex.refuse() {
            return;
        }
        tracing::warn!(backend = %self.address, "the backend does not multiplex ({why}); one request per connection from now on");
        for connection in self.unshare_connections(state) {
            state.idle.push(IdleConnection {
                connection,
                since: Instant::now(),
            });
        }
        // Each waiter now needs a connection of its own.
        while let Some(parked) = state.idle.pop() {
            let Some(waiter) = state.waiters.pop_front() else {
                state.idle.push(parked);
                break;
            };
            if let Err(Grant::Connection(connection)) =
                waiter.grant.send(Grant::Connection(parked.connection))
            {
                state.idle.push(IdleConnection {
                    connection,
                    since: Instant::now(),
                });
            }
        }
        self.fill_from_queue(state);
    }

    /// Asks the backend for FCGI_MAX_CONNS & co. in the background. Requests do not wait for it.
    fn start_probe(shared: &Arc<PoolShared>) {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            if let Some(Err(error)) = PoolShared::probe(&shared, PROBE_TIMEOUT).await {
                tracing::debug!(backend = %shared.address, "backend limits unknown ({error}); the cap stays as it is");
            }
            shared.first_probe_done.send_replace(true);
        });
    }

    /// One FCGI_GET_VALUES round trip, holding a slot meanwhile so a probe never takes the
    /// connection count over the cap; `None` when no slot is free.
    async fn probe(
        shared: &Arc<PoolShared>,
        timeout: Duration,
    ) -> Option<Result<BackendValues, ProbeError>> {
        {
            let mut state = shared.lock();
            if state.open >= state.capacity.cap() {
                return None;
            }
            state.open += 1;
        }
        let slot = SlotGuard {
            shared: Some(Arc::clone(shared)),
        };
        let answer = probe::get_values(&shared.address, timeout).await;
        if let Err(ProbeError::Timeout(_) | ProbeError::Io(_)) = &answer {
            let mut state = shared.lock();
            if state.multiplex.no_backend_values() {
                tracing::info!(backend = %shared.address, "no FCGI_GET_VALUES answer; multiplexing as configured (multiplex = on)");
                shared.share_idle_connections(&mut state);
            }
        }
        if let Ok(values) = &answer {
            let mut state = shared.lock();
            shared.learn_multiplexing(&mut state, values);
            match values.max_conns {
                Some(max_conns)
                    if shared.config.max_conns.is_none() && state.capacity.learned(max_conns) =>
                {
                    tracing::info!(backend = %shared.address, "connection cap {max_conns} from FCGI_MAX_CONNS");
                }
                None if shared.config.max_conns.is_none()
                    && state.capacity.source() == &CapSource::Default =>
                {
                    tracing::info!(backend = %shared.address, "the backend does not announce FCGI_MAX_CONNS (php-fpm never does): the cap stays {} and adapts; set max_conns or php_fpm_config to give the real figure", state.capacity.cap());
                }
                _ => {}
            }
            state.backend_values = Some(values.clone());
        }
        drop(slot);
        Some(answer)
    }
}

pub(super) fn idle_count(state: &PoolState) -> usize {
    state.idle.len() + state.shared.iter().filter(|e| e.in_flight == 0).count()
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
