//! The admin listener against a real php-fpm: `/metrics` passes `promtool check metrics`
//! (Debian's `prometheus`) and its figures agree with the traffic sent — responses by status
//! class, queue waits, connections opened versus reused, the cap and where it came from — and
//! the listener answers only what it serves. Skips (loudly) without php-fpm or promtool, and
//! fails instead under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;
use fcgi_testkit::http::HttpClient;
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use http::{Request, StatusCode};
use http_body_util::Full;
use support::start_gateway;

/// Whether `promtool` runs here; under CI its absence is a failure.
fn promtool_available() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none_or(|ci| ci != "true"),
            "promtool is missing: install Debian's `prometheus` package (scripts/test does)"
        );
        eprintln!("WARNING: promtool not installed; SKIPPING the /metrics format check");
    }
    found
}

/// `promtool check metrics` on `text`: its verdict and what it printed.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The value of the sample whose name and labels are exactly `series`, e.g.
/// `fcgate_http_requests_total{status_class="2xx"}`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

async fn scrape(admin: std::net::SocketAddr) -> String {
    let response = HttpClient::http1(admin)
        .await
        .get("/metrics")
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let content_type = response.headers[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    String::from_utf8(response.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_agree_with_the_traffic_sent_to_php_fpm() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions {
        max_children: 2,
        ..PhpFpmOptions::default()
    })
    .await
    else {
        return;
    };
    let settings = format!(
        "admin_listen = \"127.0.0.1:0\"\nfront_controller = false\nroot = '{}'",
        fpm.docroot().display()
    );
    let gateway = start_gateway(&settings, &fpm.address(), "max_conns = 2").await;
    let admin = gateway.admin_addr.expect("admin_listen was set");

    let mut client = HttpClient::http1(gateway.local_addr).await;
    for _ in 0..20 {
        let response = client.get("/hello.php").await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
    }
    for _ in 0..3 {
        let response = client.get("/no-such-file.txt").await.unwrap();
        assert_eq!(response.status, StatusCode::NOT_FOUND);
    }
    // Six requests holding a worker for 200 ms each on a cap of 2: four of them queue.
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let address = gateway.local_addr;
            tokio::spawn(async move {
                let mut client = HttpClient::http1(address).await;
                client.get("/sleep.php?ms=200").await.unwrap().status
            })
        })
        .collect();
    for request in slow {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }

    let text = scrape(admin).await;
    if promtool_available() {
        let (passed, printed) = promtool_check(&text);
        assert!(passed, "promtool check metrics failed:\n{printed}\n{text}");
        assert!(printed.trim().is_empty(), "promtool lint:\n{printed}");
    }
    let server = fpm.address().to_string();
    let labelled = |name: &str, extra: &str| format!("{name}{{server=\"{server}\"{extra}}}");
    assert_eq!(
        sample(&text, "fcgate_http_requests_total{status_class=\"2xx\"}"),
        26.0
    );
    assert_eq!(
        sample(&text, "fcgate_http_requests_total{status_class=\"4xx\"}"),
        3.0,
        "fcgate's own 404s count too"
    );
    assert_eq!(
        sample(
            &text,
            &labelled("fcgate_backend_responses_total", ",status_class=\"2xx\"")
        ),
        26.0
    );
    assert_eq!(
        sample(
            &text,
            &labelled("fcgate_backend_responses_total", ",status_class=\"4xx\"")
        ),
        0.0,
        "the static 404s never reached php-fpm"
    );
    assert_eq!(
        sample(
            &text,
            &labelled("fcgate_backend_queue_wait_seconds_count", "")
        ),
        26.0
    );
    // The four that queued waited at least one 200 ms request out.
    let waited_long = 26.0
        - sample(
            &text,
            &labelled("fcgate_backend_queue_wait_seconds_bucket", ",le=\"0.1\""),
        );
    assert!(waited_long >= 4.0, "{waited_long} waits above 100 ms");
    let opened = sample(
        &text,
        &labelled("fcgate_backend_connections_opened_total", ""),
    );
    let reused = sample(
        &text,
        &labelled("fcgate_backend_connection_reuses_total", ""),
    );
    assert!(opened <= 2.0, "never more than the cap: {opened}");
    assert_eq!(opened + reused, 26.0);
    let stats = gateway.gateway.upstream().servers()[0].pool().stats();
    assert_eq!(
        sample(
            &text,
            &labelled(
                "fcgate_backend_connection_cap",
                &format!(",source=\"{}\"", stats.cap_source)
            )
        ),
        2.0
    );
    assert_eq!(
        sample(&text, "fcgate_http_request_duration_seconds_count"),
        29.0
    );
    // The first client is still open; the six slow ones may not all be seen closed yet.
    let http1 = sample(&text, "fcgate_client_connections{protocol=\"http1\"}");
    assert!((1.0..=7.0).contains(&http1), "{http1}");
}

#[tokio::test]
async fn the_admin_listener_serves_only_its_pages() {
    let backend =
        fcgi_testkit::backend::TestBackend::start(fcgi_testkit::backend::BackendOptions::default())
            .await;
    let gateway = start_gateway("admin_listen = \"127.0.0.1:0\"", &backend.address(), "").await;
    let admin = gateway.admin_addr.unwrap();
    let mut client = HttpClient::http1(admin).await;

    let root = client.get("/").await.unwrap();
    assert_eq!(root.status, StatusCode::FOUND);
    assert_eq!(root.headers[http::header::LOCATION], "/status");
    let missing = client.get("/index.php").await.unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let post = client
        .send(
            Request::post("/metrics")
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(backend.requests(), 0, "admin requests never reach the app");

    let json = client.get("/status.json").await.unwrap();
    assert_eq!(json.status, StatusCode::OK);
    assert_eq!(json.headers[http::header::CACHE_CONTROL], "no-store");
    let report: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(
        report["servers"][0]["address"],
        backend.address().to_string()
    );
}

#[tokio::test]
async fn without_admin_listen_nothing_is_bound() {
    let backend =
        fcgi_testkit::backend::TestBackend::start(fcgi_testkit::backend::BackendOptions::default())
            .await;
    let gateway = start_gateway("", &backend.address(), "").await;
    assert!(gateway.admin_addr.is_none());
}
