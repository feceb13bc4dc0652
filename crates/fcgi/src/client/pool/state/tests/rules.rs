//! One test per rule the pool keeps (docs/architecture.md, "The pool").

use std::time::Duration;

use super::{Fake, Pool};
use crate::client::connection::ConnectionId;
use crate::client::connection::HandshakeAnswer;
use crate::client::pool::effects::{
    Checkout, ConnectFailure, Effect, Grant, Notice, RequestEnd, Return,
};
use crate::client::pool::state::{HandshakeVerdict, ProbeOutcome};
use crate::client::pool_config::{Multiplexing, PoolConfig};
use crate::client::probe::BackendValues;

// ---- invariant 1: the cap ---------------------------------------------------------------------

#[test]
fn checkouts_beyond_the_cap_wait() {
    let mut pool = Pool::with_cap(2);
    pool.open_one();
    pool.open_one();
    pool.wait();
    assert_eq!((pool.state.open(), pool.state.waiting()), (2, 1));
}

#[test]
fn while_the_cap_comes_down_returning_connections_are_closed() {
    let mut pool = Pool::with_cap(3);
    let connections = [pool.open_one(), pool.open_one(), pool.open_one()];
    pool.advance(Duration::from_secs(1));
    // FCGI_OVERLOADED on one: the backend serves the other two at most.
    pool.run(|state, now, fx| state.overloaded(now, connections[0].id, fx));
    assert_eq!(pool.state.cap(), 2);
    pool.drain_effects();
    pool.complete(&connections[0]);
    assert_eq!(
        pool.closed(),
        vec![connections[0].id],
        "above the cap: closed"
    );
    pool.complete(&connections[1]);
    assert_eq!(
        pool.closed(),
        Vec::<ConnectionId>::new(),
        "at the cap: kept"
    );
    assert_eq!(pool.state.open(), 2);
}

#[test]
fn the_queue_is_bounded() {
    let mut pool = Pool::new(&PoolConfig {
        max_queue: 1,
        multiplex: Multiplexing::Off,
        ..PoolConfig::with_max_conns(1)
    });
    pool.open_one();
    pool.wait();
    assert_eq!(pool.checkout(), Checkout::QueueFull);
    assert_eq!(pool.state.stats().queue_rejections, 1);
}

// ---- invariant 2: every slot has one owner, freed once ------------------------------------------

#[test]
fn a_lost_connection_frees_its_slot_for_the_oldest_waiter() {
    let mut pool = Pool::with_cap(1);
    let connection = pool.open_one();
    let first = pool.wait();
    let _second = pool.wait();
    pool.lose(&connection);
    assert_eq!(pool.grants(), vec![(first, Grant::OpenSlot)]);
    assert_eq!(pool.state.open(), 1, "the grant holds the slot");
}

#[test]
fn a_failed_or_cancelled_connect_gives_its_slot_back() {
    let mut pool = Pool::with_cap(1);
    assert_eq!(pool.checkout(), Checkout::Connect);
    let waiter = pool.wait();
    pool.run(|state, now, fx| state.connect_failed(now, ConnectFailure::Cancelled, fx));
    assert_eq!(pool.grants(), vec![(waiter, Grant::OpenSlot)]);
    pool.run(|state, now, fx| state.connect_failed(now, ConnectFailure::Failed, fx));
    assert_eq!(pool.state.open(), 0);
    assert_eq!(pool.state.stats().connect_failures, 1);
}

#[test]
fn a_retired_connection_holds_its_slot_until_the_backend_closes_it() {
    let mut pool = Pool::with_cap(1);
    let connection = pool.open_one();
    let waiter = pool.wait();
    let returned = connection.clone();
    pool.run(|state, now, fx| state.returned(now, returned, Return::Completed { keep: false }, fx));
    let effects = pool.drain_effects();
    assert!(effects.contains(&Effect::Retire(connection.clone())));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Grant { .. })));
    assert_eq!(pool.state.open(), 1);
    pool.backend_closes(&connection);
    assert_eq!(pool.grants(), vec![(waiter, Grant::OpenSlot)]);
}

// ---- invariant 3: a waiter is queued or granted, never both; no grant lost -----------------------

