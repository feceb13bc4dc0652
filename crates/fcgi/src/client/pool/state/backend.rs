//! What the backend shows about itself and how the pool adapts: a fresh connection left in the
//! listen backlog (saturation), FCGI_OVERLOADED, FCGI_CANT_MPX_CONN, closes after a fixed request
//! count, and the FCGI_GET_VALUES answer (cap, multiplexing) — on a probe's connection of its
//! own, or asked on a new connection before its first request (the handshake).
//!
//! **The handshake.** A new connection may sit in the backend's listen queue behind connections
//! the backend's workers are busy with — for seconds with a single-process app that keeps its
//! one connection (libfcgi, fcgiwrap). A request sent on it would wait there. So on a backend
//! that answers management records, a new connection first asks FCGI_GET_VALUES and carries its
//! request only once answered: the answer proves a worker took it. A connection left unanswered
//! while others are served is closed before any request was on it, and the request waits for the
//! next connection that frees up, first in line — whatever its method, since nothing was sent.

use std::time::{Duration, Instant};

use super::{Effects, PoolState, ProbeOutcome};
use crate::client::capacity::{CapReduction, CapSource};
use crate::client::connection::{ConnectionId, HandshakeAnswer};
use crate::client::pool::effects::{Effect, Notice, PooledConnection};
use crate::client::pool_config::Multiplexing;
use crate::client::probe::BackendValues;

/// Backend closes at the same request count, in a row, before that count is adopted.
const CLOSE_PATTERN_EVIDENCE: u32 = 3;
/// Connections closed in the backend's listen queue remembered at most (see `PoolState::ghosts`).
const MAX_GHOSTS: usize = 64;
/// How long others seen in the backend's listen queue explain a fresh connection of this pool
/// left unanswered there: several looks at the queue (62 ms apart at most, see `reaper.rs`).
const SHARING_EVIDENCE: Duration = Duration::from_secs(1);

/// Whether the backend answers FCGI_GET_VALUES asked on a new connection (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandshakeSupport {
    /// Not seen yet: new connections ask, and send their request anyway if no answer comes
    /// while nothing else shows why.
    Unknown,
    /// It answered: new connections carry a request only once answered.
    Answered,
    /// It did not answer, or closed the connection: new connections send their request at once.
    Ignored,
}

/// What to do about a new connection whose FCGI_GET_VALUES has no answer yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandshakeVerdict {
    /// Wait on: it queues behind other clients of the backend, or the backend is slow to
    /// accept and nothing shows it has fewer workers.
    KeepWaiting,
    /// Others were served while it waited: the backend has no worker for it. Its slot is given
    /// back and the cap lowered; close it and check out again, first in line.
    NoWorker,
    /// No answer and no evidence either way: the backend may skip management records. Send
    /// the request; the first-response watch takes over.
    SendAnyway,
}

impl<C: PooledConnection> PoolState<C> {
    // ---- what responses show --------------------------------------------------------------

    /// A first answer on a fresh connection came after `waited`: it sets the bound by which a
    /// silent one is judged.
    fn note_first_answer(&mut self, connection: ConnectionId, waited: Duration) {
        self.accepted(connection);
        // An exponential average with weight 1/8: smooth, and quick enough to follow the app.
        let average = self.first_response_average;
        self.first_response_average = if average.is_zero() {
            waited
        } else {
            average - average / 8 + waited / 8
        };
    }

    /// A fresh connection's first request got its first answer after `waited`.
    pub(crate) fn first_response(
        &mut self,
        connection: ConnectionId,
        waited: Duration,
        fx: &mut Effects<C>,
    ) {
        self.note_first_answer(connection, waited);
        if let Some(leased) = self
            .leased
            .iter_mut()
            .find(|leased| leased.id == connection)
        {
            leased.awaiting_answer = false;
        }
        if let Some(position) = self.stuck.iter().position(|id| *id == connection) {
            self.stuck.swap_remove(position);
            fx.push(Effect::Notice(Notice::StuckConnectionServed {
                connection,
                waited,
            }));
        }
    }

