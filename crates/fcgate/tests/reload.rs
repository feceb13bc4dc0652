//! Reload without dropping anything: ten reloads while 200 clients load a real php-fpm fail
//! no request and open no new backend connection (the unchanged pool is kept, counted by a
//! relay that sees every connect); a reload that swaps servers sends new requests to the new
//! one and drains the old; a moved listener is bound before the old one closes; and, through
//! the binary, SIGHUP with RELOADING=1/READY=1 for systemd, and a bad file refused with the
//! running config kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use fcgate::config::Config;
use fcgi::net::Address;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::{run_load, HttpClient};
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use fcgi_testkit::relay::CountingRelay;
use http::Request;
use http_body_util::Full;
use support::{get, listening_authority, wait_until};

/// A validated config for `servers`, with `settings` as extra top-level keys.
fn config(listen: &str, settings: &str, servers: &[Address], upstream: &str) -> Config {
    let servers: Vec<String> = servers
        .iter()
        .map(|server| format!("\"{server}\""))
        .collect();
    let text = format!(
        "listen = \"{listen}\"\naccess_log = \"off\"\n{settings}\n[upstream]\nservers = [{}]\n\
         {upstream}\n",
        servers.join(", ")
    );
    fcgate::config::parse_file_text(&text)
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
        .validate()
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_200_clients_fail_nothing_and_keep_the_pools_connections() {
    let Some(fpm) = PhpFpm::start(PhpFpmOptions::default()).await else {
        return;
    };
    let relay = CountingRelay::start(fpm.address()).await;
    let root = format!("root = '{}'", fpm.docroot().display());
    let servers = [relay.address()];
    let first = config("127.0.0.1:0", &root, &servers, "max_conns = 4");
    let running = fcgate::server::start(first.clone()).await.unwrap();
    let listen = running.local_addr.to_string();

    let load = tokio::spawn(run_load(
        running.local_addr,
        8_000,
        200,
        Duration::from_secs(60),
        |_| {
            Request::get("/hello.php")
                .body(Full::new(Bytes::new()))
                .unwrap()
        },
        |_, response| response.status == 200,
    ));
    for generation in 1..=10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Something every request sees changes each time: a param, and the body limit.
        let settings = format!(
            "{root}\nclient_max_body_size = \"{generation}MiB\"\n[params]\nRELOAD_GENERATION = \
             \"{generation}\""
        );
        let next = config(&listen, &settings, &servers, "max_conns = 4");
        let done = running.reload(next).await.unwrap();
        assert_eq!(done.kept_servers, 1, "{done:?}");
        assert_eq!(done.new_servers + done.drained_servers, 0, "{done:?}");
        assert!(done.needs_restart.is_empty(), "{done:?}");
    }
    let report = load.await.unwrap();
    assert_eq!(report.transport_errors, 0, "{report:?}");
    assert_eq!(report.count(200), 8_000, "{report:?}");
    assert_eq!(report.bodies_ok, 8_000, "{report:?}");
    // The cap's four, and the FCGI_GET_VALUES probe php-fpm answers and closes; a pool rebuilt
    // on every reload would have opened 4 more each time.
    assert!(
        relay.connections_opened() <= 5,
        "one pool throughout: {} backend connections opened",
        relay.connections_opened()
    );
    let stats = running.gateway.upstream().servers()[0].pool().stats();
    assert!(stats.opened <= 4, "{stats:?}");
    assert!(stats.reused >= 8_000 - 4, "{stats:?}");
    let generation = running.gateway.current();
    assert_eq!(generation.config.limits.client_max_body_size, 10 << 20);
}

#[tokio::test]
async fn a_reload_that_changes_workers_says_it_needs_a_restart_and_applies_the_rest() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let running = fcgate::server::start(config("127.0.0.1:0", "", &[backend.address()], ""))
        .await
        .unwrap();
    let listen = running.local_addr.to_string();
    let next = config(
        &listen,
        "workers = 3\nclient_max_body_size = \"3MiB\"",
        &[backend.address()],
        "",
    );
    let done = running.reload(next).await.unwrap();
    assert_eq!(done.needs_restart, vec!["workers"], "{done:?}");
    let generation = running.gateway.current();
    assert_eq!(generation.config.limits.client_max_body_size, 3 << 20);
}

