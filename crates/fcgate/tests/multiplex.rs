//! Multiplexing through the gateway, against real backends: a thousand concurrent requests on
//! two backend connections, each answer matched to its request; a slow client that does not
//! slow down the 500 requests sharing its connection, served from the spool or cut off at
//! `max_response_buffer`; FCGI_CANT_MPX_CONN from a backend that claimed to multiplex;
//! php-fpm, which says it does not multiplex, never getting two requests on one connection; and
//! the log line saying why multiplexing was turned on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fcgate::server::RunningGateway;
use fcgi::protocol::{encode_get_values_result, RecordHeader, RecordType, HEADER_LEN};
use fcgi::server::ServerConfig;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::{run_load, slow_get, HttpClient, SlowRead};
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions, ProcessManager};
use fcgi_testkit::php_fixture_docroot;
use fcgi_testkit::relay::CountingRelay;
use http::Request;
use http_body_util::Full;
use support::{pool_stats, start_gateway, wait_until};

const TWENTY_MIB: u64 = 20 << 20;

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

/// The test backend as a multiplexing application: FCGI_MPXS_CONNS=1, room for everything.
async fn multiplexing_backend() -> TestBackend {
    TestBackend::start(BackendOptions {
        server: ServerConfig {
            mpxs_conns: true,
            max_conns: 16,
            max_reqs: 16 * 1024,
            max_reqs_per_conn: 1024,
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await
}

/// A gateway in front of `relay` that has learned the backend multiplexes.
async fn multiplexing_gateway(
    relay: &CountingRelay,
    settings: &str,
    upstream: &str,
) -> RunningGateway {
    let gateway = start_gateway(settings, &relay.address(), upstream).await;
    wait_until("the gateway learns the backend multiplexes", || {
        pool_stats(&gateway).multiplexing
    })
    .await;
    gateway
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_share_two_backend_connections() {
    let backend = multiplexing_backend().await;
    let relay = CountingRelay::start(backend.address()).await;
    let gateway = multiplexing_gateway(
        &relay,
        "",
        "max_conns = 2\nmax_reqs_per_conn = 1000\nqueue_timeout = \"30s\"",
    )
    .await;
    // The GET_VALUES management connection came and went before the load.
    wait_until("the management connection closes", || {
        relay.connections_open() == 0
    })
    .await;
    let opened_before = relay.connections_opened();

    let report = run_load(
        gateway.local_addr,
        1_000,
        1_000,
        Duration::from_secs(60),
        |i| get(&format!("/?token=mpx-{i}&sleep_ms=50")),
        |i, response| {
            response.status == 200 && response.text().contains(&format!("token: mpx-{i}\n"))
        },
    )
    .await;
    assert_eq!(report.count(200), 1_000, "{report:?}");
    assert_eq!(
        report.bodies_ok, 1_000,
        "an answer reached the wrong request"
    );
    let opened = relay.connections_opened() - opened_before;
    assert!(
        opened <= 2,
        "{opened} backend connections for max_conns = 2"
    );
    assert!(relay.max_open() <= 2, "{} at once", relay.max_open());
    let most_on_one = relay.max_concurrent_requests_on_one_connection();
    assert!(
        most_on_one > 1,
        "never more than {most_on_one} request per connection"
    );
    assert_eq!(relay.id_reused_while_active(), 0);
}

/// Latency of each of `count` requests, each on its own client connection, all at once.
async fn latencies(gateway: &RunningGateway, count: usize, tag: &str) -> Vec<Duration> {
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let addr = gateway.local_addr;
        let tag = tag.to_owned();
        let path = format!("/?token={tag}-{index}&sleep_ms=20");
        tasks.spawn(async move {
            let mut client = HttpClient::http1(addr).await;
            let started = tokio::time::Instant::now();
            let response = client.get(&path).await.unwrap();
            assert_eq!(response.status, 200);
            assert!(response.text().contains(&format!("token: {tag}-{index}\n")));
            started.elapsed()
        });
    }
    let mut times = Vec::new();
    while let Some(time) = tasks.join_next().await {
        times.push(time.unwrap());
    }
    times.sort();
    times
}

fn median(times: &[Duration]) -> Duration {
    times[times.len() / 2]
}

/// A client reading 20 MiB at 100 KiB/s while 500 others share its backend connection: the
/// others take no longer than without it (medians side by side; the bound is generous, the
/// machines are noisy), and the gateway's spool, not the connection, holds the slow response.
async fn slow_client_among_five_hundred(gateway: &RunningGateway) -> Duration {
    let addr = gateway.local_addr;
    let slow = tokio::spawn(async move {
        let path = format!("/?size={TWENTY_MIB}");
        let read = SlowRead {
            bytes_per_second: 100 * 1024,
            give_up_after: None,
            deadline: Duration::from_secs(4),
        };
        slow_get(addr, &path, read).await
    });
    let with_slow = latencies(gateway, 500, "with-slow").await;
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status, 200);
    assert!(slow.body_is_pattern, "the slow client got corrupted bytes");
    median(&with_slow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_delay_the_requests_sharing_its_connection() {
    let backend = multiplexing_backend().await;
    let relay = CountingRelay::start(backend.address()).await;
    // One backend connection: the slow response and the 500 others all share it.
    let gateway = multiplexing_gateway(&relay, "", "max_conns = 1\nmax_reqs_per_conn = 1000").await;
    let without_slow = median(&latencies(&gateway, 500, "alone").await);
    let with_slow = slow_client_among_five_hundred(&gateway).await;
    assert!(
        with_slow <= without_slow * 3 + Duration::from_millis(250),
        "median {with_slow:?} with the slow client against {without_slow:?} without"
    );
    // The 20 MiB left the backend long before the client read 400 KiB of it: the request is
    // over on the backend side, its connection free, the rest waits in the spool.
    assert_eq!(pool_stats(&gateway).multiplexed_in_flight, 0);
    assert_eq!(relay.abort_requests_seen(), 0);
    assert_eq!(relay.id_reused_while_active(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_past_max_response_buffer_is_cut_off_alone() {
    let backend = multiplexing_backend().await;
    let relay = CountingRelay::start(backend.address()).await;
    let gateway = multiplexing_gateway(
        &relay,
        "max_response_buffer = \"2MiB\"",
        "max_conns = 1\nmax_reqs_per_conn = 1000",
    )
    .await;
    let path = format!("/?size={TWENTY_MIB}");
    let slow = slow_get(
        gateway.local_addr,
        &path,
        SlowRead {
            bytes_per_second: 100 * 1024,
            give_up_after: None,
            deadline: Duration::from_secs(20),
        },
    );
    let others = latencies(&gateway, 200, "beside-cut");
    let (slow, others) = tokio::join!(slow, others);
    let slow = slow.unwrap();
    assert_eq!(slow.status, 200);
    assert!(!slow.complete, "20 MiB arrived despite a 2 MiB bound");
    assert!(slow.body_is_pattern);
    assert!(
        slow.body_len < TWENTY_MIB / 2,
        "{} bytes reached the client",
        slow.body_len
    );
    assert_eq!(others.len(), 200);
    assert_eq!(relay.id_reused_while_active(), 0);
    // The gateway still serves, on the same backend connection.
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/?token=after").await.unwrap().status, 200);
    assert_eq!(
        relay.connections_opened(),
        2,
        "the management connection and one more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_claims_to_multiplex_but_answers_cant_mpx_conn_is_served_one_by_one() {
    let backend = TestBackend::start(BackendOptions {
        server: ServerConfig {
            mpxs_conns: false,
            announced_mpxs_conns: Some(true),
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let relay = CountingRelay::start(backend.address()).await;
    let gateway = multiplexing_gateway(&relay, "", "max_conns = 4").await;
    let load = || {
        run_load(
            gateway.local_addr,
            400,
            40,
            Duration::from_secs(60),
            |i| get(&format!("/?token=cant-{i}&sleep_ms=10")),
            |i, response| response.text().contains(&format!("token: cant-{i}\n")),
        )
    };
    let report = load().await;
    // Every request refused with CANT_MPX_CONN went again on a connection of its own.
    assert_eq!(report.count(200), 400, "{report:?}");
    assert_eq!(report.bodies_ok, 400);
    assert!(!pool_stats(&gateway).multiplexing);
    assert!(
        gateway.gateway.metrics().total_retries() > 0,
        "nothing was refused"
    );
    // Off for good: the next load goes one request per connection, nothing refused.
    let retries_before = gateway.gateway.metrics().total_retries();
    let report = load().await;
    assert_eq!(report.bodies_ok, 400, "{report:?}");
    assert_eq!(gateway.gateway.metrics().total_retries(), retries_before);
}

/// php-fpm (4 workers) behind a counting relay, and a gateway with `upstream` settings.
async fn php_fpm_site(upstream: &str) -> Option<(PhpFpm, CountingRelay, RunningGateway)> {
    let fpm = PhpFpm::start(PhpFpmOptions {
        pm: ProcessManager::Static,
        max_children: 4,
        ..PhpFpmOptions::default()
    })
    .await?;
    let relay = CountingRelay::start(fpm.address()).await;
    let site = format!("root = {:?}", php_fixture_docroot().display().to_string());
    let gateway = start_gateway(&site, &relay.address(), upstream).await;
    Some((fpm, relay, gateway))
}

/// 400 requests from 40 clients to sleep.php, each sleeping its own few milliseconds: every
/// answer must name the sleep its own request asked for.
async fn sleepy_load(gateway: &RunningGateway) {
    let report = run_load(
        gateway.local_addr,
        400,
        40,
        Duration::from_secs(60),
        |i| get(&format!("/sleep.php?ms={}", i % 7)),
        |i, response| response.text() == format!("slept {} ms\n", i % 7),
    )
    .await;
    assert_eq!(report.count(200), 400, "{report:?}");
    assert_eq!(report.bodies_ok, 400, "an answer reached the wrong request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_never_gets_two_requests_on_one_connection_even_with_multiplex_on() {
    let Some((_fpm, relay, gateway)) = php_fpm_site("max_conns = 4\nmultiplex = \"on\"").await
    else {
        return;
    };
    sleepy_load(&gateway).await;
    let stats = pool_stats(&gateway);
    assert!(!stats.multiplexing);
    assert_eq!(
        stats.backend_values.and_then(|values| values.mpxs_conns),
        Some(false)
    );
    assert_eq!(relay.max_concurrent_requests_on_one_connection(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_forced_to_multiplex_answers_every_request_correctly() {
    // php-fpm never answers FCGI_CANT_MPX_CONN: it reads the requests on a connection one after
    // the other. Forced, the answers must still reach the right clients.
    let Some((_fpm, relay, gateway)) = php_fpm_site("max_conns = 2\nmultiplex = \"force\"").await
    else {
        return;
    };
    sleepy_load(&gateway).await;
    assert!(relay.max_concurrent_requests_on_one_connection() > 1);
    assert_eq!(relay.id_reused_while_active(), 0);
}

/// `multiplex = "on"` in front of a backend whose FCGI_GET_VALUES answer names nothing (flup
/// 1.0.3 on Python 3 answers every query with an empty list): the setting, not the backend,
/// turned multiplexing on, and the log line an operator reads must say so. It once read "the
/// backend multiplexes (FCGI_MPXS_CONNS=1)". The binary's own stderr, as with any deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_says_multiplexing_was_forced_when_the_backend_announced_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let socket = directory.path().join("announces-nothing.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let backend = tokio::spawn(answer_get_values_with_nothing(listener));
    let mut child = Command::new(env!("CARGO_BIN_EXE_fcgate"))
        .args(["--listen", "127.0.0.1:0", "--access-log", "off"])
        .args(["--multiplex", "on", "--upstream"])
        .arg(format!("unix:{}", socket.display()))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Every line until the first that speaks of multiplexing (or the end of stderr).
    let reading = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let about_multiplexing = line.contains("multiplexing");
            lines.push(line);
            if about_multiplexing {
                break;
            }
        }
        lines
    });
    let lines = tokio::time::timeout(Duration::from_secs(10), reading).await;
    child.kill().unwrap();
    child.wait().unwrap();
    backend.abort();
    let lines = lines
        .expect("fcgate logged nothing about multiplexing within 10 s")
        .unwrap();
    let log = lines.join("\n");
    let line = lines.last().map(String::as_str).unwrap_or_default();
    assert!(
        line.contains("multiplexing: requests share connections")
            && line.contains("multiplex = on")
            && line.contains("announced nothing"),
        "the line does not say multiplexing was forced by the setting on a backend that \
         announced nothing:\n{log}"
    );
    assert!(!line.contains("FCGI_MPXS_CONNS=1"), "{log}");
}

/// A FastCGI app that answers FCGI_GET_VALUES with an empty GET_VALUES_RESULT, as flup 1.0.3
/// does, and ignores every other record.
async fn answer_get_values_with_nothing(listener: tokio::net::UnixListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((mut stream, _)) = listener.accept().await {
        connections.spawn(async move {
            let mut header = [0u8; HEADER_LEN];
            while stream.read_exact(&mut header).await.is_ok() {
                let Ok(header) = RecordHeader::decode(&header) else {
                    return;
                };
                let mut rest = vec![0u8; header.record_len() - HEADER_LEN];
                if stream.read_exact(&mut rest).await.is_err() {
                    return;
                }
                if header.record_type == RecordType::GetValues {
                    let mut answer = BytesMut::new();
                    encode_get_values_result(&mut answer, &[]);
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}
