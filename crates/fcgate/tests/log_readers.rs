//! The access log read by the tools that read nginx's: goaccess, with its stock `COMBINED`
//! format, must parse every line fcgate writes (odd bytes, quotes, requests fcgate or hyper
//! refused) and count what the clients got.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::{raw_exchange, HttpClient};
use http::Request;
use http_body_util::Full;

async fn wait_for_lines(path: &std::path::Path, count: usize) -> String {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= count {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {count} lines in {}", path.display());
}

#[tokio::test]
async fn goaccess_parses_every_line_and_counts_what_the_clients_got() {
    if !support::tool_available("goaccess", "goaccess", "the access-log reader check") {
        return;
    }
    let backend = TestBackend::start(BackendOptions::default()).await;
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("access.log");
    let settings = format!("access_log = '{}'", log.display());
    let gateway = support::start_gateway(&settings, &backend.address(), "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let mut body_bytes = 0;
    let with_headers = Request::get("/shop/caf%C3%A9?q=%22x%22&size=300")
        .header("Referer", "https://example.com/list?a=\"b\"")
        .header(
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) \"quoted\" back\\slash",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = client.send(with_headers).await.unwrap();
    assert_eq!(answer.status, 200);
    body_bytes += answer.body.len();
    let not_found = client.get("/gone?status=404&size=20").await.unwrap();
    assert_eq!(not_found.status, 404);
    body_bytes += not_found.body.len();
    let post = Request::post("/form?size=50")
        .body(Full::new(Bytes::from_static(b"name=value")))
        .unwrap();
    let posted = client.send(post).await.unwrap();
    assert_eq!(posted.status, 200);
    body_bytes += posted.body.len();
    let head = Request::head("/app?size=70")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.send(head).await.unwrap().status, 200);
    // Refused by fcgate (a Host that is not an authority) and by hyper (not a request line):
    // lines nginx also writes, which fail2ban and goaccess read for scanners.
    let refused = raw_exchange(
        gateway.local_addr,
        b"GET /x HTTP/1.1\r\nHost: a b\r\nUser-Agent: \"evil\"\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with(b"HTTP/1.1 400 "));
    let garbage = raw_exchange(gateway.local_addr, b"\x16\x03\x01 not http\r\n\r\n").await;
    assert!(garbage.starts_with(b"HTTP/1.1 400 "));
    // fcgate's own 400 bodies count as sent bytes, as nginx counts its error pages.
    let body_of = |raw: &[u8]| {
        let text = String::from_utf8_lossy(raw);
        text.split_once("\r\n\r\n")
            .map_or(0, |(_, body)| body.len())
    };
    body_bytes += body_of(&refused) + body_of(&garbage);
    let text = wait_for_lines(&log, 6).await;

    let report = directory.path().join("report.json");
    let output = Command::new("goaccess")
        .arg(&log)
        .args(["--log-format=COMBINED", "--no-global-config", "-o"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(output.status.success(), "goaccess failed: {output:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let general = &report["general"];
    assert_eq!(general["total_requests"], 6, "{general}\n{text}");
    assert_eq!(general["failed_requests"], 0, "{general}\n{text}");
    let bytes = &report["status_codes"]["metadata"]["bytes"]["total"]["value"];
    assert_eq!(bytes, body_bytes, "bytes goaccess counted\n{text}");
    let sites = report["referring_sites"]["data"].to_string();
    assert!(sites.contains("example.com"), "{sites}");
    let statuses = report["status_codes"]["data"].to_string();
    for class in ["2xx", "4xx"] {
        assert!(statuses.contains(class), "{statuses}");
    }
}
