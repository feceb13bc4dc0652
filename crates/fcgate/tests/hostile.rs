//! Hostile and broken input, one test per case: what an attacker sends the gateway, and what a
//! buggy (or compromised) app sends back. Each answer must be precise, and the gateway must
//! keep serving. Uses the project's raw-socket client and instrumented test backend.
//!
//! The app's side is driven through the test backend's query instructions (`content_length`,
//! `body`, `header`, `status`, `end_delay_ms`, `head_bytes`, `stderr`) and its modes (garbage
//! instead of FastCGI): `docs/security.md` lists what each case defends against. What only the
//! process shows (its log, its descriptor limit) is tested on the `fcgate` binary itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;

use fcgi_testkit::backend::{BackendOptions, Mode, TestBackend};
use fcgi_testkit::http::{raw_exchange, HttpClient};
use fcgi_testkit::pattern_bytes;
use fcgi_testkit::relay::CountingRelay;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::start_gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn backend() -> TestBackend {
    TestBackend::start(BackendOptions::default()).await
}

/// Percent-encodes everything but unreserved characters, for query values.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// How many HTTP/1.1 responses a raw exchange holds.
fn status_lines(received: &[u8]) -> usize {
    String::from_utf8_lossy(received)
        .matches("HTTP/1.1 ")
        .count()
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_cannot_smuggle_a_second_response() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    // header('Content-Length: 5'); echo "hello" . $_GET['x']; with x carrying a response.
    let smuggled = "helloHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nPWNED";
    let request = format!(
        "GET /app?content_length=5&body={} HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /static.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        encode(smuggled)
    );
    let started = Instant::now();
    let received = raw_exchange(gateway.local_addr, request.as_bytes()).await;
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("PWNED"), "{text}");
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n"),
        "the first response is the app's: {text}"
    );
    assert!(text.contains("content-length: 5\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "cut at 5 bytes: {text}");
    // The connection is closed after it: the pipelined request is never answered on it.
    assert_eq!(status_lines(&received), 1, "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed, not timed out"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_closes_the_connection() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let request = "GET /app?content_length=100&body=short HTTP/1.1\r\nHost: x\r\n\r\n\
                   GET /app?token=second HTTP/1.1\r\nHost: x\r\n\r\n";
    let started = Instant::now();
    let received = raw_exchange(gateway.local_addr, request.as_bytes()).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("content-length: 100\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nshort"), "{text}");
    assert_eq!(status_lines(&received), 1, "never reused: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed, not timed out"
    );
    // The HTTP client sees an incomplete body, not a short success.
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let result = client.get("/app?content_length=100&body=short").await;
    assert!(result.is_err(), "{result:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn over_http2_the_body_is_cut_or_fails_the_same_way() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let mut client = HttpClient::http2(gateway.local_addr).await;
    let longer = client
        .get(&format!(
            "/app?content_length=5&body={}",
            encode("helloPWNED")
        ))
        .await
        .unwrap();
    assert_eq!(longer.status, 200);
    assert_eq!(&longer.body[..], b"hello");
    assert_eq!(longer.header("content-length"), Some("5"));
    assert!(client
        .get("/app?content_length=100&body=short")
        .await
        .is_err());
    // The connection survives a failed stream; the next request on it is fine.
    let after = client.get("/app?token=after").await.unwrap();
    assert_eq!(after.status, 200);
    gateway.stop().await;
}

/// The head and the body of the one HTTP/1.1 response in `received`.
fn head_and_body(received: &[u8]) -> (String, &[u8]) {
    let end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(received)));
    (
        String::from_utf8_lossy(&received[..end + 4]).into_owned(),
        &received[end + 4..],
    )
}

/// Larger than `response_buffer_size` (4 KiB in these tests), so the response is streamed
/// through the spool rather than answered from memory.
const STREAMED: &str = "response_buffer_size = \"4KiB\"";

