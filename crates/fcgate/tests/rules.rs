//! `[[rule]]` end to end, in front of a real php-fpm on a docroot laid out like DokuWiki's
//! upstream tarball (data/ and conf/ inside the root): every spelling of a denied path, the
//! built-in dotfile rule, rewrites with captures and their bound, `return`, response headers,
//! basic auth with a bcrypt htpasswd, `static` uploads, and `X-Accel-Redirect` into an
//! `internal` location with Range, including attempts to escape it. Each test skips (loudly)
//! when php-fpm is not installed (and fails under CI=true).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi_testkit::http::{raw_exchange, HttpClient, Response};
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use http::{Method, Request};
use http_body_util::Full;
use support::start_gateway;

struct Site {
    gateway: RunningGateway,
    _fpm: PhpFpm,
    _root: tempfile::TempDir,
    _htpasswd: tempfile::NamedTempFile,
}

const INDEX: &str = "<?php echo 'front: ', $_SERVER['REQUEST_URI'], ' id=', $_GET['id'] ?? '', \
                     ' user=', $_SERVER['REMOTE_USER'] ?? '';";
const DOWNLOAD: &str = "<?php header('Content-Disposition: attachment; filename=\"x.bin\"'); \
                        header('Cache-Control: private'); \
                        header('X-Accel-Redirect: ' . $_GET['to']); echo 'not this body';";

fn docroot() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let file = |relative: &str, text: &str| {
        let path = root.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    file("index.php", INDEX);
    file("doku.php", INDEX);
    file("download.php", DOWNLOAD);
    file(
        "sendfile.php",
        "<?php header('X-Sendfile: ' . $_SERVER['DOCUMENT_ROOT'] . $_GET['to']); echo 'not this';",
    );
    file(
        "sendfile-abs.php",
        "<?php header('X-Sendfile: ' . $_GET['to']); echo 'not this';",
    );
    file("data/pages/start.txt", "the wiki's start page");
    file("data/meta/start.changes", "127.0.0.1 alice");
    file("conf/local.php", "<?php $conf['superuser'] = 'alice';");
    file(".env", "SECRET=1");
    file(".well-known/security.txt", "Contact: x");
    file("lib/style.css", "body{}");
    file("lib/app.js", "run()");
    file("uploads/avatar.png", "png");
    file("uploads/shell.php", "<?php echo 'shell ran';");
    file("protected/report.bin", "0123456789abcdefghij");
    file("admin/index.php", INDEX);
    root
}

async fn site_with(rules: &str) -> Option<Site> {
    let root = docroot();
    let htpasswd = tempfile::NamedTempFile::new().unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(htpasswd.path(), format!("alice:{hash}\n")).unwrap();
    let fpm = PhpFpm::start(PhpFpmOptions {
        docroot: root.path().to_path_buf(),
        ..PhpFpmOptions::default()
    })
    .await?;
    let rules = rules.replace("HTPASSWD", &htpasswd.path().display().to_string());
    let settings = format!("root = '{}'\n{rules}", root.path().display());
    let gateway = start_gateway(&settings, &fpm.address(), "").await;
    Some(Site {
        gateway,
        _fpm: fpm,
        _root: root,
        _htpasswd: htpasswd,
    })
}

impl Site {
    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().method(Method::GET).uri(target);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        let mut client = HttpClient::http1(self.gateway.local_addr).await;
        client.send(request).await.unwrap()
    }

    /// The status of a request sent byte for byte (paths hyper would not send as written).
    async fn raw_status(&self, target: &str) -> u16 {
        let request = format!("GET {target} HTTP/1.1\r\nHost: wiki\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(self.gateway.local_addr, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&answer);
        text.split(' ').nth(1).unwrap_or("").parse().unwrap_or(0)
    }
}

const DOKUWIKI_DENIES: &str = r#"
[[rule]]
prefix = "/data/"
deny = 404