    /// A fresh connection's first request is still unanswered after its bound. When others
    /// were served meanwhile, the connection waits in the backend's listen backlog: the backend
    /// has fewer workers than the pool had connections. The cap drops to the connections that
    /// demonstrably have a worker and idle connections are closed so their workers take the
    /// waiting ones. Returns false when there is no such evidence (yet).
    pub(crate) fn still_unanswered(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        completed_before: u64,
        fx: &mut Effects<C>,
    ) -> bool {
        let others_served = self.completed > completed_before || self.idle_count() > 0;
        if !others_served {
            // Nobody is being served: the app is slow (or down), not short of workers.
            return false;
        }
        if self.sharing_lately(now) {
            // It queues behind other clients of the backend, who get workers as this pool's
            // connections go back: the backend's workers are shared, not fewer than the cap.
            return true;
        }
        if !self.stuck.contains(&connection) {
            self.stuck.push(connection);
        }
        self.counters.saturation_events += 1;
        let serving = self.open().saturating_sub(self.stuck.len());
        self.reduce_cap(now, serving, CapReduction::Saturation, fx);
        let idle_closed = self.close_idle(fx);
        fx.push(Effect::Notice(Notice::Saturated {
            connection,
            idle_closed,
            cap: self.capacity.cap(),
        }));
        true
    }

    // ---- the handshake on a new connection ------------------------------------------------------

    /// Whether a new connection asks FCGI_GET_VALUES before its first request: not when the
    /// backend skips management records, not when connections are shared (they hold no worker)
    /// and not without FCGI_KEEP_CONN (each request would pay the round trip).
    pub(crate) fn wants_handshake(&self) -> bool {
        let multiplexing_backend = self
            .backend_values
            .as_ref()
            .is_some_and(|values| values.mpxs_conns == Some(true));
        self.limits.keep_conn
            && self.handshakes != HandshakeSupport::Ignored
            && !self.multiplex.enabled()
            && !multiplexing_backend
    }

    /// Whether the backend has answered a handshake: a request that must not run twice may then
    /// be preceded by the same question on a reused connection (`Lease::set_unrepeatable`).
    pub(crate) fn answers_handshakes(&self) -> bool {
        self.handshakes == HandshakeSupport::Answered && !self.multiplex.enabled()
    }

    /// A new connection's FCGI_GET_VALUES was answered: a worker has it. (What
    /// it announced is not taken for the backend's limits: one worker of a prefork app answers
    /// for itself — libfcgi says FCGI_MAX_CONNS=1 in each of fcgiwrap's processes.)
    pub(crate) fn handshake_answered(&mut self, connection: ConnectionId) {
        // Not a first answer's wait: that includes the script's run, this only the accept.
        self.accepted(connection);
        self.handshakes = HandshakeSupport::Answered;
    }

    /// The backend took `connection` out of its listen queue. It accepts in connect order:
    /// whatever of this pool's was queued before has been accepted too.
    fn accepted(&mut self, connection: ConnectionId) {
        self.ghosts.retain(|ghost| *ghost > connection);
    }

    /// The handshake's answer came after the request it was asked before went out anyway
    /// (`HandshakeVerdict::SendAnyway`), but before the request's answer: the backend does
    /// answer, it was only slow to accept the connection.
    pub(crate) fn late_handshake_answer(&mut self, answer: HandshakeAnswer) {
        if answer == HandshakeAnswer::Answered {
            self.handshakes = HandshakeSupport::Answered;
        }
    }

    /// A handshake waited out the request's whole queue time with no answer and nothing to
    /// explain it: whatever the backend did before, it is not answering now.
    pub(crate) fn handshake_timed_out(&mut self) {
        self.handshakes = HandshakeSupport::Unknown;
    }

