//! The instrumented test backend: per-request behaviour from the query string, connection
//! counting, worker emulation, the misbehaving modes and idle closes.

use std::time::Duration;

use fcgi_testkit::backend::{BackendOptions, Mode, TestBackend};
use fcgi_testkit::{is_pattern, Listen};

use crate::fastcgi::{Connection, Reply};
use fcgi_testkit::wait_until;

fn params(query: &str) -> Vec<(String, String)> {
    vec![
        ("REQUEST_METHOD".into(), "POST".into()),
        ("REQUEST_URI".into(), format!("/app?{query}")),
        ("QUERY_STRING".into(), query.into()),
        ("CONTENT_LENGTH".into(), "5".into()),
    ]
}

async fn ask(connection: &mut Connection, query: &str, keep_conn: bool) -> Reply {
    let params = params(query);
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    connection
        .request(&pairs, b"hello", keep_conn)
        .await
        .unwrap()
}

fn body_text(reply: &Reply) -> String {
    String::from_utf8_lossy(reply.body()).into_owned()
}

#[tokio::test]
async fn describes_each_request_and_the_connection_that_carried_it() {
    for listen in [Listen::Unix, Listen::Tcp] {
        let backend = TestBackend::start(BackendOptions {
            listen,
            ..BackendOptions::default()
        })
        .await;
        let mut first = Connection::open(&backend.address()).await.unwrap();
        let one = ask(&mut first, "a=1", true).await;
        assert_eq!(one.end, Some((0, 0)));
        assert_eq!(
            body_text(&one),
            "REQUEST_METHOD: POST\nREQUEST_URI: /app?a=1\nCONTENT_LENGTH: 5\nstdin: 5\n\
             connection: 1\nrequest_on_connection: 1\n"
        );
        let two = ask(&mut first, "", true).await;
        assert!(body_text(&two).contains("connection: 1\nrequest_on_connection: 2\n"));

        let mut second = Connection::open(&backend.address()).await.unwrap();
        let three = ask(&mut second, "", false).await;
        assert!(body_text(&three).contains("connection: 2\nrequest_on_connection: 1\n"));
        assert!(
            second.closed_within(Duration::from_secs(5)).await,
            "KEEP_CONN=0 closes"
        );

        assert_eq!(backend.requests(), 3);
        assert_eq!(backend.connections_accepted(), 2);
        assert_eq!(backend.max_connections_open(), 2);
        wait_until("only the kept connection is open", || {
            backend.connections_open() == 1
        })
        .await;
    }
}

#[tokio::test]
async fn token_status_stderr_and_size_come_from_the_query() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let mut connection = Connection::open(&backend.address()).await.unwrap();
    let reply = ask(
        &mut connection,
        "token=t%2042&status=503&stderr=oh+no",
        true,
    )
    .await;
    assert_eq!(
        reply.header_lines(),
        [
            "Status: 503 Service Unavailable",
            "Content-Type: text/plain",
            "X-Token: t 42"
        ]
    );
    assert!(
        body_text(&reply).ends_with("token: t 42\n"),
        "{}",
        body_text(&reply)
    );
    assert_eq!(reply.stderr, b"oh no");

    let large = ask(&mut connection, "size=300001", true).await;
    assert!(large
        .header_lines()
        .contains(&"Content-Length: 300001".to_owned()));
    assert_eq!(large.body().len(), 300_001);
    assert!(is_pattern(large.body()));
    assert_eq!(large.end, Some((0, 0)));
}

#[tokio::test(start_paused = true)]
async fn sleep_ms_delays_the_answer() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let mut connection = Connection::open(&backend.address()).await.unwrap();
    let started = tokio::time::Instant::now();
    let reply = ask(&mut connection, "sleep_ms=90000", true).await;
    assert_eq!(reply.end, Some((0, 0)));
    assert!(started.elapsed() >= Duration::from_secs(90));
}

