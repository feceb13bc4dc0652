//! Random event sequences against the pool state: after every step the invariants hold, grants
//! go to the oldest waiter, the cap is never exceeded by growth; at the end nothing leaked.

use std::collections::VecDeque;

use proptest::prelude::*;

use std::time::Duration;

use super::{Fake, Pool};
use crate::client::connection::ConnectionId;
use crate::client::pool::effects::{
    Checkout, ConnectFailure, Effect, Grant, RequestEnd, Return, WaiterId,
};
use crate::client::pool::state::{HandshakeVerdict, ProbeOutcome};
use crate::client::pool_config::{Multiplexing, PoolConfig};
use crate::client::probe::BackendValues;

// ---- random sequences ----------------------------------------------------------------------------------

/// One thing that may happen to a pool; indexes pick among what exists at that moment.
#[derive(Clone, Copy, Debug)]
enum Step {
    Checkout {
        fresh: bool,
    },
    ConnectSucceeds,
    ConnectFails {
        listen_queue_full: bool,
    },
    WaiterTakesGrant(usize),
    WaiterLeaves(usize),
    RequestCompletes(usize, bool),
    RequestLost(usize),
    SharedRequestEnds(usize, bool),
    BackendCloses(usize),
    Tick(u64),
    Unanswered(usize),
    Overloaded(usize),
    ProbeAnswers(Option<bool>, Option<usize>),
    BacklogSeen(u32),
    /// A connect in progress gets no answer to its handshake (`refused`: it closes instead).
    HandshakeFails {
        refused: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<bool>().prop_map(|fresh| Step::Checkout { fresh }),
        3 => Just(Step::ConnectSucceeds),
        1 => any::<bool>().prop_map(|listen_queue_full| Step::ConnectFails { listen_queue_full }),
        3 => any::<usize>().prop_map(Step::WaiterTakesGrant),
        1 => any::<usize>().prop_map(Step::WaiterLeaves),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, keep)| Step::RequestCompletes(i, keep)),
        1 => any::<usize>().prop_map(Step::RequestLost),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, done)| Step::SharedRequestEnds(i, done)),
        1 => any::<usize>().prop_map(Step::BackendCloses),
        1 => (0u64..30).prop_map(Step::Tick),
        1 => any::<usize>().prop_map(Step::Unanswered),
        1 => any::<usize>().prop_map(Step::Overloaded),
        1 => (0u32..3).prop_map(Step::BacklogSeen),
        1 => any::<bool>().prop_map(|refused| Step::HandshakeFails { refused }),
        1 => (proptest::option::of(any::<bool>()), proptest::option::of(1usize..6))
            .prop_map(|(mpxs, max_conns)| Step::ProbeAnswers(mpxs, max_conns)),
    ]
}

/// Everything outside the state: who holds what.
#[derive(Default)]
struct World {
    connecting: usize,
    exclusive: Vec<Fake>,
    shared: Vec<Fake>,
    /// Queued waiters, oldest first, as the pool must serve them.
    queued: VecDeque<WaiterId>,
    /// Grants sent and not yet taken by their waiter.
    granted: Vec<(WaiterId, Grant<Fake>)>,
    /// Every connection ever opened.
    connections: Vec<Fake>,
}

fn pick<T>(items: &[T], index: usize) -> Option<usize> {
    (!items.is_empty()).then(|| index % items.len())
}

impl World {
    /// Records what the effects of the last event did; checks FIFO order of grants.
    fn absorb(&mut self, pool: &mut Pool) -> Result<(), TestCaseError> {
        for effect in pool.drain_effects() {
            if let Effect::Grant { waiter, grant } = effect {
                let oldest = self.queued.pop_front();
                prop_assert_eq!(oldest, Some(waiter), "grants go to the oldest waiter");
                self.granted.push((waiter, grant));
            }
        }
        Ok(())
    }