[[rule]]
regex = '^/(conf|bin|inc|vendor)/'
deny = 403
"#;

#[tokio::test]
async fn every_spelling_of_a_denied_folder_is_denied() {
    let Some(site) = site_with(DOKUWIKI_DENIES).await else {
        return;
    };
    for target in [
        "/data/pages/start.txt",
        "/data//meta/start.changes",
        "/%64ata/pages/start.txt",
        "/data%2Fpages/start.txt",
        "/DATA/../data/pages/start.txt",
        "/./data/pages/start.txt",
        "/lib/%2e%2e/data/pages/start.txt",
    ] {
        assert_eq!(site.raw_status(target).await, 404, "{target}");
    }
    assert_eq!(site.raw_status("/conf/local.php").await, 403);
    assert_eq!(site.raw_status("/CONF/local.php").await, 404);
    // The folder without its slash redirects, and its target is denied.
    let response = site.get("/data", &[]).await;
    assert_eq!(response.status, 301);
    assert_eq!(site.get("/lib/style.css", &[]).await.status, 200);
    assert!(site
        .get("/wiki/start", &[])
        .await
        .text()
        .starts_with("front: /wiki/start"));
}

#[tokio::test]
async fn dotfiles_are_refused_by_the_built_in_rule_unless_it_is_turned_off() {
    let Some(site) = site_with("").await else {
        return;
    };
    assert_eq!(site.raw_status("/.env").await, 404);
    assert_eq!(site.raw_status("/%2eenv").await, 404);
    assert_eq!(site.get("/.well-known/security.txt", &[]).await.status, 200);
    let Some(site) = site_with("default_rules = false").await else {
        return;
    };
    assert_eq!(site.get("/.env", &[]).await.text(), "SECRET=1");
}