#[tokio::test]
async fn crash_sends_the_headers_then_drops_the_connection() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let mut connection = Connection::open(&backend.address()).await.unwrap();
    let reply = ask(&mut connection, "crash=1&token=c", true).await;
    assert_eq!(reply.end, None, "no END_REQUEST after a crash");
    assert_eq!(
        reply.header_lines(),
        ["Content-Type: text/plain", "X-Token: c"]
    );
    assert!(connection.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn workers_limit_leaves_extra_connections_in_the_backlog() {
    let backend = TestBackend::start(BackendOptions {
        workers: Some(1),
        ..BackendOptions::default()
    })
    .await;
    let mut busy = Connection::open(&backend.address()).await.unwrap();
    ask(&mut busy, "", true).await;

    // The kernel completes the connect, but nobody accepts it while the worker is taken.
    let mut waiting = Connection::open(&backend.address()).await.unwrap();
    let mut pending = tokio::spawn(async move { ask(&mut waiting, "", false).await });
    let early = tokio::time::timeout(Duration::from_millis(300), &mut pending).await;
    assert!(
        early.is_err(),
        "the second connection must not be served while the worker is busy"
    );
    assert_eq!(backend.connections_accepted(), 1);

    drop(busy);
    let reply = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("served once the worker is free")
        .unwrap();
    assert!(body_text(&reply).contains("connection: 2\n"));
    assert_eq!(backend.max_connections_open(), 1);
}

#[tokio::test]
async fn hang_mode_reads_and_never_answers() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    backend.set_mode(Mode::Hang);
    let mut connection = Connection::open(&backend.address()).await.unwrap();
    let params = params("");
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let answer = tokio::time::timeout(
        Duration::from_millis(300),
        connection.request(&pairs, b"hello", true),
    )
    .await;
    assert!(answer.is_err(), "a hung backend answers nothing");
    assert_eq!(backend.requests(), 1);
    // A hung request is in progress: closing idle connections leaves it alone.
    backend.close_idle_connections();
    assert_eq!(backend.connections_open(), 1);
}

#[tokio::test]
async fn garbage_mode_answers_in_the_wrong_protocol_and_closes() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let mut normal = Connection::open(&backend.address()).await.unwrap();
    assert_eq!(ask(&mut normal, "", true).await.end, Some((0, 0)));
    backend.set_mode(Mode::Garbage);
    // The mode applies per request, so an already open connection misbehaves too.
    let params = params("");
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let error = normal.request(&pairs, b"hello", true).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);

    let mut fresh = Connection::open(&backend.address()).await.unwrap();
    fresh
        .write_raw(&crate::fastcgi::encode_request(&pairs, b"hello", true))
        .await
        .unwrap();
    let raw = fresh.read_to_end().await;
    assert!(
        raw.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(raw.ends_with(b"not fastcgi"));
    assert_eq!(backend.requests(), 3);
}

#[tokio::test]
async fn close_idle_connections_spares_busy_ones() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let mut idle = Connection::open(&backend.address()).await.unwrap();
    ask(&mut idle, "", true).await;

    let mut busy = Connection::open(&backend.address()).await.unwrap();
    let slow = tokio::spawn(async move {
        let reply = ask(&mut busy, "sleep_ms=300", true).await;
        (reply, busy)
    });
    wait_until("the slow request has arrived", || backend.requests() == 2).await;

    backend.close_idle_connections();
    assert!(
        idle.closed_within(Duration::from_secs(1)).await,
        "the idle connection is closed"
    );
    let (reply, mut busy) = slow.await.unwrap();
    assert_eq!(reply.end, Some((0, 0)), "the busy one finishes its request");
    assert!(body_text(&reply).contains("connection: 2\n"));
    // Once idle it can be closed too.
    backend.close_idle_connections();
    assert!(busy.closed_within(Duration::from_secs(1)).await);
    wait_until("no connection is open", || backend.connections_open() == 0).await;
    assert_eq!(backend.connections_accepted(), 2);
}

#[tokio::test]
async fn start_at_binds_the_given_address() {
    let directory = tempfile::tempdir().unwrap();
    let address = fcgi::net::Address::Unix(directory.path().join("fixed.sock"));
    let backend = TestBackend::start_at(&address, BackendOptions::default()).await;
    assert_eq!(backend.address(), address);
    let mut connection = Connection::open(&address).await.unwrap();
    assert_eq!(ask(&mut connection, "", false).await.end, Some((0, 0)));
}

#[tokio::test]
async fn the_binary_serves_on_the_address_it_is_given() {
    use std::io::BufRead;

    let directory = tempfile::tempdir().unwrap();
    let address = fcgi::net::Address::Unix(directory.path().join("bin.sock"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-test-backend"))
        .args(["--listen", &address.to_string(), "--workers", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    assert_eq!(
        first_line,
        format!("fcgi-test-backend listening on {address}\n")
    );
    let mut connection = Connection::open(&address).await.unwrap();
    let reply = ask(&mut connection, "token=bin", false).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        body_text(&reply).ends_with("token: bin\n"),
        "{}",
        body_text(&reply)
    );

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_fcgi-test-backend"))
        .args(["--workers", "many"])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(refused.code(), Some(2));
}
