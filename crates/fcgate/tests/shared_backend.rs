//! Several clients of one backend: two fcgate instances in front of one php-fpm (or php-cgi)
//! pool whose workers each serve one connection at a time. An instance that has finished a
//! burst must give the workers back quickly (`worker_idle_timeout`), and at once when it sees
//! someone waiting in the backend's listen queue, or the other one's requests wait there until
//! `keepalive_timeout`; two instances loaded at once must share the workers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi::client::PoolConfig;
use fcgi_testkit::http::{run_load, HttpClient};
use fcgi_testkit::php::{PhpCgi, PhpFpm, PhpFpmOptions, ProcessManager};
use fcgi_testkit::{non_loopback_address, php_fixture_docroot, Listen};
use http::Request;
use http_body_util::Full;
use support::{backends_probed, pool_stats, start_gateway, wait_until};

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

/// Two gateways in front of one php-fpm with `workers` static workers on `listen`, both given
/// the pool's size and the `[upstream]` lines in `idle_policy`; `None` without php-fpm.
async fn two_gateways_on_one_pool(
    workers: u32,
    listen: Listen,
    idle_policy: &str,
) -> Option<(PhpFpm, RunningGateway, RunningGateway)> {
    let fpm = PhpFpm::start(PhpFpmOptions {
        listen,
        pm: ProcessManager::Static,
        max_children: workers,
        ..PhpFpmOptions::default()
    })
    .await?;
    let site = format!("root = {:?}", php_fixture_docroot().display().to_string());
    let upstream = format!("max_conns = {workers}\n{idle_policy}\n");
    let first = start_gateway(&site, &fpm.address(), &upstream).await;
    let second = start_gateway(&site, &fpm.address(), &upstream).await;
    Some((fpm, first, second))
}

