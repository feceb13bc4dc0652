//! Multiplexing: several requests in flight on one pooled connection (FastCGI 1.0 §3.3).
//!
//! Whether it is on is decided per backend by [`MultiplexState`] (pure: the configured
//! [`Multiplexing`] mode, the backend's FCGI_GET_VALUES answer, and what the backend did since),
//! and how far: `max_reqs_per_conn`, lowered to FCGI_MAX_REQS / FCGI_MAX_CONNS when the backend
//! announces them, and for a while after FCGI_OVERLOADED. While it is on, the pool keeps its
//! connections in a list of [`SharedConnection`]s instead of the idle stack: a checkout takes a
//! request slot on the least-loaded connection that has one, opens a new connection only when
//! none has (the cap still counts connections), and otherwise waits in the same FIFO queue; a
//! request that ends hands its slot on that connection straight to the oldest waiter.
//!
//! Turning it off (FCGI_CANT_MPX_CONN, or a protocol error with several requests in flight)
//! is for good: connections with nothing in flight go back to the idle stack at once, the others
//! when their last request ends.

use std::time::{Duration, Instant};

use super::connection::{Connection, ConnectionId};
use super::pool::{PoolShared, PoolState};
use super::pool_config::Multiplexing;
use super::probe::BackendValues;
use super::waiting::Grant;

/// How long a lowered per-connection limit holds before it rises again by one, under demand.
const RAISE_HOLD: Duration = Duration::from_secs(1);

/// Whether this backend's connections are shared, and by how many requests each.
#[derive(Debug)]
pub(super) struct MultiplexState {
    mode: Multiplexing,
    enabled: bool,
    /// Turned off because the backend showed it does not multiplex; never on again.
    refused: bool,
    /// Requests per connection in force.
    per_connection: usize,
    /// The most `per_connection` may rise to: the setting, or the backend's figure.
    ceiling: usize,
    lowered_at: Option<Instant>,
}

impl MultiplexState {
    pub(super) fn new(mode: Multiplexing, keep_conn: bool, max_reqs_per_conn: usize) -> Self {
        // Without KEEP_CONN the backend closes after every request: nothing to share.
        let mode = if keep_conn { mode } else { Multiplexing::Off };
        let limit = max_reqs_per_conn.max(1);
        MultiplexState {
            mode,
            enabled: mode == Multiplexing::Force,
            refused: false,
            per_connection: limit,
            ceiling: limit,
            lowered_at: None,
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(super) fn per_connection(&self) -> usize {
        self.per_connection
    }

    /// Whether the backend must be asked FCGI_GET_VALUES for this mode to decide.
    pub(super) fn wants_backend_values(&self) -> bool {
        matches!(self.mode, Multiplexing::Auto | Multiplexing::On)
    }

    /// The backend answered FCGI_GET_VALUES; returns true when multiplexing was just turned on.
    pub(super) fn learned(&mut self, values: &BackendValues, configured_limit: usize) -> bool {
        if let Some(max_reqs) = values.max_reqs {
            let per_connection = max_reqs / values.max_conns.unwrap_or(1).max(1);
            self.ceiling = configured_limit.min(per_connection).max(1);
            self.per_connection = self.per_connection.min(self.ceiling);
        }
        let wanted = match self.mode {
            Multiplexing::Off => false,
            Multiplexing::Auto => values.mpxs_conns == Some(true),
            Multiplexing::On => values.mpxs_conns != Some(false),
            Multiplexing::Force => true,
        };
        let turned_on = wanted && !self.enabled && !self.refused;
        self.enabled = wanted && !self.refused;
        turned_on
    }

    /// Why multiplexing was turned on by a GET_VALUES answer that said `announced` about
    /// FCGI_MPXS_CONNS, for the log line: an empty answer (flup's) must not read as a yes.
    pub(super) fn reason(&self, announced: Option<bool>) -> &'static str {
        match (announced, self.mode) {
            (_, Multiplexing::Force) => "multiplex = force, whatever the backend says",
            (Some(true), _) => "the backend announces FCGI_MPXS_CONNS=1",
            (None, _) => "multiplex = on, and the backend announced nothing about FCGI_MPXS_CONNS",
            (Some(false), _) => "as configured",
        }
    }

    /// The backend did not answer FCGI_GET_VALUES: `on` multiplexes anyway, `auto` does not.
    pub(super) fn no_backend_values(&mut self) -> bool {
        let turned_on = self.mode == Multiplexing::On && !self.enabled && !self.refused;
        self.enabled |= turned_on;
        turned_on
    }

    /// The backend showed it does not multiplex; returns true when that changed anything.
    pub(super) fn refuse(&mut self) -> bool {
        let was = self.enabled;
        self.enabled = false;
        self.refused = true;
        was
    }

    /// FCGI_OVERLOADED on a connection carrying `in_flight` requests: it takes fewer.
    pub(super) fn overloaded(&mut self, in_flight: usize, now: Instant) -> bool {
        let limit = in_flight.saturating_sub(1).max(1);
        self.lowered_at = Some(now);
        if limit < self.per_connection {
            self.per_connection = limit;
            return true;
        }
        false
    }

    /// A request ended well; with others waiting, a lowered limit rises by one per hold.
    pub(super) fn record_success(&mut self, demand: bool, now: Instant) -> bool {
        let held = self
            .lowered_at
            .is_none_or(|at| now.duration_since(at) >= RAISE_HOLD);
        if !demand || !held || self.per_connection >= self.ceiling {
            return false;
        }
        self.per_connection += 1;
        self.lowered_at = Some(now);
        true
    }
}

/// An open connection while multiplexing is on: any number of requests up to the limit.
pub(super) struct SharedConnection {
    pub(super) connection: Connection,
    pub(super) in_flight: usize,
    /// When `in_flight` last dropped to zero; the idle timeout counts from here.
    pub(super) idle_since: Instant,
    /// Takes no new requests (its request or age budget is spent); closed when the last ends.
    pub(super) draining: bool,
}

/// How a request on a shared connection ended, for the pool's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestEnd {
    /// END_REQUEST arrived.
    Completed,
    /// Given up (client gone, timeout, failure) or never sent.
    Abandoned,
}