#[test]
fn a_returning_connection_goes_to_the_oldest_waiter() {
    let mut pool = Pool::with_cap(1);
    let connection = pool.open_one();
    let first = pool.wait();
    let second = pool.wait();
    pool.complete(&connection);
    assert_eq!(
        pool.grants(),
        vec![(first, Grant::Connection(connection.clone()))]
    );
    pool.complete(&connection);
    assert_eq!(pool.grants(), vec![(second, Grant::Connection(connection))]);
    assert_eq!(pool.state.waiting(), 0);
}

#[test]
fn a_waiter_that_leaves_before_its_grant_is_skipped() {
    let mut pool = Pool::with_cap(1);
    let connection = pool.open_one();
    let first = pool.wait();
    let second = pool.wait();
    assert!(pool.run(|state, _, _| state.waiter_left(first, true)));
    assert_eq!(pool.state.stats().queue_timeouts, 1);
    pool.complete(&connection);
    assert_eq!(pool.grants(), vec![(second, Grant::Connection(connection))]);
}

#[test]
fn a_grant_that_reaches_nobody_comes_back_to_the_next_waiter() {
    let mut pool = Pool::with_cap(1);
    let connection = pool.open_one();
    let first = pool.wait();
    let second = pool.wait();
    pool.complete(&connection);
    let mut grants = pool.grants();
    assert_eq!(grants.len(), 1);
    let (granted, grant) = grants.remove(0);
    assert_eq!(granted, first);
    // The first waiter timed out as the grant was sent: not queued any more, it gives it back.
    assert!(!pool.run(|state, _, _| state.waiter_left(first, true)));
    pool.run(|state, now, fx| state.grant_returned(now, grant, fx));
    assert_eq!(pool.grants(), vec![(second, Grant::Connection(connection))]);
}

// ---- invariant 4: only live connections handed out, reused only after KEEP_CONN ------------------

#[test]
fn checkout_takes_the_most_recently_used_idle_connection() {
    let mut pool = Pool::with_cap(2);
    let older = pool.open_one();
    let newer = pool.open_one();
    pool.complete(&older);
    pool.complete(&newer);
    assert_eq!(pool.checkout(), Checkout::Exclusive(newer));
    assert_eq!(pool.checkout(), Checkout::Exclusive(older));
}

#[test]
fn an_idle_connection_already_closed_is_never_handed_out() {
    let mut pool = Pool::with_cap(2);
    let dead = pool.open_one();
    pool.complete(&dead);
    // The driver marked it closed but has not reported in yet.
    dead.closed.set(true);
    assert_eq!(pool.checkout(), Checkout::Connect);
    assert_eq!(pool.state.open(), 1);
    // Its report arrives late and finds nothing to do.
    let id = dead.id;
    pool.run(|state, now, fx| state.backend_closed(now, id, false, fx));
    assert_eq!(pool.state.open(), 1);
}

#[test]
fn an_idle_connection_closed_by_the_backend_is_forgotten() {
    let mut pool = Pool::with_cap(1);
    let connection = pool.open_one();
    pool.complete(&connection);
    pool.backend_closes(&connection);
    assert_eq!(pool.state.open(), 0);
    assert_eq!(pool.checkout(), Checkout::Connect);
}

#[test]
fn a_fresh_checkout_closes_the_least_recently_used_idle_connection() {
    let mut pool = Pool::with_cap(2);
    let older = pool.open_one();
    let newer = pool.open_one();
    pool.complete(&older);
    pool.complete(&newer);
    pool.drain_effects();
    assert_eq!(
        pool.run(|state, now, fx| state.checkout(now, true, fx)),
        Checkout::Connect
    );
    assert_eq!(pool.closed(), vec![older.id]);
    assert_eq!(pool.state.open(), 2);
}

#[test]
fn a_connection_returned_closed_is_not_kept() {
    let mut pool = Pool::with_cap(1);
    let connection = pool.open_one();
    connection.closed.set(true);
    pool.complete(&connection);
    assert_eq!(pool.state.open(), 0);
}

// ---- idle limits ---------------------------------------------------------------------------------

