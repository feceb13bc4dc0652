//! The admin listener: `/metrics` passes `promtool check metrics` (Debian's `prometheus`) and
//! its figures agree with the traffic sent — against a real php-fpm, responses by status class,
//! queue waits, connections opened versus reused, the cap and where it came from; against the
//! test backend, what php-fpm cannot be made to do on cue: retries by reason against the server
//! tried, FCGI_OVERLOADED answers, saturation, queue rejections and timeouts, requests in flight
//! on a multiplexed connection, the time-to-first-byte histogram — and the listener answers
//! only what it serves. Skips (loudly) without php-fpm or promtool, and fails instead under
//! `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi::server::ServerConfig;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::{run_load, HttpClient};
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{backends_probed, pool_stats, start_gateway, wait_until};

/// Whether `promtool` runs here; under CI its absence is a failure.
fn promtool_available() -> bool {
    support::tool_available("promtool", "prometheus", "the /metrics format check")
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

/// `promtool check metrics` must pass on `text`, with nothing to lint, where promtool runs.
fn assert_promtool_passes(text: &str) {
    if promtool_available() {
        let (passed, printed) = promtool_check(text);
        assert!(passed, "promtool check metrics failed:\n{printed}\n{text}");
        assert!(printed.trim().is_empty(), "promtool lint:\n{printed}");
    }
}

/// `name{server="SERVER"EXTRA}`: a per-server series; `extra` is `,label="value"…` or empty.
fn of_server(name: &str, server: &str, extra: &str) -> String {
    format!("{name}{{server=\"{server}\"{extra}}}")
}

/// The retries counted against `server` for `reason`.
fn retries(text: &str, server: &str, reason: &str) -> f64 {
    sample(
        text,
        &of_server(
            "fcgate_backend_retries_total",
            server,
            &format!(",reason=\"{reason}\""),
        ),
    )
}

/// A gateway with an admin listener in front of `servers`, with `upstream` settings.
async fn gateway_for(servers: &[&str], upstream: &str) -> RunningGateway {
    let servers: Vec<String> = servers.iter().map(|server| format!("{server:?}")).collect();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\naccess_log = \"off\"\n\
         [upstream]\nservers = [{}]\nworker_idle_timeout = \"60s\"\n{upstream}\n",
        servers.join(", ")
    );
    let config = fcgate::config::parse_file_text(&text)
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
        .validate()
        .unwrap_or_else(|error| panic!("{error}\n{text}"));
    fcgate::server::start(config).await.unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_counted_by_reason_against_the_server_that_was_tried() {
    let directory = tempfile::tempdir().unwrap();
    // Nobody listens here: every connect fails.
    let dead = format!("unix:{}", directory.path().join("nobody.sock").display());
    // Accepts, then closes before answering anything, as a backend whose worker died.
    let closer_path = directory.path().join("closer.sock");
    let closer_listener = tokio::net::UnixListener::bind(&closer_path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = closer_listener.accept().await {
            drop(stream);
        }
    });
    let closer = format!("unix:{}", closer_path.display());
    let backend = TestBackend::start(BackendOptions::default()).await;
    let healthy = backend.address().to_string();
    let gateway = gateway_for(&[&dead, &closer, &healthy], "").await;
    backend.overload_every(2);
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for i in 0..12 {
        let response = client.get(&format!("/?token={i}")).await.unwrap();
        assert_eq!(response.status, StatusCode::OK, "request {i}");
    }

    let text = scrape(gateway.admin_addr.unwrap()).await;
    assert_promtool_passes(&text);
    assert!(retries(&text, &dead, "connect_failed") >= 1.0, "{text}");
    assert!(retries(&text, &closer, "connection_lost") >= 1.0, "{text}");
    let overloaded = backend.overloaded_answers() as f64;
    assert!(overloaded >= 1.0);
    assert_eq!(retries(&text, &healthy, "overloaded"), overloaded);
    assert_eq!(
        sample(
            &text,
            &of_server("fcgate_backend_overloaded_total", &healthy, "")
        ),
        overloaded
    );
    assert!(
        sample(
            &text,
            &of_server("fcgate_backend_connect_failures_total", &dead, "")
        ) >= 1.0
    );
    // Each retry is counted once, against the server that failed, not the one that answered.
    assert_eq!(retries(&text, &healthy, "connect_failed"), 0.0);
    assert_eq!(retries(&text, &healthy, "connection_lost"), 0.0);
    assert_eq!(retries(&text, &dead, "overloaded"), 0.0);
    let per_server: f64 = text
        .lines()
        .filter(|line| line.starts_with("fcgate_backend_retries_total{"))
        .map(|line| line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(per_server, gateway.gateway.metrics().total_retries() as f64);

    // A lone server that refuses connects may be restarting: the same one again, after a pause.
    let lone = gateway_for(&[&dead], "connect_timeout = \"300ms\"").await;
    let mut client = HttpClient::http1(lone.local_addr).await;
    assert_eq!(
        client.get("/").await.unwrap().status,
        StatusCode::BAD_GATEWAY
    );
    let text = scrape(lone.admin_addr.unwrap()).await;
    assert!(retries(&text, &dead, "backend_restarting") >= 1.0, "{text}");
    assert_eq!(retries(&text, &dead, "connect_failed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cant_mpx_conn_answers_are_counted_as_retries() {
    let backend = TestBackend::start(BackendOptions {
        server: ServerConfig {
            mpxs_conns: false,
            announced_mpxs_conns: Some(true),
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let server = backend.address().to_string();
    let gateway = gateway_for(&[&server], "max_conns = 4").await;
    wait_until("the gateway believes the backend multiplexes", || {
        pool_stats(&gateway).multiplexing
    })
    .await;
    let report = run_load(
        gateway.local_addr,
        100,
        20,
        Duration::from_secs(60),
        |i| get(&format!("/?token=cant-{i}&sleep_ms=10")),
        |_, response| response.status == 200,
    )
    .await;
    assert_eq!(report.bodies_ok, 100, "{report:?}");
    let text = scrape(gateway.admin_addr.unwrap()).await;
    assert_promtool_passes(&text);
    assert!(retries(&text, &server, "cannot_multiplex") >= 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_rejections_and_queue_timeouts_are_counted_per_server() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let server = backend.address().to_string();
    let gateway = gateway_for(
        &[&server],
        "multiplex = \"off\"\nmax_conns = 1\nmax_queue = 1\nqueue_timeout = \"1s\"",
    )
    .await;
    backends_probed(&gateway).await;
    let admin = gateway.admin_addr.unwrap();
    let address = gateway.local_addr;
    let holder = tokio::spawn(async move {
        let mut client = HttpClient::http1(address).await;
        client.get("/?sleep_ms=3000").await.unwrap().status
    });
    wait_until("the holder is in service", || {
        pool_stats(&gateway).busy == 1
    })
    .await;
    let queued = tokio::spawn(async move {
        let mut client = HttpClient::http1(address).await;
        client.get("/?token=queued").await.unwrap().status
    });
    wait_until("one waits", || pool_stats(&gateway).waiting == 1).await;
    let text = scrape(admin).await;
    assert_eq!(
        sample(
            &text,
            &of_server("fcgate_backend_queue_length", &server, "")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &of_server("fcgate_backend_connections", &server, ",state=\"busy\"")
        ),
        1.0
    );
    // max_queue = 1 is full: refused at once.
    let mut client = HttpClient::http1(address).await;
    let refused = client.get("/?token=refused").await.unwrap();
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    // The queued one waits out queue_timeout behind the holder.
    assert_eq!(queued.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(holder.await.unwrap(), StatusCode::OK);

    let text = scrape(admin).await;
    assert_promtool_passes(&text);
    let counter = |name: &str| sample(&text, &of_server(name, &server, ""));
    assert_eq!(counter("fcgate_backend_queue_rejections_total"), 1.0);
    assert_eq!(counter("fcgate_backend_queue_timeouts_total"), 1.0);
    assert_eq!(counter("fcgate_backend_queue_length"), 0.0);
    assert_eq!(
        sample(&text, "fcgate_http_requests_total{status_class=\"5xx\"}"),
        2.0
    );
    assert_eq!(backend.requests(), 1, "only the holder reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturation_of_a_backend_with_fewer_workers_than_the_cap_is_counted() {
    // One worker, accepting one connection at a time, and nothing said about it (no
    // FCGI_GET_VALUES answers): the pool finds out by connections left unanswered.
    let backend = TestBackend::start(BackendOptions {
        workers: Some(1),
        server: ServerConfig {
            answer_management_records: false,
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let server = backend.address().to_string();
    let gateway = gateway_for(&[&server], "queue_timeout = \"20s\"").await;
    backends_probed(&gateway).await;
    let report = run_load(
        gateway.local_addr,
        60,
        4,
        Duration::from_secs(60),
        |i| get(&format!("/?token={i}&sleep_ms=20")),
        |_, response| response.status == 200,
    )
    .await;
    assert_eq!(report.bodies_ok, 60, "{report:?}");
    let text = scrape(gateway.admin_addr.unwrap()).await;
    assert_promtool_passes(&text);
    let saturation = sample(
        &text,
        &of_server("fcgate_backend_saturation_events_total", &server, ""),
    );
    assert!(saturation >= 1.0, "{text}");
    assert_eq!(saturation, pool_stats(&gateway).saturation_events as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_requests_in_flight_and_time_to_first_byte_are_reported() {
    let backend = TestBackend::start(BackendOptions {
        server: ServerConfig {
            mpxs_conns: true,
            max_conns: 16,
            max_reqs: 1024,
            max_reqs_per_conn: 1024,
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let server = backend.address().to_string();
    let gateway = gateway_for(&[&server], "max_conns = 1").await;
    wait_until("the gateway learns the backend multiplexes", || {
        pool_stats(&gateway).multiplexing
    })
    .await;
    let admin = gateway.admin_addr.unwrap();
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for _ in 0..2 {
        assert_eq!(client.get("/").await.unwrap().status, StatusCode::OK);
    }
    let slow: Vec<_> = (0..3)
        .map(|i| {
            let address = gateway.local_addr;
            tokio::spawn(async move {
                let mut client = HttpClient::http1(address).await;
                let path = format!("/?token=slow-{i}&sleep_ms=1000");
                client.get(&path).await.unwrap().status
            })
        })
        .collect();
    wait_until("three share the one connection", || {
        pool_stats(&gateway).multiplexed_in_flight == 3
    })
    .await;
    let in_flight = of_server("fcgate_backend_multiplexed_requests", &server, "");
    assert_eq!(sample(&scrape(admin).await, &in_flight), 3.0);
    for request in slow {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }

    let text = scrape(admin).await;
    assert_promtool_passes(&text);
    assert_eq!(sample(&text, &in_flight), 0.0);
    let header_time = |suffix: &str, extra: &str| {
        sample(
            &text,
            &of_server(
                &format!("fcgate_backend_response_header_seconds_{suffix}"),
                &server,
                extra,
            ),
        )
    };
    let count = header_time("count", "");
    assert_eq!(count, 5.0, "one observation per request sent");
    // The three that slept a second are past the 0.5 s bucket.
    let above_half_a_second = count - header_time("bucket", ",le=\"0.5\"");
    assert!(above_half_a_second >= 3.0, "{above_half_a_second}");
    assert!(header_time("sum", "") >= 3.0);
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}