impl PoolShared {
    /// A request slot on the least-loaded shared connection that has one.
    pub(super) fn take_request_slot(&self, state: &mut PoolState) -> Option<Connection> {
        let limit = state.multiplex.per_connection();
        let keepalive_requests = self.keepalive_requests();
        let keepalive_time = self.config.keepalive_time;
        // (index, in_flight) of the least-loaded connection with room.
        let mut best: Option<(usize, usize)> = None;
        for (index, entry) in state.shared.iter_mut().enumerate() {
            if entry.draining || entry.connection.is_closed() {
                continue;
            }
            let spent = entry.connection.requests_started() + entry.in_flight as u64;
            if spent >= keepalive_requests || entry.connection.age() >= keepalive_time {
                entry.draining = true;
                continue;
            }
            if entry.in_flight < limit && best.is_none_or(|(_, least)| entry.in_flight < least) {
                best = Some((index, entry.in_flight));
            }
        }
        let (index, _) = best?;
        let entry = &mut state.shared[index];
        entry.in_flight += 1;
        Some(entry.connection.clone())
    }

    /// A connection joins the shared list: a new one carrying the request that opened it, or
    /// an exclusive one coming back with none. Waiters get its free request slots.
    pub(super) fn add_shared(
        &self,
        state: &mut PoolState,
        connection: Connection,
        in_flight: usize,
    ) {
        connection.set_multiplexed(true);
        state.shared.push(SharedConnection {
            connection,
            in_flight,
            idle_since: Instant::now(),
            draining: false,
        });
        self.grant_request_slots(state);
    }

    /// Hands free request slots on shared connections to waiters, oldest waiter first.
    pub(super) fn grant_request_slots(&self, state: &mut PoolState) {
        while !state.waiters.is_empty() {
            let Some(connection) = self.take_request_slot(state) else {
                return;
            };
            let id = connection.id();
            let mut grant = Grant::Request(connection);
            loop {
                let Some(waiter) = state.waiters.pop_front() else {
                    // Every waiter had gone: give the slot back.
                    self.return_request_slot(state, id);
                    return;
                };
                match waiter.grant.send(grant) {
                    Ok(()) => break,
                    Err(returned) => grant = returned,
                }
            }
        }
    }

    fn return_request_slot(&self, state: &mut PoolState, id: ConnectionId) {
        if let Some(entry) = state.shared.iter_mut().find(|e| e.connection.id() == id) {
            entry.in_flight -= 1;
            if entry.in_flight == 0 {
                entry.idle_since = Instant::now();
            }
        }
    }