#[test]
fn idle_connections_expire_after_keepalive_timeout_and_keepalive_time() {
    let mut pool = Pool::new(&PoolConfig {
        keepalive_timeout: Duration::from_secs(10),
        keepalive_time: Duration::from_secs(25),
        // Longer than keepalive_timeout: that one decides here.
        worker_idle_timeout: Duration::from_secs(3600),
        multiplex: Multiplexing::Off,
        ..PoolConfig::with_max_conns(2)
    });
    let early = pool.open_one();
    pool.complete(&early);
    pool.advance(Duration::from_secs(9));
    pool.run(|state, now, fx| state.tick(now, fx));
    assert_eq!(pool.closed(), Vec::<ConnectionId>::new());
    pool.advance(Duration::from_secs(1));
    pool.run(|state, now, fx| state.tick(now, fx));
    assert_eq!(pool.closed(), vec![early.id], "idle for keepalive_timeout");

    let busy = pool.open_one();
    for _ in 0..5 {
        pool.complete(&busy);
        pool.advance(Duration::from_secs(5));
        assert_eq!(pool.checkout(), Checkout::Exclusive(busy.clone()));
    }
    pool.complete(&busy);
    pool.run(|state, now, fx| state.tick(now, fx));
    assert_eq!(pool.closed(), vec![busy.id], "older than keepalive_time");
}

#[test]
fn an_idle_connection_that_holds_a_worker_is_released_after_worker_idle_timeout() {
    let mut pool = Pool::new(&PoolConfig {
        worker_idle_timeout: Duration::from_millis(250),
        multiplex: Multiplexing::Off,
        ..PoolConfig::with_max_conns(2)
    });
    let connection = pool.open_one();
    pool.complete(&connection);
    pool.advance(Duration::from_millis(249));
    pool.run(|state, now, fx| state.tick(now, fx));
    assert_eq!(pool.closed(), Vec::<ConnectionId>::new());
    pool.advance(Duration::from_millis(1));
    pool.run(|state, now, fx| state.tick(now, fx));
    assert_eq!(
        pool.closed(),
        vec![connection.id],
        "its worker goes back to the backend"
    );
    assert_eq!(pool.state.open(), 0);
}

#[test]
fn a_backend_that_multiplexes_keeps_idle_connections_for_keepalive_timeout() {
    // Not multiplexing (as configured), but the backend said it could: its connections hold no
    // worker of their own.
    let mut pool = Pool::new(&PoolConfig {
        worker_idle_timeout: Duration::from_millis(250),
        keepalive_timeout: Duration::from_secs(60),
        multiplex: Multiplexing::Off,
        ..PoolConfig::with_max_conns(2)
    });
    assert!(pool.run(|state, _, _| state.probe_started()));
    let values = BackendValues {
        max_conns: None,
        max_reqs: None,
        mpxs_conns: Some(true),
    };
    pool.run(|state, now, fx| state.probe_ended(now, ProbeOutcome::Answered(values), fx));
    let connection = pool.open_one();
    pool.complete(&connection);
    pool.drain_effects();
    pool.advance(Duration::from_secs(59));
    pool.run(|state, now, fx| state.tick(now, fx));
    assert_eq!(pool.closed(), Vec::<ConnectionId>::new());
    pool.advance(Duration::from_secs(1));
    pool.run(|state, now, fx| state.tick(now, fx));
    assert_eq!(pool.closed(), vec![connection.id]);
}

#[test]
fn clients_waiting_in_the_backends_listen_queue_get_the_idle_workers_at_once() {
    let mut pool = Pool::with_cap(2);
    let first = pool.open_one();
    let second = pool.open_one();
    pool.complete(&first);
    pool.complete(&second);
    assert!(pool.state.wants_backlog_look());
    pool.drain_effects();
    assert_eq!(pool.run(|state, now, fx| state.backlog_seen(now, 0, fx)), 0);
    assert_eq!(pool.closed(), Vec::<ConnectionId>::new(), "nobody waits");
    assert_eq!(pool.run(|state, now, fx| state.backlog_seen(now, 1, fx)), 2);
    assert_eq!(pool.closed(), vec![first.id, second.id]);
    assert_eq!(pool.state.open(), 0);
    assert!(!pool.state.wants_backlog_look());
}

/// Opens `count` connections whose first requests have been answered (their workers took
/// them: they are not in the backend's listen queue).
fn open_answered(pool: &mut Pool, count: usize) -> Vec<Fake> {
    (0..count)
        .map(|_| {
            let connection = pool.open_one();
            let id = connection.id;
            pool.run(|state, _, fx| state.first_response(id, Duration::from_millis(1), fx));
            connection
        })
        .collect()
}

