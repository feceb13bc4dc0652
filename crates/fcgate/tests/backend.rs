//! The gateway end to end against the project's instrumented FastCGI backend: connection reuse and
//! the cap under load, keepalive limits, a backend that closes idle connections, hangs or sends
//! garbage, the queue timeout, body limits, slow clients and HTTP/2.
//!
//! Tests that count the backend's connections exactly set `multiplex = "off"`: with a cap
//! configured there is then nothing to ask the backend, and no FCGI_GET_VALUES management
//! connection joins the count.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use fcgi_testkit::backend::{BackendOptions, Mode, TestBackend};
use fcgi_testkit::http::{raw_exchange, run_load, HttpClient, LoadReport};
use http::Request;
use http_body_util::Full;
use support::{pool_stats, start_gateway, wait_until};

async fn backend() -> TestBackend {
    TestBackend::start(BackendOptions::default()).await
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_sequential_then_64_concurrent_open_at_most_max_conns() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "multiplex = \"off\"\nmax_conns = 4").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for i in 0..10_000 {
        let response = client.get(&format!("/seq?token=s{i}")).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-token"), Some(format!("s{i}").as_str()));
    }
    assert_eq!(
        backend.connections_accepted(),
        1,
        "sequential requests share one connection"
    );

    let before = backend.connections_accepted();
    let report = run_load(
        gateway.local_addr,
        10_000,
        64,
        Duration::from_secs(120),
        |i| get(&format!("/load?token=c{i}")),
        |i, response| response.header("x-token") == Some(format!("c{i}").as_str()),
    )
    .await;
    assert_eq!(report.count(200), 10_000, "{report:?}");
    assert_eq!(
        report.bodies_ok, 10_000,
        "every response matched its request"
    );
    // The sequential phase's connection reached keepalive_requests (10,000) on its last request
    // and was retired; the concurrent phase opened at most max_conns new ones.
    let opened = backend.connections_accepted() - before;
    assert!(
        opened <= 4,
        "{opened} connections for 10,000 concurrent requests"
    );
    assert!(backend.max_connections_open() <= 4);
    assert!(pool_stats(&gateway).opened <= 1 + 4);
    gateway.stop().await;
}

#[tokio::test]
async fn keepalive_requests_100_makes_one_connection_per_hundred_requests() {
    let backend = backend().await;
    let gateway = start_gateway(
        "",
        &backend.address(),
        "multiplex = \"off\"\nmax_conns = 4\nkeepalive_requests = 100",
    )
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for _ in 0..1_050 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    assert_eq!(backend.connections_accepted(), 11); // ceil(1050 / 100)
}

#[tokio::test]
async fn keep_conn_false_opens_one_connection_per_request() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "max_conns = 4\nkeep_conn = false").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for _ in 0..200 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    assert_eq!(backend.connections_accepted(), 200);
    wait_until("the backend closed every connection", || {
        backend.connections_open() == 0
    })
    .await;
}

#[tokio::test]
async fn an_idle_connection_closed_by_the_backend_is_never_used() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "max_conns = 4").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for round in 0..50 {
        let report = run_load(
            gateway.local_addr,
            16,
            4,
            Duration::from_secs(30),
            |_| get("/"),
            |_, _| true,
        )
        .await;
        assert_eq!(report.count(200), 16, "round {round}: {report:?}");
        wait_until("every connection idle", || pool_stats(&gateway).idle >= 1).await;
        // Idle for a moment first, as after an idle timeout: a close right after END_REQUEST
        // would look like a worker recycling, which the pool learns from.
        tokio::time::sleep(Duration::from_millis(20)).await;
        backend.close_idle_connections();
        wait_until("the pool noticed the closes", || {
            pool_stats(&gateway).open == 0
        })
        .await;
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn a_backend_that_never_answers_gets_504_and_its_connection_is_not_reused() {
    let backend = backend().await;
    let gateway = start_gateway(
        "",
        &backend.address(),
        "multiplex = \"off\"\nmax_conns = 4\nread_timeout = \"300ms\"",
    )
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    backend.set_mode(Mode::Hang);
    let response = client.get("/").await.unwrap();
    assert_eq!(response.status, 504);
    assert!(response.text().contains("504"));
    assert_eq!(
        pool_stats(&gateway).open,
        0,
        "the timed-out connection was closed"
    );
    backend.set_mode(Mode::Normal);
    assert_eq!(client.get("/").await.unwrap().status, 200);
    assert_eq!(backend.connections_accepted(), 2);
}

#[tokio::test]
async fn garbage_from_the_backend_is_a_502_and_the_gateway_keeps_serving() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    backend.set_mode(Mode::Garbage);
    for _ in 0..5 {
        assert_eq!(client.get("/").await.unwrap().status, 502);
    }
    backend.set_mode(Mode::Normal);
    let response = client.get("/?token=after").await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-token"), Some("after"));
}

