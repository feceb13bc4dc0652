//! The HTTP client keeps connections alive, reconnects, speaks HTTP/2; the load runner is bounded
//! and counts every request once; raw_exchange returns what the server wrote.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fcgi_testkit::http::{raw_exchange, run_load, HttpClient};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// An HTTP/1.1 + h2c server that describes each request back. `/close` answers with
/// `Connection: close`; `/hang` never answers.
async fn start_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service =
                    service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        if parts.uri.path() == "/hang" {
                            std::future::pending::<()>().await;
                        }
                        let host = parts
                            .headers
                            .get(http::header::HOST)
                            .map(|host| host.to_str().unwrap().to_owned())
                            .or_else(|| parts.uri.authority().map(ToString::to_string))
                            .unwrap_or_default();
                        let description = format!(
                            "{} {} host={host} version={:?} body={}",
                            parts.method,
                            parts.uri.path_and_query().unwrap(),
                            parts.version,
                            body.len()
                        );
                        let mut response = http::Response::new(Full::new(Bytes::from(description)));
                        if parts.uri.path() == "/close" {
                            response.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, Infallible>(response)
                    });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn http1_keeps_one_connection_alive_and_sets_host() {
    let (addr, connections) = start_server().await;
    let mut client = HttpClient::http1(addr).await;
    let first = client.get("/one?x=1").await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(
        first.text(),
        format!("GET /one?x=1 host={addr} version=HTTP/1.1 body=0")
    );
    let post = http::Request::post("/upload")
        .body(Full::new(Bytes::from_static(b"twelve bytes")))
        .unwrap();
    let second = client.send(post).await.unwrap();
    assert_eq!(
        second.text(),
        format!("POST /upload host={addr} version=HTTP/1.1 body=12")
    );
    assert_eq!(client.connections_opened(), 1);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http1_reconnects_after_the_server_closes() {
    let (addr, connections) = start_server().await;
    let mut client = HttpClient::http1(addr).await;
    let closing = client.get("/close").await.unwrap();
    assert_eq!(closing.header("connection"), Some("close"));
    let after = client.get("/after").await.unwrap();
    assert!(after.text().starts_with("GET /after "), "{}", after.text());
    assert_eq!(client.connections_opened(), 2);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http2_prior_knowledge_multiplexes_on_one_connection() {
    let (addr, connections) = start_server().await;
    let mut client = HttpClient::http2(addr).await;
    for path in ["/a", "/b?c=d"] {
        let response = client.get(path).await.unwrap();
        assert_eq!(
            response.text(),
            format!("GET {path} host={addr} version=HTTP/2.0 body=0")
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn load_runs_every_request_once_over_capped_connections() {
    let (addr, connections) = start_server().await;
    let report = run_load(
        addr,
        200,
        8,
        Duration::from_secs(30),
        |index| {
            http::Request::get(format!("/item?i={index}"))
                .body(Full::new(Bytes::new()))
                .unwrap()
        },
        |index, response| response.text().contains(&format!("/item?i={index} ")),
    )
    .await;
    assert_eq!(report.count(200), 200, "{report:?}");
    assert_eq!(report.bodies_ok, 200);
    assert_eq!(report.transport_errors, 0);
    assert!(report.slowest <= report.elapsed);
    assert_eq!(connections.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn load_stops_at_the_deadline_and_counts_the_unanswered() {
    let (addr, _) = start_server().await;
    let report = run_load(
        addr,
        10,
        2,
        Duration::from_millis(300),
        |_| {
            http::Request::get("/hang")
                .body(Full::new(Bytes::new()))
                .unwrap()
        },
        |_, _| true,
    )
    .await;
    assert_eq!(report.responses(), 0);
    assert_eq!(report.transport_errors, 10);
    assert!(report.elapsed < Duration::from_secs(5), "{report:?}");
}

#[tokio::test]
async fn raw_exchange_returns_what_the_server_wrote() {
    let (addr, _) = start_server().await;
    let answer = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.ends_with("GET / host=x version=HTTP/1.1 body=0"),
        "{text}"
    );

    let malformed = raw_exchange(addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    let text = String::from_utf8_lossy(&malformed);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}