#[test]
fn others_waiting_in_the_listen_queue_get_busy_workers_as_their_requests_end() {
    let mut pool = Pool::with_cap(4);
    let busy = open_answered(&mut pool, 4);
    let first_waiter = pool.wait();
    let second_waiter = pool.wait();
    assert!(
        pool.state.wants_backlog_look(),
        "busy connections hold workers"
    );
    pool.drain_effects();
    // Four others queue there: a quarter of the four busy connections goes back per look.
    assert_eq!(pool.run(|state, now, fx| state.backlog_seen(now, 4, fx)), 0);
    pool.drain_effects();
    pool.complete(&busy[0]);
    let effects = pool.drain_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::Close(closed), Effect::Grant { waiter, grant: Grant::OpenSlot }]
            if closed.id == busy[0].id && *waiter == first_waiter),
        "its worker goes to the others; the oldest waiter connects anew, queueing behind them: \
         {effects:?}"
    );
    // One per look: the next connection goes to the next waiter as usual.
    pool.complete(&busy[1]);
    assert_eq!(
        pool.grants(),
        vec![(second_waiter, Grant::Connection(busy[1].clone()))]
    );
    assert_eq!(pool.state.stats().yielded, 1);
    assert_eq!(pool.state.cap(), 4, "sharing is not a lower cap");
}

#[test]
fn a_pools_own_fresh_connections_in_the_listen_queue_are_not_others() {
    let mut pool = Pool::with_cap(5);
    let answered = open_answered(&mut pool, 2);
    let _queued = [pool.open_one(), pool.open_one()];
    assert_eq!(pool.checkout(), Checkout::Connect); // a connect in progress
    pool.drain_effects();
    // Three in the queue, all this pool's own.
    pool.run(|state, now, fx| state.backlog_seen(now, 3, fx));
    pool.complete(&answered[0]);
    assert_eq!(pool.closed(), Vec::<ConnectionId>::new());
    assert_eq!(pool.state.stats().yielded, 0);
    // Two more are someone else's: the idle connection goes at once, a busy one at its end.
    assert_eq!(pool.run(|state, now, fx| state.backlog_seen(now, 5, fx)), 1);
    assert_eq!(pool.closed(), vec![answered[0].id]);
    pool.complete(&answered[1]);
    assert_eq!(pool.closed(), vec![answered[1].id]);
}

#[test]
fn a_fresh_connection_queued_behind_others_does_not_lower_the_cap() {
    let mut pool = Pool::with_cap(4);
    let served = open_answered(&mut pool, 1);
    let queued = pool.open_one();
    pool.complete(&served[0]);
    pool.drain_effects();
    // One other client and this pool's fresh connection wait in the queue.
    pool.run(|state, now, fx| state.backlog_seen(now, 2, fx));
    assert!(pool.run(|state, now, fx| state.still_unanswered(now, queued.id, 0, fx)));
    assert_eq!(pool.state.cap(), 4);
    assert_eq!(pool.state.stats().saturation_events, 0);
    // Without others seen lately, the same silence is saturation again.
    pool.advance(Duration::from_secs(2));
    let another = pool.open_one();
    assert!(pool.run(|state, now, fx| state.still_unanswered(now, another.id, 0, fx)));
    assert!(pool.state.cap() < 4);
}

#[test]
fn beyond_max_idle_the_least_recently_used_is_closed() {
    let mut pool = Pool::new(&PoolConfig {
        max_idle: Some(1),
        multiplex: Multiplexing::Off,
        ..PoolConfig::with_max_conns(2)
    });
    let first = pool.open_one();
    let second = pool.open_one();
    pool.complete(&first);
    pool.complete(&second);
    assert_eq!(pool.closed(), vec![first.id]);
    assert_eq!(pool.state.open(), 1);
}

// ---- what the backend shows ------------------------------------------------------------------------

#[test]
fn a_fresh_connection_left_unanswered_while_others_are_served_lowers_the_cap() {
    let mut pool = Pool::with_cap(4);
    let served = pool.open_one();
    let stuck = pool.open_one();
    // Nobody served yet: no evidence.
    assert!(!pool.run(|state, now, fx| state.still_unanswered(now, stuck.id, 0, fx)));
    assert_eq!(pool.state.cap(), 4);
    pool.complete(&served);
    pool.drain_effects();
    assert!(pool.run(|state, now, fx| state.still_unanswered(now, stuck.id, 0, fx)));
    // Two open, one stuck: the backend serves one; the idle one is closed for the stuck one.
    assert_eq!(pool.state.cap(), 1);
    assert_eq!(pool.closed(), vec![served.id]);
    assert_eq!(pool.state.stats().saturation_events, 1);
}

