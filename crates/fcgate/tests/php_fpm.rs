//! The gateway end to end against a real php-fpm serving the fixture docroot (`tests/php/`) in
//! PHP mode: what PHP sees (query, form, body, PATH_INFO, REQUEST_URI), what the client gets
//! back byte for byte (bodies, cookies, redirects, static files, directory indexes), the paths
//! that must never run or reveal a script, both listen kinds, connection reuse and the cap proven
//! through a counting relay, the read timeout, and HTTP/2. Each test skips (loudly) when php-fpm
//! is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// The shared helpers are `pub` for every test binary; this one uses only some of them.
mod support;

use std::time::Duration;

use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi_testkit::http::{raw_exchange, run_load, HttpClient, Response};
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions, ProcessManager};
use fcgi_testkit::relay::CountingRelay;
use fcgi_testkit::Listen;
use http::Request;
use http_body_util::Full;
use support::{md5_hex, pool_stats, pseudo_random_bytes, start_gateway, wait_until};

/// What PHP's `header('Content-Type: text/plain')` becomes with the default `default_charset`.
const PHP_TEXT: &str = "text/plain;charset=UTF-8";
const SCRIPT_THAT_MUST_NOT_RUN: &str = r#"<?php echo "EXECUTED"; ?>"#;

/// php-fpm and a gateway in PHP mode in front of it; the gateway goes first on drop.
struct PhpSite {
    gateway: RunningGateway,
    fpm: PhpFpm,
}

fn root_setting(fpm: &PhpFpm) -> String {
    format!("root = '{}'", fpm.docroot().display())
}

async fn php_site(options: PhpFpmOptions, upstream_settings: &str) -> Option<PhpSite> {
    let fpm = PhpFpm::start(options).await?;
    let gateway = start_gateway(&root_setting(&fpm), &fpm.address(), upstream_settings).await;
    Some(PhpSite { gateway, fpm })
}

async fn default_site() -> Option<PhpSite> {
    php_site(PhpFpmOptions::default(), "").await
}

impl PhpSite {
    async fn client(&self) -> HttpClient {
        HttpClient::http1(self.gateway.local_addr).await
    }