#[tokio::test]
async fn a_crash_before_the_header_block_ends_is_a_502() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let response = client.get("/?crash=1").await.unwrap();
    // The backend wrote its header block and died: either the client sees a truncated 200 (the
    // head was out) or a 502 — never a hang, and the next request works.
    assert!(
        response.status == 502 || response.status == 200,
        "{}",
        response.status
    );
    assert_eq!(client.get("/").await.unwrap().status, 200);
}

#[tokio::test]
async fn a_full_pool_queues_and_a_wait_past_queue_timeout_is_503_with_retry_after() {
    let backend = backend().await;
    let gateway = start_gateway(
        "",
        &backend.address(),
        "multiplex = \"off\"\nmax_conns = 1\nqueue_timeout = \"200ms\"",
    )
    .await;
    let address = gateway.local_addr;
    let slow = tokio::spawn(async move {
        let mut client = HttpClient::http1(address).await;
        client.get("/?sleep_ms=1500").await.unwrap()
    });
    wait_until("the slow request holds the connection", || {
        pool_stats(&gateway).open == 1 && pool_stats(&gateway).idle == 0
    })
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let response = client.get("/").await.unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(client.get("/").await.unwrap().status, 200);
    assert_eq!(backend.connections_accepted(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_502() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = fcgi::net::Address::Unix(dir.path().join("nobody.sock"));
    let gateway = start_gateway("", &nowhere, "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let response = client.get("/").await.unwrap();
    assert_eq!(response.status, 502);
}

#[tokio::test]
async fn bodies_over_client_max_body_size_get_413_and_chunked_bodies_arrive_with_their_length() {
    let backend = backend().await;
    let gateway = start_gateway(
        "client_max_body_size = \"100KiB\"\nclient_body_buffer_size = \"16KiB\"",
        &backend.address(),
        "",
    )
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let too_big = Request::post("/upload")
        .body(Full::new(Bytes::from(vec![b'x'; 100 * 1024 + 1])))
        .unwrap();
    assert_eq!(client.send(too_big).await.unwrap().status, 413);

    // Spooled to a temp file (over the 16 KiB buffer) and sent whole.
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let fits = Request::post("/upload")
        .body(Full::new(Bytes::from(vec![b'y'; 90 * 1024])))
        .unwrap();
    let response = client.send(fits).await.unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response.text().contains("CONTENT_LENGTH: 92160"),
        "{}",
        response.text()
    );
    assert!(
        response.text().contains("stdin: 92160"),
        "{}",
        response.text()
    );

    // A chunked body is de-chunked and CONTENT_LENGTH set to its real length.
    let raw = raw_exchange(
        gateway.local_addr,
        b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("CONTENT_LENGTH: 11"), "{raw}");
    assert!(raw.contains("stdin: 11"), "{raw}");
}

#[tokio::test]
async fn a_slow_client_does_not_hold_the_backend_connection() {
    let backend = backend().await;
    let gateway = start_gateway(
        "response_buffer_size = \"64KiB\"",
        &backend.address(),
        "multiplex = \"off\"\nmax_conns = 1",
    )
    .await;
    // Ask for 10 MiB and read only the status line: the rest must go to the spool and the
    // connection back to the pool while this client sits there.
    let mut stalled = tokio::net::TcpStream::connect(gateway.local_addr)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stalled,
        b"GET /?size=10485760 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    wait_until("the connection went back to the pool", || {
        pool_stats(&gateway).idle == 1
    })
    .await;
    // The one backend connection now serves others while the first client still reads nothing.
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let response = client.get("/?size=1000").await.unwrap();
    assert_eq!(response.body.len(), 1000);

    // The stalled client gets every byte in the end.
    let mut received = Vec::new();
    let mut reader = tokio::io::BufReader::new(stalled);
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let count = tokio::io::AsyncReadExt::read(&mut reader, &mut buffer)
                .await
                .unwrap();
            received.extend_from_slice(&buffer[..count]);
            if count == 0 || received.len() >= 10_485_760 + 40 {
                if let Some(at) = find(&received, b"\r\n\r\n") {
                    if received.len() - at - 4 >= 10_485_760 {
                        break;
                    }
                }
                if count == 0 {
                    break;
                }
            }
        }
    })
    .await
    .unwrap();
    let body_start = find(&received, b"\r\n\r\n").unwrap() + 4;
    let body = &received[body_start..];
    assert_eq!(body.len(), 10_485_760);
    assert_eq!(backend.connections_accepted(), 1);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[tokio::test]
