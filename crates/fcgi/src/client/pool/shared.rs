//! The pool's connections while multiplexing is on: each carries any number of requests up to
//! the per-connection limit, and a checkout takes a request slot on the least-loaded one.
//!
//! Pure bookkeeping, owned by the pool state (`state/`), which decides when connections join
//! and leave; here only the list and its arithmetic: which connection has room, which has spent
//! its request or age budget (draining: no new requests, closed once its last one ends), which
//! sat idle past `keepalive_timeout`.

use std::time::{Duration, Instant};

use super::effects::PooledConnection;
use crate::client::connection::ConnectionId;

/// An open connection while multiplexing is on.
pub(super) struct SharedConnection<C> {
    pub(super) connection: C,
    pub(super) in_flight: usize,
    /// When `in_flight` last dropped to zero; the idle timeout counts from here.
    pub(super) idle_since: Instant,
    pub(super) opened_at: Instant,
    /// Takes no new requests (its request or age budget is spent); closed when the last ends.
    pub(super) draining: bool,
}

/// The budgets a shared connection is held to.
pub(super) struct Budget {
    pub(super) per_connection: usize,
    pub(super) keepalive_requests: u64,
    pub(super) keepalive_time: Duration,
}

pub(super) struct SharedConnections<C> {
    entries: Vec<SharedConnection<C>>,
}

impl<C: PooledConnection> SharedConnections<C> {
    pub(super) fn new() -> Self {
        SharedConnections {
            entries: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    // Only the invariant checks (debug builds and tests) list or probe the entries this way.
    #[cfg(any(test, debug_assertions))]
    pub(super) fn iter(&self) -> impl Iterator<Item = &SharedConnection<C>> {
        self.entries.iter()
    }

    /// Requests in flight on all of them.
    pub(super) fn in_flight(&self) -> usize {
        self.entries.iter().map(|entry| entry.in_flight).sum()
    }

    /// Connections with nothing in flight.
    pub(super) fn idle(&self) -> usize {
        self.entries.iter().filter(|e| e.in_flight == 0).count()
    }

    pub(super) fn in_flight_on(&self, id: ConnectionId) -> Option<usize> {
        self.position(id).map(|index| self.entries[index].in_flight)
    }

    pub(super) fn push(
        &mut self,
        connection: C,
        in_flight: usize,
        opened_at: Instant,
        now: Instant,
    ) {
        self.entries.push(SharedConnection {
            connection,
            in_flight,
            idle_since: now,
            opened_at,
            draining: false,
        });
    }

    /// Whether some connection has a free request slot, without taking it.
    #[cfg(any(test, debug_assertions))]
    pub(super) fn has_room(&self, budget: &Budget, now: Instant) -> bool {
        self.entries.iter().any(|entry| {
            !entry.draining
                && !entry.connection.is_closed()
                && usable(entry, budget, now)
                && entry.in_flight < budget.per_connection
        })
    }

    /// A request slot on the least-loaded connection that has one. Connections found past
    /// their budget start draining.
    pub(super) fn take_slot(&mut self, budget: &Budget, now: Instant) -> Option<C> {
        // (index, in_flight) of the least-loaded connection with room.
        let mut best: Option<(usize, usize)> = None;
        for (index, entry) in self.entries.iter_mut().enumerate() {
            if entry.draining || entry.connection.is_closed() {
                continue;
            }
            if !usable(entry, budget, now) {
                entry.draining = true;
                continue;
            }
            if entry.in_flight < budget.per_connection
                && best.is_none_or(|(_, least)| entry.in_flight < least)
            {
                best = Some((index, entry.in_flight));
            }
        }
        let (index, _) = best?;
        let entry = &mut self.entries[index];
        entry.in_flight += 1;
        Some(entry.connection.clone())
    }

    /// One request on `id` is over; returns the entry's (in_flight, draining) after it, or
    /// `None` when the connection is gone from the list already.
    pub(super) fn end_request(&mut self, id: ConnectionId, now: Instant) -> Option<(usize, bool)> {
        let index = self.position(id)?;
        let entry = &mut self.entries[index];
        entry.in_flight = entry.in_flight.saturating_sub(1);
        if entry.in_flight == 0 {
            entry.idle_since = now;
        }
        Some((entry.in_flight, entry.draining))
    }

    pub(super) fn remove(&mut self, id: ConnectionId) -> Option<SharedConnection<C>> {
        let index = self.position(id)?;
        Some(self.entries.swap_remove(index))
    }

    /// Takes out the connections `expired` picks among those with nothing in flight.
    pub(super) fn take_idle_where(
        &mut self,
        mut expired: impl FnMut(&SharedConnection<C>) -> bool,
    ) -> Vec<SharedConnection<C>> {
        let mut taken = Vec::new();
        let mut index = 0;
        while index < self.entries.len() {
            let entry = &self.entries[index];
            if entry.in_flight == 0 && expired(entry) {
                taken.push(self.entries.swap_remove(index));
            } else {
                index += 1;
            }
        }
        taken
    }

    fn position(&self, id: ConnectionId) -> Option<usize> {
        self.entries.iter().position(|e| e.connection.id() == id)
    }
}

/// Within its request and age budgets.
fn usable<C: PooledConnection>(entry: &SharedConnection<C>, budget: &Budget, now: Instant) -> bool {
    let spent = entry.connection.requests_started() + entry.in_flight as u64;
    spent < budget.keepalive_requests
        && now.saturating_duration_since(entry.opened_at) < budget.keepalive_time
}
