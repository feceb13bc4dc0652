//! What the pool is to the parts that call back into it: the guard of a queued checkout
//! (`Queue`), a lease coming back (`LeaseOwner`), and a response telling what it shows about the
//! backend (`ResponseObserver`). Each turns the call into one event on the pool state.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::effects::{Grant, RequestEnd, Return, WaiterId};
use super::waiters::Queue;
use super::PoolInner;
use crate::client::connection::events::ResponseObserver;
use crate::client::connection::{Connection, ConnectionId};
use crate::client::lease::LeaseOwner;
use crate::client::pool_config::PoolConfig;
use crate::net::Address;

impl Queue for PoolInner {
    fn leave(&self, waiter: WaiterId, timed_out: bool) -> bool {
        let mut core = self.lock();
        let queued = core.state.waiter_left(waiter, timed_out);
        if queued {
            core.senders.remove(waiter);
        }
        queued
    }

    fn give_back(&self, grant: Grant<Connection>) {
        self.update(|state, now, fx| state.grant_returned(now, grant, fx));
    }
}

impl LeaseOwner for PoolInner {
    fn address(&self) -> &Address {
        &self.address
    }

    fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn keepalive_requests(&self) -> u64 {
        self.keepalive_requests.load(Ordering::Relaxed)
    }

    fn answers_handshakes(&self) -> bool {
        self.lock().state.answers_handshakes()
    }

    fn first_response_baseline(&self) -> (Duration, u64) {
        self.lock().state.first_response_baseline()
    }

    fn returned(&self, connection: Connection, how: Return) {
        self.update(|state, now, fx| state.returned(now, connection, how, fx));
    }

    fn shared_request_ended(&self, connection: &Connection, end: RequestEnd) {
        self.update(|state, now, fx| state.shared_request_ended(now, connection, end, fx));
    }
}

impl ResponseObserver for PoolInner {
    fn first_response(&self, connection: ConnectionId, waited: Duration) {
        self.update(|state, _, fx| state.first_response(connection, waited, fx));
    }

    fn still_unanswered(&self, connection: ConnectionId, completed_before: u64) -> bool {
        self.update(|state, now, fx| state.still_unanswered(now, connection, completed_before, fx))
    }

    fn overloaded(&self, connection: ConnectionId) {
        self.update(|state, now, fx| state.overloaded(now, connection, fx));
    }

    fn cannot_multiplex(&self, connection: ConnectionId) {
        self.update(|state, now, fx| state.cannot_multiplex(now, connection, fx));
    }
}