    /// A new connection's FCGI_GET_VALUES is still unanswered after its bound; `completed_before`
    /// is the pool's count of finished requests when it was asked. See [`HandshakeVerdict`].
    pub(crate) fn handshake_unanswered(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        completed_before: u64,
        fx: &mut Effects<C>,
    ) -> HandshakeVerdict {
        if self.sharing_lately(now) {
            // Its turn comes as this pool's connections go back to the others waiting.
            return HandshakeVerdict::KeepWaiting;
        }
        let others_served = self.completed > completed_before || self.idle_count() > 0;
        if !others_served {
            if self.handshakes == HandshakeSupport::Answered {
                return HandshakeVerdict::KeepWaiting;
            }
            if self.handshakes != HandshakeSupport::Ignored {
                self.handshakes = HandshakeSupport::Ignored;
                fx.push(Effect::Notice(Notice::HandshakeIgnored));
            }
            return HandshakeVerdict::SendAnyway;
        }
        self.counters.saturation_events += 1;
        let serving = self.serving();
        self.reduce_cap(now, serving, CapReduction::Saturation, fx);
        self.connecting -= 1;
        if self.ghosts.len() >= MAX_GHOSTS {
            self.ghosts.remove(0);
        }
        self.ghosts.push(connection);
        fx.push(Effect::Notice(Notice::NoWorkerForNewConnection {
            connection,
            cap: self.capacity.cap(),
        }));
        self.fill_from_queue(fx);
        HandshakeVerdict::NoWorker
    }

    /// A new connection closed before answering its FCGI_GET_VALUES. On a backend that has
    /// answered before, it is going away (a restart); on one not known to answer, it may drop
    /// connections that send management records, so new ones stop asking. The slot is free;
    /// the request checks out again.
    pub(crate) fn handshake_refused(&mut self, fx: &mut Effects<C>) {
        if self.handshakes == HandshakeSupport::Unknown {
            self.handshakes = HandshakeSupport::Ignored;
            fx.push(Effect::Notice(Notice::HandshakeIgnored));
        }
        self.connecting -= 1;
        self.fill_from_queue(fx);
    }

    /// Connections that demonstrably have a worker: idle, shared, and leased ones that were
    /// answered.
    fn serving(&self) -> usize {
        self.idle.len()
            + self.shared.len()
            + self
                .leased
                .iter()
                .filter(|leased| !leased.awaiting_answer)
                .count()
    }

    // ---- others in the backend's listen queue ----------------------------------------------------

    /// Whether a look at the backend's listen queue could change anything: only while this
    /// pool holds connections of its own (idle or busy), which hold workers someone queued
    /// there might be waiting for.
    pub(crate) fn wants_backlog_look(&self) -> bool {
        !self.idle.is_empty() || !self.leased.is_empty()
    }

    /// The backend's listen queue holds `queued` connections. Those beyond the ones this pool
    /// may have there itself (connects, handshakes and probes in progress, fresh connections
    /// with no answer yet, connections it closed there) are other clients of the backend waiting for a worker: idle connections are closed
    /// at once, and while others still wait, busy connections go back as their requests end —
    /// up to a quarter of them, at least one, per look. A request of this pool that needs a
    /// connection then connects anew and queues behind them, so the backend's FIFO accept queue
    /// shares its workers among all its clients, each getting about as many as it keeps asking
    /// for, with no coordinator. Returns how many idle connections were closed.
    pub(crate) fn backlog_seen(&mut self, now: Instant, queued: u32, fx: &mut Effects<C>) -> usize {
        if queued == 0 {
            self.ghosts.clear();
        }
        let own = self.connecting
            + self.probing
            + self.ghosts.len()
            + self
                .leased
                .iter()
                .filter(|leased| leased.awaiting_answer)
                .count();
        let others = usize::try_from(queued)
            .unwrap_or(usize::MAX)
            .saturating_sub(own);
        if others == 0 {
            self.yield_budget = 0;
            return 0;
        }
        self.others_waiting_seen = Some(now);
        let idle_closed = self.idle.len();
        for idle in std::mem::take(&mut self.idle) {
            fx.push(Effect::Close(idle.connection));
        }
        let busy = self.leased.len();
        self.yield_budget = others.saturating_sub(idle_closed).min(busy.div_ceil(4));
        fx.push(Effect::Notice(Notice::SharingWithOthers {
            others,
            idle_closed,
            yielding: self.yield_budget,
        }));
        self.fill_from_queue(fx);
        idle_closed
    }

