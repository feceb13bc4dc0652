//! The connection pool of one backend, shared by every runtime thread: the handle around the
//! pure pool state, and the tasks that do its I/O.
//!
//! Every rule — the cap, the idle stack, the FIFO queue, multiplexing, saturation, what the
//! backend's closes teach — lives in [`PoolState`] (`state/`), fed events with `now` and
//! returning effects (`effects.rs`). This module holds that state under one lock, feeds it what
//! happens (a checkout, a connect's outcome, a lease coming back, a driver stopping, a probe's
//! answer, the reaper's tick) and carries out the effects while still holding the lock, so their
//! order is the state's: grants through each waiter's channel (`waiters.rs`), closes, retirements,
//! log lines, a GET_VALUES probe in the background.
//!
//! # Races and how they are closed
//!
//! - *Idle connection closed by the backend.* Its driver marks it closed and then reports in
//!   (`backend_closed`); a checkout that pops it first sees `is_closed()` and drops it. Whichever
//!   comes first under the lock frees the slot; the other finds nothing to do.
//! - *Waiter gives up (timeout, client gone) just as it is granted something.* Its guard takes
//!   the lock: if the waiter is still queued it is removed; if not, the grant was already sent
//!   and is taken back out of the channel and returned to the pool. A grant is never lost.
//! - *Checkout cancelled while connecting, probe cancelled.* The slot is held by a guard that
//!   reports the outcome on drop.

mod effects;
mod fpm_status;
mod notices;
mod owner;
mod reaper;
mod shared;
mod state;
mod waiters;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use self::effects::{Checkout, ConnectFailure, Effect, Grant, Notice, PooledConnection};
use self::state::{Effects, HandshakeVerdict, PoolState, ProbeOutcome};
use self::waiters::{Queue, Senders, WaitGuard};
use super::connection::driver::{ClosedReport, DriverSettings};
use super::connection::{Connection, ConnectionId, HandshakeAnswer};
use super::error::{ClientError, ErrorKind};
use super::lease::{saturation_bound, Lease, LeaseOwner};
use super::pool_config::PoolConfig;
use super::probe::{self, BackendValues, ProbeError};
use super::stats::PoolStats;
use crate::net::Address;

/// How long a GET_VALUES probe may take; it holds a slot (and maybe a worker) meanwhile.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between connects refused because the backend's listen queue is full.
const LISTEN_QUEUE_BACKOFF: Duration = Duration::from_millis(10);

/// A capped pool of connections to one backend. Cloning shares the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    address: Address,
    config: PoolConfig,
    core: Mutex<Core>,
    /// This pool, for the tasks an effect starts.
    me: Weak<PoolInner>,
    next_connection_id: AtomicU64,
    /// The state's `keepalive_requests`, mirrored for leases to read without the lock.
    keepalive_requests: AtomicU64,
    /// True once the first FCGI_GET_VALUES probe has ended (answered or not), or at once when
    /// there is none: what a caller waits for before announcing readiness.
    first_probe_done: tokio::sync::watch::Sender<bool>,
}

struct Core {
    state: PoolState<Connection>,
    senders: Senders,
    /// The effects list each event fills and `carry_out` empties, kept for the next event:
    /// a fresh one would be an allocation per checkout and per return.
    effects: Effects<Connection>,
}

impl PooledConnection for Connection {
    fn id(&self) -> ConnectionId {
        Connection::id(self)
    }

    fn is_closed(&self) -> bool {
        Connection::is_closed(self)
    }

    fn requests_started(&self) -> u64 {
        Connection::requests_started(self)
    }
    fn requests_ended(&self) -> u64 {
        Connection::requests_ended(self)
    }

    fn closed_right_after_end(&self) -> bool {
        Connection::closed_right_after_end(self)
    }
}