/// The streamed form of the case above: the head (with the declared length) is out before the
/// excess arrives, so `Connection: close` cannot be said; the connection is closed after the
/// declared bytes instead, and the pipelined request after them is never answered.
#[tokio::test]
async fn a_streamed_body_longer_than_declared_is_cut_and_closes_the_connection() {
    let backend = backend().await;
    let gateway = start_gateway(STREAMED, &backend.address(), "").await;
    let request = "GET /app?size=20000&content_length=10000 HTTP/1.1\r\nHost: x\r\n\r\n\
                   GET /app?token=pipelined HTTP/1.1\r\nHost: x\r\n\r\n";
    let started = Instant::now();
    let received = raw_exchange(gateway.local_addr, request.as_bytes()).await;
    let (head, body) = head_and_body(&received);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-length: 10000\r\n"), "{head}");
    assert!(
        body == pattern_bytes(10_000),
        "cut at the declared length, and nothing after it: {} bytes",
        body.len()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed, not timed out"
    );
    // 65,471 = 32,703 body bytes in the record with the head, then one record of 32,768: the
    // cut falls on a record boundary and the excess comes in a record of its own, maybe after
    // the client has every declared byte. The connection still closes, without another request.
    let mut stream = tokio::net::TcpStream::connect(gateway.local_addr)
        .await
        .unwrap();
    stream
        .write_all(b"GET /app?size=131072&content_length=65471 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut received))
        .await
        .expect("the connection is closed after the declared bytes");
    closed.unwrap();
    let (_, body) = head_and_body(&received);
    assert!(body == pattern_bytes(65_471), "{} bytes", body.len());
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/app").await.unwrap().status, 200);
    gateway.stop().await;
}

#[tokio::test]
async fn a_streamed_body_shorter_than_declared_ends_in_an_error_and_closes() {
    let backend = backend().await;
    let gateway = start_gateway(STREAMED, &backend.address(), "").await;
    let request = "GET /app?size=10000&content_length=20000 HTTP/1.1\r\nHost: x\r\n\r\n\
                   GET /app?token=pipelined HTTP/1.1\r\nHost: x\r\n\r\n";
    let started = Instant::now();
    let received = raw_exchange(gateway.local_addr, request.as_bytes()).await;
    let (head, body) = head_and_body(&received);
    assert!(head.contains("content-length: 20000\r\n"), "{head}");
    assert!(body == pattern_bytes(10_000), "{} bytes", body.len());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed, not timed out"
    );
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let result = client.get("/app?size=10000&content_length=20000").await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(client.get("/app").await.unwrap().status, 200);
    gateway.stop().await;
}

/// One HTTP/2 connection to `gateway` whose requests carry bodies of type `B`: unlike
/// [`HttpClient`], which reconnects after a failed response, every request goes on it.
async fn http2_connection<B>(gateway: &fcgate::server::RunningGateway) -> http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(gateway.local_addr)
        .await
        .unwrap();
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// A bodiless request for `path_and_query` on `gateway`, for [`http2_connection`].
fn h2_get(
    gateway: &fcgate::server::RunningGateway,
    path_and_query: &str,
) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{}{path_and_query}", gateway.local_addr))
        .body(Empty::new())
        .unwrap()
}

/// Over HTTP/2 a streamed body is cut at its declared length and the stream ends cleanly, or
/// the stream fails when the body is short; the connection serves on either way.
#[tokio::test]
async fn over_http2_a_streamed_body_is_cut_or_fails_the_same_way() {
    let backend = backend().await;
    let gateway = start_gateway(STREAMED, &backend.address(), "").await;
    let mut connection = http2_connection(&gateway).await;
    for (path, declared) in [
        ("/app?size=20000&content_length=10000", 10_000),
        ("/app?size=131072&content_length=65471", 65_471),
    ] {
        let longer = connection
            .send_request(h2_get(&gateway, path))
            .await
            .unwrap();
        assert_eq!(longer.status(), 200);
        let body = longer.into_body().collect().await.unwrap().to_bytes();
        assert!(
            body == pattern_bytes(declared),
            "{path}: {} bytes",
            body.len()
        );
    }
    let shorter = connection
        .send_request(h2_get(&gateway, "/app?size=10000&content_length=20000"))
        .await
        .unwrap();
    assert!(shorter.into_body().collect().await.is_err());
    let after = connection
        .send_request(h2_get(&gateway, "/app"))
        .await
        .unwrap();
    assert_eq!(after.status(), 200, "the same connection serves on");
    gateway.stop().await;
}

#[tokio::test]
async fn an_invalid_backend_content_length_is_a_502() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for declared in ["abc", "-1", "5, 6", "1e3", ""] {
        let response = client
            .get(&format!(
                "/app?content_length={}&body=hello",
                encode(declared)
            ))
            .await
            .unwrap();
        assert_eq!(response.status, 502, "Content-Length: {declared:?}");
    }
    let same_twice = client
        .get("/app?content_length=5&header=Content-Length%3A%205&body=hello")
        .await
        .unwrap();
    assert_eq!(same_twice.status, 200);
    assert_eq!(&same_twice.body[..], b"hello");
    gateway.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_from_the_backend_are_stripped() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let headers = [
        "Connection: X-Secret",
        "X-Secret: 1",
        "Keep-Alive: timeout=1",
        "Proxy-Connection: close",
        "Trailer: X-Checksum",
        "Upgrade: h2c",
        "Transfer-Encoding: chunked",
        "X-Kept: yes",
    ];
    let query: Vec<String> = headers
        .iter()
        .map(|line| format!("header={}", encode(line)))
        .collect();
    let path = format!("/app?body=hi&{}", query.join("&"));
    for mut client in [
        HttpClient::http1(gateway.local_addr).await,
        HttpClient::http2(gateway.local_addr).await,
    ] {
        let response = client.get(&path).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(&response.body[..], b"hi");
        assert_eq!(response.header("x-kept"), Some("yes"));
        for gone in [
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "trailer",
            "upgrade",
            "transfer-encoding",
        ] {
            assert!(response.header(gone).is_none(), "{gone}: {response:?}");
        }
        // And the keep-alive connection is still usable: the app's Connection did not apply.
        assert_eq!(client.get("/app").await.unwrap().status, 200);
        assert_eq!(client.connections_opened(), 1);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_status_outside_100_to_599_or_an_interim_one_is_a_502() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for status in [600, 999, 100, 101, 102] {
        let response = client.get(&format!("/app?status={status}")).await.unwrap();
        assert_eq!(response.status, 502, "Status: {status}");
    }
    // 103 Early Hints is followed by the real head: that one is the response.
    let final_head = "Status: 201 Created\r\nX-Final: 1\r\n\r\nmade";
    let response = client
        .get(&format!("/app?status=103&body={}", encode(final_head)))
        .await
        .unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.header("x-final"), Some("1"));
    assert_eq!(&response.body[..], b"made");
    gateway.stop().await;
}

