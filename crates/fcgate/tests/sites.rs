//! Several sites in one gateway, end to end in front of one php-fpm: each `[[site]]` with its
//! own `server_names`, root, index and rules; exact names before wildcards; other hosts to the
//! default site, or 421 with `unknown_hosts = "reject"`. Skips (loudly) without php-fpm (fails
//! under CI=true).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi_testkit::http::{HttpClient, Response};
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use http::Request;
use http_body_util::Full;
use support::start_gateway;

struct Sites {
    gateway: RunningGateway,
    _fpm: PhpFpm,
    _roots: Vec<tempfile::TempDir>,
}

fn root_saying(name: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("index.php"),
        format!("<?php echo '{name}: ', $_SERVER['SCRIPT_FILENAME'];"),
    )
    .unwrap();
    std::fs::write(root.path().join("which.txt"), name).unwrap();
    std::fs::create_dir(root.path().join("data")).unwrap();
    std::fs::write(root.path().join("data/secret.txt"), "secret").unwrap();
    root
}

async fn start(unknown_hosts: &str) -> Option<Sites> {
    let roots: Vec<_> = ["default", "wiki", "shop"]
        .into_iter()
        .map(root_saying)
        .collect();
    let fpm = PhpFpm::start(PhpFpmOptions {
        docroot: roots[0].path().to_path_buf(),
        ..PhpFpmOptions::default()
    })
    .await?;
    let settings = format!(
        r#"root = '{default}'
{unknown_hosts}

[[site]]
server_names = ["wiki.example", "*.wiki.example"]
root = '{wiki}'

[[site.rule]]
prefix = "/data/"
deny = 404

[[site]]
server_names = ["*.example"]
root = '{shop}'
"#,
        default = roots[0].path().display(),
        wiki = roots[1].path().display(),
        shop = roots[2].path().display(),
    );
    let gateway = start_gateway(&settings, &fpm.address(), "").await;
    Some(Sites {
        gateway,
        _fpm: fpm,
        _roots: roots,
    })
}

impl Sites {
    async fn get(&self, host: &str, target: &str) -> Response {
        let request = Request::get(target)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let mut client = HttpClient::http1(self.gateway.local_addr).await;
        client.send(request).await.unwrap()
    }
}

#[tokio::test]
async fn each_host_gets_its_site() {
    let Some(sites) = start("").await else { return };
    for (host, expected) in [
        ("wiki.example", "wiki"),
        ("WIKI.example:8080", "wiki"),
        ("fr.wiki.example", "wiki"),
        ("shop.example", "shop"),
        ("www.shop.example", "shop"),
        ("other.org", "default"),
        ("127.0.0.1", "default"),
    ] {
        let response = sites.get(host, "/which.txt").await;
        assert_eq!(response.text(), expected, "{host}");
        let response = sites.get(host, "/some/page").await;
        assert!(
            response.text().starts_with(&format!("{expected}: ")),
            "{host}: {}",
            response.text()
        );
    }
    // A site's rules are its own.
    assert_eq!(
        sites.get("wiki.example", "/data/secret.txt").await.status,
        404
    );
    assert_eq!(
        sites.get("shop.example", "/data/secret.txt").await.text(),
        "secret"
    );
}

#[tokio::test]
async fn unknown_hosts_can_be_refused_with_421() {
    let Some(sites) = start("unknown_hosts = \"reject\"").await else {
        return;
    };
    let response = sites.get("other.org", "/which.txt").await;
    assert_eq!(response.status, 421);
    assert_eq!(sites.get("wiki.example", "/which.txt").await.text(), "wiki");
}
