//! What the pool state shows: its figures, and the invariants every event must leave true.

use std::time::Duration;

use super::PoolState;
use crate::client::pool::effects::PooledConnection;
use crate::client::stats::PoolStats;

impl<C: PooledConnection> PoolState<C> {
    // ---- figures ------------------------------------------------------------------------------

    /// Slots taken; see the module docs.
    pub(crate) fn open(&self) -> usize {
        self.idle.len()
            + self.leased.len()
            + self.shared.len()
            + self.connecting
            + self.probing
            + self.retiring.len()
    }

    #[cfg(any(test, debug_assertions))]
    pub(crate) fn cap(&self) -> usize {
        self.capacity.cap()
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Requests per connection in force: the configured `keepalive_requests`, or fewer when
    /// the backend showed it closes connections sooner.
    pub(crate) fn keepalive_requests(&self) -> u64 {
        match self.learned_keepalive_requests {
            0 => self.limits.keepalive_requests,
            learned => learned.min(self.limits.keepalive_requests),
        }
    }

    #[cfg(test)]
    pub(crate) fn multiplexing(&self) -> bool {
        self.multiplex.enabled()
    }

    /// What the saturation watch of a fresh connection's first request needs: the usual wait
    /// for a first answer, and the requests completed so far.
    pub(crate) fn first_response_baseline(&self) -> (Duration, u64) {
        (self.first_response_average, self.completed)
    }

    /// Requests this backend has on its plate: busy connections plus waiters. The gateway
    /// sends a new request to the server with the fewest.
    pub(crate) fn outstanding(&self) -> usize {
        let exclusive_busy = self.open() - self.idle.len() - self.shared.len();
        exclusive_busy + self.shared.in_flight() + self.waiters.len()
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let idle = self.idle_count();
        PoolStats {
            cap: self.capacity.cap(),
            ceiling: self.capacity.ceiling(),
            cap_source: self.capacity.source().to_string(),
            cap_reduced_by: self
                .capacity
                .reduced_by()
                .map(|reason| reason.as_str().to_owned()),
            open: self.open(),
            idle,
            busy: self.open().saturating_sub(idle),
            waiting: self.waiters.len(),
            multiplexing: self.multiplex.enabled(),
            max_reqs_per_conn: self.multiplex.per_connection(),
            multiplexed_in_flight: self.shared.in_flight(),
            opened: self.counters.opened,
            reused: self.counters.reused,
            queue_timeouts: self.counters.queue_timeouts,
            queue_rejections: self.counters.queue_rejections,
            connect_failures: self.counters.connect_failures,
            saturation_events: self.counters.saturation_events,
            overloaded: self.counters.overloaded,
            listen_queue_full: self.counters.listen_queue_full,
            yielded: self.counters.yielded,
            backend_values: self.backend_values.clone(),
            keepalive_requests: self.keepalive_requests(),
        }
    }

    /// Checks what every event must leave true; a description of the first broken rule. Run
    /// after every event in debug builds and tests only (`pool/mod.rs`).
    #[cfg(any(test, debug_assertions))]
    pub(crate) fn check_invariants(&self, now: std::time::Instant) -> Result<(), String> {
        let mut ids: Vec<crate::client::connection::ConnectionId> =
            self.idle.iter().map(|i| i.connection.id()).collect();
        ids.extend(self.leased.iter().map(|leased| leased.id));
        ids.extend(self.shared.iter().map(|entry| entry.connection.id()));
        ids.extend(self.retiring.iter().copied());
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != count {
            return Err(format!("a connection is accounted for twice: {ids:?}"));
        }
        if !self.waiters.is_empty() {
            if !self.idle.is_empty() {
                return Err("a request waits while a connection is idle".into());
            }
            if self.open() < self.capacity.cap() {
                return Err(format!(
                    "a request waits while a slot is free ({} open, cap {})",
                    self.open(),
                    self.cap()
                ));
            }
            if self.multiplex.enabled() && self.shared.has_room(&self.budget(), now) {
                return Err("a request waits while a shared connection has room".into());
            }
        }
        if self.multiplex.enabled() && !self.idle.is_empty() {
            return Err("idle exclusive connections while multiplexing".into());
        }
        // A request back from a connect slot (`checkout_again`) waits even in a full queue;
        // there are never more of those than slots.
        if self.waiters.len() > self.limits.max_queue + self.capacity.ceiling() {
            return Err("more waiters than max_queue and the slots".into());
        }
        Ok(())
    }
}
