//! The pool state machine on its own: fake connections, a clock that moves only when told, no
//! sockets. `rules.rs` has one test per rule of docs/architecture.md ("The pool"); `random.rs`
//! drives random event sequences and checks the invariants after every step. Here: the fake
//! connection and the harness both use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod random;
mod rules;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Effects, PoolState};
use crate::client::connection::ConnectionId;
use crate::client::pool::effects::{
    Checkout, Effect, Grant, Notice, PooledConnection, Return, WaiterId,
};
use crate::client::pool_config::{Multiplexing, PoolConfig};

/// A connection handle as far as the pool can tell: an id and what its driver would report.
#[derive(Clone, Debug)]
pub(super) struct Fake {
    pub(super) id: ConnectionId,
    pub(super) closed: Rc<Cell<bool>>,
    pub(super) requests: Rc<Cell<u64>>,
    pub(super) closed_right_after_end: Rc<Cell<bool>>,
    /// Started requests the backend never finished (lost with the connection).
    pub(super) unfinished: Rc<Cell<u64>>,
}

impl PartialEq for Fake {
    fn eq(&self, other: &Fake) -> bool {
        self.id == other.id
    }
}

impl Eq for Fake {}

impl PooledConnection for Fake {
    fn id(&self) -> ConnectionId {
        self.id
    }
    fn is_closed(&self) -> bool {
        self.closed.get()
    }
    fn requests_started(&self) -> u64 {
        self.requests.get()
    }
    fn requests_ended(&self) -> u64 {
        self.requests.get() - self.unfinished.get()
    }
    fn closed_right_after_end(&self) -> bool {
        self.closed_right_after_end.get()
    }
}

/// The state, a clock, and what the effects did to the fakes.
pub(super) struct Pool {
    pub(super) state: PoolState<Fake>,
    pub(super) now: Instant,
    pub(super) next_id: ConnectionId,
    /// Every effect so far, for the assertions.
    pub(super) effects: Vec<Effect<Fake>>,
}

impl Pool {
    pub(super) fn new(config: &PoolConfig) -> Pool {
        Pool {
            state: PoolState::new(config),
            now: Instant::now(),
            next_id: 1,
            effects: Vec::new(),
        }
    }

    pub(super) fn with_cap(cap: usize) -> Pool {
        Pool::new(&PoolConfig {
            multiplex: Multiplexing::Off,
            ..PoolConfig::with_max_conns(cap)
        })
    }

    /// Runs one event, applies its closes to the fakes, keeps its effects, checks invariants.
    pub(super) fn run<R>(
        &mut self,
        event: impl FnOnce(&mut PoolState<Fake>, Instant, &mut Effects<Fake>) -> R,
    ) -> R {
        let mut fx = Vec::new();
        let result = event(&mut self.state, self.now, &mut fx);
        for effect in &fx {
            if let Effect::Close(connection) = effect {
                connection.closed.set(true);
            }
        }
        self.effects.extend(fx);
        if let Err(broken) = self.state.check_invariants(self.now) {
            panic!("invariant broken: {broken}");
        }
        result
    }

    pub(super) fn fake(&mut self) -> Fake {
        let fake = Fake {
            id: self.next_id,
            closed: Rc::default(),
            requests: Rc::default(),
            closed_right_after_end: Rc::default(),
            unfinished: Rc::default(),
        };
        self.next_id += 1;
        fake
    }

    pub(super) fn checkout(&mut self) -> Checkout<Fake> {
        self.run(|state, now, fx| state.checkout(now, false, fx))
    }

    /// A checkout that must connect, and the connection it opens.
    pub(super) fn open_one(&mut self) -> Fake {
        assert_eq!(self.checkout(), Checkout::Connect);
        let fake = self.fake();
        self.connected(&fake);
        fake
    }

    pub(super) fn connected(&mut self, fake: &Fake) -> bool {
        fake.requests.set(fake.requests.get() + 1);
        let connection = fake.clone();
        self.run(|state, now, fx| state.connected(now, connection, false, fx))
    }

    pub(super) fn complete(&mut self, fake: &Fake) {
        let connection = fake.clone();
        self.run(|state, now, fx| {
            state.returned(now, connection, Return::Completed { keep: true }, fx)
        });
    }

    pub(super) fn lose(&mut self, fake: &Fake) {
        let connection = fake.clone();
        self.run(|state, now, fx| state.returned(now, connection, Return::Lost, fx));
    }

    pub(super) fn backend_closes(&mut self, fake: &Fake) {
        fake.closed.set(true);
        let id = fake.id;
        self.run(|state, now, fx| state.backend_closed(now, id, false, fx));
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    pub(super) fn drain_effects(&mut self) -> Vec<Effect<Fake>> {
        std::mem::take(&mut self.effects)
    }

    pub(super) fn grants(&mut self) -> Vec<(WaiterId, Grant<Fake>)> {
        self.drain_effects()
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Grant { waiter, grant } => Some((waiter, grant)),
                _ => None,
            })
            .collect()
    }

    pub(super) fn closed(&mut self) -> Vec<ConnectionId> {
        self.drain_effects()
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Close(connection) => Some(connection.id),
                _ => None,
            })
            .collect()
    }

    pub(super) fn notices(&mut self) -> Vec<Notice> {
        self.drain_effects()
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Notice(notice) => Some(notice),
                _ => None,
            })
            .collect()
    }

    pub(super) fn wait(&mut self) -> WaiterId {
        match self.checkout() {
            Checkout::Wait(waiter) => waiter,
            other => panic!("expected to wait, got {other:?}"),
        }
    }
}
