//! The slow reader paces itself, follows Content-Length and chunked framing, checks the body
//! pattern, and can vanish halfway, which the server sees as a failed write.

use std::net::SocketAddr;
use std::time::Duration;

use fcgi_testkit::http::{slow_get, SlowRead};
use fcgi_testkit::pattern_from;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// How the one-shot server frames its pattern body.
#[derive(Clone, Copy)]
enum Framing {
    ContentLength,
    Chunked { chunk: usize },
}

/// Serves one connection: reads the request head, answers `size` pattern bytes, and reports
/// whether every byte was written.
async fn serve_once(
    size: usize,
    framing: Framing,
) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut request = Vec::new();
        let mut piece = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut piece).await?;
            assert!(read > 0, "the client closed before its request ended");
            request.extend_from_slice(&piece[..read]);
        }
        assert!(request.starts_with(b"GET /slow?x=1 HTTP/1.1\r\n"));
        match framing {
            Framing::ContentLength => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
                stream.write_all(head.as_bytes()).await?;
                for offset in (0..size).step_by(64 * 1024) {
                    let length = (64 * 1024).min(size - offset);
                    stream.write_all(&pattern_from(offset, length)).await?;
                }
            }
            Framing::Chunked { chunk } => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await?;
                for offset in (0..size).step_by(chunk) {
                    let length = chunk.min(size - offset);
                    stream
                        .write_all(format!("{length:x}\r\n").as_bytes())
                        .await?;
                    stream.write_all(&pattern_from(offset, length)).await?;
                    stream.write_all(b"\r\n").await?;
                }
                stream.write_all(b"0\r\n\r\n").await?;
            }
        }
        stream.shutdown().await
    });
    (addr, task)
}

fn at(bytes_per_second: u64) -> SlowRead {
    SlowRead {
        bytes_per_second,
        give_up_after: None,
        deadline: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn reads_a_content_length_body_at_the_given_rate() {
    let size = 128 * 1024;
    let (addr, server) = serve_once(size, Framing::ContentLength).await;
    let response = slow_get(addr, "/slow?x=1", at(256 * 1024)).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_len, size as u64);
    assert!(response.complete && response.body_is_pattern);
    // 128 KiB at 256 KiB/s: half a second, less what came with the head.
    assert!(
        response.elapsed >= Duration::from_millis(400),
        "{:?} is too fast",
        response.elapsed
    );
    assert!(response.elapsed < Duration::from_secs(5));
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn follows_chunked_framing() {
    let (addr, server) = serve_once(20_000, Framing::Chunked { chunk: 7_000 }).await;
    let response = slow_get(addr, "/slow?x=1", at(10 << 20)).await.unwrap();
    assert_eq!(response.body_len, 20_000);
    assert!(response.complete && response.body_is_pattern);
    assert_eq!(
        response.header("transfer-encoding"),
        Some("chunked"),
        "{:?}",
        response.headers
    );
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn gives_up_after_n_bytes_and_the_server_sees_the_client_vanish() {
    let size = 32 << 20;
    let (addr, server) = serve_once(size, Framing::ContentLength).await;
    let read = SlowRead {
        give_up_after: Some(16 * 1024),
        ..at(1 << 20)
    };
    let response = slow_get(addr, "/slow?x=1", read).await.unwrap();
    assert!(!response.complete);
    assert!(response.body_is_pattern);
    assert!(
        (16 * 1024..64 * 1024).contains(&response.body_len),
        "{} bytes read",
        response.body_len
    );
    let written = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server noticed the client leave")
        .unwrap();
    assert!(
        written.is_err(),
        "the server could not write the whole body"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_an_error_at_the_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let read = SlowRead {
        deadline: Duration::from_millis(200),
        ..at(1024)
    };
    assert!(slow_get(addr, "/slow?x=1", read).await.is_err());
    drop(listener);
}
