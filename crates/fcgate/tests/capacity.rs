//! Capacity: a process-per-connection backend with 2 workers and 200 clients is served, with the
//! cap configured and without (saturation detection or GET_VALUES must save it), against the test
//! backend, php-fpm and php-cgi; the cap learned from FCGI_MAX_CONNS; the queue bound; queued
//! clients that leave; FCGI_OVERLOADED; and one slow server not delaying another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi::net::Address;
use fcgi::server::ServerConfig;
use fcgi_testkit::backend::{BackendOptions, Mode, TestBackend};
use fcgi_testkit::http::{run_load, HttpClient};
use fcgi_testkit::php::{PhpCgi, PhpFpm, PhpFpmOptions, ProcessManager};
use fcgi_testkit::relay::CountingRelay;
use fcgi_testkit::{php_fixture_docroot, Listen};
use http::Request;
use http_body_util::Full;
use support::{backends_probed, pool_stats, start_gateway, wait_until};

const QUEUE_TIMEOUT: Duration = Duration::from_secs(20);

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

/// 2,000 requests from 200 concurrent clients through a relay that counts fcgate's connections
/// to `backend`, a process-per-connection app with 2 workers. Every request must get a 200
/// within the queue timeout.
async fn serve_two_thousand(
    backend: &Address,
    site: &str,
    path: &'static str,
    cap: Option<usize>,
) -> (CountingRelay, RunningGateway) {
    let relay = CountingRelay::start(backend.clone()).await;
    let mut upstream = format!("queue_timeout = \"{}s\"\n", QUEUE_TIMEOUT.as_secs());
    if let Some(cap) = cap {
        upstream.push_str(&format!("max_conns = {cap}\n"));
    }
    let gateway = start_gateway(site, &relay.address(), &upstream).await;
    // The relay counts every connection, the start-up FCGI_GET_VALUES probe's too: with a
    // configured cap, the probe's own connection must not overlap the first requests' (the
    // binary waits for it before READY=1 the same way).
    if cap.is_some() {
        backends_probed(&gateway).await;
    }
    let report = run_load(
        gateway.local_addr,
        2_000,
        200,
        QUEUE_TIMEOUT * 3,
        move |i| get(&format!("{path}?token={i}")),
        |_, response| response.status == 200,
    )
    .await;
    assert_eq!(
        report.count(200),
        2_000,
        "{report:?}\n{:?}",
        pool_stats(&gateway)
    );
    assert_eq!(report.transport_errors, 0, "{report:?}");
    assert!(report.slowest < QUEUE_TIMEOUT, "{report:?}");
    if cap.is_some() {
        assert!(
            relay.max_open() <= 2,
            "{} connections at once ({} opened in all; {:?})",
            relay.max_open(),
            relay.connections_opened(),
            pool_stats(&gateway)
        );
    }
    (relay, gateway)
}

/// Without a cap the pool must have found the backend's real limit.
fn assert_saturation_was_detected(gateway: &RunningGateway) {
    let stats = pool_stats(gateway);
    assert!(stats.saturation_events >= 1, "{stats:?}");
    // 2 workers: the cap came down to 2; a probe may have raised it to 3 just before the end.
    assert!(stats.cap <= 3, "{stats:?}");
}