    /// A request on a shared connection is over: its slot goes to the oldest waiter, or the
    /// connection leaves the list when it is draining or multiplexing was turned off.
    pub(super) fn end_shared_request(&self, connection: &Connection, end: RequestEnd) {
        let mut state = self.lock();
        state.stuck.retain(|id| *id != connection.id());
        if end == RequestEnd::Completed {
            self.request_completed(&mut state);
            let demand = !state.waiters.is_empty();
            if state.multiplex.record_success(demand, Instant::now()) {
                tracing::debug!(backend = %self.address, per_connection = state.multiplex.per_connection(), "raising requests per connection again");
            }
        }
        let Some(position) = state
            .shared
            .iter()
            .position(|entry| entry.connection.id() == connection.id())
        else {
            // Closed and forgotten already; its slot went with it.
            return;
        };
        let enabled = state.multiplex.enabled();
        let entry = &mut state.shared[position];
        entry.in_flight -= 1;
        let (in_flight, draining) = (entry.in_flight, entry.draining);
        if in_flight == 0 {
            entry.idle_since = Instant::now();
        }
        if in_flight > 0 && (draining || !enabled) {
            return;
        }
        if draining || entry.connection.is_closed() {
            let entry = state.shared.swap_remove(position);
            entry.connection.close();
            self.free_slot(&mut state);
        } else if !enabled {
            let entry = state.shared.swap_remove(position);
            entry.connection.set_multiplexed(false);
            drop(state);
            self.put_back(entry.connection);
        } else {
            self.grant_request_slots(&mut state);
        }
    }

    /// Multiplexing was just turned on: idle connections join the shared list.
    pub(super) fn share_idle_connections(&self, state: &mut PoolState) {
        let idle = std::mem::take(&mut state.idle);
        for parked in idle {
            parked.connection.set_multiplexed(true);
            state.shared.push(SharedConnection {
                connection: parked.connection,
                in_flight: 0,
                idle_since: Instant::now(),
                draining: false,
            });
        }
        self.grant_request_slots(state);
    }

    /// Multiplexing was just turned off: shared connections with nothing in flight become
    /// ordinary idle connections; the others follow when their last request ends.
    pub(super) fn unshare_connections(&self, state: &mut PoolState) -> Vec<Connection> {
        let mut freed = Vec::new();
        state.shared.retain(|entry| {
            if entry.in_flight == 0 {
                entry.connection.set_multiplexed(false);
                freed.push(entry.connection.clone());
                false
            } else {
                true
            }
        });
        freed
    }

    /// Closes shared connections idle past `keepalive_timeout`, or with nothing in flight and
    /// older than `keepalive_time`; returns how many.
    pub(super) fn reap_shared(&self, state: &mut PoolState, everything_idle: bool) -> usize {
        let config = &self.config;
        let mut closed = 0;
        state.shared.retain(|entry| {
            let expired = entry.in_flight == 0
                && (everything_idle
                    || entry.draining
                    || entry.connection.is_closed()
                    || entry.idle_since.elapsed() >= config.keepalive_timeout
                    || entry.connection.age() >= config.keepalive_time);
            if expired {
                entry.connection.close();
                closed += 1;
            }
            !expired
        });
        for _ in 0..closed {
            self.free_slot(state);
        }
        closed
    }

    /// Forgets a shared connection whose driver stopped; true when it was one.
    pub(super) fn forget_shared(&self, state: &mut PoolState, id: ConnectionId) -> bool {
        let Some(position) = state.shared.iter().position(|e| e.connection.id() == id) else {
            return false;
        };
        state.shared.swap_remove(position);
        self.free_slot(state);
        true
    }

    /// Requests in flight on shared connections.
    pub(super) fn shared_in_flight(state: &PoolState) -> usize {
        state.shared.iter().map(|entry| entry.in_flight).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned_from(mode: Multiplexing, announced: Option<bool>) -> Option<&'static str> {
        let mut state = MultiplexState::new(mode, true, 8);
        let values = BackendValues {
            max_conns: None,
            max_reqs: None,
            mpxs_conns: announced,
        };
        state
            .learned(&values, 8)
            .then(|| state.reason(values.mpxs_conns))
    }

    #[test]
    fn the_log_says_why_multiplexing_was_turned_on() {
        assert_eq!(
            learned_from(Multiplexing::Auto, Some(true)),
            Some("the backend announces FCGI_MPXS_CONNS=1")
        );
        // flup answers GET_VALUES with an empty list: not a yes from the backend.
        assert_eq!(
            learned_from(Multiplexing::On, None),
            Some("multiplex = on, and the backend announced nothing about FCGI_MPXS_CONNS")
        );
        assert_eq!(learned_from(Multiplexing::Auto, None), None);
        assert_eq!(learned_from(Multiplexing::On, Some(false)), None);
    }
}