/// The second gateway's first request must be answered within a second while the first one
/// has just held every worker.
async fn assert_second_served_within_a_second(first: &RunningGateway, second: &RunningGateway) {
    let mut client = HttpClient::http1(second.local_addr).await;
    let asked = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), client.get("/hello.php")).await;
    let waited = asked.elapsed();
    let response = answer
        .unwrap_or_else(|_| {
            panic!(
                "the second gateway's request got no answer within 5 s: the first one still \
                 holds the workers ({:?})",
                pool_stats(first)
            )
        })
        .unwrap();
    assert_eq!(response.status, 200);
    assert!(
        waited < Duration::from_secs(1),
        "answered after {waited:?}; first gateway: {:?}",
        pool_stats(first)
    );
    wait_until("the first gateway lets go of every worker", || {
        pool_stats(first).open == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_one_instances_burst_the_other_is_served_within_a_second() {
    let Some((_fpm, first, second)) =
        two_gateways_on_one_pool(2, Listen::Unix, &default_idle_policy()).await
    else {
        return;
    };
    let burst = run_load(
        first.local_addr,
        400,
        16,
        Duration::from_secs(30),
        |i| get(&format!("/hello.php?burst={i}")),
        |_, response| response.status == 200,
    )
    .await;
    assert_eq!(burst.count(200), 400, "{burst:?}");
    assert_second_served_within_a_second(&first, &second).await;
}

/// One php-fpm worker, held by the first gateway's idle connection, which it would keep for a
/// minute (`worker_idle_timeout = "60s"`): only its look at php-fpm's listen queue can see the
/// second gateway waiting there and hand the worker over.
async fn a_client_waiting_in_the_listen_queue_gets_the_idle_worker(listen: Listen) {
    let idle_policy = "worker_idle_timeout = \"60s\"";
    let Some((_fpm, first, second)) = two_gateways_on_one_pool(1, listen, idle_policy).await else {
        return;
    };
    let mut client = HttpClient::http1(first.local_addr).await;
    assert_eq!(client.get("/hello.php").await.unwrap().status, 200);
    assert_eq!(pool_stats(&first).idle, 1, "{:?}", pool_stats(&first));
    assert_second_served_within_a_second(&first, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_on_php_fpms_unix_socket_gets_the_idle_worker() {
    a_client_waiting_in_the_listen_queue_gets_the_idle_worker(Listen::Unix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_on_php_fpms_tcp_port_gets_the_idle_worker() {
    a_client_waiting_in_the_listen_queue_gets_the_idle_worker(Listen::Tcp).await;
}

/// A php-fpm pool on another host — here on an address of this machine that is not loopback, so
/// no gateway reads its listen queue — with `pm.status_path`. The first gateway's idle connection
/// holds the only worker and would keep it a minute; reading php-fpm's status page, it sees the
/// second gateway's connection waiting in the listen queue and hands the worker over. php-fpm
/// refreshes that figure once a second, so this takes up to about a second and a quarter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_on_a_remote_php_fpm_gets_the_idle_worker_through_its_status_page() {
    let Some(ip) = non_loopback_address() else {
        let bar = "!".repeat(78);
        eprintln!("\n{bar}\n!! SKIPPING: this host has no address but loopback, so no backend here can look remote.\n{bar}\n");
        return;
    };
    let Some(fpm) = PhpFpm::start(PhpFpmOptions {
        listen: Listen::TcpOn(ip),
        pm: ProcessManager::Static,
        max_children: 1,
        status_path: Some("/fpm-status".into()),
        ..PhpFpmOptions::default()
    })
    .await
    else {
        return;
    };
    let site = format!("root = {:?}", php_fixture_docroot().display().to_string());
    let upstream =
        "max_conns = 1\nworker_idle_timeout = \"60s\"\nphp_fpm_status_path = \"/fpm-status\"\n";
    let first = start_gateway(&site, &fpm.address(), upstream).await;
    backends_probed(&first).await;
    let second = start_gateway(&site, &fpm.address(), upstream).await;
    backends_probed(&second).await;
    let mut client = HttpClient::http1(first.local_addr).await;
    assert_eq!(client.get("/hello.php").await.unwrap().status, 200);
    assert_eq!(pool_stats(&first).idle, 1, "{:?}", pool_stats(&first));
    let mut client = HttpClient::http1(second.local_addr).await;
    let asked = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), client.get("/hello.php")).await;
    let waited = asked.elapsed();
    let first_stats = pool_stats(&first);
    assert_eq!(
        answer.map(|response| response.unwrap().status).ok(),
        Some(http::StatusCode::OK),
        "no answer within 10 s: the first gateway kept the worker ({first_stats:?})"
    );
    assert!(
        waited < Duration::from_secs(2),
        "answered after {waited:?}; first gateway: {first_stats:?}"
    );
    assert_eq!(first_stats.open, 0, "handed over: {first_stats:?}");
}

/// The default idle policy (start_gateway keeps connections longer unless told).
fn default_idle_policy() -> String {
    format!(
        "worker_idle_timeout = \"{}ms\"",
        PoolConfig::DEFAULT_WORKER_IDLE_TIMEOUT.as_millis()
    )
}

/// Loads both gateways at once (16 connections each, for `LOAD_TIME`) and checks each got at
/// least 30% of the requests served, and nothing but 200s.
async fn assert_loaded_at_once_both_get_a_share(first: &RunningGateway, second: &RunningGateway) {
    const LOAD_TIME: Duration = Duration::from_secs(3);
    let load = |gateway: &RunningGateway| {
        run_load(
            gateway.local_addr,
            u64::MAX / 4,
            16,
            LOAD_TIME,
            |i| get(&format!("/hello.php?i={i}")),
            |_, response| response.status == 200,
        )
    };
    let (first_load, second_load) = tokio::join!(load(first), load(second));
    let (served_first, served_second) = (first_load.count(200), second_load.count(200));
    let total = served_first + served_second;
    for (name, report, served) in [
        ("first", &first_load, served_first),
        ("second", &second_load, served_second),
    ] {
        assert_eq!(
            report.responses(),
            served,
            "the {name} gateway answered something else than 200: {report:?}"
        );
        assert!(
            served * 10 >= total * 3,
            "the {name} gateway served {served} of {total} requests: {:?} / {:?}",
            pool_stats(first),
            pool_stats(second)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_loaded_at_once_share_php_fpms_workers() {
    let Some((_fpm, first, second)) =
        two_gateways_on_one_pool(4, Listen::Unix, &default_idle_policy()).await
    else {
        return;
    };
    assert_loaded_at_once_both_get_a_share(&first, &second).await;
    assert!(
        pool_stats(&first).yielded + pool_stats(&second).yielded > 0,
        "shared by handing connections over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_loaded_at_once_share_php_cgis_children_with_no_configuration() {
    let Some(cgi) = PhpCgi::start(2, Listen::Tcp).await else {
        return;
    };
    let site = format!("root = {:?}", php_fixture_docroot().display().to_string());
    let first = start_gateway(&site, &cgi.address(), &default_idle_policy()).await;
    let second = start_gateway(&site, &cgi.address(), &default_idle_policy()).await;
    assert_loaded_at_once_both_get_a_share(&first, &second).await;
}
