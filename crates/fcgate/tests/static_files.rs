//! Static files and PHP-mode routing to RFC 9110 and nginx, end to end: a gateway in front of a
//! real php-fpm, on a docroot built in a tempdir (the fixture scripts, an index-less folder, and
//! a 300 KB file of pseudo-random bytes), asked with hyper and with curl. The Range and If-Range
//! table (single, several, merged, unsatisfiable, too many, HEAD), resumed downloads, the
//! absolute directory redirect, 403 for a folder without an index, and 404 for a missing script
//! while pretty URLs still reach the front controller. Each test skips (loudly) when php-fpm
//! is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi_testkit::http::{raw_exchange, HttpClient, Response};
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use http::{Method, Request};
use http_body_util::Full;
use support::{pseudo_random_bytes, start_gateway};

const BIG_LENGTH: usize = 300_000;

/// php-fpm and a gateway on a docroot of their own; dropped in this order.
struct Site {
    gateway: RunningGateway,
    _fpm: PhpFpm,
    root: tempfile::TempDir,
    big: Vec<u8>,
}

/// The docroot: the fixture scripts, `static/` (no index), `empty/`, `dir/` (with one), and
/// `static/big.bin`, last modified an hour ago so its date is a strong validator.
fn docroot() -> (tempfile::TempDir, Vec<u8>) {
    let root = tempfile::tempdir().unwrap();
    let fixtures = fcgi_testkit::php_fixture_docroot();
    for file in [
        "index.php",
        "pathinfo.php",
        "dir/index.php",
        "static/style.css",
        "static/page.html",
    ] {
        let target = root.path().join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(fixtures.join(file), target).unwrap();
    }
    std::fs::create_dir(root.path().join("empty")).unwrap();
    let big = pseudo_random_bytes(BIG_LENGTH);
    let path = root.path().join("static/big.bin");
    std::fs::write(&path, &big).unwrap();
    set_modified(&path, SystemTime::now() - Duration::from_secs(3600));
    (root, big)
}

fn set_modified(path: &Path, when: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

async fn site_with(settings: &str) -> Option<Site> {
    let (root, big) = docroot();
    let fpm = PhpFpm::start(PhpFpmOptions {
        docroot: root.path().to_path_buf(),
        ..PhpFpmOptions::default()
    })
    .await?;
    // Room for a header with thousands of ranges, which must then be answered sensibly.
    let settings = format!(
        "root = '{}'\nmax_header_line = \"32KiB\"\nmax_request_head = \"48KiB\"\n{settings}",
        root.path().display()
    );
    let gateway = start_gateway(&settings, &fpm.address(), "").await;
    Some(Site {
        gateway,
        _fpm: fpm,
        root,
        big,
    })
}

async fn site() -> Option<Site> {
    site_with("").await
}

impl Site {
    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        self.send(Method::GET, target, headers).await
    }

    async fn send(&self, method: Method, target: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().method(method).uri(target);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        let mut client = HttpClient::http1(self.gateway.local_addr).await;
        client.send(request).await.unwrap()
    }

    async fn range(&self, range: &str) -> Response {
        self.get("/static/big.bin", &[("range", range)]).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.local_addr)
    }

    /// The bytes `content_range` ("bytes A-B/300000") names.
    fn bytes_of(&self, content_range: &str) -> &[u8] {
        let (first, last) = span(content_range);
        &self.big[first..=last]
    }
}

/// A-B of "bytes A-B/300000".
fn span(content_range: &str) -> (usize, usize) {
    let range = content_range
        .strip_prefix("bytes ")
        .and_then(|rest| rest.strip_suffix(&format!("/{BIG_LENGTH}")))
        .unwrap_or_else(|| panic!("Content-Range {content_range:?}"));
    let (first, last) = range.split_once('-').unwrap();
    (first.parse().unwrap(), last.parse().unwrap())
}

/// One part of a multipart/byteranges body.
#[derive(Debug)]
struct Part {
    content_type: String,
    content_range: String,
    data: Vec<u8>,
}