    /// Whether others were seen waiting in the backend's listen queue lately: a fresh
    /// connection of this pool left unanswered is then waiting its turn behind them.
    pub(crate) fn sharing_lately(&self, now: Instant) -> bool {
        self.others_waiting_seen
            .is_some_and(|seen| now.saturating_duration_since(seen) < SHARING_EVIDENCE)
    }

    /// The backend refused a request with FCGI_OVERLOADED.
    pub(crate) fn overloaded(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        fx: &mut Effects<C>,
    ) {
        self.counters.overloaded += 1;
        if self.multiplex.enabled() {
            // A multiplexing backend counts requests, not connections: take fewer per connection.
            let in_flight = self.shared.in_flight_on(connection).unwrap_or(1);
            if self.multiplex.overloaded(in_flight, now) {
                fx.push(Effect::Notice(Notice::PerConnectionLowered {
                    connection,
                    per_connection: self.multiplex.per_connection(),
                }));
            }
            return;
        }
        fx.push(Effect::Notice(Notice::Overloaded { connection }));
        let others = self.open().saturating_sub(1);
        self.reduce_cap(now, others, CapReduction::Overloaded, fx);
    }

    /// The backend refused a request with FCGI_CANT_MPX_CONN: it does not multiplex.
    pub(crate) fn cannot_multiplex(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        fx: &mut Effects<C>,
    ) {
        fx.push(Effect::Notice(Notice::CannotMultiplex { connection }));
        self.stop_multiplexing(now, "FCGI_CANT_MPX_CONN", fx);
    }

    // ---- probing the backend's limits -------------------------------------------------------

    /// Whether the backend's FCGI_GET_VALUES answer would change anything: the cap when none is
    /// configured, multiplexing when its mode asks.
    pub(crate) fn wants_probe(&self) -> bool {
        !self.limits.cap_configured || self.multiplex.wants_backend_values()
    }

    /// A probe takes a slot (it holds a connection, maybe a worker); false when none is free.
    pub(crate) fn probe_started(&mut self) -> bool {
        if self.open() >= self.capacity.cap() {
            return false;
        }
        self.probing += 1;
        true
    }

    pub(crate) fn probe_ended(&mut self, now: Instant, outcome: ProbeOutcome, fx: &mut Effects<C>) {
        match outcome {
            ProbeOutcome::Answered(values) => self.learn_backend_values(now, values, fx),
            ProbeOutcome::Unanswered => {
                if self.multiplex.no_backend_values() {
                    fx.push(Effect::Notice(Notice::MultiplexingAsConfigured));
                    self.share_idle_connections(now, fx);
                }
            }
            ProbeOutcome::Unusable => {}
        }
        self.probing -= 1;
        self.fill_from_queue(fx);
    }

    pub(super) fn reduce_cap(
        &mut self,
        now: Instant,
        serving: usize,
        reason: CapReduction,
        fx: &mut Effects<C>,
    ) {
        let from = self.capacity.cap();
        if self.capacity.reduce(serving, reason, now) {
            fx.push(Effect::Notice(Notice::CapLowered {
                reason,
                from,
                to: self.capacity.cap(),
            }));
        }
    }