// ---- the handshake on a new connection ---------------------------------------------------------

/// A checkout that connects: the connection it opens, before any verdict on its handshake.
fn connecting(pool: &mut Pool) -> Fake {
    assert_eq!(pool.checkout(), Checkout::Connect);
    pool.fake()
}

fn verdict(pool: &mut Pool, connection: &Fake, completed_before: u64) -> HandshakeVerdict {
    let id = connection.id;
    pool.run(|state, now, fx| state.handshake_unanswered(now, id, completed_before, fx))
}

#[test]
fn a_new_connection_with_no_worker_gives_its_request_back_first_in_line() {
    let mut pool = Pool::with_cap(2);
    let served = open_answered(&mut pool, 1);
    let unanswered = connecting(&mut pool);
    let _waiter = pool.wait();
    // The served connection's request ends and goes to the waiter: others are being served.
    pool.complete(&served[0]);
    pool.drain_effects();
    assert!(pool.state.wants_handshake());
    assert_eq!(
        verdict(&mut pool, &unanswered, 0),
        HandshakeVerdict::NoWorker
    );
    assert!(matches!(
        pool.notices().as_slice(),
        [
            Notice::CapLowered { to: 1, .. },
            Notice::NoWorkerForNewConnection { cap: 1, .. }
        ]
    ));
    assert_eq!(pool.state.open(), 1, "its slot is given back");
    assert_eq!(pool.state.stats().saturation_events, 1);
    // Checking out again, it waits ahead of the later request.
    let again = match pool.run(|state, now, fx| state.checkout_again(now, fx)) {
        Checkout::Wait(again) => again,
        other => panic!("expected to wait, got {other:?}"),
    };
    let _later = pool.wait();
    pool.complete(&served[0]);
    assert_eq!(
        pool.grants(),
        vec![(again, Grant::Connection(served[0].clone()))]
    );
}

#[test]
fn new_connections_with_no_worker_never_take_the_cap_below_the_workers_serving() {
    // Cap 4, two workers: two connections answered, two more wait for a worker.
    let mut pool = Pool::with_cap(4);
    let served = open_answered(&mut pool, 2);
    let silent = [connecting(&mut pool), connecting(&mut pool)];
    pool.complete(&served[0]);
    assert_eq!(
        verdict(&mut pool, &silent[0], 0),
        HandshakeVerdict::NoWorker
    );
    assert_eq!(pool.state.cap(), 2);
    // A served connection coming back is not closed for the other one still waiting ...
    let again = pool.checkout();
    assert_eq!(again, Checkout::Exclusive(served[0].clone()));
    pool.complete(&served[0]);
    assert_eq!(pool.closed(), Vec::<ConnectionId>::new());
    // ... so when that one finds no worker either, two are still serving.
    assert_eq!(
        verdict(&mut pool, &silent[1], 0),
        HandshakeVerdict::NoWorker
    );
    assert_eq!(pool.state.cap(), 2);
}

#[test]
fn without_evidence_a_handshake_waits_only_on_a_backend_known_to_answer() {
    let mut pool = Pool::with_cap(2);
    // Nobody served, nothing known: the app may skip management records. Send anyway.
    let first = connecting(&mut pool);
    assert_eq!(verdict(&mut pool, &first, 0), HandshakeVerdict::SendAnyway);
    assert!(matches!(
        pool.notices().as_slice(),
        [Notice::HandshakeIgnored]
    ));
    assert!(!pool.state.wants_handshake());
    // Its answer came after all, before the request's: later connections ask again.
    pool.run(|state, _, _| state.late_handshake_answer(HandshakeAnswer::Answered));
    assert!(pool.state.wants_handshake());
    // Known to answer, nobody served: the app is slow to accept, not short of workers.
    let second = connecting(&mut pool);
    assert_eq!(
        verdict(&mut pool, &second, 0),
        HandshakeVerdict::KeepWaiting
    );
    assert_eq!(pool.state.cap(), 2);
    // A request's answer before the handshake's: the app skips management records.
    pool.run(|state, _, _| state.late_handshake_answer(HandshakeAnswer::Ignored));
    assert!(
        pool.state.wants_handshake(),
        "one that answered stays trusted"
    );
    // Unless a handshake waits out a request's whole queue time: then it is unknown again.
    pool.run(|state, _, _| state.handshake_timed_out());
    assert_eq!(verdict(&mut pool, &second, 0), HandshakeVerdict::SendAnyway);
}