/// The parts of a `multipart/byteranges` response, read strictly as RFC 2046 §5.1.1 lays
/// them out: `--B` CRLF, headers, CRLF, data, CRLF `--B` … `--B--`.
fn multipart(response: &Response) -> Vec<Part> {
    let content_type = response.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart: {content_type}"));
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str()),
        "Content-Length is exact"
    );
    let body = response.body.as_ref();
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let first = format!("--{boundary}\r\n").into_bytes();
    assert!(
        body.starts_with(&first),
        "{:?}",
        String::from_utf8_lossy(body)
    );
    let mut rest = &body[first.len()..];
    let mut parts = Vec::new();
    loop {
        let head_end = find(rest, b"\r\n\r\n").expect("part headers end");
        let head = std::str::from_utf8(&rest[..head_end]).unwrap();
        let mut content_type = String::new();
        let mut content_range = String::new();
        for line in head.split("\r\n") {
            let (name, value) = line.split_once(": ").unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.to_owned(),
                "content-range" => content_range = value.to_owned(),
                other => panic!("unexpected part header {other}"),
            }
        }
        rest = &rest[head_end + 4..];
        let data_end = find(rest, &delimiter).expect("a delimiter after the data");
        parts.push(Part {
            content_type,
            content_range,
            data: rest[..data_end].to_vec(),
        });
        rest = &rest[data_end + delimiter.len()..];
        if let Some(after) = rest.strip_prefix(b"--") {
            assert_eq!(after, b"\r\n", "nothing after the close delimiter");
            return parts;
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a delimiter");
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Runs curl (in a blocking thread: the gateway shares this test's runtime) and returns its
/// exit code, stdout and stderr; `None` when curl is not installed.
async fn curl(args: Vec<String>) -> Option<(i32, Vec<u8>, String)> {
    tokio::task::spawn_blocking(move || {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(&args)
            .output();
        match output {
            Ok(output) => Some((
                output.status.code().unwrap_or(-1),
                output.stdout,
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )),
            Err(_) => {
                eprintln!("!! SKIPPING: curl is not installed");
                None
            }
        }
    })
    .await
    .unwrap()
}

// ---- Range -------------------------------------------------------------------------------

#[tokio::test]
async fn one_range_is_a_plain_206() {
    let Some(site) = site().await else { return };
    for (range, content_range) in [
        ("bytes=5-16", "bytes 5-16/300000"),
        ("bytes=-10", "bytes 299990-299999/300000"),
        ("bytes=299000-", "bytes 299000-299999/300000"),
        ("bytes=0-999999", "bytes 0-299999/300000"),
    ] {
        let response = site.range(range).await;
        assert_eq!(response.status, 206, "{range}");
        assert_eq!(response.header("content-range"), Some(content_range));
        assert_eq!(
            response.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(
            response.body.as_ref(),
            site.bytes_of(content_range),
            "{range}"
        );
        let length = response.body.len().to_string();
        assert_eq!(response.header("content-length"), Some(length.as_str()));
    }
}

#[tokio::test]
async fn several_ranges_are_a_multipart_206_with_every_part_right() {
    let Some(site) = site().await else { return };
    let plain = site.get("/static/big.bin", &[]).await;
    // Parts cross the 64 KiB read size, and come in the order asked for.
    let range = "bytes=100000-170000,0-9,-5,50-59";
    for version in ["HTTP/1.1", "HTTP/2"] {
        let mut client = match version {
            "HTTP/2" => HttpClient::http2(site.gateway.local_addr).await,
            _ => HttpClient::http1(site.gateway.local_addr).await,
        };
        let request = Request::get("/static/big.bin")
            .header("range", range)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.send(request).await.unwrap();
        assert_eq!(response.status, 206, "{version}");
        assert_eq!(response.header("etag"), plain.header("etag"));
        assert_eq!(
            response.header("last-modified"),
            plain.header("last-modified")
        );
        assert_eq!(response.header("content-range"), None);
        let parts = multipart(&response);
        let ranges: Vec<&str> = parts
            .iter()
            .map(|part| part.content_range.as_str())
            .collect();
        assert_eq!(
            ranges,
            [
                "bytes 100000-170000/300000",
                "bytes 0-9/300000",
                "bytes 299995-299999/300000",
                "bytes 50-59/300000"
            ],
            "{version}"
        );
        for part in &parts {
            assert_eq!(part.content_type, "application/octet-stream");
            assert_eq!(part.data, site.bytes_of(&part.content_range), "{version}");
        }
    }
    // Each part carries the file's own type.
    let css = site
        .get("/static/style.css", &[("range", "bytes=0-1,5-6")])
        .await;
    let parts = multipart(&css);
    assert!(
        parts.iter().all(|part| part.content_type == "text/css"),
        "{parts:?}"
    );
}

#[tokio::test]
async fn overlapping_and_adjacent_ranges_are_merged() {
    let Some(site) = site().await else { return };
    // One range once merged: a plain 206, not a multipart of one.
    let response = site.range("bytes=0-9,5-19,20-29").await;
    assert_eq!(response.status, 206);
    assert_eq!(response.header("content-range"), Some("bytes 0-29/300000"));
    assert_eq!(response.body.as_ref(), &site.big[..30]);
    // A merged range stands where its earliest member was asked for.
    let response = site.range("bytes=50-59,0-9,5-14").await;
    let parts = multipart(&response);
    let ranges: Vec<&str> = parts
        .iter()
        .map(|part| part.content_range.as_str())
        .collect();
    assert_eq!(ranges, ["bytes 50-59/300000", "bytes 0-14/300000"]);
    // "Apache Killer": a thousand overlapping ranges are the file once, not a thousand times.
    let killer: Vec<String> = (0..1000).map(|i| format!("{i}-")).collect();
    let response = site.range(&format!("bytes={}", killer.join(","))).await;
    assert_eq!(response.status, 206);
    assert_eq!(
        response.header("content-range"),
        Some("bytes 0-299999/300000")
    );
    assert_eq!(response.body.len(), BIG_LENGTH);
}

#[tokio::test]
async fn ranges_outside_the_file_or_unreadable_are_416() {
    let Some(site) = site().await else { return };
    let huge = "9".repeat(100);
    for range in [
        "bytes=300000-".to_owned(),
        "bytes=300000-300010,400000-".to_owned(),
        "bytes=-0".to_owned(),
        format!("bytes={huge}-"),
        format!("bytes={huge}-{huge}"),
        "bytes=5-2".to_owned(),
        "bytes=abc".to_owned(),
        "bytes=".to_owned(),
    ] {
        let response = site.range(&range).await;
        assert_eq!(response.status, 416, "{range}");
        assert_eq!(
            response.header("content-range"),
            Some("bytes */300000"),
            "{range}"
        );
        assert!(response.body.is_empty(), "{range}");
    }
    // A huge end is just "to the end".
    let response = site.range(&format!("bytes=299999-{huge}")).await;
    assert_eq!(response.status, 206);
    assert_eq!(response.body.as_ref(), &site.big[299_999..]);
}

#[tokio::test]
async fn too_many_ranges_or_another_unit_get_the_whole_file() {
    let Some(site) = site().await else { return };
    let disjoint = |count: usize| {
        let specs: Vec<String> = (0..count).map(|i| format!("{0}-{0}", i * 10)).collect();
        format!("bytes={}", specs.join(","))
    };
    let sixteen = site.range(&disjoint(16)).await;
    assert_eq!(sixteen.status, 206);
    assert_eq!(multipart(&sixteen).len(), 16);
    for range in [
        disjoint(17),
        disjoint(2000),
        format!("bytes={}", vec!["0-0"; 1025].join(",")),
        "items=0-9".to_owned(),
    ] {
        let response = site.range(&range).await;
        assert_eq!(response.status, 200, "{} bytes of Range", range.len());
        assert_eq!(response.body.as_ref(), site.big.as_slice());
    }
    // A thousand copies of one range are one range.
    let same = site
        .range(&format!("bytes={}", vec!["7-7"; 1000].join(",")))
        .await;
    assert_eq!(same.status, 206);
    assert_eq!(same.header("content-range"), Some("bytes 7-7/300000"));
}

#[tokio::test]
async fn head_with_ranges_answers_the_headers_of_get_without_a_body() {
    let Some(site) = site().await else { return };
    for range in ["bytes=0-9,20-29", "bytes=10-19", "bytes=400000-"] {
        let get = site.range(range).await;
        let head = site
            .send(Method::HEAD, "/static/big.bin", &[("range", range)])
            .await;
        assert_eq!(head.status, get.status, "{range}");
        assert!(head.body.is_empty());
        for name in ["content-length", "content-range", "etag", "last-modified"] {
            assert_eq!(head.header(name), get.header(name), "{range}: {name}");
        }
        let get_type = get
            .header("content-type")
            .map(|value| value.split(';').next());
        let head_type = head
            .header("content-type")
            .map(|value| value.split(';').next());
        assert_eq!(head_type, get_type, "{range}");
    }
    // On the wire: the head, and not one byte after it.
    let raw = raw_exchange(
        site.gateway.local_addr,
        b"HEAD /static/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9,20-29\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 206 "), "{raw}");
    assert!(raw.ends_with("\r\n\r\n"), "{raw}");
}

// ---- If-Range ----------------------------------------------------------------------------

#[tokio::test]
async fn if_range_sends_the_range_only_for_the_current_file() {
    let Some(site) = site().await else { return };
    let plain = site.get("/static/big.bin", &[]).await;
    let etag = plain.header("etag").unwrap().to_owned();
    let last_modified = plain.header("last-modified").unwrap().to_owned();
    let weak = format!("W/{etag}");
    for (if_range, status, what) in [
        (etag.as_str(), 206, "the current strong ETag"),
        ("\"1234.00000000-abc\"", 200, "a stale ETag"),
        (weak.as_str(), 200, "the current ETag marked weak"),
        (last_modified.as_str(), 206, "the exact Last-Modified"),
        ("Thu, 01 Jan 2015 00:00:00 GMT", 200, "an older date"),
        ("not a validator", 200, "garbage"),
    ] {
        for range in ["bytes=10-19", "bytes=10-19,30-39"] {
            let response = site
                .get(
                    "/static/big.bin",
                    &[("range", range), ("if-range", if_range)],
                )
                .await;
            assert_eq!(response.status, status, "{what} with {range}");
            if status == 200 {
                assert_eq!(response.body.as_ref(), site.big.as_slice(), "{what}");
                assert_eq!(response.header("etag"), Some(etag.as_str()));
            }
        }
    }
    // Without a Range, If-Range means nothing.
    let response = site
        .get("/static/big.bin", &[("if-range", "\"stale\"")])
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), BIG_LENGTH);
}

