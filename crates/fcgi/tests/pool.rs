//! The pool against the library's own application server over real unix sockets: the cap, reuse,
//! keepalive limits, the FIFO queue and its timeout, and what happens to connections that did not
//! end cleanly. The backend here counts the connections it accepts and the most it held at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{start_echo_backend, wait_until};
use fcgi::client::{ClientError, Multiplexing, Pool, PoolConfig, RequestBody, ResponseEvent};
use fcgi::net::{Address, Listener};
use fcgi::server::{Handler, HandlerOutcome, Request, ResponseWriter, ServerConfig};

/// One request through the pool; returns the stdout bytes after the header block.
async fn request(pool: &Pool, params: &[(&str, &str)]) -> Result<String, ClientError> {
    let mut events = common::send(pool, params).await?;
    let mut stdout = Vec::new();
    loop {
        match events.next_event().await? {
            ResponseEvent::Stdout(data) => stdout.extend_from_slice(&data),
            ResponseEvent::Stderr(_) => {}
            // The connection goes back to the pool with the END_REQUEST.
            ResponseEvent::End(_) => break,
        }
    }
    let text = String::from_utf8(stdout).unwrap();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap())
}

/// A configured cap and no multiplexing: nothing to ask the backend, so no management
/// connection shows up in the connection counts. Idle connections stay for the whole test, so
/// the counts show the pool's reuse and not how a loaded machine spaced the requests (giving
/// workers back after `worker_idle_timeout` is the pool state's unit tests' subject).
fn config(max_conns: usize) -> PoolConfig {
    PoolConfig {
        multiplex: Multiplexing::Off,
        worker_idle_timeout: Duration::from_secs(60),
        ..PoolConfig::with_max_conns(max_conns)
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(backend.address.clone(), config(4));
    for i in 0..500 {
        let token = i.to_string();
        assert_eq!(request(&pool, &[("TOKEN", &token)]).await.unwrap(), token);
    }
    assert_eq!(backend.counts.accepted.load(Ordering::SeqCst), 1);
    let stats = pool.stats();
    assert_eq!((stats.opened, stats.reused, stats.idle), (1, 499, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_exceed_max_conns() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(backend.address.clone(), config(4));
    let mut tasks = Vec::new();
    for client in 0..64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let token = format!("{client}-{i}");
                let sleep = if i % 8 == 0 { "1" } else { "0" };
                let answer = request(&pool, &[("TOKEN", &token), ("SLEEP_MS", sleep)]).await;
                assert_eq!(answer.unwrap(), token);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(backend.counts.accepted.load(Ordering::SeqCst) <= 4);
    assert!(backend.counts.max_open.load(Ordering::SeqCst) <= 4);
    let stats = pool.stats();
    assert!(stats.opened <= 4, "{stats:?}");
    assert_eq!(stats.opened + stats.reused, 64 * 40);
    assert_eq!(stats.waiting, 0);
}

#[tokio::test]
async fn keepalive_requests_retires_each_connection_after_its_quota() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(
        backend.address.clone(),
        PoolConfig {
            keepalive_requests: 10,
            ..config(4)
        },
    );
    for _ in 0..100 {
        request(&pool, &[]).await.unwrap();
    }
    assert_eq!(pool.stats().opened, 10);
    assert_eq!(backend.counts.accepted.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn keep_conn_off_opens_a_connection_per_request_and_the_backend_closes_it() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(
        backend.address.clone(),
        PoolConfig {
            keep_conn: false,
            ..config(4)
        },
    );
    for _ in 0..20 {
        request(&pool, &[]).await.unwrap();
    }
    assert_eq!(backend.counts.accepted.load(Ordering::SeqCst), 20);
    assert_eq!(pool.stats().idle, 0);
    // The backend closes each connection itself (no KEEP_CONN): none stays open.
    wait_until("backend.counts.open.load(Ordering::SeqCst) == 0", || {
        backend.counts.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn a_request_waits_for_a_busy_connection_and_times_out_in_the_queue() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(
        backend.address.clone(),
        PoolConfig {
            queue_timeout: Duration::from_millis(200),
            ..config(1)
        },
    );
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move { request(&pool, &[("SLEEP_MS", "1000")]).await })
    };
    wait_until("pool.stats().open == 1", || pool.stats().open == 1).await;
    let error = request(&pool, &[]).await.unwrap_err();
    assert!(error.is_queue_timeout(), "{error}");
    assert_eq!(pool.stats().queue_timeouts, 1);
    assert_eq!(pool.stats().waiting, 0);
    slow.await.unwrap().unwrap();
    // The queue is empty again and the one connection serves the next request.
    request(&pool, &[]).await.unwrap();
    assert_eq!(backend.counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(backend.address.clone(), config(1));
    let holder = pool.checkout().await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for client in 0..10 {
        let (task_pool, order) = (pool.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let lease = task_pool.checkout().await.unwrap();
            order.lock().unwrap().push(client);
            lease.release();
        }));
        // Queue them one after another so arrival order is known.
        wait_until("pool.stats().waiting == client + 1", || {
            pool.stats().waiting == client + 1
        })
        .await;
    }
    holder.release();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(pool.stats().opened, 1);
}

#[tokio::test]
async fn a_client_that_gives_up_leaves_the_queue_and_takes_no_slot() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(backend.address.clone(), config(1));
    let holder = pool.checkout().await.unwrap();
    let abandoned = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.map(|_| ()) })
    };
    wait_until("pool.stats().waiting == 1", || pool.stats().waiting == 1).await;
    abandoned.abort();
    wait_until("pool.stats().waiting == 0", || pool.stats().waiting == 0).await;
    holder.release();
    assert_eq!(pool.stats().idle, 1);
    assert_eq!(pool.stats().open, 1);
    request(&pool, &[]).await.unwrap();
}

