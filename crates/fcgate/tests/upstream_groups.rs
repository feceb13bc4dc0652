//! `[upstreams.NAME]` groups: a `[[site]]` and a `[[rule]]` send scripts to a group of their
//! own, each group with its own pool and cap, and the others go on to `[upstream]`; `/metrics`
//! labels a group's servers with `group`; a reload adds and removes a group, draining the
//! removed one's pool.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::HttpClient;
use http::Request;
use http_body_util::Full;

fn config(default: &TestBackend, api: &TestBackend, admin: &TestBackend) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
access_log = "off"
admin_listen = "127.0.0.1:0"

[[rule]]
prefix = "/api/"
upstream = "api"

[[site]]
server_names = ["admin.example"]
upstream = "admin"

[upstream]
servers = ["{default}"]
max_conns = 4

[upstreams.api]
servers = ["{api}"]
max_conns = 2

[upstreams.admin]
servers = ["{admin}"]
max_conns = 1
"#,
        default = default.address(),
        api = api.address(),
        admin = admin.address(),
    )
}

async fn start(text: &str) -> RunningGateway {
    let config = fcgate::config::parse_file_text(text)
        .unwrap()
        .validate()
        .unwrap();
    fcgate::server::start(config).await.unwrap()
}

async fn get(gateway: &RunningGateway, host: &str, path: &str) -> u16 {
    let request = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut client = HttpClient::http1(gateway.local_addr).await;
    client.send(request).await.unwrap().status.as_u16()
}

#[tokio::test]
async fn sites_and_rules_send_scripts_to_their_group() {
    let default = TestBackend::start(BackendOptions::default()).await;
    let api = TestBackend::start(BackendOptions::default()).await;
    let admin = TestBackend::start(BackendOptions::default()).await;
    let gateway = start(&config(&default, &api, &admin)).await;
    for _ in 0..3 {
        assert_eq!(get(&gateway, "www.example", "/page").await, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(&gateway, "www.example", "/api/users").await, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&gateway, "admin.example", "/api/users").await, 200);
    }
    // The admin site has no `/api/` rule: its scripts all go to its own group.
    assert_eq!(
        (default.requests(), api.requests(), admin.requests()),
        (3, 5, 2)
    );
    // Each group's pool keeps its own cap.
    let caps: Vec<usize> = gateway
        .gateway
        .upstreams()
        .iter()
        .flat_map(|upstream| upstream.pools())
        .map(|pool| pool.stats().cap)
        .collect();
    assert_eq!(caps, [4, 1, 2], "[upstream], then admin, api by name");

    let admin_addr = gateway.admin_addr.unwrap();
    let mut client = HttpClient::http1(admin_addr).await;
    let metrics = client.get("/metrics").await.unwrap().text();
    let cap_line = |group: &str| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with("fcgate_backend_connection_cap{")
                    && line.contains(&format!("group=\"{group}\""))
            })
            .map(str::to_owned)
    };
    assert!(cap_line("api").unwrap().ends_with(" 2"), "{metrics}");
    assert!(cap_line("admin").unwrap().ends_with(" 1"), "{metrics}");
}

#[tokio::test]
async fn a_reload_adds_and_removes_groups_and_keeps_the_pools_of_those_that_stay() {
    let default = TestBackend::start(BackendOptions::default()).await;
    let api = TestBackend::start(BackendOptions::default()).await;
    let admin = TestBackend::start(BackendOptions::default()).await;
    let text = config(&default, &api, &admin);
    let gateway = start(&text).await;
    assert_eq!(get(&gateway, "www.example", "/api/x").await, 200);
    let api_connections = api.connections_accepted();

    // Without the admin site and its group: its pool drains; api's stays as it was.
    let without_admin = text
        .replace(
            "[[site]]\nserver_names = [\"admin.example\"]\nupstream = \"admin\"\n",
            "",
        )
        .replace(
            &format!(
                "[upstreams.admin]\nservers = [\"{}\"]\nmax_conns = 1\n",
                admin.address()
            ),
            "",
        );
    assert!(
        !without_admin.contains("upstreams.admin"),
        "{without_admin}"
    );
    assert!(!without_admin.contains("admin.example"), "{without_admin}");
    let next = fcgate::config::parse_file_text(&without_admin)
        .unwrap()
        .validate()
        .unwrap();
    let done = gateway.reload(next).await.unwrap();
    assert_eq!(
        (done.kept_servers, done.new_servers, done.drained_servers),
        (2, 0, 1)
    );
    assert_eq!(gateway.gateway.upstreams().len(), 2);
    assert_eq!(get(&gateway, "admin.example", "/api/x").await, 200);
    assert_eq!(get(&gateway, "admin.example", "/page").await, 200);
    // The api group kept its pool: its idle connection was reused, none opened.
    assert_eq!(api.connections_accepted(), api_connections);
    assert_eq!(admin.requests(), 0);

    // And back: the group is new again.
    let next = fcgate::config::parse_file_text(&text)
        .unwrap()
        .validate()
        .unwrap();
    let done = gateway.reload(next).await.unwrap();
    assert_eq!(
        (done.kept_servers, done.new_servers, done.drained_servers),
        (2, 1, 0)
    );
    assert_eq!(get(&gateway, "admin.example", "/page").await, 200);
    assert_eq!(admin.requests(), 1);
}