#[tokio::test]
async fn a_date_is_too_weak_for_a_file_changed_within_the_second() {
    let Some(site) = site().await else { return };
    let path = site.root.path().join("static/fresh.txt");
    std::fs::write(&path, "written just now").unwrap();
    // Less than a second old, and staying so: set a little ahead of the clock, so that a slow
    // machine cannot age it past a second between these requests.
    set_modified(&path, SystemTime::now() + Duration::from_secs(30));
    let plain = site.get("/static/fresh.txt", &[]).await;
    let last_modified = plain.header("last-modified").unwrap().to_owned();
    let etag = plain.header("etag").unwrap().to_owned();
    let by_date = site
        .get(
            "/static/fresh.txt",
            &[("range", "bytes=0-6"), ("if-range", &last_modified)],
        )
        .await;
    assert_eq!(
        by_date.status, 200,
        "a date that may name two versions is weak"
    );
    assert_eq!(by_date.text(), "written just now");
    let by_etag = site
        .get(
            "/static/fresh.txt",
            &[("range", "bytes=0-6"), ("if-range", &etag)],
        )
        .await;
    assert_eq!(by_etag.status, 206);
    assert_eq!(by_etag.text(), "written");
}

// ---- curl --------------------------------------------------------------------------------

#[tokio::test]
async fn curl_gets_several_ranges_as_multipart() {
    let Some(site) = site().await else { return };
    let args = vec![
        "-D".to_owned(),
        "-".to_owned(),
        "-r".to_owned(),
        "0-9,20-29".to_owned(),
        site.url("/static/big.bin"),
    ];
    let Some((code, output, stderr)) = curl(args).await else {
        return;
    };
    assert_eq!(code, 0, "{stderr}");
    let head_end = find(&output, b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&output[..head_end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 206 "), "{head}");
    let mut response = Response {
        status: http::StatusCode::PARTIAL_CONTENT,
        headers: http::HeaderMap::new(),
        body: Bytes::copy_from_slice(&output[head_end + 4..]),
    };
    for line in head.lines().skip(1) {
        let (name, value) = line.split_once(": ").unwrap();
        response.headers.insert(
            http::HeaderName::try_from(name).unwrap(),
            value.parse().unwrap(),
        );
    }
    let parts = multipart(&response);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].data, &site.big[0..10]);
    assert_eq!(parts[1].data, &site.big[20..30]);
}