#[tokio::test]
async fn an_idle_connection_the_backend_closed_is_dropped_not_handed_out() {
    let backend = start_echo_backend(ServerConfig {
        close_after_requests: Some(1),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::new(backend.address.clone(), config(4));
    for _ in 0..20 {
        request(&pool, &[]).await.unwrap();
        // The backend closes after every request, as a recycled php-fpm worker does; the idle
        // watcher notices and the pool forgets the connection.
        wait_until("pool.stats().idle == 0 && pool.stats().open == 0", || {
            pool.stats().idle == 0 && pool.stats().open == 0
        })
        .await;
    }
    assert_eq!(pool.stats().opened, 20);
}

#[tokio::test]
async fn a_silent_backend_hits_read_timeout_and_its_connection_is_not_reused() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(
        backend.address.clone(),
        PoolConfig {
            read_timeout: Duration::from_millis(200),
            ..config(4)
        },
    );
    let error = request(&pool, &[("HANG", "1")]).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(pool.stats().open, 0);
    request(&pool, &[]).await.unwrap();
    assert_eq!(pool.stats().opened, 2);
}

#[tokio::test]
async fn idle_connections_are_closed_after_keepalive_timeout() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(
        backend.address.clone(),
        PoolConfig {
            keepalive_timeout: Duration::from_millis(100),
            ..config(4)
        },
    );
    request(&pool, &[]).await.unwrap();
    assert_eq!(pool.stats().idle, 1);
    wait_until("pool.stats().open == 0", || pool.stats().open == 0).await;
    wait_until("backend.counts.open.load(Ordering::SeqCst) == 0", || {
        backend.counts.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn max_idle_closes_the_least_recently_used_surplus() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(
        backend.address.clone(),
        PoolConfig {
            max_idle: Some(1),
            ..config(3)
        },
    );
    let leases = [
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    ];
    for lease in leases {
        lease.release();
    }
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.open), (1, 1));
}