    /// A backend that keeps closing pooled connections after exactly N requests (php-fpm's
    /// `pm.max_requests`, php-cgi's `PHP_FCGI_MAX_REQUESTS`) is telling us when: from then on
    /// connections are retired at N, their last request sent without KEEP_CONN, so none is
    /// handed out in the instant between the backend's END_REQUEST and its close.
    pub(super) fn learn_close_pattern(&mut self, closed: &C, fx: &mut Effects<C>) {
        if !closed.closed_right_after_end() {
            // An idle timeout or a restart, not a worker's last request: no pattern to learn.
            return;
        }
        let requests = closed.requests_ended();
        if requests == 0 || requests >= self.keepalive_requests() {
            self.close_pattern = (0, 0);
            return;
        }
        if self.close_pattern.0 == requests {
            self.close_pattern.1 += 1;
        } else {
            self.close_pattern = (requests, 1);
        }
        if self.close_pattern.1 >= CLOSE_PATTERN_EVIDENCE
            && self.learned_keepalive_requests != requests
        {
            self.learned_keepalive_requests = requests;
            fx.push(Effect::Notice(Notice::ClosePatternLearned { requests }));
        }
    }

    pub(super) fn learn_backend_values(
        &mut self,
        now: Instant,
        values: BackendValues,
        fx: &mut Effects<C>,
    ) {
        let was = self.multiplex.enabled();
        if self
            .multiplex
            .learned(&values, self.limits.max_reqs_per_conn)
        {
            fx.push(Effect::Notice(Notice::MultiplexingOn {
                why: self.multiplex.reason(values.mpxs_conns),
                per_connection: self.multiplex.per_connection(),
            }));
            self.share_idle_connections(now, fx);
        } else if was && !self.multiplex.enabled() {
            self.multiplex.refuse();
            self.unshare_connections(now, "FCGI_MPXS_CONNS=0", fx);
        } else if !self.multiplex.enabled() && self.limits.multiplex == Multiplexing::On {
            fx.push(Effect::Notice(Notice::MultiplexOnButRefused));
        }
        let unconfigured =
            !self.limits.cap_configured && self.capacity.source() == &CapSource::Default;
        match values.max_conns {
            // libfcgi answers 1 in every process, however many share the socket (fcgiwrap -c 4,
            // a prefork Perl app): not a limit to hold to. The adaptive cap finds the real one.
            Some(1) if unconfigured => {
                fx.push(Effect::Notice(Notice::MaxConnsOfOneNotTrusted {
                    cap: self.capacity.cap(),
                }));
            }
            Some(max_conns) if !self.limits.cap_configured && self.capacity.learned(max_conns) => {
                fx.push(Effect::Notice(Notice::CapFromBackend { max_conns }));
            }
            None if unconfigured => {
                fx.push(Effect::Notice(Notice::NoMaxConnsAnnounced {
                    cap: self.capacity.cap(),
                }));
            }
            _ => {}
        }
        self.backend_values = Some(values);
    }

    /// Multiplexing was just turned on: idle connections join the shared list.
    pub(super) fn share_idle_connections(&mut self, now: Instant, fx: &mut Effects<C>) {
        for parked in std::mem::take(&mut self.idle) {
            fx.push(Effect::SetShared(parked.connection.clone(), true));
            self.shared
                .push(parked.connection, 0, parked.opened_at, now);
        }
        self.grant_request_slots(now, fx);
    }

    /// The backend does not multiplex: no more shared connections, for good.
    pub(super) fn stop_multiplexing(
        &mut self,
        now: Instant,
        why: &'static str,
        fx: &mut Effects<C>,
    ) {
        if self.multiplex.refuse() {
            self.unshare_connections(now, why, fx);
        }
    }

    /// Shared connections with nothing in flight become connections of their own, for waiters
    /// first; the others follow when their last request ends.
    pub(super) fn unshare_connections(
        &mut self,
        now: Instant,
        why: &'static str,
        fx: &mut Effects<C>,
    ) {
        fx.push(Effect::Notice(Notice::MultiplexingOff { why }));
        for entry in self.shared.take_idle_where(|_| true) {
            fx.push(Effect::SetShared(entry.connection.clone(), false));
            self.put_back(now, entry.connection, entry.opened_at, fx);
        }
        self.fill_from_queue(fx);
    }
}