#[tokio::test]
async fn curl_resumes_a_download_only_while_the_file_is_unchanged() {
    let Some(site) = site().await else { return };
    let etag = site
        .get("/static/big.bin", &[])
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let resume = |name: &str, have: &[u8], extra: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, have).unwrap();
        let mut args = vec!["-C".to_owned(), "-".to_owned(), "-o".to_owned()];
        args.push(path.display().to_string());
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args.push(site.url("/static/big.bin"));
        (path, args)
    };
    // The first 100,000 bytes are there: curl asks for the rest and gets it.
    let (path, args) = resume("plain", &site.big[..100_000], &[]);
    let Some((code, _, stderr)) = curl(args).await else {
        return;
    };
    assert_eq!(code, 0, "{stderr}");
    assert!(
        std::fs::read(&path).unwrap() == site.big,
        "resumed file differs"
    );
    // The same with the ETag the first part came with.
    let if_range = format!("If-Range: {etag}");
    let (path, args) = resume("with-etag", &site.big[..100_000], &["-H", &if_range]);
    let (code, _, stderr) = curl(args).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        std::fs::read(&path).unwrap() == site.big,
        "resumed file differs"
    );
    // The first part came from a version that is gone: the server sends the whole new file,
    // which curl will not splice onto the old bytes (exit 33, "Cannot resume").
    let old = vec![0u8; 100_000];
    let (path, args) = resume("stale", &old, &["-H", "If-Range: \"an-old-version\""]);
    let (code, _, stderr) = curl(args).await.unwrap();
    assert_eq!(code, 33, "{stderr}");
    assert!(
        std::fs::read(&path).unwrap() == old,
        "the old part was extended"
    );
}