/// What a broken or compromised app can send instead of a response, each a 502 over HTTP/1.1
/// and HTTP/2; the client's connection carries the next request, and the backend serves it.
/// (tests/backend.rs has the plain garbage and crash cases; these are the precise ones.)
#[tokio::test]
async fn malformed_output_from_the_backend_is_a_502_and_the_gateway_keeps_serving() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    for mut client in [
        HttpClient::http1(gateway.local_addr).await,
        HttpClient::http2(gateway.local_addr).await,
    ] {
        for (case, path) in [
            ("END_REQUEST before a head", "/app?head_bytes=0"),
            ("a head cut short, then END_REQUEST", "/app?head_bytes=10"),
            (
                "a head cut short, then the connection closed",
                "/app?head_bytes=10&crash=1",
            ),
            ("a line without a colon", "/app?header=No%20colon%20here"),
            ("obs-fold", "/app?header=%20folded%3A%20x"),
            (
                "a name that is not a token",
                "/app?header=Bad%20Name%3A%20x",
            ),
            (
                "a control character in a value",
                "/app?header=X-Ctl%3A%20a%01b",
            ),
        ] {
            let response = client.get(path).await.unwrap();
            assert_eq!(response.status, 502, "{case}: {response:?}");
        }
        // Bytes that are not FastCGI records at all.
        backend.set_mode(Mode::Garbage);
        assert_eq!(client.get("/app").await.unwrap().status, 502);
        backend.set_mode(Mode::Normal);
        let after = client.get("/app?token=after").await.unwrap();
        assert_eq!(after.status, 200);
        assert_eq!(after.header("x-token"), Some("after"));
        assert_eq!(
            client.connections_opened(),
            1,
            "one client connection for all"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_head_request_keeps_the_declared_length_and_the_connection() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "multiplex = \"off\"\nmax_conns = 1").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for _ in 0..3 {
        let request = http::Request::head("/app?size=1000")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = client.send(request).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-length"), Some("1000"));
        assert!(response.body.is_empty());
    }
    assert_eq!(client.connections_opened(), 1);
    assert_eq!(
        backend.connections_accepted(),
        1,
        "read to END_REQUEST, kept"
    );
    gateway.stop().await;
}