#[tokio::test]
async fn a_refused_connect_is_a_connect_error_and_frees_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::new(Address::Unix(dir.path().join("nothing.sock")), config(1));
    for _ in 0..3 {
        let error = request(&pool, &[]).await.unwrap_err();
        assert!(error.is_connect(), "{error}");
    }
    assert_eq!(pool.stats().open, 0);
    assert_eq!(pool.stats().connect_failures, 3);
}

#[tokio::test]
async fn a_large_body_goes_out_in_records_and_comes_back_whole() {
    struct LengthHandler;
    impl Handler for LengthHandler {
        async fn handle(&self, request: Request, response: &mut ResponseWriter) -> HandlerOutcome {
            let body = format!("\r\n\r\n{}", request.stdin.len());
            response.stdout(body.as_bytes()).await.unwrap();
            HandlerOutcome::Complete { app_status: 0 }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let address = Address::Unix(dir.path().join("len.sock"));
    let listener = Listener::bind(&address).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(fcgi::server::serve(
        listener,
        Arc::new(LengthHandler),
        ServerConfig::default(),
        shutdown.clone(),
    ));
    let pool = Pool::new(address, config(1));
    for body in [
        RequestBody::Memory(Bytes::from(vec![7u8; 300_000])),
        RequestBody::Reader {
            reader: Box::new(std::io::Cursor::new(vec![9u8; 200_001])),
            length: 200_001,
        },
    ] {
        let lease = pool.checkout().await.unwrap();
        let mut events = lease.send_request(|_| {}, body).await.unwrap();
        let mut stdout = Vec::new();
        while let ResponseEvent::Stdout(data) = events.next_event().await.unwrap() {
            stdout.extend_from_slice(&data);
        }
        let text = String::from_utf8(stdout).unwrap();
        assert!(
            text.ends_with("300000") || text.ends_with("200001"),
            "{text}"
        );
    }
    assert_eq!(pool.stats().opened, 1);
    shutdown.cancel();
}

#[tokio::test]
async fn checkout_fresh_never_hands_out_a_pooled_connection() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(backend.address.clone(), config(2));
    request(&pool, &[]).await.unwrap();
    request(&pool, &[]).await.unwrap();
    assert_eq!((pool.stats().opened, pool.stats().idle), (1, 1));
    let fresh = pool.checkout_fresh().await.unwrap();
    assert!(!fresh.was_reused());
    let stats = pool.stats();
    assert_eq!(
        (stats.opened, stats.idle, stats.open),
        (2, 0, 1),
        "{stats:?}"
    );
    fresh.release();

    // With the cap reached and no idle connection, a hand-off is not taken as it is either.
    let held = pool.checkout().await.unwrap();
    let other = pool.checkout().await.unwrap();
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout_fresh().await.map(|lease| lease.was_reused()) })
    };
    wait_until("pool.stats().waiting == 1", || pool.stats().waiting == 1).await;
    held.release();
    assert!(
        !waiting.await.unwrap().unwrap(),
        "a new connection, not the handed-off one"
    );
    // 1, the first fresh one, `other`, and the waiter's fresh one in the handed-off slot.
    assert_eq!(pool.stats().opened, 4);
    assert!(pool.stats().open <= 2);
    other.release();
}

/// A request whose app has started answering and then works on; the client goes away.
async fn abandon_a_slow_request(pool: &Pool) {
    let lease = pool.checkout().await.unwrap();
    let mut events = lease
        .send_request(
            |add| {
                add(b"EARLY_OUTPUT", b"1");
                add(b"SLEEP_MS", b"5000");
            },
            RequestBody::Empty,
        )
        .await
        .unwrap();
    assert!(matches!(
        events.next_event().await.unwrap(),
        ResponseEvent::Stdout(_)
    ));
    drop(events); // the client went away
}