#[test]
fn a_handshake_queued_behind_other_clients_keeps_waiting_for_its_turn() {
    let mut pool = Pool::with_cap(4);
    let served = open_answered(&mut pool, 1);
    let queued = connecting(&mut pool);
    pool.complete(&served[0]);
    // This pool's handshake and one other client wait in the listen queue.
    pool.run(|state, now, fx| state.backlog_seen(now, 2, fx));
    assert_eq!(
        verdict(&mut pool, &queued, 0),
        HandshakeVerdict::KeepWaiting
    );
    assert_eq!(pool.state.cap(), 4);
}

#[test]
fn connections_closed_in_the_listen_queue_are_not_taken_for_other_clients() {
    let mut pool = Pool::with_cap(2);
    let served = open_answered(&mut pool, 1);
    let ghost = connecting(&mut pool);
    pool.complete(&served[0]);
    assert_eq!(verdict(&mut pool, &ghost, 0), HandshakeVerdict::NoWorker);
    pool.drain_effects();
    // The closed connection is still in the queue until the backend accepts it: not others.
    let busy = pool.checkout();
    assert_eq!(busy, Checkout::Exclusive(served[0].clone()));
    pool.run(|state, now, fx| state.backlog_seen(now, 1, fx));
    pool.complete(&served[0]);
    assert_eq!(pool.closed(), Vec::<ConnectionId>::new());
    assert_eq!(pool.state.stats().yielded, 0);
    // A connection opened after it was answered: the backend has accepted the ghost too, so
    // one in the queue now is somebody else.
    pool.advance(Duration::from_secs(2));
    let later = pool.fake();
    let later_id = later.id;
    pool.run(|state, _, _| state.handshake_answered(later_id));
    assert_eq!(pool.run(|state, now, fx| state.backlog_seen(now, 1, fx)), 1);
    assert_eq!(pool.closed(), vec![served[0].id]);
}

#[test]
fn a_connection_closed_during_its_handshake_stops_handshakes_unless_the_backend_answered_one() {
    let mut pool = Pool::with_cap(2);
    let _refused = connecting(&mut pool);
    pool.run(|state, _, fx| state.handshake_refused(fx));
    assert_eq!(pool.state.open(), 0);
    assert!(!pool.state.wants_handshake());
    assert!(matches!(
        pool.notices().as_slice(),
        [Notice::HandshakeIgnored]
    ));

    // One that answered before is restarting, not refusing.
    let mut pool = Pool::with_cap(2);
    let answered = connecting(&mut pool);
    pool.run(|state, _, _| state.handshake_answered(answered.id));
    let _refused = connecting(&mut pool);
    pool.run(|state, _, fx| state.handshake_refused(fx));
    assert!(pool.state.wants_handshake());
}

#[test]
fn a_full_listen_queue_lowers_the_cap_to_the_other_connections() {
    let mut pool = Pool::with_cap(4);
    pool.open_one();
    pool.open_one();
    assert_eq!(pool.checkout(), Checkout::Connect);
    pool.run(|state, now, fx| state.connect_failed(now, ConnectFailure::ListenQueueFull, fx));
    assert_eq!(pool.state.cap(), 2);
    assert_eq!(pool.state.stats().listen_queue_full, 1);
}

#[test]
fn closes_after_the_same_request_count_teach_keepalive_requests() {
    let mut pool = Pool::with_cap(1);
    for round in 1..=3 {
        let connection = pool.open_one();
        connection.requests.set(5);
        connection.closed_right_after_end.set(true);
        connection.closed.set(true);
        pool.complete(&connection);
        let learned = pool
            .notices()
            .contains(&Notice::ClosePatternLearned { requests: 5 });
        assert_eq!(learned, round == 3, "round {round}");
    }
    assert_eq!(pool.state.keepalive_requests(), 5);
}