/// Interop: an app that sends END_REQUEST a moment after a body with Content-Length (Go's
/// net/http/fcgi and flup do) keeps its pooled connection, and never sees an abort for a
/// response the client read in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_request_after_a_framed_body_keeps_the_connection_and_aborts_nothing() {
    let backend = backend().await;
    let relay = CountingRelay::start(backend.address()).await;
    let gateway = start_gateway("", &relay.address(), "multiplex = \"off\"\nmax_conns = 4").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for i in 0..300 {
        let response = client
            .get(&format!(
                "/app?content_length=7&body=body{:03}&end_delay_ms=3",
                i % 1000
            ))
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, format!("body{:03}", i % 1000));
    }
    assert_eq!(relay.abort_requests_seen(), 0);
    // The next request may come before the last END_REQUEST, and then takes another
    // connection: at most the cap, never one per request.
    assert!(
        relay.connections_opened() <= 4,
        "{} backend connections for 300 sequential requests",
        relay.connections_opened()
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_request_after_a_framed_body_sends_no_abort_when_multiplexing() {
    let backend = TestBackend::start(BackendOptions {
        server: fcgi::server::ServerConfig {
            mpxs_conns: true,
            max_conns: 16,
            max_reqs: 1024,
            max_reqs_per_conn: 1024,
            ..fcgi::server::ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let relay = CountingRelay::start(backend.address()).await;
    let gateway = start_gateway("", &relay.address(), "multiplex = \"on\"\nmax_conns = 1").await;
    support::wait_until("the gateway learns the backend multiplexes", || {
        support::pool_stats(&gateway).multiplexing
    })
    .await;
    // HTTP/1.1: hyper drops a body as soon as its Content-Length is written.
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for i in 0..100 {
        let response = client
            .get(&format!(
                "/app?content_length=6&body=mux{i:03}&end_delay_ms=3"
            ))
            .await
            .unwrap();
        assert_eq!(response.body, format!("mux{i:03}"));
    }
    assert_eq!(relay.abort_requests_seen(), 0);
    gateway.stop().await;
}

/// Sends `head` (request line and headers, without the final CRLF) with `Connection: close` and
/// returns the status line's code.
async fn status_of(gateway: &fcgate::server::RunningGateway, head: &str) -> u16 {
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    let received = raw_exchange(gateway.local_addr, request.as_bytes()).await;
    let text = String::from_utf8_lossy(&received);
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status for {head:?}: {text}"))
}

#[tokio::test]
async fn host_must_be_present_once_and_valid() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    for head in [
        "GET /app HTTP/1.1",
        "GET /app HTTP/1.1\r\nHost: a\r\nHost: b",
        "GET /app HTTP/1.1\r\nHost: a b",
        "GET /app HTTP/1.1\r\nHost: evil/x?y#z",
        "GET /app HTTP/1.1\r\nHost: \"><script>alert(1)</script>",
        "GET /app HTTP/1.1\r\nHost: a@evil",
    ] {
        assert_eq!(status_of(&gateway, head).await, 400, "{head:?}");
    }
    assert_eq!(
        status_of(&gateway, "GET /app HTTP/1.1\r\nHost: example.com:8080").await,
        200
    );
    assert_eq!(status_of(&gateway, "GET /app HTTP/1.0").await, 200);
    assert_eq!(
        backend.requests(),
        2,
        "no refused request reached the backend"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn trace_foreign_codings_and_control_characters_are_refused() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    assert_eq!(
        status_of(&gateway, "TRACE /app HTTP/1.1\r\nHost: x").await,
        405
    );
    let gzip = "POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked";
    assert_eq!(status_of(&gateway, gzip).await, 501);
    let crlf = "GET /app/x%0d%0aSet-Cookie:%20a=1 HTTP/1.1\r\nHost: x";
    assert_eq!(status_of(&gateway, crlf).await, 400);
    assert_eq!(backend.requests(), 0);
    // Still serving.
    assert_eq!(
        status_of(&gateway, "GET /app HTTP/1.1\r\nHost: x").await,
        200
    );
    gateway.stop().await;
}

/// TRACE echoes the request back, cookies included (cross-site tracing): 405 by default, as
/// nginx always answers; `allow_trace = true` passes it to the app like any method.
#[tokio::test]
async fn trace_reaches_the_app_only_with_allow_trace() {
    let backend = backend().await;
    let refusing = start_gateway("", &backend.address(), "").await;
    let trace = "TRACE /app HTTP/1.1\r\nHost: x";
    assert_eq!(status_of(&refusing, trace).await, 405);
    assert_eq!(backend.requests(), 0);
    refusing.stop().await;
    let allowing = start_gateway("allow_trace = true", &backend.address(), "").await;
    let mut client = HttpClient::http1(allowing.local_addr).await;
    let request = http::Request::builder()
        .method(http::Method::TRACE)
        .uri("/app")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let answered = client.send(request).await.unwrap();
    assert_eq!(answered.status, 200);
    assert!(
        answered.text().contains("REQUEST_METHOD: TRACE\n"),
        "{answered:?}"
    );
    assert_eq!(backend.requests(), 1);
    allowing.stop().await;
}

#[tokio::test]
async fn long_targets_and_headers_are_refused_before_the_backend() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x", "a".repeat(9 << 10));
    assert_eq!(status_of(&gateway, &long_target).await, 414);
    // One value of 65,515 bytes would be a pair split across PARAMS records.
    let huge_header = format!(
        "GET /app HTTP/1.1\r\nHost: x\r\nX-Big: {}",
        "v".repeat(65_515)
    );
    assert_eq!(status_of(&gateway, &huge_header).await, 431);
    let line = format!("Cookie: {}", "c".repeat((8 << 10) - 16));
    let nine_cookies = format!(
        "GET /app HTTP/1.1\r\nHost: x{}",
        format!("\r\n{line}").repeat(9)
    );
    assert_eq!(status_of(&gateway, &nine_cookies).await, 431);
    assert_eq!(
        backend.requests(),
        0,
        "refused before any backend was touched"
    );
    assert_eq!(
        status_of(&gateway, "GET /app HTTP/1.1\r\nHost: x").await,
        200
    );
    gateway.stop().await;
}

#[tokio::test]
async fn the_same_limits_hold_over_http2() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let mut client = HttpClient::http2(gateway.local_addr).await;
    let long = client
        .get(&format!("/{}", "a".repeat(9 << 10)))
        .await
        .unwrap();
    assert_eq!(long.status, 414);
    let big = http::Request::get("/app")
        .header("x-big", "v".repeat(20 << 10))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(client.send(big).await.unwrap().status, 431);
    assert_eq!(client.get("/app").await.unwrap().status, 200);
    gateway.stop().await;
}

/// Request smuggling: heads a proxy in front and the gateway could frame differently. hyper
/// refuses the ambiguous ones with a 400 and closes; with both Content-Length and
/// Transfer-Encoding the chunked framing wins and the connection is closed after the answer
/// (RFC 9112 §6.1), so whatever a front end took for the body is never read as a request.
#[tokio::test]
async fn smuggling_variants_are_refused_or_end_the_connection() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let smuggled = "GET /app?token=smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for (case, head) in [
        (
            "two different Content-Lengths",
            "POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "obs-fold",
            "GET /app HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "bare CR in a header",
            "GET /app HTTP/1.1\r\nHost: x\r\nX-Split: a\rb\r\n\r\n",
        ),
    ] {
        let received =
            raw_exchange(gateway.local_addr, format!("{head}{smuggled}").as_bytes()).await;
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 400 "), "{case}: {text}");
        assert_eq!(status_lines(&received), 1, "{case}: {text}");
    }
    assert_eq!(
        backend.requests(),
        0,
        "nothing ambiguous reached the backend"
    );
    for (case, head) in [
        (
            "Content-Length before Transfer-Encoding",
            "POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "Transfer-Encoding before Content-Length",
            "POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        ),
    ] {
        let started = Instant::now();
        let request = format!("{head}5\r\nhello\r\n0\r\n\r\n{smuggled}");
        let received = raw_exchange(gateway.local_addr, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{case}: {text}");
        assert!(text.contains("stdin: 5\n"), "{case}: the chunked body: {text}");
        assert_eq!(status_lines(&received), 1, "{case}: {text}");
        assert!(!text.contains("smuggled"), "{case}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{case}: closed, not timed out"
        );
    }
    assert_eq!(backend.requests(), 2, "only the two POSTs");
    assert_eq!(
        status_of(&gateway, "GET /app HTTP/1.1\r\nHost: x").await,
        200
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_body_announced_and_never_finished_gets_a_408() {
    let backend = backend().await;
    let gateway = start_gateway("client_body_timeout = \"300ms\"", &backend.address(), "").await;
    let started = Instant::now();
    let stalled = "POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this";
    let received = raw_exchange(gateway.local_addr, stalled.as_bytes()).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Over HTTP/2 the stalled stream gets the 408 and the connection serves its other
    // streams, meanwhile and after.
    type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;
    let mut connection = http2_connection::<Body>(&gateway).await;
    let announced = futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"only this")))])
        .chain(futures_util::stream::pending());
    let post = http::Request::post(format!("http://{}/app", gateway.local_addr))
        .header(http::header::CONTENT_LENGTH, "100")
        .body(StreamBody::new(announced).boxed_unsync())
        .unwrap();
    let started = Instant::now();
    let stalled = tokio::spawn(connection.send_request(post));
    let get = |path: &str| {
        h2_get(&gateway, path).map(|empty| empty.map_err(|never| match never {}).boxed_unsync())
    };
    let meanwhile = connection
        .send_request(get("/app?token=meanwhile"))
        .await
        .unwrap();
    assert_eq!(meanwhile.status(), 200);
    let answered = tokio::time::timeout(Duration::from_secs(5), stalled)
        .await
        .expect("the stalled stream is answered")
        .unwrap()
        .unwrap();
    assert_eq!(answered.status(), 408);
    assert!(
        started.elapsed() >= Duration::from_millis(250)
            && started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let after = connection
        .send_request(get("/app?token=after"))
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(
        backend.requests(),
        2,
        "the stalled bodies never reached the backend"
    );
    gateway.stop().await;
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// The GOAWAY error code for a peer that behaves abusively (RFC 9113 §7).
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// `:method GET`, `:scheme http`, `:path /`: static-table entries 2, 6 and 4 (RFC 7541).
const GET_ROOT_FIELDS: &[u8] = b"\x82\x86\x84";

/// One HTTP/2 frame (RFC 9113 §4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = length[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK string literal without Huffman coding: its length as a 7-bit prefix integer
/// (RFC 7541 §5.1, §5.2), then the bytes.
fn hpack_string(bytes: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::new();
    if bytes.len() < 127 {
        encoded.push(u8::try_from(bytes.len()).unwrap());
    } else {
        encoded.push(127);
        let mut rest = bytes.len() - 127;
        while rest >= 128 {
            encoded.push(u8::try_from(rest % 128).unwrap() | 0x80);
            rest /= 128;
        }
        encoded.push(u8::try_from(rest).unwrap());
    }
    encoded.extend_from_slice(bytes);
    encoded
}

/// The error code of the GOAWAY frame among what an HTTP/2 server sent, if there is one.
fn goaway_error(received: &[u8]) -> Option<u32> {
    let mut rest = received;
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let payload = rest.get(9..9 + length)?;
        if rest[3] == GOAWAY && payload.len() >= 8 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
        rest = &rest[9 + length..];
    }
    None
}

