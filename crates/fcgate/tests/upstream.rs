//! Several servers behind one upstream: weights, backups, a dead server skipped after its first
//! failure without a client seeing an error, and a restarted one brought back by the active
//! FCGI_GET_VALUES probe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use fcgate::server::RunningGateway;
use fcgi::net::Address;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::HttpClient;
use support::wait_until;

async fn gateway(servers: &[String], upstream: &str) -> RunningGateway {
    let list: Vec<String> = servers.iter().map(|server| format!("{server:?}")).collect();
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[upstream]\nservers = [{}]\nmax_conns = 4\n{upstream}\n",
        list.join(", ")
    );
    let config = fcgate::config::parse_file_text(&text)
        .unwrap()
        .validate()
        .unwrap();
    fcgate::server::start(config).await.unwrap()
}

async fn get_ok(client: &mut HttpClient, count: usize) {
    for _ in 0..count {
        let response = client.get("/").await.unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

#[tokio::test]
async fn weights_split_the_traffic_even_at_low_load() {
    let heavy = TestBackend::start(BackendOptions::default()).await;
    let light = TestBackend::start(BackendOptions::default()).await;
    let gateway = gateway(
        &[
            format!("{} weight=3", heavy.address()),
            light.address().to_string(),
        ],
        "",
    )
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    get_ok(&mut client, 400).await;
    assert_eq!((heavy.requests(), light.requests()), (300, 100));
}

#[tokio::test]
async fn a_backup_serves_only_while_the_primary_is_down_and_the_primary_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let primary_address = Address::Unix(dir.path().join("primary.sock"));
    let primary = TestBackend::start_at(&primary_address, BackendOptions::default()).await;
    let backup = TestBackend::start(BackendOptions::default()).await;
    let gateway = gateway(
        &[
            primary_address.to_string(),
            format!("{} backup", backup.address()),
        ],
        "health_interval = \"100ms\"\nfail_timeout = \"30s\"",
    )
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    get_ok(&mut client, 50).await;
    assert_eq!((primary.requests(), backup.requests()), (50, 0));

    drop(primary);
    let upstream = gateway.gateway.upstream();
    // Either a request meets the dead primary first (and is sent on to the backup), or the
    // health probe finds it first: either way no client sees an error.
    get_ok(&mut client, 50).await;
    assert_eq!(backup.requests(), 50);
    assert!(upstream.servers()[0].is_down());

    // Back at the same address; only the active probe can tell, since no request goes there.
    let primary = TestBackend::start_at(&primary_address, BackendOptions::default()).await;
    wait_until("the probe found the primary up", || {
        !upstream.servers()[0].is_down()
    })
    .await;
    get_ok(&mut client, 20).await;
    assert_eq!(primary.requests(), 20);
    assert_eq!(backup.requests(), 50);
}

#[tokio::test]
async fn a_dead_server_is_skipped_after_its_first_failure_and_no_client_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = Address::Unix(dir.path().join("nobody-listens.sock"));
    let alive = TestBackend::start(BackendOptions::default()).await;
    let gateway = gateway(
        &[nowhere.to_string(), alive.address().to_string()],
        "health_interval = \"0s\"\nfail_timeout = \"30s\"",
    )
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    get_ok(&mut client, 100).await;
    let upstream = gateway.gateway.upstream();
    let dead = upstream.servers()[0].pool().stats();
    assert_eq!(
        dead.connect_failures, 1,
        "tried once, then skipped: {dead:?}"
    );
    let metrics = gateway.gateway.metrics();
    assert_eq!(metrics.total_retries(), 1);
    assert_eq!(
        metrics.retries(fcgate::metrics::RetryReason::ConnectFailed),
        1
    );
    assert_eq!(alive.requests(), 100);
}

#[tokio::test]
async fn when_every_server_is_down_the_client_gets_a_prompt_502() {
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        Address::Unix(dir.path().join("a.sock")).to_string(),
        Address::Unix(dir.path().join("b.sock")).to_string(),
    ];
    let gateway = gateway(
        &servers,
        "health_interval = \"0s\"\nconnect_timeout = \"500ms\"",
    )
    .await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for _ in 0..3 {
        let response = tokio::time::timeout(Duration::from_secs(5), client.get("/"))
            .await
            .expect("answered promptly")
            .unwrap();
        assert_eq!(response.status, 502);
    }
}

#[tokio::test]
async fn a_request_during_a_backend_restart_waits_for_it_within_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let address = Address::Unix(dir.path().join("restarting.sock"));
    let backend = TestBackend::start_at(&address, BackendOptions::default()).await;
    let gateway = gateway(&[address.to_string()], "connect_timeout = \"5s\"").await;
    let mut client = HttpClient::http1(gateway.local_addr).await;
    get_ok(&mut client, 5).await;
    drop(backend);
    gateway.gateway.upstream().servers()[0].pool().close_idle();
    let restart = {
        let address = address.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            TestBackend::start_at(&address, BackendOptions::default()).await
        })
    };
    // Refused for ~300 ms, then served: the client never sees the restart.
    get_ok(&mut client, 1).await;
    let backend = restart.await.unwrap();
    assert_eq!(backend.requests(), 1);
    assert!(gateway.gateway.metrics().total_retries() >= 1);
}
