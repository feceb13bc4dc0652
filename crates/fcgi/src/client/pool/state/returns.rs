//! Connections coming back or going away: a request's end, the backend closing a connection,
//! idle connections expiring.

use std::time::Instant;

use super::{Effects, Idle, Leased, PoolState};
use crate::client::connection::ConnectionId;
use crate::client::pool::effects::{Effect, Grant, Notice, PooledConnection, RequestEnd, Return};

impl<C: PooledConnection> PoolState<C> {
    // ---- requests ending ------------------------------------------------------------------

    /// A connection of its own comes back from its request (see [`Return`]).
    pub(crate) fn returned(
        &mut self,
        now: Instant,
        connection: C,
        how: Return,
        fx: &mut Effects<C>,
    ) {
        let id = connection.id();
        let Some(position) = self.leased.iter().position(|leased| leased.id == id) else {
            // Not ours to account for (a bug elsewhere): close it rather than count it twice.
            fx.push(Effect::Close(connection));
            return;
        };
        let opened_at = self.leased.swap_remove(position).opened_at;
        self.stuck.retain(|stuck| *stuck != id);
        match how {
            Return::Completed { keep } => {
                self.request_completed(now, fx);
                if keep {
                    self.put_back(now, connection, opened_at, fx);
                } else {
                    self.retire(connection, fx);
                }
            }
            Return::Unused => self.put_back(now, connection, opened_at, fx),
            // The holder closes it, after its FCGI_ABORT_REQUEST is out. A backend that closed
            // it right after its previous END_REQUEST shows its request count all the same.
            Return::Lost => {
                self.learn_close_pattern(&connection, fx);
                self.fill_from_queue(fx);
            }
        }
    }

    /// A request on a shared connection is over: its slot goes to the oldest waiter, or the
    /// connection leaves the list when it is draining or multiplexing was turned off.
    pub(crate) fn shared_request_ended(
        &mut self,
        now: Instant,
        connection: &C,
        end: RequestEnd,
        fx: &mut Effects<C>,
    ) {
        let id = connection.id();
        self.stuck.retain(|stuck| *stuck != id);
        if end == RequestEnd::Completed {
            self.request_completed(now, fx);
            let demand = !self.waiters.is_empty();
            if self.multiplex.record_success(demand, now) {
                fx.push(Effect::Notice(Notice::PerConnectionRaised {
                    per_connection: self.multiplex.per_connection(),
                }));
                self.grant_request_slots(now, fx);
            }
        }
        // `None`: closed and forgotten already; its slot went with it.
        let Some((in_flight, draining)) = self.shared.end_request(id, now) else {
            return;
        };
        let enabled = self.multiplex.enabled();
        if in_flight > 0 && (draining || !enabled) {
            return;
        }
        if draining || connection.is_closed() {
            if let Some(entry) = self.shared.remove(id) {
                fx.push(Effect::Close(entry.connection));
            }
            self.fill_from_queue(fx);
        } else if !enabled {
            if let Some(entry) = self.shared.remove(id) {
                fx.push(Effect::SetShared(entry.connection.clone(), false));
                self.put_back(now, entry.connection, entry.opened_at, fx);
            }
        } else {
            self.grant_request_slots(now, fx);
        }
    }

    /// The driver of a connection stopped. A retiring, idle or shared connection is the pool's
    /// to forget; a leased one comes back through `returned`.
    pub(crate) fn backend_closed(
        &mut self,
        now: Instant,
        id: ConnectionId,
        multiplexing_refused: bool,
        fx: &mut Effects<C>,
    ) {
        if multiplexing_refused {
            self.stop_multiplexing(now, "a protocol error with several requests in flight", fx);
        }
        if self.shared.remove(id).is_some() {
            self.fill_from_queue(fx);
            return;
        }
        if let Some(position) = self.retiring.iter().position(|retiring| *retiring == id) {
            self.retiring.swap_remove(position);
            self.fill_from_queue(fx);
            return;
        }
        if let Some(position) = self.idle.iter().position(|idle| idle.connection.id() == id) {
            let closed = self.idle.remove(position).connection;
            fx.push(Effect::Notice(Notice::IdleClosedByBackend {
                connection: id,
            }));
            self.learn_close_pattern(&closed, fx);
            self.fill_from_queue(fx);
        }
    }