/// Sends `frames` after the preface and expects the connection to end at once with a GOAWAY
/// ENHANCE_YOUR_CALM; then a normal HTTP/2 request is served.
async fn assert_goaway_enhance_your_calm(gateway: &fcgate::server::RunningGateway, frames: &[u8]) {
    let mut attack = H2_PREFACE_AND_SETTINGS.to_vec();
    attack.extend_from_slice(frames);
    let started = Instant::now();
    let received = raw_exchange(gateway.local_addr, &attack).await;
    assert_eq!(
        goaway_error(&received),
        Some(ENHANCE_YOUR_CALM),
        "{received:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed, not timed out"
    );
    let mut client = HttpClient::http2(gateway.local_addr).await;
    assert_eq!(client.get("/app").await.unwrap().status, 200);
}

/// A header block continued for ever (the 2024 CONTINUATION flood): h2 allows a block as many
/// CONTINUATION frames as `max_header_list_size` needs (five here), then ends the connection,
/// instead of decoding and holding what the client keeps sending.
#[tokio::test]
async fn a_continuation_flood_ends_the_connection() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let mut flood = h2_frame(HEADERS, END_STREAM, 1, GET_ROOT_FIELDS);
    // Each a small, valid field (`x-a: b`, a literal without indexing), never END_HEADERS.
    let field = b"\x00\x03x-a\x01b";
    for _ in 0..20 {
        flood.extend(h2_frame(CONTINUATION, 0, 1, field));
    }
    assert_goaway_enhance_your_calm(&gateway, &flood).await;
    assert_eq!(backend.requests(), 1, "only the request after the flood");
    gateway.stop().await;
}