// ---- routing -----------------------------------------------------------------------------

#[tokio::test]
async fn a_directory_redirect_is_an_absolute_url() {
    let Some(site) = site_with("trusted_proxies = [\"127.0.0.1\"]").await else {
        return;
    };
    for (host, query, location) in [
        ("example.test:8080", "", "http://example.test:8080/dir/"),
        ("example.test", "", "http://example.test/dir/"),
        (
            "example.test",
            "?a=1&b=%20",
            "http://example.test/dir/?a=1&b=%20",
        ),
        ("[::1]:8443", "?x", "http://[::1]:8443/dir/?x"),
    ] {
        let response = site.get(&format!("/dir{query}"), &[("host", host)]).await;
        assert_eq!(response.status, 301, "{host}");
        assert_eq!(response.header("location"), Some(location), "{host}");
    }
    // HTTPS as the trusted proxy in front says; the client's port kept, not fcgate's.
    let response = site
        .get(
            "/dir?q=1",
            &[
                ("host", "shop.test"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(
        response.header("location"),
        Some("https://shop.test/dir/?q=1")
    );
    // HTTP/2: the :authority.
    let mut h2 = HttpClient::http2(site.gateway.local_addr).await;
    let response = h2.get("/dir").await.unwrap();
    let expected = format!("http://{}/dir/", site.gateway.local_addr);
    assert_eq!(response.header("location"), Some(expected.as_str()));
    // HTTP/1.0 without a Host: nothing to build a URL from, so the path alone.
    let raw = raw_exchange(site.gateway.local_addr, b"GET /dir?k=v HTTP/1.0\r\n\r\n").await;
    let raw = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(raw.starts_with("http/1.0 301 "), "{raw}");
    assert!(raw.contains("\r\nlocation: /dir/?k=v\r\n"), "{raw}");
}

#[tokio::test]
async fn a_folder_without_an_index_is_forbidden() {
    let Some(site) = site().await else { return };
    for path in ["/static/", "/empty/", "/static/../empty/"] {
        let response = site.get(path, &[]).await;
        assert_eq!(response.status, 403, "{path}: {}", response.text());
    }
    let response = site.get("/dir/", &[]).await;
    assert_eq!(response.text(), "dir index: /dir/index.php\n");
    // A folder that does not exist is a pretty URL like any other.
    let response = site.get("/no-such-folder/", &[]).await;
    assert_eq!(response.status, 200);
    assert!(response.text().starts_with("front: /no-such-folder/\n"));

    let Some(fallback) = site_with("directory_without_index = \"front_controller\"").await else {
        return;
    };
    let response = fallback.get("/static/", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.text(),
        "front: /static/\nSCRIPT_NAME: /index.php\nPATH_INFO: \n"
    );
}

#[tokio::test]
async fn a_missing_script_is_404_while_pretty_urls_reach_the_front_controller() {
    let Some(site) = site().await else { return };
    for path in [
        "/nonexistent.php",
        "/NONEXISTENT.PHP",
        "/nonexistent.php/extra",
        "/static/nope.php",
        "/static/big.bin/evil.php",
        "/wp-login.php?redirect_to=x",
    ] {
        let response = site.get(path, &[]).await;
        assert_eq!(response.status, 404, "{path}: {}", response.text());
        assert!(!response.text().contains("front:"), "{path}");
    }
    let response = site.get("/some/pretty/url?page=2", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.text(),
        "front: /some/pretty/url?page=2\nSCRIPT_NAME: /index.php\nPATH_INFO: \n"
    );
    let response = site.get("/index.php/extra", &[]).await;
    assert_eq!(
        response.text(),
        "front: /index.php/extra\nSCRIPT_NAME: /index.php\nPATH_INFO: /extra\n"
    );
    let response = site.get("/pathinfo.php/a/b", &[]).await;
    assert_eq!(
        response.text(),
        "PATH_INFO: /a/b\nSCRIPT_NAME: /pathinfo.php\n"
    );
}

/// Debian's packaged apps keep their root in /usr/share with links into /var/lib and /etc:
/// refused by default, served and run with `follow_symlinks = "owner"` (the test's user owns
/// the links and their targets, as root does in the package).
#[tokio::test]
async fn follow_symlinks_owner_serves_a_debian_style_layout() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(outside.path().join("images")).unwrap();
    std::fs::write(outside.path().join("images/logo.svg"), "<svg/>").unwrap();
    std::fs::write(
        outside.path().join("plugin.php"),
        "<?php echo 'plugin ran';",
    )
    .unwrap();
    let link_in = |site: &Site| {
        let root = site.root.path();
        std::os::unix::fs::symlink(outside.path().join("images"), root.join("images")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("plugin.php"), root.join("plugin.php"))
            .unwrap();
    };

    let Some(site) = site().await else { return };
    link_in(&site);
    for path in ["/images/logo.svg", "/plugin.php"] {
        let response = site.get(path, &[]).await;
        assert_eq!(
            response.status,
            404,
            "{path} (within_root): {}",
            response.text()
        );
    }

    let Some(site) = site_with("follow_symlinks = \"owner\"").await else {
        return;
    };
    link_in(&site);
    let response = site.get("/images/logo.svg", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "<svg/>");
    let response = site.get("/plugin.php", &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "plugin ran");
}