    async fn get(&self, path_and_query: &str) -> Response {
        let response = self.client().await.get(path_and_query).await.unwrap();
        self.check_no_php_errors();
        response
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Response {
        self.client().await.send(request).await.unwrap()
    }

    /// Everything the gateway sent back for `GET /x`-style `method_and_target`, asked with
    /// `Connection: close` so the exchange ends with the response.
    async fn raw(&self, method_and_target: &str) -> String {
        let request =
            format!("{method_and_target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let bytes = raw_exchange(self.gateway.local_addr, request.as_bytes()).await;
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn check_no_php_errors(&self) {
        let log = self.fpm.log();
        assert!(
            !log.contains("PHP Warning") && !log.contains("PHP Fatal"),
            "{log}"
        );
    }
}

fn assert_response(response: &Response, status: u16, content_type: &str, body: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("content-type"), Some(content_type));
    assert_eq!(response.text(), body);
}

// ---- requests and responses -------------------------------------------------------------

async fn get_with_a_query_string_reaches_php(listen: Listen) {
    let Some(site) = php_site(
        PhpFpmOptions {
            listen,
            ..PhpFpmOptions::default()
        },
        "",
    )
    .await
    else {
        return;
    };
    let response = site.get("/echo.php?a=1&b=two%20words&list[]=x").await;
    assert_response(
        &response,
        200,
        PHP_TEXT,
        "method: GET\n\
         query: a=1&b=two%20words&list[]=x\n\
         get: {\"a\":\"1\",\"b\":\"two words\",\"list\":[\"x\"]}\n\
         body_length: 0\n\
         body_md5: d41d8cd98f00b204e9800998ecf8427e\n\
         content_type: \n",
    );
}

#[tokio::test]
async fn get_with_a_query_string_over_a_unix_socket() {
    get_with_a_query_string_reaches_php(Listen::Unix).await;
}

#[tokio::test]
async fn get_with_a_query_string_over_tcp() {
    get_with_a_query_string_reaches_php(Listen::Tcp).await;
}

#[tokio::test]
async fn a_posted_form_reaches_post() {
    let Some(site) = default_site().await else {
        return;
    };
    let form = "name=fcgate&n=42&greeting=hello+world";
    let request = Request::post("/upload.php")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    let response = site.send(request).await;
    let expected = format!(
        "length: {}\nmd5: {}\nfield: name=fcgate\nfield: n=42\nfield: greeting=hello world\n",
        form.len(),
        md5_hex(form.as_bytes())
    );
    assert_response(&response, 200, PHP_TEXT, &expected);
}

#[tokio::test]
async fn head_has_the_headers_of_get_and_no_body() {
    let Some(site) = default_site().await else {
        return;
    };
    let get = site.raw("GET /hello.php").await;
    let head = site.raw("HEAD /hello.php").await;
    let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
    let (head_head, head_body) = head.split_once("\r\n\r\n").unwrap();
    assert_eq!(get_body, "Hello, world!");
    assert_eq!(
        head_body, "",
        "no body bytes after a HEAD response's headers"
    );
    let lines = |head: &str| -> Vec<String> {
        head.lines()
            .map(str::to_ascii_lowercase)
            .filter(|line| !line.starts_with("date:") && !line.starts_with("content-length:"))
            .collect()
    };
    assert_eq!(lines(get_head), lines(head_head));
    assert!(get_head.starts_with("HTTP/1.1 200 OK\r\n"), "{get_head}");
    // A Content-Length on HEAD is optional, but if present it must be GET's (RFC 9110 §8.6).
    let content_length = |head: &str| {
        head.lines().find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
    };
    if let Some(length) = content_length(head_head) {
        assert_eq!(Some(length), content_length(get_head), "{head_head}");
    }
}

#[tokio::test]
async fn a_one_mib_upload_arrives_whole() {
    let Some(site) = default_site().await else {
        return;
    };
    let upload = pseudo_random_bytes(1 << 20);
    let request = Request::post("/upload.php")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(upload.clone())))
        .unwrap();
    let response = site.send(request).await;
    let expected = format!("length: 1048576\nmd5: {}\n", md5_hex(&upload));
    assert_response(&response, 200, PHP_TEXT, &expected);
}

#[tokio::test]
async fn a_chunked_upload_reaches_php_with_its_length() {
    let Some(site) = default_site().await else {
        return;
    };
    let upload = pseudo_random_bytes(100_000);
    let mut request = b"POST /upload.php HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
        Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for chunk in upload.chunks(30_000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_exchange(site.gateway.local_addr, &request).await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        raw.starts_with("HTTP/1.1 200 OK\r\n"),
        "{raw}\n{}",
        site.fpm.log()
    );
    let expected = format!("\r\n\r\nlength: 100000\nmd5: {}\n", md5_hex(&upload));
    assert!(raw.ends_with(&expected), "{raw}");
}

#[tokio::test]
async fn a_ten_mib_download_arrives_whole() {
    let Some(site) = default_site().await else {
        return;
    };
    let response = site.get("/download.php?size=10485760").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(response.body.len(), 10_485_760);
    let pattern_holds = response
        .body
        .iter()
        .enumerate()
        .all(|(position, &byte)| usize::from(byte - b'0') == position % 10);
    assert!(
        pattern_holds,
        "the body is the 0123456789 pattern throughout"
    );
}

#[tokio::test]
async fn several_set_cookie_headers_stay_separate() {
    let Some(site) = default_site().await else {
        return;
    };
    let response = site.get("/cookies.php").await;
    assert_response(&response, 200, PHP_TEXT, "cookies set\n");
    let cookies: Vec<&str> = response
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert_eq!(
        cookies,
        ["first=one", "second=two; path=/", "third=three; HttpOnly"]
    );
}

#[tokio::test]
async fn a_location_header_is_a_302_redirect() {
    let Some(site) = default_site().await else {
        return;
    };
    let response = site.get("/redirect.php").await;
    assert_eq!(response.status, 302);
    assert_eq!(response.header("location"), Some("/hello.php"));
    assert_eq!(response.text(), "");
}