/// The HPACK bomb: one 4,000-byte value put in the dynamic table, then referenced 200 times
/// with one byte each, 4 KB on the wire that decode to 800 KB of header list. Past four
/// times `max_header_list_size` (twice `max_request_head`) h2 stops decoding and ends the
/// connection; nothing is allocated for the copies.
#[tokio::test]
async fn an_hpack_bomb_ends_the_connection() {
    let backend = backend().await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let mut block = GET_ROOT_FIELDS.to_vec();
    // A literal with incremental indexing and a new name: it becomes dynamic entry 62.
    block.push(0x40);
    block.extend(hpack_string(b"x-bomb"));
    block.extend(hpack_string(&[b'v'; 4000]));
    block.extend([0x80 | 62; 200]);
    let bomb = h2_frame(HEADERS, END_STREAM | END_HEADERS, 1, &block);
    assert_goaway_enhance_your_calm(&gateway, &bomb).await;
    assert_eq!(backend.requests(), 1, "only the request after the bomb");
    gateway.stop().await;
}

#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let backend = backend().await;
    let gateway = start_gateway("client_header_timeout = \"300ms\"", &backend.address(), "").await;
    // Idle right after the preface.
    let started = Instant::now();
    raw_exchange(gateway.local_addr, H2_PREFACE_AND_SETTINGS).await;
    let idle_after_preface = started.elapsed();
    // HEADERS without END_HEADERS (`:method GET`, flags 0), never continued.
    let mut unfinished = H2_PREFACE_AND_SETTINGS.to_vec();
    unfinished.extend_from_slice(b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82");
    let started = Instant::now();
    raw_exchange(gateway.local_addr, &unfinished).await;
    let unfinished_headers = started.elapsed();
    for (case, elapsed) in [
        ("idle after the preface", idle_after_preface),
        ("HEADERS without END_HEADERS", unfinished_headers),
    ] {
        assert!(
            elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(4),
            "{case}: closed after {elapsed:?}"
        );
    }
    // A connection in use is not idle: a request slower than the timeout completes.
    let mut client = HttpClient::http2(gateway.local_addr).await;
    assert_eq!(client.get("/app?sleep_ms=600").await.unwrap().status, 200);
    gateway.stop().await;
}