#[tokio::test]
async fn a_request_given_up_is_aborted_and_its_connection_closed_by_default() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(backend.address.clone(), config(1));
    abandon_a_slow_request(&pool).await;
    // FCGI_ABORT_REQUEST reached the app, which stopped the request at once...
    wait_until(
        "backend.counts.cancelled.load(Ordering::SeqCst) == 1",
        || backend.counts.cancelled.load(Ordering::SeqCst) == 1,
    )
    .await;
    // ...and the connection was closed, freeing its slot.
    wait_until("backend.counts.open.load(Ordering::SeqCst) == 0", || {
        backend.counts.open.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(pool.stats().open, 0);
    request(&pool, &[]).await.unwrap();
    assert_eq!(pool.stats().opened, 2);
}

#[tokio::test]
async fn with_abort_drain_timeout_the_connection_survives_a_confirmed_abort() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(
        backend.address.clone(),
        PoolConfig {
            abort_drain_timeout: Duration::from_secs(2),
            ..config(1)
        },
    );
    abandon_a_slow_request(&pool).await;
    wait_until(
        "backend.counts.cancelled.load(Ordering::SeqCst) == 1",
        || backend.counts.cancelled.load(Ordering::SeqCst) == 1,
    )
    .await;
    // The app answered the abort with END_REQUEST; the connection went back to the pool.
    wait_until("pool.stats().idle == 1", || pool.stats().idle == 1).await;
    request(&pool, &[]).await.unwrap();
    assert_eq!(pool.stats().opened, 1);
    assert_eq!(backend.counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_backend_closing_after_n_requests_teaches_the_pool_to_retire_at_n() {
    let backend = start_echo_backend(ServerConfig {
        close_after_requests: Some(5),
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::new(backend.address.clone(), config(4));
    assert_eq!(pool.stats().keepalive_requests, 10_000);
    for i in 1..=30 {
        request(&pool, &[]).await.unwrap();
        if i % 5 == 0 {
            // The backend closes after every 5th; until learned, the pool sees it while idle.
            wait_until("pool.stats().open == 0", || pool.stats().open == 0).await;
        }
    }
    assert_eq!(pool.stats().keepalive_requests, 5);
    assert_eq!(pool.stats().opened, 6);
}

/// Issue 12, item 4: a server at `max_conns` whose connections are all idle in one client's
/// pool must not leave another client in the listen backlog: it closes the longest-idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_closes_an_idle_pooled_connection_for_a_newcomer() {
    let dir = tempfile::tempdir().unwrap();
    let address = Address::Unix(dir.path().join("app.sock"));
    let listener = Listener::bind(&address).await.unwrap();
    let counts = Arc::new(common::Counts::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(fcgi::server::serve(
        listener,
        Arc::new(common::EchoHandler { counts }),
        ServerConfig {
            max_conns: 2,
            ..ServerConfig::default()
        },
        shutdown.clone(),
    ));
    // Client A holds both connections, idle in its pool.
    let first = Pool::new(address.clone(), config(2));
    let (one, two) = tokio::join!(
        request(&first, &[("TOKEN", "a1"), ("SLEEP_MS", "50")]),
        request(&first, &[("TOKEN", "a2"), ("SLEEP_MS", "50")])
    );
    assert_eq!((one.unwrap(), two.unwrap()), ("a1".into(), "a2".into()));
    assert_eq!(first.stats().idle, 2);
    // Client B is served at once, not after A's keepalive_timeout.
    let second = Pool::new(address.clone(), config(2));
    let answer = tokio::time::timeout(Duration::from_secs(2), request(&second, &[("TOKEN", "b")]))
        .await
        .expect("the newcomer was left in the listen backlog");
    assert_eq!(answer.unwrap(), "b");
    // A's pool saw an idle connection close, as when php-fpm recycles a worker, and goes on.
    wait_until("first.stats().open == 1", || first.stats().open == 1).await;
    for i in 0..10 {
        let token = format!("after-{i}");
        assert_eq!(request(&first, &[("TOKEN", &token)]).await.unwrap(), token);
    }
    shutdown.cancel();
}