#[tokio::test]
async fn rewrites_return_and_headers() {
    let rules = r#"
[[rule]]
regex = '\.(css|js|png)$'
headers = { "Cache-Control" = "public, max-age=31536000, immutable" }
add_headers = { "X-Served-By" = "rules" }

[[rule]]
regex = '\.js$'
expires = "1h"

[[rule]]
regex = '^/old/(.*)$'
return = { status = 301, location = "/new/$1" }

[[rule]]
regex = '^/gone'
return = { status = 410, body = "gone for good" }

[[rule]]
regex = '^/loop/(.*)$'
rewrite = "/loop/x$1"

[[rule]]
regex = '^/(.*)$'
if_missing = true
rewrite = "/doku.php?id=$1"
"#;
    let Some(site) = site_with(rules).await else {
        return;
    };
    let response = site.get("/lib/style.css", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(response.headers["x-served-by"], "rules");
    // nginx's `expires 1h`: both headers.
    let response = site.get("/lib/app.js", &[]).await;
    assert_eq!(response.headers["cache-control"], "max-age=3600");
    let expires = httpdate::parse_http_date(response.headers["expires"].to_str().unwrap()).unwrap();
    let ahead = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(ahead > std::time::Duration::from_secs(3500), "{ahead:?}");
    // A missing asset is rewritten to doku.php, whose answer is not an asset's.
    let response = site.get("/lib/missing.css", &[]).await;
    assert!(response.text().starts_with("front: /lib/missing.css"));
    assert!(!response.headers.contains_key("cache-control"));
    // Not on errors: a 410 for an asset must not be cached for a year.
    let response = site.get("/gone.css", &[]).await;
    assert_eq!(response.status, 410);
    assert!(!response.headers.contains_key("cache-control"));

    let response = site
        .get("/old/a%20b?x=1", &[("host", "wiki.example")])
        .await;
    assert_eq!(response.status, 301);
    assert_eq!(
        response.headers["location"],
        "http://wiki.example/new/a%20b?x=1"
    );
    let response = site.get("/gone", &[]).await;
    assert_eq!(
        (response.status.as_u16(), response.text()),
        (410, "gone for good".into())
    );

    // DokuWiki's userewrite=1: pretty URLs reach doku.php with the page id; existing files
    // and doku.php itself are left alone.
    let response = site.get("/wiki/syntax?do=edit", &[]).await;
    assert_eq!(
        response.text(),
        "front: /wiki/syntax?do=edit id=wiki/syntax user="
    );
    assert_eq!(site.get("/lib/style.css", &[]).await.text(), "body{}");

    // A rewrite cycle is a configuration mistake: 500, bounded, and the gateway serves on.
    assert_eq!(site.get("/loop/a", &[]).await.status, 500);
    assert_eq!(site.get("/lib/style.css", &[]).await.status, 200);
}

#[tokio::test]
async fn basic_auth_good_bad_missing_and_malformed() {
    let rules = r#"
[[rule]]
prefix = "/admin/"
auth_basic = "Wiki admin"
auth_basic_user_file = "HTPASSWD"
"#;
    let Some(site) = site_with(rules).await else {
        return;
    };
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    let response = site.get("/admin/", &[]).await;
    assert_eq!(response.status, 401);
    assert_eq!(
        response.headers["www-authenticate"],
        "Basic realm=\"Wiki admin\", charset=\"UTF-8\""
    );
    for authorization in [
        basic("alice:wrong"),
        basic("mallory:s3cret"),
        "Basic !!!".to_owned(),
        "Bearer token".to_owned(),
        basic("no-colon"),
    ] {
        let response = site
            .get("/admin/", &[("authorization", &authorization)])
            .await;
        assert_eq!(response.status, 401, "{authorization}");
    }
    let response = site
        .get("/admin/", &[("authorization", &basic("alice:s3cret"))])
        .await;
    assert_eq!(response.status, 200);
    assert!(
        response.text().ends_with("user=alice"),
        "{}",
        response.text()
    );
    // Elsewhere, no credentials are asked for.
    assert_eq!(site.get("/lib/style.css", &[]).await.status, 200);
}

#[tokio::test]
async fn static_folders_never_run_scripts() {
    let rules = r#"
[[rule]]
prefix = "/uploads/"
static = true
"#;
    let Some(site) = site_with(rules).await else {
        return;
    };
    assert_eq!(site.get("/uploads/avatar.png", &[]).await.status, 200);
    let response = site.get("/uploads/shell.php", &[]).await;
    assert_eq!(response.status, 404);
    assert!(!response.text().contains("shell"));
    assert_eq!(site.get("/uploads/nothing-here", &[]).await.status, 404);
}

const ACCEL_RULES: &str = r#"
[[rule]]
prefix = "/protected/"
internal = true
headers = { "X-Content-Type-Options" = "nosniff" }

[[rule]]
prefix = "/data/"
deny = 404
"#;

#[tokio::test]
async fn x_accel_redirect_serves_files_from_internal_locations_only() {
    let Some(site) = site_with(ACCEL_RULES).await else {
        return;
    };
    // The location itself is not for clients.
    assert_eq!(site.get("/protected/report.bin", &[]).await.status, 404);
    assert_eq!(site.raw_status("/%70rotected/report.bin").await, 404);

    let response = site
        .get("/download.php?to=/protected/report.bin", &[])
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "0123456789abcdefghij");
    assert_eq!(
        response.headers["content-disposition"],
        "attachment; filename=\"x.bin\""
    );
    assert_eq!(response.headers["cache-control"], "private");
    assert_eq!(response.headers["x-content-type-options"], "nosniff");
    assert!(!response.headers.contains_key("x-accel-redirect"));

    let response = site
        .get(
            "/download.php?to=/protected/report.bin",
            &[("range", "bytes=10-13")],
        )
        .await;
    assert_eq!(response.status, 206);
    assert_eq!(response.text(), "abcd");

    // Out of the internal location by `..`, by encoding, into a denied folder, onto a script,
    // or onto nothing: never served.
    for (target, status) in [
        ("/protected/../conf/local.php", 404),
        ("/protected/%2e%2e/data/pages/start.txt", 404),
        ("/protected/..%2fdata/pages/start.txt", 404),
        ("/data/pages/start.txt", 404),
        ("/lib/style.css", 404),
        ("/protected/../../../etc/passwd", 502),
        ("/protected/missing.bin", 404),
        ("/protected/../index.php", 404),
    ] {
        let query = target.replace('%', "%25");
        let response = site.get(&format!("/download.php?to={query}"), &[]).await;
        assert_eq!(response.status, status, "{target}: {}", response.text());
        assert!(!response.text().contains("superuser"), "{target}");
        assert!(!response.text().contains("start page"), "{target}");
    }
}