impl Pool {
    /// A pool for `address`. Starts the idle reaper, and — when no cap is configured — asks the
    /// backend for its limits, so it must be called inside a tokio runtime.
    pub fn new(address: Address, config: PoolConfig) -> Pool {
        let state = PoolState::new(&config);
        let probe = state.wants_probe();
        let figures = state.stats();
        if config.max_conns.is_none() {
            tracing::info!(backend = %address, "connection cap {} ({}) until the backend answers FCGI_GET_VALUES", figures.cap, figures.cap_source);
        } else {
            tracing::info!(backend = %address, "connection cap {} from {}", figures.cap, figures.cap_source);
        }
        let inner = Arc::new_cyclic(|me| PoolInner {
            keepalive_requests: AtomicU64::new(state.keepalive_requests()),
            address,
            config,
            core: Mutex::new(Core {
                state,
                senders: Senders::default(),
                effects: Vec::new(),
            }),
            me: me.clone(),
            next_connection_id: AtomicU64::new(1),
            first_probe_done: tokio::sync::watch::Sender::new(!probe),
        });
        tokio::spawn(reaper::reap_idle_connections(Arc::downgrade(&inner)));
        if probe {
            PoolInner::start_probe(&inner);
        }
        Pool { inner }
    }

    /// The backend this pool connects to.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// The settings in force.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
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
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.config.queue_timeout;
        let mut backoff = LISTEN_QUEUE_BACKOFF;
        // Set once a new connection of this checkout found no worker: it goes first in line.
        let mut again = false;
        loop {
            let grant = match PoolInner::checkout(inner, fresh, again) {
                Step::Lease(lease) => return Ok(lease),
                Step::Connect => Grant::OpenSlot,
                Step::QueueFull => {
                    return Err(ClientError::from(ErrorKind::QueueFull {
                        address: inner.address.clone(),
                        max_queue: inner.config.max_queue,
                    }))
                }
                Step::Wait(guard) => match guard.wait(deadline).await {
                    Some(grant) => grant,
                    None => {
                        return Err(ClientError::from(ErrorKind::QueueTimeout {
                            address: inner.address.clone(),
                            timeout: inner.config.queue_timeout,
                        }))
                    }
                },
            };
            let connected = match grant {
                Grant::Connection(connection) if fresh => {
                    // Its slot is ours: open a new connection in it instead.
                    inner.update(|state, _, fx| state.exchange_for_connect(connection, fx));
                    inner.connect(deadline).await
                }
                Grant::Connection(connection) => return Ok(inner.lease(connection, true, false)),
                Grant::Request(connection) => return Ok(inner.lease(connection, true, true)),
                Grant::OpenSlot => inner.connect(deadline).await,
            };
            let error = match connected {
                Connected::Lease(lease) => return Ok(lease),
                Connected::Again => {
                    again = true;
                    continue;
                }
                Connected::Failed(error) => error,
            };
            // A full listen queue means the backend is busy, not gone: wait and try again.
            if !error.is_listen_queue_full() || tokio::time::Instant::now() + backoff > deadline {
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// A health check: one FCGI_GET_VALUES round trip on a management connection, no
    /// application request. `None` when every slot is in use — the backend is busy serving,
    /// which says enough.
    pub async fn probe(&self, timeout: Duration) -> Option<Result<BackendValues, ProbeError>> {
        self.inner.probe(timeout).await
    }

    /// Current figures.
    pub fn stats(&self) -> PoolStats {
        self.inner.lock().state.stats()
    }

    /// Requests this backend has on its plate: busy connections plus waiters. The gateway
    /// sends a new request to the server with the fewest.
    pub fn outstanding(&self) -> usize {
        self.inner.lock().state.outstanding()
    }

    /// Returns once the backend has answered the first FCGI_GET_VALUES probe, or it failed (at
    /// most about a second), or at once when the pool does not probe: from then on the cap and
    /// the multiplexing mode are what the backend said.
    pub async fn first_probe(&self) {
        let mut done = self.inner.first_probe_done.subscribe();
        let _ = done.wait_for(|done| *done).await;
    }

    /// Closes every idle connection (shutdown). Busy ones finish their request first.
    pub fn close_idle(&self) {
        self.inner.update(|state, _, fx| {
            state.close_idle(fx);
        });
    }
}

/// What a connect in a checkout's slot came to.
enum Connected {
    Lease(Lease),
    /// The new connection found no worker, or refused the handshake; nothing was sent on it.
    /// The request checks out again, first in line.
    Again,
    Failed(ClientError),
}

/// How a new connection's handshake (`state/backend.rs`) ended.
enum Handshake {
    /// A worker answered on it.
    Answered,
    /// Not asked, or not answered while nothing showed why: the request goes out regardless.
    Skipped,
    /// Others were served while it waited: it has no worker. Its slot is given back already.
    NoWorker,
    /// It closed before answering.
    Refused,
    /// The checkout's queue deadline passed while it waited.
    TimedOut,
}

/// What a checkout got under the lock.
enum Step {
    Lease(Lease),
    Connect,
    Wait(WaitGuard),
    QueueFull,
}

impl PoolInner {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // Nothing in a critical section panics; a poisoned lock still holds consistent state.
        self.core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Feeds the state one event and carries out what it returns, under the lock.
    fn update<R>(
        &self,
        event: impl FnOnce(&mut PoolState<Connection>, Instant, &mut Effects<Connection>) -> R,
    ) -> R {
        let mut core = self.lock();
        let mut fx = std::mem::take(&mut core.effects);
        let result = event(&mut core.state, Instant::now(), &mut fx);
        self.carry_out(&mut core, &mut fx);
        core.effects = fx;
        check_invariants(&core.state);
        result
    }

    /// Carries out `fx` in order, leaving it empty (its room kept for the next event).
    fn carry_out(&self, core: &mut Core, fx: &mut Effects<Connection>) {
        // A grant that reaches nobody comes back as another event; its effects follow.
        let mut more = Vec::new();
        loop {
            for effect in fx.drain(..) {
                match effect {
                    Effect::Grant { waiter, grant } => {
                        if let Err(grant) = core.senders.send(waiter, grant) {
                            core.state.grant_returned(Instant::now(), grant, &mut more);
                        }
                    }
                    Effect::Close(connection) => connection.close(),
                    Effect::Retire(connection) => connection.retire(),
                    Effect::SetShared(connection, shared) => connection.set_multiplexed(shared),
                    Effect::Probe => {
                        if let Some(inner) = self.me.upgrade() {
                            PoolInner::start_probe(&inner);
                        }
                    }
                    Effect::Notice(notice) => {
                        if let Notice::ClosePatternLearned { .. } = notice {
                            let learned = core.state.keepalive_requests();
                            self.keepalive_requests.store(learned, Ordering::Relaxed);
                        }
                        notices::log(&self.address, &notice);
                    }
                }
            }
            if more.is_empty() {
                return;
            }
            fx.append(&mut more);
        }
    }

    fn checkout(inner: &Arc<PoolInner>, fresh: bool, again: bool) -> Step {
        let mut core = inner.lock();
        let mut fx = std::mem::take(&mut core.effects);
        let checkout = if again {
            core.state.checkout_again(Instant::now(), &mut fx)
        } else {
            core.state.checkout(Instant::now(), fresh, &mut fx)
        };
        let step = match checkout {
            Checkout::Exclusive(connection) => Step::Lease(inner.lease(connection, true, false)),
            Checkout::Shared(connection) => Step::Lease(inner.lease(connection, true, true)),
            Checkout::Connect => Step::Connect,
            Checkout::QueueFull => Step::QueueFull,
            Checkout::Wait(waiter) => Step::Wait(WaitGuard {
                receiver: core.senders.add(waiter),
                queue: Arc::clone(inner) as Arc<dyn Queue>,
                waiter,
                settled: false,
                timed_out: false,
            }),
        };
        inner.carry_out(&mut core, &mut fx);
        core.effects = fx;
        check_invariants(&core.state);
        step
    }

    fn lease(self: &Arc<Self>, connection: Connection, reused: bool, multiplexed: bool) -> Lease {
        Lease::new(
            connection,
            Arc::clone(self) as Arc<dyn LeaseOwner>,
            reused,
            multiplexed,
        )
    }

    /// Opens a connection in the slot a checkout got, and — on a backend that answers — waits
    /// for a worker to answer on it before handing it out (`handshake`).
    async fn connect(self: &Arc<Self>, deadline: tokio::time::Instant) -> Connected {
        let slot = SlotGuard::new(self, |state, now, fx| {
            state.connect_failed(now, ConnectFailure::Cancelled, fx)
        });
        let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let weak = Arc::downgrade(self);
        let config = &self.config;
        let settings = DriverSettings {
            send_timeout: config.send_timeout,
            max_request_buffer: config.max_request_buffer,
            on_closed: Box::new(move |report| {
                if let Some(inner) = weak.upgrade() {
                    inner.backend_closed(report);
                }
            }),
        };
        let opened = tokio::time::timeout(
            config.connect_timeout,
            Connection::open(&self.address, id, config.socket_keepalive, settings),
        )
        .await;
        let (failure, error) = match opened {
            Ok(Ok(connection)) => {
                tracing::debug!(backend = %self.address, connection = id, "connected");
                let answered = match self.handshake(&connection, deadline).await {
                    Handshake::Answered => true,
                    Handshake::Skipped => false,
                    Handshake::NoWorker => {
                        // The state gave the slot back with its verdict.
                        slot.disarm();
                        connection.close();
                        return Connected::Again;
                    }
                    Handshake::Refused => {
                        slot.disarm();
                        self.update(|state, _, fx| state.handshake_refused(fx));
                        return Connected::Again;
                    }
                    Handshake::TimedOut => {
                        // The slot guard gives the slot back.
                        connection.close();
                        return Connected::Failed(ClientError::from(ErrorKind::QueueTimeout {
                            address: self.address.clone(),
                            timeout: config.queue_timeout,
                        }));
                    }
                };
                slot.disarm();
                let shared = self.update(|state, now, fx| {
                    state.connected(now, connection.clone(), answered, fx)
                });
                return Connected::Lease(self.lease(connection, false, shared));
            }
            // connect(2) on a unix socket whose listen queue is full fails with EAGAIN.
            Ok(Err(source)) if source.kind() == std::io::ErrorKind::WouldBlock => (
                ConnectFailure::ListenQueueFull,
                ClientError::from(ErrorKind::ListenQueueFull {
                    address: self.address.clone(),
                }),
            ),
            Ok(Err(source)) => (
                ConnectFailure::Failed,
                ClientError::from(ErrorKind::Connect {
                    address: self.address.clone(),
                    source,
                }),
            ),
            Err(_) => (
                ConnectFailure::Failed,
                ClientError::from(ErrorKind::ConnectTimeout {
                    address: self.address.clone(),
                    timeout: config.connect_timeout,
                }),
            ),
        };
        slot.disarm();
        self.update(|state, now, fx| state.connect_failed(now, failure, fx));
        Connected::Failed(error)
    }

    /// Asks FCGI_GET_VALUES on a new connection and waits for the answer, judging the silence
    /// every bound (the same as for a first response) until the state's verdict or `deadline`.
    async fn handshake(
        &self,
        connection: &Connection,
        deadline: tokio::time::Instant,
    ) -> Handshake {
        let (wanted, (usual_wait, completed_before)) = {
            let core = self.lock();
            (
                core.state.wants_handshake(),
                core.state.first_response_baseline(),
            )
        };
        if !wanted {
            return Handshake::Skipped;
        }
        let Ok(mut answer) = connection.handshake().await else {
            return Handshake::Refused;
        };
        let asked_at = tokio::time::Instant::now();
        let bound = saturation_bound(usual_wait);
        let mut looks = 1;
        loop {
            let look_at = (asked_at + bound * looks).min(deadline);
            match tokio::time::timeout_at(look_at, &mut answer).await {
                Ok(Ok(HandshakeAnswer::Answered)) => {
                    connection.confirm_worker();
                    let id = connection.id();
                    self.update(|state, _, _| state.handshake_answered(id));
                    return Handshake::Answered;
                }
                // No request went out yet, so nothing can have been answered first.
                Ok(Ok(HandshakeAnswer::Ignored) | Err(_)) => return Handshake::Refused,
                Err(_) if look_at >= deadline => {
                    self.update(|state, _, _| state.handshake_timed_out());
                    return Handshake::TimedOut;
                }
                Err(_) => {}
            }
            let id = connection.id();
            let verdict = self
                .update(|state, now, fx| state.handshake_unanswered(now, id, completed_before, fx));
            match verdict {
                HandshakeVerdict::KeepWaiting => looks += 1,
                HandshakeVerdict::NoWorker => return Handshake::NoWorker,
                HandshakeVerdict::SendAnyway => {
                    self.hear_late_answer(answer);
                    return Handshake::Skipped;
                }
            }
        }
    }

    /// The request went out without the handshake's answer: if the answer still comes, the
    /// backend does answer, and later connections ask again.
    fn hear_late_answer(&self, answer: tokio::sync::oneshot::Receiver<HandshakeAnswer>) {
        let Some(inner) = self.me.upgrade() else {
            return;
        };
        let within = self.config.read_timeout;
        tokio::spawn(async move {
            if let Ok(Ok(answer)) = tokio::time::timeout(within, answer).await {
                inner.update(|state, _, _| state.late_handshake_answer(answer));
            }
        });
    }

    fn backend_closed(&self, report: ClosedReport) {
        self.update(|state, now, fx| {
            state.backend_closed(now, report.connection, report.multiplexing_refused, fx)
        });
    }

    /// Asks the backend for FCGI_MAX_CONNS & co. in the background. Requests do not wait for it.
    fn start_probe(inner: &Arc<PoolInner>) {
        let inner = Arc::clone(inner);
        tokio::spawn(async move {
            if let Some(Err(error)) = inner.probe(PROBE_TIMEOUT).await {
                tracing::debug!(backend = %inner.address, "backend limits unknown ({error}); the cap stays as it is");
            }
            inner.first_probe_done.send_replace(true);
        });
    }

    /// One FCGI_GET_VALUES round trip, holding a slot meanwhile so a probe never takes the
    /// connection count over the cap; `None` when no slot is free.
    async fn probe(&self, timeout: Duration) -> Option<Result<BackendValues, ProbeError>> {
        if !self.update(|state, _, _| state.probe_started()) {
            return None;
        }
        let slot = SlotGuard::new(self, |state, now, fx| {
            state.probe_ended(now, ProbeOutcome::Unusable, fx)
        });
        let answer = probe::get_values(&self.address, timeout).await;
        slot.disarm();
        let outcome = match &answer {
            Ok(values) => ProbeOutcome::Answered(values.clone()),
            Err(ProbeError::Timeout(_) | ProbeError::Io(_)) => ProbeOutcome::Unanswered,
            Err(_) => ProbeOutcome::Unusable,
        };
        self.update(|state, now, fx| state.probe_ended(now, outcome, fx));
        Some(answer)
    }
}

/// The event that gives a slot back, for a guard to feed when its holder is dropped half-way.
type GiveBack = fn(&mut PoolState<Connection>, Instant, &mut Effects<Connection>);

/// The slot of a connect or probe in progress: dropped before it ended (the checkout or the
/// probe cancelled), it feeds the state `give_back`.
struct SlotGuard<'a> {
    pool: Option<&'a PoolInner>,
    give_back: GiveBack,
}

impl<'a> SlotGuard<'a> {
    fn new(pool: &'a PoolInner, give_back: GiveBack) -> SlotGuard<'a> {
        SlotGuard {
            pool: Some(pool),
            give_back,
        }
    }

    /// The holder ended and reports its outcome itself.
    fn disarm(mut self) {
        self.pool = None;
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.update(self.give_back);
        }
    }
}

/// In debug builds (every test), each event's outcome is checked against the pool's invariants:
/// a broken one fails loudly where it broke instead of carrying on as a slow leak.
fn check_invariants(state: &PoolState<Connection>) {
    #[cfg(debug_assertions)]
    if let Err(broken) = state.check_invariants(Instant::now()) {
        panic!("connection pool invariant broken: {broken}");
    }
    #[cfg(not(debug_assertions))]
    let _ = state;
}