#[tokio::test]
async fn http_response_code_404_reaches_the_client() {
    let Some(site) = default_site().await else {
        return;
    };
    let response = site.get("/notfound.php").await;
    assert_response(&response, 404, PHP_TEXT, "not found from PHP\n");
}

#[tokio::test]
async fn path_info_after_the_script_name() {
    let Some(site) = default_site().await else {
        return;
    };
    let response = site.get("/pathinfo.php/a/b").await;
    assert_response(
        &response,
        200,
        PHP_TEXT,
        "PATH_INFO: /a/b\nSCRIPT_NAME: /pathinfo.php\n",
    );
}

#[tokio::test]
async fn a_missing_path_runs_the_front_controller_with_the_original_uri() {
    let Some(site) = default_site().await else {
        return;
    };
    let response = site.get("/no/such/page?x=1").await;
    assert_response(
        &response,
        200,
        PHP_TEXT,
        "front: /no/such/page?x=1\nSCRIPT_NAME: /index.php\nPATH_INFO: \n",
    );
}

#[tokio::test]
async fn static_files_next_to_scripts_with_validators_and_ranges() {
    let Some(site) = default_site().await else {
        return;
    };
    let css = std::fs::read(site.fpm.docroot().join("static/style.css")).unwrap();
    let mut client = site.client().await;
    let response = client.get("/static/style.css").await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/css"));
    assert_eq!(response.body, css);
    let etag = response.header("etag").expect("an ETag").to_owned();
    let last_modified = response
        .header("last-modified")
        .expect("a Last-Modified")
        .to_owned();

    let html = client.get("/static/page.html").await.unwrap();
    assert_eq!(html.header("content-type"), Some("text/html"));
    assert_eq!(
        html.body,
        std::fs::read(site.fpm.docroot().join("static/page.html")).unwrap()
    );

    for (validator, value) in [
        ("if-none-match", &etag),
        ("if-modified-since", &last_modified),
    ] {
        let conditional = Request::get("/static/style.css")
            .header(validator, value.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.send(conditional).await.unwrap();
        assert_eq!(response.status, 304, "{validator}: {value}");
        assert!(response.body.is_empty());
    }

    let range = Request::get("/static/style.css")
        .header("range", "bytes=5-16")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.send(range).await.unwrap();
    assert_eq!(response.status, 206);
    assert_eq!(response.body, css[5..=16]);
    let content_range = format!("bytes 5-16/{}", css.len());
    assert_eq!(
        response.header("content-range"),
        Some(content_range.as_str())
    );
}

#[tokio::test]
async fn a_directory_runs_its_index_and_its_slashless_form_redirects() {
    let Some(site) = default_site().await else {
        return;
    };
    let response = site.get("/dir/").await;
    assert_response(&response, 200, PHP_TEXT, "dir index: /dir/index.php\n");
    let redirect = site.get("/dir?keep=1").await;
    assert_eq!(redirect.status, 301);
    // Absolute, as nginx's absolute_redirect: the Host the client sent, the query kept.
    let location = format!("http://{}/dir/?keep=1", site.gateway.local_addr);
    assert_eq!(redirect.header("location"), Some(location.as_str()));
}

// ---- paths that must never run or reveal anything ----------------------------------------

#[tokio::test]
async fn an_upload_with_php_inside_is_served_as_bytes() {
    let Some(site) = default_site().await else {
        return;
    };
    let response = site.get("/uploads/x.jpg").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("image/jpeg"));
    assert_eq!(response.text(), SCRIPT_THAT_MUST_NOT_RUN);
}

/// What a hostile path may get: refused outright, or handed whole to the front controller.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Refused,
    FrontController,
}