#[tokio::test]
async fn at_max_client_connections_idle_ones_make_room_and_busy_ones_do_not() {
    let backend = backend().await;
    let gateway = start_gateway("max_client_connections = 2", &backend.address(), "").await;
    let mut first = HttpClient::http1(gateway.local_addr).await;
    let mut second = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(first.get("/app").await.unwrap().status, 200);
    assert_eq!(second.get("/app").await.unwrap().status, 200);
    // Both idle: a third is served at once, in the place of the longest-idle one.
    let mut third = HttpClient::http1(gateway.local_addr).await;
    let answered = tokio::time::timeout(Duration::from_secs(2), third.get("/app"))
        .await
        .expect("an idle connection made room");
    assert_eq!(answered.unwrap().status, 200);
    assert_eq!(gateway.connections.open(), 2);
    // Both busy: a newcomer waits in the backlog until one of them is done.
    let slow = |mut client: HttpClient| {
        tokio::spawn(async move {
            client
                .get("/app?sleep_ms=700")
                .await
                .unwrap()
                .status
                .as_u16()
        })
    };
    let (busy_one, busy_two) = (slow(second), slow(third));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let waiting = first.get("/app").await.unwrap();
    assert_eq!(waiting.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "served while both connections were busy, after {:?}",
        started.elapsed()
    );
    assert_eq!(
        (busy_one.await.unwrap(), busy_two.await.unwrap()),
        (200, 200)
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_http2_connections_does_not_keep_clients_out() {
    let backend = backend().await;
    let gateway = start_gateway("max_client_connections = 20", &backend.address(), "").await;
    let mut flood = Vec::new();
    for _ in 0..60 {
        let mut idle = tokio::net::TcpStream::connect(gateway.local_addr)
            .await
            .unwrap();
        idle.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
        flood.push(idle);
    }
    support::wait_until("the gateway holds its limit", || {
        gateway.connections.open() == 20
    })
    .await;
    for round in 0..5 {
        let started = Instant::now();
        let mut client = HttpClient::http1(gateway.local_addr).await;
        let response = client.get("/app").await.unwrap();
        assert_eq!(response.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "round {round}: {:?}",
            started.elapsed()
        );
    }
    assert!(gateway.connections.open() <= 20);
    drop(flood);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_connection_after_send_timeout() {
    let backend = backend().await;
    let gateway = start_gateway("send_timeout = \"500ms\"", &backend.address(), "").await;
    let mut reader_that_never_reads = tokio::net::TcpStream::connect(gateway.local_addr)
        .await
        .unwrap();
    reader_that_never_reads
        .write_all(b"GET /app?size=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    support::wait_until("the connection is opened", || {
        gateway.connections.open() == 1
    })
    .await;
    // The socket buffers fill, the write stalls, and 500 ms later the connection is closed,
    // its 50 MB spool with it: the client's socket is still open all along.
    support::wait_until("the stalled connection is closed", || {
        gateway.connections.open() == 0
    })
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/app").await.unwrap().status, 200);
    drop(reader_that_never_reads);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_held_at_once_are_bounded() {
    let backend = backend().await;
    let gateway = start_gateway(
        "max_request_body_buffer_total = \"100KiB\"",
        &backend.address(),
        "",
    )
    .await;
    let post = |length: usize| {
        http::Request::post("/app")
            .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                b'x';
                length
            ])))
            .unwrap()
    };
    // A body that holds 80 KiB of the budget: announced, then stalled.
    let mut stalled = tokio::net::TcpStream::connect(gateway.local_addr)
        .await
        .unwrap();
    stalled
        .write_all(b"POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 81920\r\n\r\nstart")
        .await
        .unwrap();
    support::wait_until("the stalled body holds its share", || {
        gateway.gateway.request_body_bytes_held() == 81_920
    })
    .await;
    let mut client = HttpClient::http2(gateway.local_addr).await;
    let refused = client.send(post(40 << 10)).await.unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(client.send(post(10 << 10)).await.unwrap().status, 200);
    drop(stalled);
    support::wait_until("the stalled body's share is given back", || {
        gateway.gateway.request_body_bytes_held() == 0
    })
    .await;
    assert_eq!(client.send(post(40 << 10)).await.unwrap().status, 200);
    gateway.stop().await;
}