    /// Closes what sat idle past its idle timeout or lived past `keepalive_time`. A connection
    /// of its own holds one of the backend's workers unless the backend said it multiplexes:
    /// it goes after `worker_idle_timeout`, so other clients of the backend get that worker.
    /// Shared connections hold none and stay for `keepalive_timeout`.
    pub(crate) fn tick(&mut self, now: Instant, fx: &mut Effects<C>) {
        let exclusive_idle_timeout = self.exclusive_idle_timeout();
        let limits = &self.limits;
        let expired_shared = self.shared.take_idle_where(|entry| {
            entry.draining
                || entry.connection.is_closed()
                || now.saturating_duration_since(entry.idle_since) >= limits.keepalive_timeout
                || now.saturating_duration_since(entry.opened_at) >= limits.keepalive_time
        });
        let mut expired_exclusive = 0;
        let mut index = 0;
        while index < self.idle.len() {
            let idle = &self.idle[index];
            let expired = idle.connection.is_closed()
                || now.saturating_duration_since(idle.since) >= exclusive_idle_timeout
                || now.saturating_duration_since(idle.opened_at) >= limits.keepalive_time;
            if expired {
                fx.push(Effect::Close(self.idle.remove(index).connection));
                expired_exclusive += 1;
            } else {
                index += 1;
            }
        }
        let shared = expired_shared.len();
        for entry in expired_shared {
            fx.push(Effect::Close(entry.connection));
        }
        if shared + expired_exclusive > 0 {
            fx.push(Effect::Notice(Notice::IdleExpired {
                exclusive: expired_exclusive,
                shared,
            }));
            self.fill_from_queue(fx);
        }
    }

    /// Closes every connection with nothing in flight (shutdown, saturation); returns how many.
    pub(crate) fn close_idle(&mut self, fx: &mut Effects<C>) -> usize {
        let shared = self.shared.take_idle_where(|_| true);
        let count = shared.len() + self.idle.len();
        for entry in shared {
            fx.push(Effect::Close(entry.connection));
        }
        for idle in std::mem::take(&mut self.idle) {
            fx.push(Effect::Close(idle.connection));
        }
        self.fill_from_queue(fx);
        count
    }

    /// A connection of its own that finished its request cleanly (or never carried one): closed
    /// when the cap is coming down, else to the oldest waiter, else on top of the idle stack —
    /// or, while multiplexing is on, into the shared list.
    pub(super) fn put_back(
        &mut self,
        now: Instant,
        connection: C,
        opened_at: Instant,
        fx: &mut Effects<C>,
    ) {
        if connection.is_closed() {
            // Closed by the backend right after its END_REQUEST.
            self.learn_close_pattern(&connection, fx);
            self.fill_from_queue(fx);
            return;
        }
        // Counting this one, the pool's connections are above the cap: it goes. Connects and
        // probes in progress do not count: a new connection waiting for a worker's answer may
        // find none and give its slot back, and one that has a worker is not closed for it.
        // (Closing it undershot: two silent new connections at once took a 2-worker pool's
        // cap from 4 to 1, the second counting one fewer served.)
        if self.open() - self.connecting - self.probing >= self.capacity.cap() {
            fx.push(Effect::Close(connection));
            self.fill_from_queue(fx);
            return;
        }
        if self.yield_budget > 0 && !self.multiplex.enabled() {
            // Its worker goes to a client waiting in the backend's listen queue; a waiter of
            // this pool connects anew and queues behind it.
            self.yield_budget -= 1;
            self.counters.yielded += 1;
            fx.push(Effect::Close(connection));
            self.fill_from_queue(fx);
            return;
        }
        if self.multiplex.enabled() {
            fx.push(Effect::SetShared(connection.clone(), true));
            self.shared.push(connection, 0, opened_at, now);
            self.grant_request_slots(now, fx);
            return;
        }
        if let Some(waiter) = self.waiters.pop_front() {
            self.leased.push(Leased {
                id: connection.id(),
                opened_at,
                awaiting_answer: false,
            });
            self.counters.reused += 1;
            fx.push(Effect::Grant {
                waiter,
                grant: Grant::Connection(connection),
            });
            return;
        }
        self.idle.push(Idle {
            connection,
            since: now,
            opened_at,
        });
        if self.idle.len() > self.limits.max_idle {
            fx.push(Effect::Close(self.idle.remove(0).connection));
        }
    }

    /// Its last request went out without KEEP_CONN: the backend closes it. Its slot stays
    /// taken until the socket is gone, so a worker still closing it is never counted free —
    /// the backend never holds more connections than the cap.
    pub(super) fn retire(&mut self, connection: C, fx: &mut Effects<C>) {
        if connection.is_closed() {
            self.fill_from_queue(fx);
        } else {
            self.retiring.push(connection.id());
        }
        fx.push(Effect::Retire(connection));
    }

    pub(super) fn request_completed(&mut self, now: Instant, fx: &mut Effects<C>) {
        self.completed += 1;
        let demand = !self.waiters.is_empty();
        if self.capacity.record_success(demand, now) {
            fx.push(Effect::Notice(Notice::CapRaised {
                cap: self.capacity.cap(),
            }));
            self.fill_from_queue(fx);
        }
    }
}
