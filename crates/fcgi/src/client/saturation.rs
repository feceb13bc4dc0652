//! The safety net for process-per-connection backends whose worker count nobody told us.
//!
//! php-fpm, php-cgi and fcgiwrap give each connection a worker of its own; a connection beyond
//! the worker count is accepted by the kernel and then waits in the listen backlog, unserved,
//! until some worker's connection closes — and pooled connections never close. The symptom:
//! a *fresh* connection's first request gets no answer within a short bound while other
//! connections to the same backend are served (requests complete, or connections sit idle).
//! The pool then believes the backend: the cap drops to the connections that demonstrably have
//! a worker, idle connections are closed so their workers take the waiting ones, and returning
//! connections are closed until the pool is back under the cap. `capacity.rs` raises the cap
//! again, slowly, while requests succeed under demand. FCGI_OVERLOADED lowers it the same way.

use std::time::Duration;

use super::capacity::CapReduction;
use super::connection::ConnectionId;
use super::events::ResponseObserver;
use super::pool::PoolShared;

impl ResponseObserver for PoolShared {
    fn first_response(&self, connection: ConnectionId, waited: Duration) {
        let mut state = self.lock();
        // An exponential average with weight 1/8: smooth, and quick enough to follow the app.
        let average = state.first_response_average;
        state.first_response_average = if average.is_zero() {
            waited
        } else {
            average - average / 8 + waited / 8
        };
        if let Some(position) = state.stuck.iter().position(|id| *id == connection) {
            state.stuck.swap_remove(position);
            tracing::info!(backend = %self.address, connection, "a connection that waited in the backend's backlog got a worker after {waited:?}");
        }
    }

    fn still_unanswered(&self, connection: ConnectionId, completed_before: u64) -> bool {
        let mut state = self.lock();
        let others_served =
            state.completed > completed_before || super::pool::idle_count(&state) > 0;
        if !others_served {
            // Nobody is being served: the app is slow (or down), not short of workers.
            return false;
        }
        if !state.stuck.contains(&connection) {
            state.stuck.push(connection);
        }
        state.saturation_events += 1;
        let serving = state.open.saturating_sub(state.stuck.len());
        self.reduce_cap(&mut state, serving, CapReduction::Saturation);
        let closed = self.close_all_idle(&mut state);
        tracing::warn!(
            backend = %self.address,
            connection,
            idle_closed = closed,
            cap = state.capacity.cap(),
            "a new connection got no answer while others were served: the backend has fewer \
             workers than the pool had connections"
        );
        true
    }

    fn overloaded(&self, connection: ConnectionId) {
        let mut state = self.lock();
        state.overloaded += 1;
        if state.multiplex.enabled() {
            // A multiplexing backend counts requests, not connections: take fewer per connection.
            let in_flight = state
                .shared
                .iter()
                .find(|entry| entry.connection.id() == connection)
                .map_or(1, |entry| entry.in_flight);
            if state
                .multiplex
                .overloaded(in_flight, std::time::Instant::now())
            {
                tracing::warn!(backend = %self.address, connection, per_connection = state.multiplex.per_connection(), "FCGI_OVERLOADED: fewer requests per connection");
            }
            return;
        }
        let others = state.open.saturating_sub(1);
        tracing::debug!(backend = %self.address, connection, "FCGI_OVERLOADED");
        self.reduce_cap(&mut state, others, CapReduction::Overloaded);
    }

    fn cannot_multiplex(&self, connection: ConnectionId) {
        let mut state = self.lock();
        tracing::debug!(backend = %self.address, connection, "FCGI_CANT_MPX_CONN");
        self.stop_multiplexing(&mut state, "FCGI_CANT_MPX_CONN");
    }
}