#[tokio::test]
async fn hostile_paths_never_run_an_upload_nor_leave_the_root() {
    let Some(site) = default_site().await else {
        return;
    };
    for (target, outcome) in [
        // A missing script is a 404, as nginx's `try_files $uri =404` in its PHP location.
        ("/uploads/x.jpg/evil.php", Outcome::Refused),
        ("/uploads/x.jpg/.php", Outcome::Refused),
        ("/uploads/x.jpg%00.php", Outcome::Refused),
        ("/uploads/x.jpg%00", Outcome::Refused),
        ("/uploads/x.jpg/", Outcome::FrontController),
        ("/uploads%2fx.jpg/evil.php", Outcome::Refused),
        ("/../etc/passwd", Outcome::Refused),
        ("/%2e%2e/%2e%2e/etc/passwd", Outcome::Refused),
        ("/hello.php/../../../etc/passwd", Outcome::Refused),
        ("/dir/..%2f..%2f..%2fetc/passwd", Outcome::Refused),
        ("/static/../../../../etc/passwd", Outcome::Refused),
        (
            "/pathinfo.php/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            Outcome::Refused,
        ),
    ] {
        let raw = site.raw(&format!("GET {target}")).await;
        let without_source = raw.replace(SCRIPT_THAT_MUST_NOT_RUN, "");
        assert!(
            !without_source.contains("EXECUTED"),
            "{target} ran the upload: {raw}"
        );
        assert!(!raw.contains("root:x:0:0"), "{target} left the root: {raw}");
        match outcome {
            Outcome::Refused => assert!(
                raw.starts_with("HTTP/1.1 400 ") || raw.starts_with("HTTP/1.1 404 "),
                "{target}: {raw}"
            ),
            Outcome::FrontController => {
                assert!(raw.starts_with("HTTP/1.1 200 "), "{target}: {raw}");
                let front = format!("\r\n\r\nfront: {target}\nSCRIPT_NAME: /index.php\n");
                assert!(raw.contains(&front), "{target}: {raw}");
            }
        }
    }
    site.check_no_php_errors();
}

#[tokio::test]
async fn a_php_body_longer_than_its_content_length_cannot_split_the_response() {
    let Some(site) = default_site().await else {
        return;
    };
    // header('Content-Length: 5'); echo "hello" . $_GET['x'];
    let smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nPWNED";
    let encoded: String = smuggled
        .bytes()
        .map(|byte| format!("%{byte:02X}"))
        .collect();
    let request = format!(
        "GET /split.php?x={encoded} HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /static/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
    );
    let raw = raw_exchange(site.gateway.local_addr, request.as_bytes()).await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(!raw.contains("PWNED"), "{raw}");
    assert!(raw.ends_with("\r\n\r\nhello"), "{raw}");
    assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "{raw}");
    site.check_no_php_errors();
}

#[tokio::test]
async fn header_names_php_would_rewrite_never_reach_it() {
    let Some(site) = default_site().await else {
        return;
    };
    let request = "GET /server.php HTTP/1.1\r\nHost: t\r\nX.Forwarded-For: 6.6.6.6\r\n\
                   X-Forwarded-For: 1.1.1.1\r\nConnection: close\r\n\r\n";
    let raw = raw_exchange(site.gateway.local_addr, request.as_bytes()).await;
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("\nHTTP_X_FORWARDED_FOR: 1.1.1.1\n"), "{raw}");
    // And Content-Length reaches PHP as nginx passes it, as HTTP_CONTENT_LENGTH too.
    let post = Request::post("/server.php")
        .body(Full::new(Bytes::from_static(b"twelve bytes")))
        .unwrap();
    let response = site.send(post).await;
    assert!(
        response.text().contains("HTTP_CONTENT_LENGTH: 12\n"),
        "{}",
        response.text()
    );
    site.check_no_php_errors();
}

#[tokio::test]
async fn a_script_is_never_served_as_source() {
    let Some(site) = default_site().await else {
        return;
    };
    for target in [
        "/hello.php",
        "/hello.php/",
        "/HELLO.PHP",
        "/hello.PHP",
        "/hello.php.",
        "/hello.php%20",
        "/hello.php%00",
        "/hello.php::$DATA",
        "/hello%2ephp",
        "/./hello.php",
        "//hello.php",
        "/dir/../hello.php",
        "/dir/index.php",
        "/dir/",
        "/dir/index.php%2f",
        "/hello.phps",
        "/hello.php~",
        "/index.php",
    ] {
        let raw = site.raw(&format!("GET {target}")).await;
        assert!(raw.starts_with("HTTP/1.1 "), "{target}: {raw}");
        assert!(!raw.contains("<?php"), "{target} served PHP source: {raw}");
        assert!(
            !raw.contains("header('Content-Type"),
            "{target} served PHP source: {raw}"
        );
    }
}