#[tokio::test]
async fn error_pages_replace_fcgate_answers_but_never_the_apps() {
    let rules = r#"
error_pages = { 404 = "/errors/404.html", 403 = "/errors/error.php?kind=forbidden", 401 = "/errors/404.html" }

[[rule]]
prefix = "/errors/"
internal = true

[[rule]]
prefix = "/data/"
deny = 403

[[rule]]
prefix = "/admin/"
auth_basic = "Wiki admin"
auth_basic_user_file = "HTPASSWD"
"#;
    let Some(site) = site_with(rules).await else {
        return;
    };
    let root = site._root.path();
    std::fs::create_dir(root.join("errors")).unwrap();
    std::fs::write(root.join("errors/404.html"), "<h1>Nothing here</h1>").unwrap();
    std::fs::write(
        root.join("errors/error.php"),
        "<?php echo 'error page: ', $_GET['kind'], ' for ', $_SERVER['REQUEST_URI'];",
    )
    .unwrap();
    std::fs::write(
        root.join("app404.php"),
        "<?php http_response_code(404); echo 'app says no';",
    )
    .unwrap();

    let response = site.get("/missing.php", &[]).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.text(), "<h1>Nothing here</h1>");
    assert!(response.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(!response.headers.contains_key("etag"));

    let response = site.get("/data/pages/start.txt", &[]).await;
    assert_eq!(response.status, 403);
    assert_eq!(
        response.text(),
        "error page: forbidden for /data/pages/start.txt"
    );

    // The challenge stays with the page.
    let response = site.get("/admin/", &[]).await;
    assert_eq!(response.status, 401);
    assert!(response.headers.contains_key("www-authenticate"));
    assert_eq!(response.text(), "<h1>Nothing here</h1>");

    // The app's own 404 is the app's.
    let response = site.get("/app404.php", &[]).await;
    assert_eq!(
        (response.status.as_u16(), response.text()),
        (404, "app says no".into())
    );
    // The pages themselves are internal.
    assert_eq!(
        site.get("/errors/error.php", &[]).await.text(),
        "<h1>Nothing here</h1>"
    );
}

/// Apache's and lighttpd's `X-Sendfile` names a path on disk: under the root it is the URI path
/// that names it, with the same rule that it must be in an `internal` location.
#[tokio::test]
async fn x_sendfile_serves_files_under_the_root_from_internal_locations_only() {
    let Some(site) = site_with(ACCEL_RULES).await else {
        return;
    };
    let response = site
        .get(
            "/sendfile.php?to=/protected/report.bin",
            &[("range", "bytes=0-3")],
        )
        .await;
    assert_eq!(response.status, 206);
    assert_eq!(response.text(), "0123");
    for (script, target, status) in [
        ("sendfile.php", "/conf/local.php", 404),
        ("sendfile.php", "/protected/../data/pages/start.txt", 404),
        ("sendfile.php", "/../../../../etc/passwd", 502),
        ("sendfile-abs.php", "/etc/passwd", 502),
    ] {
        let response = site.get(&format!("/{script}?to={target}"), &[]).await;
        assert_eq!(
            response.status,
            status,
            "{script} {target}: {}",
            response.text()
        );
        assert!(!response.text().contains("root:"), "{target}");
    }
}