#[tokio::test]
async fn a_reload_that_replaces_the_server_drains_the_old_pool() {
    let old = TestBackend::start(BackendOptions::default()).await;
    let new = TestBackend::start(BackendOptions::default()).await;
    let running = fcgate::server::start(config("127.0.0.1:0", "", &[old.address()], ""))
        .await
        .unwrap();
    let mut client = HttpClient::http1(running.local_addr).await;
    assert_eq!(client.get("/before").await.unwrap().status, 200);
    wait_until("the old pool holds an idle connection", || {
        old.connections_open() == 1
    })
    .await;

    let listen = running.local_addr.to_string();
    let done = running
        .reload(config(&listen, "", &[new.address()], ""))
        .await
        .unwrap();
    assert_eq!(
        (done.kept_servers, done.new_servers, done.drained_servers),
        (0, 1, 1)
    );
    // The client's keep-alive connection survives the reload; its next request goes to the new
    // server, and the old server's pooled connection is closed.
    assert_eq!(client.get("/after").await.unwrap().status, 200);
    assert_eq!((old.requests(), new.requests()), (1, 1));
    wait_until("the old pool is drained", || old.connections_open() == 0).await;
}

#[tokio::test]
async fn a_moved_listener_is_bound_before_the_old_one_closes() {
    let backend = TestBackend::start(BackendOptions::default()).await;
    let servers = [backend.address()];
    let running = fcgate::server::start(config("127.0.0.1:0", "", &servers, ""))
        .await
        .unwrap();
    let old_address = running.local_addr;
    let mut kept = HttpClient::http1(old_address).await;
    assert_eq!(kept.get("/").await.unwrap().status, 200);

    // A port that is taken: refused, and nothing changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = running
        .reload(config(
            &taken.local_addr().unwrap().to_string(),
            "client_max_body_size = \"1KiB\"",
            &servers,
            "",
        ))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(running.listen_addr(), old_address);
    assert_ne!(
        running.gateway.current().config.limits.client_max_body_size,
        1024
    );

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let new_address = free.local_addr().unwrap();
    drop(free);
    let done = running
        .reload(config(&new_address.to_string(), "", &servers, ""))
        .await
        .unwrap();
    assert_eq!(done.moved_listener, Some(new_address));
    assert_eq!(running.listen_addr(), new_address);
    let mut fresh = HttpClient::http1(new_address).await;
    assert_eq!(fresh.get("/").await.unwrap().status, 200);
    // Accepted before the move: still served.
    assert_eq!(kept.get("/").await.unwrap().status, 200);
    let old_refused = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(old_address),
    )
    .await
    .unwrap();
    assert!(old_refused.is_err(), "the old port still accepts");
}

/// The datagrams sent to a fake `$NOTIFY_SOCKET`, read until `until` arrives.
fn read_notifications(socket: &std::os::unix::net::UnixDatagram, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 256];
    while !seen.iter().any(|message: &String| message == until) {
        let length = socket
            .recv(&mut buffer)
            .unwrap_or_else(|error| panic!("waiting for {until:?} after {seen:?}: {error}"));
        seen.push(String::from_utf8_lossy(&buffer[..length]).into_owned());
    }
    seen
}

#[test]
fn sighup_rereads_the_file_tells_systemd_and_refuses_a_bad_one() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(TestBackend::start(BackendOptions::default()));
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let file = dir.path().join("fcgate.toml");
    let write_config = |listen: &str, extra: &str| {
        let text = format!(
            "listen = \"{listen}\"\naccess_log = \"off\"\n{extra}\n[upstream]\nservers = [\"{}\"]\n",
            backend.address()
        );
        std::fs::write(&file, text).unwrap();
    };
    write_config("127.0.0.1:0", "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fcgate"))
        .arg("--config")
        .arg(&file)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = listening_authority(&mut child);
    assert_eq!(read_notifications(&systemd, "READY=1"), ["READY=1"]);
    assert_eq!(get(&first, "/"), 200);

    // Move the listener: the new address serves, systemd hears RELOADING=1 then READY=1.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = free.local_addr().unwrap().to_string();
    drop(free);
    write_config(&second, "");
    let hangup = |child: &std::process::Child| {
        let sent = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    hangup(&child);
    let messages = read_notifications(&systemd, "READY=1");
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{messages:?}"
    );
    assert_eq!(get(&second, "/"), 200);

    // A file that does not load: refused, logged, and the running config keeps serving.
    write_config(&second, "no_such_setting = 1");
    hangup(&child);
    read_notifications(&systemd, "READY=1");
    assert_eq!(get(&second, "/"), 200);

    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    assert!(
        stderr.contains("reload refused, the running configuration stays")
            && stderr.contains("no_such_setting"),
        "{stderr}"
    );
    assert_eq!(backend.requests(), 3);
}