/// php-fpm in front of a docroot of the test's own, where scripts come and go, and a gateway
/// with `script_lookup_cache` set to `validity`.
async fn changing_site(docroot: &std::path::Path, validity: &str) -> Option<PhpSite> {
    let fpm = PhpFpm::start(PhpFpmOptions {
        docroot: docroot.to_path_buf(),
        ..PhpFpmOptions::default()
    })
    .await?;
    let settings = format!(
        "{}\nscript_lookup_cache = \"{validity}\"",
        root_setting(&fpm)
    );
    let gateway = start_gateway(&settings, &fpm.address(), "").await;
    Some(PhpSite { gateway, fpm })
}

#[tokio::test]
async fn a_new_script_runs_at_once_and_a_deleted_one_is_a_404_with_or_without_the_cache() {
    // fcgate's own 404 and php-fpm's differ: with the cache a script deleted within its
    // validity reaches php-fpm, which answers the 404 itself ("No input file specified." from
    // the php-fpm of Debian 12, "File not found." from others); without it, fcgate looks.
    let gateway_404 = "404 Not Found\n";
    let from_php_fpm =
        |body: &str| body == "No input file specified.\n" || body == "File not found.\n";
    for (validity, php_fpm_answers) in [("1h", true), ("0s", false)] {
        let docroot = tempfile::tempdir().unwrap();
        let script = docroot.path().join("deploy.php");
        let Some(site) = changing_site(docroot.path(), validity).await else {
            return;
        };
        // Not there: a 404, and not remembered as missing.
        let missing = site.get("/deploy.php").await;
        assert_eq!(
            (missing.status.as_u16(), missing.text().as_str()),
            (404, gateway_404)
        );
        std::fs::write(&script, "<?php echo 'version 1';").unwrap();
        let deployed = site.get("/deploy.php/extra").await;
        assert_eq!(
            (deployed.status.as_u16(), deployed.text().as_str()),
            (200, "version 1")
        );
        std::fs::remove_file(&script).unwrap();
        // (php-fpm logs a warning for the script it could not open: not `site.get`'s check.)
        let deleted = site.client().await.get("/deploy.php").await.unwrap();
        let body = deleted.text();
        assert_eq!(deleted.status.as_u16(), 404, "{validity}: {body}");
        if php_fpm_answers {
            assert!(from_php_fpm(&body), "{validity}: {body}");
        } else {
            assert_eq!(body, gateway_404, "{validity}");
        }
    }
}

// ---- connections to php-fpm --------------------------------------------------------------

/// fcgate → counting relay → php-fpm, so the test sees every connection fcgate opens.
struct RelayedSite {
    gateway: RunningGateway,
    relay: CountingRelay,
    fpm: PhpFpm,
}

