//! Idle HTTP/1.1 keep-alive connections are parked: hyper's per-connection state is dropped
//! between requests and rebuilt when the next one arrives (`client_connection.rs`). Checked
//! over real sockets against the project's test backend: a parked connection serves its next
//! request, bytes pipelined before a park are not lost, idle and shutdown closes still happen,
//! connections the client asked to close are closed, and a parked connection holds a few KiB of
//! heap where an unparked one held about 20 KiB (counted by the allocator, not timed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::alloc::System;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use fcgate::server::RunningGateway;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use support::{start_gateway, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One backend connection, never multiplexed: the backend side holds the same memory whatever
/// the clients do.
const UPSTREAM: &str = "max_conns = 1\nmultiplex = \"off\"";

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// One response's head and body, read by its Content-Length or, when the gateway streamed it
/// (the backend's END_REQUEST came after its head on a loaded machine), by its chunks; `None`
/// at end of stream.
async fn read_response(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let head = read_line_block(stream, b"\r\n\r\n").await?;
    let head = String::from_utf8(head).unwrap();
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim() == "chunked"
        })
    });
    if !chunked {
        let mut body = vec![0u8; content_length(&head)];
        stream.read_exact(&mut body).await.unwrap();
        return Some((head, body));
    }
    let mut body = Vec::new();
    loop {
        let size_line = read_line_block(stream, b"\r\n").await.unwrap();
        let size_text = String::from_utf8(size_line).unwrap();
        let size = usize::from_str_radix(size_text.trim(), 16).unwrap();
        let mut chunk = vec![0u8; size + 2];
        stream.read_exact(&mut chunk).await.unwrap();
        if size == 0 {
            return Some((head, body));
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// Bytes up to and including `end`, read one at a time so nothing after it is consumed;
/// `None` when the stream ends before the first byte.
async fn read_line_block(stream: &mut TcpStream, end: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    while !bytes.ends_with(end) {
        let mut byte = [0u8];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await {
            Ok(Ok(1)) => bytes.push(byte[0]),
            Ok(Ok(_)) | Ok(Err(_)) if bytes.is_empty() => return None,
            other => panic!("response cut after {bytes:?}: {other:?}"),
        }
    }
    Some(bytes)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

fn status(head: &str) -> &str {
    head.split(' ').nth(1).unwrap()
}

/// The test backend and a gateway in front of it with the extra top-level `settings`.
async fn start(settings: &str) -> (TestBackend, RunningGateway) {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let gateway = start_gateway(settings, &backend.address(), UPSTREAM).await;
    (backend, gateway)
}

/// A client connection that got one answer and has been parked since.
async fn parked_client(gateway: &RunningGateway) -> TcpStream {
    let mut client = TcpStream::connect(gateway.local_addr).await.unwrap();
    client.write_all(get("/").as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut client).await.expect("an answer");
    assert_eq!(status(&head), "200", "{head}");
    wait_until("the connection is parked", || {
        gateway.connections.parked() == 1
    })
    .await;
    client
}

/// Waits for the server to close `stream`; panics if it sends anything or stays open 10 s.
async fn assert_closed_by_server(stream: &mut TcpStream) {
    let mut byte = [0u8];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("unexpected bytes instead of a close"),
        Err(_) => panic!("the server kept the connection open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_serves_its_next_request_and_parks_again() {
    let (backend, gateway) = start("").await;
    let mut client = TcpStream::connect(gateway.local_addr).await.unwrap();
    for round in 1..=3 {
        client
            .write_all(get(&format!("/?round={round}")).as_bytes())
            .await
            .unwrap();
        let (head, _) = read_response(&mut client).await.expect("an answer");
        assert_eq!(status(&head), "200", "{head}");
        wait_until("the connection is parked", || {
            gateway.connections.parked() == 1
        })
        .await;
    }
    assert_eq!(gateway.connections.open(), 1);
    assert_eq!(backend.requests(), 3);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_pipelined_request_read_before_the_park_is_completed_after_it() {
    let (backend, gateway) = start("").await;
    let mut client = TcpStream::connect(gateway.local_addr).await.unwrap();
    let second = get("/?second");
    let (second_start, second_rest) = second.split_at(9);
    client
        .write_all(format!("{}{second_start}", get("/?first")).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_response(&mut client).await.expect("the first answer");
    assert_eq!(status(&head), "200", "{head}");
    assert!(String::from_utf8_lossy(&body).contains("first"));
    // Past the park delay: hyper was asked to finish holding those 9 bytes.
    tokio::time::sleep(fcgate::client_connection::PARK_AFTER * 2 + Duration::from_millis(500))
        .await;
    client.write_all(second_rest.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut client).await.expect("the second answer");
    assert_eq!(status(&head), "200", "{head}");
    assert!(String::from_utf8_lossy(&body).contains("second"));
    assert_eq!(backend.requests(), 2);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_closed_after_client_header_timeout() {
    let (_backend, gateway) = start("client_header_timeout = \"3s\"").await;
    let mut client = parked_client(&gateway).await;
    assert_closed_by_server(&mut client).await;
    wait_until("the connection is gone", || gateway.connections.open() == 0).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_is_closed_after_client_header_timeout() {
    let (backend, gateway) = start("client_header_timeout = \"1s\"").await;
    let mut silent = TcpStream::connect(gateway.local_addr).await.unwrap();
    assert_closed_by_server(&mut silent).await;
    // Half a request line is not enough either: hyper's header timer answers 408 and closes.
    let mut trickling = TcpStream::connect(gateway.local_addr).await.unwrap();
    trickling.write_all(b"GET /slo").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), trickling.read_to_end(&mut answer))
        .await
        .expect("the server kept the connection open")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(backend.requests(), 0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_parked_connections_at_once() {
    let (_backend, gateway) = start("shutdown_timeout = \"60s\"").await;
    let mut client = parked_client(&gateway).await;
    // Were the parked connection left to shutdown_timeout, this would take 60 s.
    tokio::time::timeout(Duration::from_secs(10), gateway.stop())
        .await
        .expect("shutdown waited on a parked connection");
    assert_closed_by_server(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_client_asks_to_close_are_closed_not_parked() {
    let (backend, gateway) = start("").await;
    let requests = [
        "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: test\r\n\r\n",
    ];
    for request in requests {
        let mut client = TcpStream::connect(gateway.local_addr).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut client).await.expect("an answer");
        assert_eq!(status(&head), "200", "{request:?}: {head}");
        assert_closed_by_server(&mut client).await;
    }
    wait_until("both connections are gone", || {
        gateway.connections.open() == 0
    })
    .await;
    assert_eq!(gateway.connections.parked(), 0);
    assert_eq!(backend.requests(), 2);
    gateway.stop().await;
}

/// Sends one GET on a blocking socket and reads its answer: the std socket allocates nothing,
/// so what the allocator counts below is the gateway's (and the in-process backend's).
fn blocking_request(addr: SocketAddr) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(get("/").as_bytes()).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "closed before the answer was complete");
        received.extend_from_slice(&buffer[..read]);
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = std::str::from_utf8(&received[..end + 4]).unwrap();
            if received.len() >= end + 4 + content_length(head) {
                assert_eq!(status(head), "200", "{head}");
                return stream;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_holds_a_few_kib_of_heap() {
    const CLIENTS: usize = 200;
    let (backend, gateway) = start("").await;
    let addr = gateway.local_addr;
    // The backend connection and the pool's state are set up before counting.
    drop(tokio::task::spawn_blocking(move || blocking_request(addr)).await);
    wait_until("the warm-up connection is gone", || {
        gateway.connections.open() == 0
    })
    .await;

    let region = Region::new(GLOBAL);
    let clients = tokio::task::spawn_blocking(move || {
        (0..CLIENTS)
            .map(|_| blocking_request(addr))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let answered = region.change();
    wait_until("every connection is parked", || {
        gateway.connections.parked() == CLIENTS
    })
    .await;
    let parked = region.change();
    // stats_alloc counts a reallocation's growth in bytes_allocated (its shrinking in
    // bytes_deallocated) as well as in bytes_reallocated.
    let live = |change: stats_alloc::Stats| {
        change.bytes_allocated as isize - change.bytes_deallocated as isize
    };
    let per_parked_connection = live(parked) / CLIENTS as isize;
    println!(
        "live heap per connection: {} bytes right after the answers, {per_parked_connection} once parked",
        live(answered) / CLIENTS as isize
    );
    // hyper's buffers and cached headers alone are about 17 KiB; the task and its socket
    // registration are what is left.
    assert!(
        per_parked_connection < 4 * 1024,
        "{per_parked_connection} bytes of heap per parked connection"
    );
    assert_eq!(backend.connections_accepted(), 1);
    drop(clients);
    gateway.stop().await;
}