    fn apply(&mut self, pool: &mut Pool, step: Step) -> Result<(), TestCaseError> {
        match step {
            Step::Checkout { fresh } => match pool.run(|s, now, fx| s.checkout(now, fresh, fx)) {
                Checkout::Exclusive(c) => self.exclusive.push(c),
                Checkout::Shared(c) => self.shared.push(c),
                Checkout::Connect => self.connecting += 1,
                Checkout::Wait(waiter) => self.queued.push_back(waiter),
                Checkout::QueueFull => {}
            },
            Step::ConnectSucceeds if self.connecting > 0 => {
                self.connecting -= 1;
                let fake = pool.fake();
                self.connections.push(fake.clone());
                if pool.connected(&fake) {
                    self.shared.push(fake);
                } else {
                    self.exclusive.push(fake);
                }
            }
            Step::ConnectFails { listen_queue_full } if self.connecting > 0 => {
                self.connecting -= 1;
                let failure = if listen_queue_full {
                    ConnectFailure::ListenQueueFull
                } else {
                    ConnectFailure::Failed
                };
                pool.run(|s, now, fx| s.connect_failed(now, failure, fx));
            }
            Step::WaiterTakesGrant(i) => {
                if let Some(i) = pick(&self.granted, i) {
                    match self.granted.remove(i).1 {
                        Grant::Connection(c) => self.exclusive.push(c),
                        Grant::Request(c) => self.shared.push(c),
                        Grant::OpenSlot => self.connecting += 1,
                    }
                }
            }
            Step::WaiterLeaves(i) => {
                if let Some(i) = pick(self.queued.make_contiguous(), i) {
                    let waiter = self.queued[i];
                    prop_assert!(pool.run(|s, _, _| s.waiter_left(waiter, true)));
                    self.queued.remove(i);
                } else if let Some(i) = pick(&self.granted, i) {
                    let (waiter, grant) = self.granted.remove(i);
                    prop_assert!(!pool.run(|s, _, _| s.waiter_left(waiter, true)));
                    pool.run(|s, now, fx| s.grant_returned(now, grant, fx));
                }
            }
            Step::RequestCompletes(i, keep) => {
                if let Some(i) = pick(&self.exclusive, i) {
                    let c = self.exclusive.remove(i);
                    c.requests.set(c.requests.get() + 1);
                    pool.run(|s, now, fx| s.returned(now, c, Return::Completed { keep }, fx));
                }
            }
            Step::RequestLost(i) => {
                if let Some(i) = pick(&self.exclusive, i) {
                    let c = self.exclusive.remove(i);
                    c.closed.set(true);
                    pool.run(|s, now, fx| s.returned(now, c, Return::Lost, fx));
                }
            }
            Step::SharedRequestEnds(i, completed) => {
                if let Some(i) = pick(&self.shared, i) {
                    let c = self.shared.remove(i);
                    let end = if completed {
                        RequestEnd::Completed
                    } else {
                        RequestEnd::Abandoned
                    };
                    pool.run(|s, now, fx| s.shared_request_ended(now, &c, end, fx));
                }
            }
            Step::BackendCloses(i) => {
                if let Some(i) = pick(&self.connections, i) {
                    let c = self.connections[i].clone();
                    pool.backend_closes(&c);
                }
            }
            Step::Tick(seconds) => {
                pool.advance(Duration::from_secs(seconds));
                pool.run(|s, now, fx| s.tick(now, fx));
            }
            Step::Unanswered(i) => {
                if let Some(i) = pick(&self.connections, i) {
                    let id = self.connections[i].id;
                    pool.run(|s, now, fx| s.still_unanswered(now, id, 0, fx));
                }
            }
            Step::Overloaded(i) => {
                if let Some(i) = pick(&self.connections, i) {
                    let id = self.connections[i].id;
                    pool.run(|s, now, fx| s.overloaded(now, id, fx));
                }
            }
            Step::ProbeAnswers(mpxs_conns, max_conns) => {
                if pool.run(|s, _, _| s.probe_started()) {
                    let values = BackendValues {
                        max_conns,
                        max_reqs: None,
                        mpxs_conns,
                    };
                    let outcome = ProbeOutcome::Answered(values);
                    pool.run(|s, now, fx| s.probe_ended(now, outcome, fx));
                }
            }
            Step::BacklogSeen(queued) => {
                pool.run(|s, now, fx| s.backlog_seen(now, queued, fx));
            }
            Step::HandshakeFails { refused } if self.connecting > 0 => {
                let id = pool.next_id;
                let gave_back = if refused {
                    pool.run(|s, _, fx| s.handshake_refused(fx));
                    true
                } else {
                    let verdict = pool.run(|s, now, fx| s.handshake_unanswered(now, id, 0, fx));
                    verdict == HandshakeVerdict::NoWorker
                };
                if gave_back {
                    self.connecting -= 1;
                    self.absorb(pool)?;
                    match pool.run(|s, now, fx| s.checkout_again(now, fx)) {
                        Checkout::Exclusive(c) => self.exclusive.push(c),
                        Checkout::Shared(c) => self.shared.push(c),
                        Checkout::Connect => self.connecting += 1,
                        Checkout::Wait(waiter) => self.queued.push_front(waiter),
                        Checkout::QueueFull => {
                            prop_assert!(false, "a request checking out again is never refused")
                        }
                    }
                }
            }
            Step::ConnectSucceeds | Step::ConnectFails { .. } | Step::HandshakeFails { .. } => {}
        }
        // What the effects closed, the drivers report closed.
        let closed: Vec<ConnectionId> = pool
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Close(c) => Some(c.id),
                _ => None,
            })
            .collect();
        self.absorb(pool)?;
        for id in closed {
            pool.run(|s, now, fx| s.backend_closed(now, id, false, fx));
            self.absorb(pool)?;
        }
        Ok(())
    }

    /// Ends everything in flight; afterwards no slot may remain taken.
    fn wind_down(&mut self, pool: &mut Pool) -> Result<(), TestCaseError> {
        for _ in 0..1000 {
            let step = if let Some(&waiter) = self.queued.front() {
                prop_assert!(pool.run(|s, _, _| s.waiter_left(waiter, false)));
                self.queued.pop_front();
                continue;
            } else if !self.granted.is_empty() {
                Step::WaiterTakesGrant(0)
            } else if self.connecting > 0 {
                Step::ConnectFails {
                    listen_queue_full: false,
                }
            } else if !self.exclusive.is_empty() {
                Step::RequestLost(0)
            } else if !self.shared.is_empty() {
                Step::SharedRequestEnds(0, false)
            } else {
                break;
            };
            self.apply(pool, step)?;
        }
        // Retiring connections close; then everything idle expires.
        for c in self.connections.clone() {
            pool.backend_closes(&c);
        }
        pool.advance(Duration::from_secs(7200));
        pool.run(|s, now, fx| s.tick(now, fx));
        prop_assert_eq!(pool.state.open(), 0, "a slot leaked");
        prop_assert_eq!(pool.state.waiting(), 0);
        Ok(())
    }
}

fn config_for(cap: usize, multiplex: Multiplexing, max_queue: usize) -> PoolConfig {
    PoolConfig {
        max_queue,
        max_reqs_per_conn: 3,
        keepalive_timeout: Duration::from_secs(20),
        keepalive_requests: 7,
        multiplex,
        ..PoolConfig::with_max_conns(cap)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_events_keep_every_invariant(
        cap in 1usize..5,
        multiplex in prop_oneof![
            Just(Multiplexing::Off),
            Just(Multiplexing::Auto),
            Just(Multiplexing::Force),
        ],
        max_queue in 1usize..6,
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut pool = Pool::new(&config_for(cap, multiplex, max_queue));
        pool.drain_effects();
        let mut world = World::default();
        for step in steps {
            let open_before = pool.state.open();
            world.apply(&mut pool, step)?;
            let open = pool.state.open();
            prop_assert!(
                open <= pool.state.cap() || open <= open_before,
                "open went from {} to {} above the cap {}", open_before, open, pool.state.cap()
            );
        }
        world.wind_down(&mut pool)?;
    }
}
