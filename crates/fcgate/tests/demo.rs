//! The bundled demo app as a test peer for other gateways (`bench/interop.sh`): through fcgate
//! it answers N pattern bytes with their length, any status, and a checksum of the body it got.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use fcgi::net::Address;
use fcgi_testkit::http::HttpClient;
use http_body_util::Full;
use tokio_util::sync::CancellationToken;

/// FNV-1a, 64 bits, as the demo app reports it.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_app_answers_sizes_statuses_and_body_checksums() {
    let directory = tempfile::tempdir().unwrap();
    let address = Address::Unix(directory.path().join("demo.sock"));
    let shutdown = CancellationToken::new();
    let demo = tokio::spawn({
        let address = address.clone();
        let shutdown = shutdown.clone();
        async move { fcgate::demo::serve(&address, shutdown).await }
    });
    support::wait_until("the demo app listens", || {
        directory.path().join("demo.sock").exists()
    })
    .await;
    let gateway = support::start_gateway("", &address, "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;

    let big = client.get("/x?bytes=5242880").await.unwrap();
    assert_eq!(big.status, 200);
    assert_eq!(big.header("content-length"), Some("5242880"));
    let expected: Vec<u8> = b"0123456789abcdef"
        .iter()
        .copied()
        .cycle()
        .take(5 << 20)
        .collect();
    assert!(big.body == expected, "the 5 MiB pattern arrived altered");

    let missing = client.get("/x?status=404").await.unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-demo"), Some("page"));

    let body: Vec<u8> = (0..1 << 20).map(|index| (index % 251) as u8).collect();
    let post = http::Request::post("/upload")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let answer = client.send(post).await.unwrap().text();
    assert!(answer.contains("body bytes: 1048576\n"), "{answer}");
    assert!(
        answer.contains(&format!("body fnv1a64: {:016x}\n", fnv1a64(&body))),
        "{answer}"
    );
    gateway.stop().await;
    shutdown.cancel();
    demo.await.unwrap().unwrap();
}