/// An HTTP/2 client that keeps its connection but never reads one stream: the server cannot
/// send (flow control), so no write stalls on the socket; the spooled rest of that response is
/// dropped after send_timeout instead of being held as long as the connection lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_http2_stream_loses_its_spooled_response_after_send_timeout() {
    let backend = backend().await;
    let gateway = start_gateway("send_timeout = \"500ms\"", &backend.address(), "").await;
    let mut connection = http2_connection(&gateway).await;
    let response = connection
        .send_request(h2_get(&gateway, "/app?size=20000000"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Not a byte read for twice send_timeout: the flow-control windows fill and stay full.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let read = response.into_body().collect().await;
    assert!(
        read.is_err(),
        "the 20 MB response was still held for the client"
    );
    gateway.stop().await;
}

/// A client that leaves while the app is silent mid-response: dropping its body wakes the pump
/// at once, which aborts the request; it does not wait for the app's next record or for
/// read_timeout (a minute here) to free the backend's worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_the_app_is_silent_aborts_the_request_at_once() {
    let backend = backend().await;
    let relay = CountingRelay::start(backend.address()).await;
    let gateway = start_gateway("", &relay.address(), "read_timeout = \"60s\"").await;
    let mut client = tokio::net::TcpStream::connect(gateway.local_addr)
        .await
        .unwrap();
    // The head, then a minute of silence before the (empty) body and END_REQUEST.
    client
        .write_all(b"GET /app?body=&end_delay_ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let mut buffer = [0u8; 1024];
        let read = client.read(&mut buffer).await.unwrap();
        assert_ne!(read, 0, "closed before the head: {head:?}");
        head.extend_from_slice(&buffer[..read]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"), "{head:?}");
    let left = Instant::now();
    drop(client);
    support::wait_until("the backend sees the abort", || {
        relay.abort_requests_seen() == 1
    })
    .await;
    assert!(
        left.elapsed() < Duration::from_secs(2),
        "the abort came {:?} after the client left",
        left.elapsed()
    );
    gateway.stop().await;
}

/// The `fcgate` binary as a child process, for what only the process shows: the log it writes
/// on stderr (collected by a thread, raw bytes and all) and the descriptor limit it runs
/// under. Killed on drop.
struct GatewayProcess {
    child: std::process::Child,
    address: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _directory: tempfile::TempDir,
}

impl GatewayProcess {
    /// `fcgate --config` on a file with the top-level `settings` and `backend` as its
    /// upstream; under `ulimit -n max_open_files` when given.
    fn start(backend: &TestBackend, settings: &str, max_open_files: Option<u32>) -> GatewayProcess {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let directory = tempfile::tempdir().unwrap();
        let config = directory.path().join("fcgate.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\naccess_log = \"off\"\n{settings}\n\
             [upstream]\nservers = [\"{}\"]\n",
            backend.address()
        );
        std::fs::write(&config, text).unwrap();
        let binary = env!("CARGO_BIN_EXE_fcgate");
        let mut command = match max_open_files {
            None => Command::new(binary),
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
        };
        let mut child = command
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let address = support::listening_authority(&mut child).parse().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let collected = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut line = Vec::new();
            while stderr
                .read_until(b'\n', &mut line)
                .is_ok_and(|read| read > 0)
            {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        GatewayProcess {
            child,
            address,
            log,
            _directory: directory,
        }
    }

    /// Everything logged so far.
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app's STDERR reaches the log one line per line, each tagged with its request, and with
/// control characters escaped: a carriage return cannot hide or forge a log line, an escape
/// sequence cannot recolour a terminal (`escape_log_text` has unit tests; this is the wiring,
/// in the log the binary writes). A streamed body cut at its Content-Length is named there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_stderr_is_logged_escaped_and_an_overrun_is_named() {
    let backend = backend().await;
    let gateway = GatewayProcess::start(&backend, STREAMED, None);
    let mut client = HttpClient::http1(gateway.address).await;
    let stderr = "first\rFORGED INFO all good\nsecond\u{1b}[31mred\r\n";
    let path = format!("/app?stderr={}", encode(stderr));
    assert_eq!(client.get(&path).await.unwrap().status, 200);
    let cut = client
        .get("/app?size=20000&content_length=10000")
        .await
        .unwrap();
    assert!(cut.body == pattern_bytes(10_000));
    support::wait_until("the app's stderr and the overrun are logged", || {
        let log = gateway.log();
        log.contains("[31mred") && log.contains("backend sent more data than declared")
    })
    .await;
    let log = gateway.log();
    assert!(
        log.contains(r"backend stderr: first\rFORGED INFO all good"),
        "{log}"
    );
    assert!(
        log.contains(r"backend stderr: second\u{1b}[31mred"),
        "{log}"
    );
    assert!(
        !log.contains(['\r', '\u{1b}']),
        "raw control characters: {log:?}"
    );
    for line in log
        .lines()
        .filter(|line| line.contains("FORGED") || line.contains("[31mred"))
    {
        assert!(line.contains("request="), "a line of its own: {line}");
    }
    let overrun = log
        .lines()
        .find(|line| line.contains("backend sent more data than declared"))
        .unwrap();
    assert!(
        overrun.contains("declared=10000") && overrun.contains("sent=20000"),
        "{overrun}"
    );
}
/// Out of file descriptors, accepting pauses (a second, or until a connection closes) with a
/// line per pause, instead of failing and logging every few milliseconds; once descriptors are
/// free the gateway serves again. The binary runs under `ulimit -n 64` with
/// `max_client_connections` far above it, so the descriptors run out first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_accept_pauses_and_recovers() {
    let backend = backend().await;
    let gateway = GatewayProcess::start(&backend, "max_client_connections = 1000", Some(64));
    // Each a request in flight, a body announced and never sent: none is idle, so no
    // connection can be closed to make room. The ones not accepted wait in the backlog.
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut stream = tokio::net::TcpStream::connect(gateway.address)
            .await
            .unwrap();
        stream
            .write_all(b"POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            .await
            .unwrap();
        stalled.push(stream);
    }
    support::wait_until("accept runs out of descriptors", || {
        gateway.log().contains("accept failed")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = gateway.log();
    let failures = log.matches("accept failed").count();
    // At one a second: the first and two more at most (every 50 ms, it was forty).
    assert!(
        (1..=4).contains(&failures),
        "{failures} accept failures logged in 2 s:\n{log}"
    );
    assert!(log.contains("Too many open files"), "{log}");
    drop(stalled);
    let mut client = HttpClient::http1(gateway.address).await;
    let served = tokio::time::timeout(Duration::from_secs(10), client.get("/app"))
        .await
        .expect("served again once descriptors were free");
    assert_eq!(served.unwrap().status, 200);
}