async fn http2_prior_knowledge_works_end_to_end() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "multiplex = \"off\"\nmax_conns = 4").await;
    let mut client = HttpClient::http2(gateway.local_addr).await;
    for i in 0..20 {
        let response = client.get(&format!("/h2?token=t{i}")).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-token"), Some(format!("t{i}").as_str()));
    }
    assert_eq!(client.connections_opened(), 1);
    assert_eq!(backend.connections_accepted(), 1);
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let address = gateway.local_addr;
    let in_flight = tokio::spawn(async move {
        let mut client = HttpClient::http1(address).await;
        client.get("/?sleep_ms=500&token=last").await.unwrap()
    });
    wait_until("the request reached the backend", || {
        backend.requests() == 1
    })
    .await;
    gateway.stop().await;
    let response = in_flight.await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-token"), Some("last"));
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_or_431_and_the_gateway_keeps_serving() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge_header = "a".repeat(600_000);
    let cases: [(Vec<u8>, &str); 4] = [
        (b"GARBAGE\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n").into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {huge_header}\r\n\r\n").into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
    ];
    for (request, expected) in cases {
        let answer = raw_exchange(gateway.local_addr, &request).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(expected),
            "expected {expected}, got {answer:?}"
        );
    }
    assert_eq!(
        backend.requests(),
        0,
        "nothing malformed reached the backend"
    );
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_after_every_request_causes_no_errors_for_get() {
    // Like php-fpm with pm.max_requests = 1: every END_REQUEST is followed by a close, and a
    // pooled connection may be handed out before its EOF has been read.
    let backend = TestBackend::start(BackendOptions {
        server: fcgi::server::ServerConfig {
            close_after_requests: Some(1),
            ..fcgi::server::ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let gateway = start_gateway("", &backend.address(), "max_conns = 4").await;
    let report = run_load(
        gateway.local_addr,
        2_000,
        8,
        Duration::from_secs(60),
        |i| get(&format!("/?token={i}")),
        |i, response| response.header("x-token") == Some(i.to_string().as_str()),
    )
    .await;
    assert_eq!(report.count(200), 2_000, "{report:?}");
    assert_eq!(report.bodies_ok, 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_to_a_backend_closing_connections_at_counts_that_never_repeat_never_fail() {
    // Like php-fpm with pm.max_requests = 5 whose workers also serve other clients: each
    // connection closes half a millisecond after its 5th to 15th END_REQUEST, so no count can
    // be learnt, and a POST handed the connection in that instant is lost with it.
    // The gateway asks the worker on a reused connection first (one FCGI_GET_VALUES round
    // trip); a connection that closes instead carried nothing, and the POST goes on another.
    let backend = TestBackend::start(BackendOptions {
        server: fcgi::server::ServerConfig {
            close_after_requests: Some(5),
            close_after_requests_jitter: 10,
            close_after_requests_delay: Duration::from_micros(500),
            ..fcgi::server::ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let report = post_load(&gateway, 3_000, 8).await;
    let stats = pool_stats(&gateway);
    assert_eq!(report.count(200), 3_000, "{report:?}\n{stats:?}");
    assert_eq!(report.bodies_ok, 3_000);
    assert!(
        stats.opened >= 3_000 / 15,
        "the backend closed connections as configured: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_to_a_backend_recycling_every_10_requests_fails_none_once_the_pattern_is_learned() {
    // Like php-fpm with pm.max_requests = 10. A POST meeting a connection the backend just
    // closed may not be retried; after the pool has seen three connections close at 10, it
    // retires them at 10 itself, and no POST meets a dead connection.
    let backend = TestBackend::start(BackendOptions {
        server: fcgi::server::ServerConfig {
            close_after_requests: Some(10),
            ..fcgi::server::ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let gateway = start_gateway("", &backend.address(), "max_conns = 4").await;
    let warm_up = run_load(
        gateway.local_addr,
        300,
        4,
        Duration::from_secs(60),
        |i| get(&format!("/?token={i}")),
        |_, _| true,
    )
    .await;
    assert_eq!(warm_up.count(200), 300, "GETs are retried: {warm_up:?}");
    assert_eq!(pool_stats(&gateway).keepalive_requests, 10);
    let report = post_load(&gateway, 2_000, 4).await;
    assert_eq!(report.count(200), 2_000, "{report:?}");
}

/// `total` POSTs from `concurrency` clients, each answered with its own token.
async fn post_load(
    gateway: &fcgate::server::RunningGateway,
    total: u64,
    concurrency: usize,
) -> LoadReport {
    run_load(
        gateway.local_addr,
        total,
        concurrency,
        Duration::from_secs(60),
        |i| {
            Request::post(format!("/?token=p{i}"))
                .body(Full::new(Bytes::from_static(b"order=1")))
                .unwrap()
        },
        |i, response| response.header("x-token") == Some(format!("p{i}").as_str()),
    )
    .await
}