fn two_worker_backend(answer_get_values: bool) -> BackendOptions {
    BackendOptions {
        workers: Some(2),
        server: ServerConfig {
            answer_management_records: answer_get_values,
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_backend_with_two_workers_and_the_cap_configured() {
    let backend = TestBackend::start(two_worker_backend(true)).await;
    serve_two_thousand(&backend.address(), "", "/", Some(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_backend_with_two_workers_and_no_cap_saturation_detection_saves_it() {
    // It does not answer GET_VALUES, so nothing tells fcgate there are only 2 workers.
    let backend = TestBackend::start(two_worker_backend(false)).await;
    let (_, gateway) = serve_two_thousand(&backend.address(), "", "/", None).await;
    assert_saturation_was_detected(&gateway);
}

async fn php_fpm_with_two_workers() -> Option<PhpFpm> {
    PhpFpm::start(PhpFpmOptions {
        pm: ProcessManager::Static,
        max_children: 2,
        ..PhpFpmOptions::default()
    })
    .await
}

fn php_site() -> String {
    format!("root = {:?}", php_fixture_docroot().display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_with_two_workers_and_the_cap_configured() {
    let Some(fpm) = php_fpm_with_two_workers().await else {
        return;
    };
    serve_two_thousand(&fpm.address(), &php_site(), "/hello.php", Some(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_with_two_workers_and_no_cap_saturation_detection_saves_it() {
    let Some(fpm) = php_fpm_with_two_workers().await else {
        return;
    };
    let (_, gateway) = serve_two_thousand(&fpm.address(), &php_site(), "/hello.php", None).await;
    assert_saturation_was_detected(&gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_cgi_with_two_children_and_the_cap_configured() {
    let Some(cgi) = PhpCgi::start(2, Listen::Unix).await else {
        return;
    };
    serve_two_thousand(&cgi.address(), &php_site(), "/hello.php", Some(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_cgi_with_two_children_and_no_cap_learns_it_from_get_values() {
    let Some(cgi) = PhpCgi::start(2, Listen::Unix).await else {
        return;
    };
    let (_, gateway) = serve_two_thousand(&cgi.address(), &php_site(), "/hello.php", None).await;
    let stats = pool_stats(&gateway);
    assert_eq!(stats.ceiling, 2, "{stats:?}");
    assert_eq!(stats.cap_source, "FCGI_MAX_CONNS from the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_announcing_max_conns_3_gets_at_most_3_connections() {
    let backend = TestBackend::start(BackendOptions {
        server: ServerConfig {
            max_conns: 3,
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let relay = CountingRelay::start(backend.address()).await;
    let gateway = start_gateway("", &relay.address(), "").await;
    wait_until("the GET_VALUES answer", || {
        pool_stats(&gateway).backend_values.is_some()
    })
    .await;
    let report = run_load(
        gateway.local_addr,
        1_000,
        64,
        Duration::from_secs(60),
        |i| get(&format!("/?sleep_ms={}", i % 3)),
        |_, _| true,
    )
    .await;
    assert_eq!(report.count(200), 1_000, "{report:?}");
    let stats = pool_stats(&gateway);
    assert_eq!((stats.cap, stats.ceiling), (3, 3), "{stats:?}");
    assert!(relay.max_open() <= 3, "{}", relay.max_open());
}

#[tokio::test]
async fn an_explicit_max_conns_overrides_the_backend_s_answer() {
    let backend = TestBackend::start(BackendOptions {
        server: ServerConfig {
            max_conns: 3,
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    // Asked anyway (multiplex = "auto" wants FCGI_MPXS_CONNS); the answer's 3 does not count.
    let gateway = start_gateway("", &backend.address(), "max_conns = 5").await;
    wait_until("the backend's FCGI_GET_VALUES answer is in", || {
        pool_stats(&gateway).backend_values.is_some()
    })
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/").await.unwrap().status, 200);
    let stats = pool_stats(&gateway);
    assert_eq!((stats.cap, stats.cap_source.as_str()), (5, "max_conns"));
}

#[tokio::test]
async fn with_max_conns_set_and_multiplexing_off_nothing_is_asked() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let gateway = start_gateway("", &backend.address(), "max_conns = 5\nmultiplex = \"off\"").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/").await.unwrap().status, 200);
    assert_eq!(pool_stats(&gateway).backend_values, None);
    assert_eq!(
        backend.connections_accepted(),
        1,
        "no management connection"
    );
}

#[tokio::test]
async fn a_backend_ignoring_get_values_is_served_at_once_with_the_default_cap() {
    let backend = TestBackend::start(BackendOptions {
        server: ServerConfig {
            answer_management_records: false,
            ..ServerConfig::default()
        },
        ..BackendOptions::default()
    })
    .await;
    let gateway = start_gateway("", &backend.address(), "").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    assert_eq!(client.get("/").await.unwrap().status, 200);
    // Served while the probe still waits for its answer: the request path did not wait for it.
    let stats = pool_stats(&gateway);
    assert_eq!(stats.backend_values, None, "{stats:?}");
    assert_eq!(
        stats.open, 2,
        "the request's connection and the probe's: {stats:?}"
    );
    // The probe gives up and frees its slot; the default cap stays.
    wait_until("the probe gave up", || pool_stats(&gateway).open == 1).await;
    let stats = pool_stats(&gateway);
    assert_eq!((stats.cap, stats.cap_source.as_str()), (4, "the default"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queue_refuses_exactly_the_overflow_and_serves_the_rest_in_order() {
    let backend = TestBackend::start(BackendOptions {
        workers: Some(1),
        ..BackendOptions::default()
    })
    .await;
    let gateway = start_gateway("", &backend.address(), "max_conns = 1\nmax_queue = 10").await;
    // The probe must not hold the only slot while the queue is counted.
    backends_probed(&gateway).await;
    let finished = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..50usize {
        let (address, record) = (gateway.local_addr, Arc::clone(&finished));
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::http1(address).await;
            // The first holds the one connection while the queue fills up behind it: long
            // enough for 49 clients to connect one after another on a loaded CI machine (1 s
            // was not, once).
            let sleep_ms = if i == 0 { 5_000 } else { 20 };
            let path = format!("/?sleep_ms={sleep_ms}&token={i}");
            let response = client.get(&path).await.unwrap();
            record.lock().unwrap().push((i, response.status.as_u16()));
        }));
        // Send them one after another, so the arrival order is known.
        match i {
            0 => wait_until("the first is in service", || pool_stats(&gateway).busy == 1).await,
            1..=10 => wait_until("queued", || pool_stats(&gateway).waiting == i).await,
            _ => {
                wait_until("refused", || {
                    finished.lock().unwrap().iter().any(|(done, _)| *done == i)
                })
                .await
            }
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let finished = finished.lock().unwrap();
    let refused: Vec<usize> = finished
        .iter()
        .filter(|(_, status)| *status == 503)
        .map(|(i, _)| *i)
        .collect();
    let served: Vec<usize> = finished
        .iter()
        .filter(|(_, status)| *status == 200)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        refused,
        (11..50).collect::<Vec<_>>(),
        "exactly the overflow, at once"
    );
    assert_eq!(
        served,
        (0..=10).collect::<Vec<_>>(),
        "the rest, first come first served"
    );
    assert_eq!(pool_stats(&gateway).queue_rejections, 39);
}

#[tokio::test]
async fn a_queued_client_that_disconnects_never_reaches_the_backend() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let gateway = start_gateway("", &backend.address(), "max_conns = 1").await;
    let address = gateway.local_addr;
    let holder = tokio::spawn(async move {
        let mut client = HttpClient::http1(address).await;
        client.get("/?sleep_ms=700").await.unwrap()
    });
    wait_until("the holder is in service", || backend.requests() == 1).await;
    let impatient = tokio::spawn(async move {
        let mut client = HttpClient::http1(address).await;
        client.get("/?token=impatient").await
    });
    wait_until("queued", || pool_stats(&gateway).waiting == 1).await;
    impatient.abort();
    wait_until("left the queue", || pool_stats(&gateway).waiting == 0).await;
    assert_eq!(holder.await.unwrap().status, 200);
    let mut client = HttpClient::http1(address).await;
    assert_eq!(client.get("/?token=after").await.unwrap().status, 200);
    assert_eq!(
        backend.requests(),
        2,
        "the holder and the one after; never the impatient one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcgi_overloaded_is_retried_and_the_cap_drops_then_recovers() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let gateway = start_gateway("", &backend.address(), "max_conns = 4").await;
    backend.overload_every(4);
    let report = run_load(
        gateway.local_addr,
        400,
        16,
        Duration::from_secs(60),
        |i| get(&format!("/?token={i}")),
        |i, response| response.header("x-token") == Some(i.to_string().as_str()),
    )
    .await;
    assert_eq!(report.count(200), 400, "GETs see no error: {report:?}");
    assert_eq!(report.bodies_ok, 400);
    assert!(backend.overloaded_answers() >= 100);
    let after_overload = pool_stats(&gateway);
    assert!(after_overload.overloaded >= 100, "{after_overload:?}");
    assert!(
        after_overload.cap < 4,
        "the cap dropped: {after_overload:?}"
    );

    backend.overload_every(0);
    let report = run_load(
        gateway.local_addr,
        3_000,
        32,
        Duration::from_secs(60),
        |_| get("/?sleep_ms=1"),
        |_, _| true,
    )
    .await;
    assert_eq!(report.count(200), 3_000, "{report:?}");
    let recovered = pool_stats(&gateway);
    assert!(
        recovered.cap > after_overload.cap,
        "the cap came back up: {recovered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_with_a_queue_does_not_delay_requests_to_the_other() {
    let stuck = TestBackend::start(BackendOptions::default()).await;
    let healthy = TestBackend::start(BackendOptions::default()).await;
    stuck.set_mode(Mode::Hang);
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[upstream]\nservers = [\"{}\", \"{}\"]\n\
         max_conns = 1\nread_timeout = \"2s\"\nqueue_timeout = \"1s\"\n",
        stuck.address(),
        healthy.address()
    );
    let config = fcgate::config::parse_file_text(&text)
        .unwrap()
        .validate()
        .unwrap();
    let gateway = fcgate::server::start(config).await.unwrap();
    let completions = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (address, completions) = (gateway.local_addr, Arc::clone(&completions));
        tasks.push(tokio::spawn(async move {
            let mut client = HttpClient::http1(address).await;
            let status = client.get("/").await.unwrap().status.as_u16();
            completions.lock().unwrap().push(status);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // The stuck server's requests end in 503 (queue) or 504 (read timeout) after a second or
    // two; every request the healthy server got was answered before the first of those.
    let completions = completions.lock().unwrap();
    let served = completions.iter().filter(|status| **status == 200).count();
    assert!(served >= 20, "{completions:?}");
    assert!(
        completions[..served].iter().all(|status| *status == 200),
        "a healthy-server answer waited behind the stuck server: {completions:?}"
    );
    assert_eq!(served as u64, healthy.requests());
}

#[tokio::test]
async fn a_full_listen_queue_lowers_the_cap_and_ends_in_503_not_502() {
    // A unix socket whose backlog is full: connect(2) fails with EAGAIN, the kernel's way of
    // saying the backend is busy. Nothing ever accepts here.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.sock");
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    socket.listen(0).unwrap();
    let address = socket2::SockAddr::unix(&path).unwrap();
    let mut fillers = Vec::new();
    loop {
        let filler =
            socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        filler.set_nonblocking(true).unwrap();
        match filler.connect(&address) {
            Ok(()) => fillers.push(filler),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(error) => panic!("{error}"),
        }
        assert!(fillers.len() < 64, "the backlog never filled");
    }
    let gateway = start_gateway(
        "",
        &Address::Unix(path.clone()),
        "max_conns = 4\nqueue_timeout = \"500ms\"\nread_timeout = \"1s\"",
    )
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    let response = client.get("/").await.unwrap();
    assert_eq!(
        response.status,
        503,
        "busy, not broken: {}",
        response.text()
    );
    assert_eq!(response.header("retry-after"), Some("1"));
    let stats = pool_stats(&gateway);
    assert!(stats.listen_queue_full >= 1, "{stats:?}");
    assert_eq!(
        stats.cap_reduced_by.as_deref(),
        Some("listen_queue_full"),
        "{stats:?}"
    );
    drop(fillers);
}