async fn relayed_site(options: PhpFpmOptions, upstream_settings: &str) -> Option<RelayedSite> {
    let fpm = PhpFpm::start(options).await?;
    let relay = CountingRelay::start(fpm.address()).await;
    let gateway = start_gateway(&root_setting(&fpm), &relay.address(), upstream_settings).await;
    Some(RelayedSite {
        gateway,
        relay,
        fpm,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_requests_through_php_fpm_open_at_most_max_conns() {
    let options = PhpFpmOptions {
        pm: ProcessManager::Static,
        max_children: 5,
        ..PhpFpmOptions::default()
    };
    // Counting connections exactly: no FCGI_GET_VALUES management connection.
    let Some(site) = relayed_site(options, "max_conns = 4\nmultiplex = \"off\"").await else {
        return;
    };
    let report = run_load(
        site.gateway.local_addr,
        2_000,
        16,
        Duration::from_secs(60),
        |i| {
            Request::get(format!("/echo.php?token={i}"))
                .body(Full::new(Bytes::new()))
                .unwrap()
        },
        |i, response| response.text().contains(&format!("\nquery: token={i}\n")),
    )
    .await;
    assert_eq!(report.count(200), 2_000, "{report:?}\n{}", site.fpm.log());
    assert_eq!(
        report.bodies_ok, 2_000,
        "every response answered its own request"
    );
    assert!(
        site.relay.connections_opened() <= 4,
        "{}",
        site.relay.connections_opened()
    );
    assert!(site.relay.max_open() <= 4, "{}", site.relay.max_open());
    let stats = pool_stats(&site.gateway);
    assert!(stats.opened <= 4 && stats.reused >= 1_996, "{stats:?}");
}

#[tokio::test]
async fn keep_conn_false_uses_one_php_fpm_connection_per_request() {
    let Some(site) =
        relayed_site(PhpFpmOptions::default(), "max_conns = 4\nkeep_conn = false").await
    else {
        return;
    };
    let mut client = HttpClient::http1(site.gateway.local_addr).await;
    for i in 0..30 {
        let response = client.get(&format!("/echo.php?n={i}")).await.unwrap();
        assert_eq!(response.status, 200);
        assert!(response.text().contains(&format!("\nquery: n={i}\n")));
    }
    assert_eq!(site.relay.connections_opened(), 30);
    assert_eq!(
        client.connections_opened(),
        1,
        "the client side stayed keep-alive"
    );
    wait_until("php-fpm closed every connection", || {
        site.relay.connections_open() == 0
    })
    .await;
    wait_until("the pool holds nothing", || {
        pool_stats(&site.gateway).open == 0
    })
    .await;
}

#[tokio::test]
async fn a_script_slower_than_read_timeout_is_a_504_and_the_gateway_keeps_serving() {
    let options = PhpFpmOptions {
        max_children: 2,
        ..PhpFpmOptions::default()
    };
    let Some(site) = php_site(options, "read_timeout = \"300ms\"").await else {
        return;
    };
    let mut client = site.client().await;
    let response = client.get("/sleep.php?ms=3000").await.unwrap();
    assert_eq!(response.status, 504);
    assert_eq!(response.text(), "504 Gateway Timeout\n");
    assert_eq!(
        pool_stats(&site.gateway).open,
        0,
        "the timed-out connection was closed"
    );
    for _ in 0..5 {
        let response = client.get("/hello.php").await.unwrap();
        assert_response(&response, 200, PHP_TEXT, "Hello, world!");
    }
    let fast = client.get("/sleep.php?ms=10").await.unwrap();
    assert_response(&fast, 200, PHP_TEXT, "slept 10 ms\n");
}

#[tokio::test]
async fn http2_prior_knowledge_reaches_php() {
    let Some(site) = default_site().await else {
        return;
    };
    let mut client = HttpClient::http2(site.gateway.local_addr).await;
    let response = client.get("/hello.php").await.unwrap();
    assert_response(&response, 200, PHP_TEXT, "Hello, world!");
    let echo = client.get("/echo.php?over=h2").await.unwrap();
    assert_response(
        &echo,
        200,
        PHP_TEXT,
        "method: GET\nquery: over=h2\nget: {\"over\":\"h2\"}\nbody_length: 0\n\
         body_md5: d41d8cd98f00b204e9800998ecf8427e\ncontent_type: \n",
    );
    let upload = pseudo_random_bytes(200_000);
    let post = Request::post("/upload.php")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(upload.clone())))
        .unwrap();
    let response = client.send(post).await.unwrap();
    let expected = format!("length: 200000\nmd5: {}\n", md5_hex(&upload));
    assert_response(&response, 200, PHP_TEXT, &expected);
    let cookies = client.get("/cookies.php").await.unwrap();
    assert_eq!(cookies.headers.get_all("set-cookie").iter().count(), 3);
    assert_eq!(client.connections_opened(), 1);
}

// ---- test data ---------------------------------------------------------------------------

#[test]
fn md5_matches_rfc_1321_test_vectors() {
    assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    let long = b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
    assert_eq!(md5_hex(long), "57edf4a22be3c955ac49da2e2107b67a");
}