#[test]
fn a_connection_lost_with_the_next_request_just_handed_it_teaches_the_count_too() {
    // Under load a returning connection goes straight to the next request, which is then lost
    // with it when the worker exits after its last request: the count is what it finished.
    let mut pool = Pool::with_cap(1);
    for round in 1..=3 {
        let connection = pool.open_one();
        connection.requests.set(6);
        connection.unfinished.set(1);
        connection.closed_right_after_end.set(true);
        connection.closed.set(true);
        pool.lose(&connection);
        let learned = pool
            .notices()
            .contains(&Notice::ClosePatternLearned { requests: 5 });
        assert_eq!(learned, round == 3, "round {round}");
    }
    assert_eq!(pool.state.keepalive_requests(), 5);
    // A connection lost in the middle of a request teaches nothing.
    let connection = pool.open_one();
    connection.requests.set(3);
    connection.closed.set(true);
    pool.lose(&connection);
    assert_eq!(pool.state.keepalive_requests(), 5);
}

#[test]
fn a_failed_connect_asks_the_backend_its_limits_again_once_it_is_back() {
    let mut pool = Pool::new(&PoolConfig {
        multiplex: Multiplexing::Off,
        ..PoolConfig::default()
    });
    assert_eq!(pool.checkout(), Checkout::Connect);
    pool.run(|state, now, fx| state.connect_failed(now, ConnectFailure::Failed, fx));
    pool.open_one();
    assert!(pool.drain_effects().contains(&Effect::Probe));
}

#[test]
fn a_probe_takes_a_slot_only_when_one_is_free() {
    let mut pool = Pool::new(&PoolConfig {
        multiplex: Multiplexing::Off,
        ..PoolConfig::default()
    });
    assert!(pool.run(|state, _, _| state.probe_started()));
    assert_eq!(pool.state.open(), 1);
    let values = BackendValues {
        max_conns: Some(2),
        max_reqs: None,
        mpxs_conns: Some(false),
    };
    pool.run(|state, now, fx| state.probe_ended(now, ProbeOutcome::Answered(values), fx));
    assert_eq!((pool.state.open(), pool.state.cap()), (0, 2));
    pool.open_one();
    pool.open_one();
    assert!(!pool.run(|state, _, _| state.probe_started()));
}

// ---- invariant 5: multiplexing ----------------------------------------------------------------------

fn multiplexing_pool(cap: usize, per_connection: usize) -> Pool {
    let mut pool = Pool::new(&PoolConfig {
        multiplex: Multiplexing::Force,
        max_reqs_per_conn: per_connection,
        ..PoolConfig::with_max_conns(cap)
    });
    assert!(pool.state.multiplexing());
    pool.drain_effects();
    pool
}

#[test]
fn shared_connections_fill_up_before_another_opens_then_requests_wait() {
    let mut pool = multiplexing_pool(2, 2);
    assert_eq!(pool.checkout(), Checkout::Connect);
    let first = pool.fake();
    assert!(pool.connected(&first));
    assert_eq!(pool.checkout(), Checkout::Shared(first.clone()));
    assert_eq!(pool.checkout(), Checkout::Connect);
    let second = pool.fake();
    assert!(pool.connected(&second));
    assert_eq!(pool.checkout(), Checkout::Shared(second.clone()));
    let waiter = pool.wait();
    assert_eq!(pool.state.open(), 2);
    pool.drain_effects();
    let ended = first.clone();
    pool.run(|state, now, fx| state.shared_request_ended(now, &ended, RequestEnd::Completed, fx));
    assert_eq!(pool.grants(), vec![(waiter, Grant::Request(first))]);
}

#[test]
fn when_the_backend_refuses_to_multiplex_shared_connections_become_exclusive() {
    let mut pool = multiplexing_pool(2, 4);
    assert_eq!(pool.checkout(), Checkout::Connect);
    let connection = pool.fake();
    pool.connected(&connection);
    let ended = connection.clone();
    pool.run(|state, now, fx| state.shared_request_ended(now, &ended, RequestEnd::Completed, fx));
    pool.drain_effects();
    pool.run(|state, now, fx| state.cannot_multiplex(now, connection.id, fx));
    assert!(!pool.state.multiplexing());
    assert!(pool
        .drain_effects()
        .contains(&Effect::SetShared(connection.clone(), false)));
    assert_eq!(pool.checkout(), Checkout::Exclusive(connection));
}
