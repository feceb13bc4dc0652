//! `[compression]` end to end: a gateway in PHP mode on a docroot built in a tempdir, in front
//! of the instrumented test backend (which answers `/index.php?body=…` with that text), asked
//! over real sockets by hyper and curl. Each coding decoded back to the original bytes;
//! Accept-Encoding negotiation (none, q=0, `*;q=0`, q-value order, ties by `encodings`); Vary;
//! the weak ETag and the 304 that confirms it; `min_length` and `types`; HEAD, Range and 304
//! never compressed; script responses only with `scripts = true`; precompressed files served
//! verbatim and preferred over compressing on the fly, identity when the client refuses them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};

use bytes::Bytes;
use fcgate::server::RunningGateway;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::http::{HttpClient, Response};
use http::{Method, Request};
use http_body_util::Full;
use support::start_gateway;

/// A gateway and its backend on a docroot of their own; dropped in this order.
struct Site {
    gateway: RunningGateway,
    _backend: TestBackend,
    _root: tempfile::TempDir,
    css: Vec<u8>,
    js: Vec<u8>,
    js_br: Vec<u8>,
    js_gz: Vec<u8>,
}

/// Text that compresses well, about 13 KB.
fn stylesheet() -> Vec<u8> {
    (0..400)
        .map(|rule| format!(".rule-{rule} {{ margin: {rule}px; color: #333; }}\n"))
        .collect::<String>()
        .into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut compressed = Vec::new();
    {
        let mut encoder = brotli::CompressorWriter::new(&mut compressed, 4096, 5, 22);
        encoder.write_all(data).unwrap();
    }
    compressed
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut decoded)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut decoded)
                .unwrap();
        }
        "zstd" => decoded = zstd::stream::decode_all(body).unwrap(),
        other => panic!("unexpected coding {other}"),
    }
    decoded
}

/// The docroot: `index.php` (the backend answers for it), `static/style.css` (compressible),
/// `static/small.css` (under `min_length`), `static/image.png` (a type not listed), and
/// `static/app.js` with `app.js.br` and `app.js.gz` beside it, but no `app.js.zst`.
async fn site_with(settings: &str) -> Site {
    let root = tempfile::tempdir().unwrap();
    let css = stylesheet();
    let js = b"function greet(name) { return 'hello ' + name; }\n".repeat(100);
    let (js_br, js_gz) = (brotli(&js), gzip(&js));
    let files: [(&str, &[u8]); 7] = [
        ("index.php", b"<?php // answered by the test backend\n"),
        ("static/style.css", &css),
        ("static/small.css", b"a { color: red; }\n"),
        ("static/image.png", &css),
        ("static/app.js", &js),
        ("static/app.js.br", &js_br),
        ("static/app.js.gz", &js_gz),
    ];
    for (name, data) in files {
        let path = root.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let backend = TestBackend::start(BackendOptions::default()).await;
    let settings = format!("root = '{}'\n{settings}", root.path().display());
    let gateway = start_gateway(&settings, &backend.address(), "").await;
    Site {
        gateway,
        _backend: backend,
        _root: root,
        css,
        js,
        js_br,
        js_gz,
    }
}

async fn site() -> Site {
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

    async fn css_with(&self, accept_encoding: &str) -> Response {
        self.get("/static/style.css", &[("accept-encoding", accept_encoding)])
            .await
    }
}

fn coding(response: &Response) -> Option<&str> {
    response.header("content-encoding")
}

fn varies(response: &Response) -> bool {
    response.headers.get_all("vary").iter().any(|value| {
        value
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    })
}

#[tokio::test]
async fn each_coding_decodes_to_the_original_bytes() {
    let site = site().await;
    let identity = site.get("/static/style.css", &[]).await;
    let strong = identity.header("etag").unwrap().to_owned();
    assert!(strong.starts_with('"'), "{strong}");
    for name in ["gzip", "br", "zstd"] {
        let response = site.css_with(name).await;
        assert_eq!(response.status, 200);
        assert_eq!(coding(&response), Some(name));
        assert!(varies(&response), "{name}: {:?}", response.headers);
        assert!(
            response.body.len() < site.css.len() / 4,
            "{name} compresses"
        );
        assert_eq!(decode(name, &response.body), site.css, "{name}");
        // Not the identity body: the tag must not claim byte-for-byte equality with it.
        assert_eq!(
            response.header("etag"),
            Some(format!("W/{strong}").as_str())
        );
        assert_eq!(response.header("accept-ranges"), None);
        assert_eq!(response.header("content-length"), None);
    }
}

#[tokio::test]
async fn curl_decodes_what_it_asked_for() {
    let site = site().await;
    let url = format!("http://{}/static/style.css", site.gateway.local_addr);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--compressed", "-D", "/dev/stderr", &url])
            .output()
    })
    .await
    .unwrap();
    let Ok(output) = output else {
        eprintln!("SKIPPED: curl is not installed");
        return;
    };
    let head = String::from_utf8_lossy(&output.stderr).to_ascii_lowercase();
    assert!(head.contains("content-encoding: "), "{head}");
    assert_eq!(output.stdout, site.css);
}

#[tokio::test]
async fn without_accept_encoding_the_body_is_identity_and_still_varies() {
    let site = site().await;
    let response = site.get("/static/style.css", &[]).await;
    assert_eq!(coding(&response), None);
    assert_eq!(response.body, site.css);
    assert_eq!(
        response.header("content-length"),
        Some(site.css.len().to_string().as_str())
    );
    assert!(varies(&response));
    let identity = site.css_with("identity").await;
    assert_eq!(coding(&identity), None);
    assert!(varies(&identity));
}

#[tokio::test]
async fn q_zero_refuses_a_coding_and_refusing_everything_still_gets_identity() {
    let site = site().await;
    let refused = site.css_with("gzip;q=0").await;
    assert_eq!(coding(&refused), None);
    assert_eq!(refused.body, site.css);
    assert_eq!(coding(&site.css_with("gzip;q=0, br").await), Some("br"));
    // RFC 9110 §12.5.3 lets a server send identity rather than a 406; nginx and Caddy do.
    for nothing in ["*;q=0", "*;q=0, identity;q=0", "identity;q=0"] {
        let response = site.css_with(nothing).await;
        assert_eq!(response.status, 200, "{nothing}");
        assert_eq!(coding(&response), None, "{nothing}");
        assert_eq!(response.body, site.css);
    }
    assert_eq!(coding(&site.css_with("*;q=0, gzip").await), Some("gzip"));
}

#[tokio::test]
async fn q_values_rank_the_codings_and_ties_follow_the_server_preference() {
    let site = site().await;
    assert_eq!(
        coding(&site.css_with("gzip;q=1, br;q=0.5").await),
        Some("gzip")
    );
    assert_eq!(
        coding(&site.css_with("gzip;q=0.4, br;q=0.5").await),
        Some("br")
    );
    assert_eq!(coding(&site.css_with("gzip, br, zstd").await), Some("zstd"));
    assert_eq!(coding(&site.css_with("gzip, br").await), Some("br"));
    assert_eq!(coding(&site.css_with("*").await), Some("zstd"));

    let gzip_first = site_with("[compression]\nencodings = [\"gzip\", \"br\"]\n").await;
    assert_eq!(
        coding(&gzip_first.css_with("br, gzip, zstd").await),
        Some("gzip")
    );
    assert_eq!(coding(&gzip_first.css_with("zstd").await), None);
    assert_eq!(
        coding(&gzip_first.css_with("zstd, br;q=0.1").await),
        Some("br")
    );
}

#[tokio::test]
async fn small_bodies_and_types_not_listed_are_sent_as_they_are() {
    let site = site().await;
    let small = site
        .get("/static/small.css", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(coding(&small), None);
    assert_eq!(small.text(), "a { color: red; }\n");
    let image = site
        .get("/static/image.png", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(coding(&image), None);
    assert_eq!(image.body, site.css);
    // Their bodies never depend on Accept-Encoding once no precompressed file can stand in.
    let no_files = site_with("[compression]\nprecompressed = false\n").await;
    for path in ["/static/small.css", "/static/image.png"] {
        let response = no_files.get(path, &[("accept-encoding", "gzip")]).await;
        assert_eq!(coding(&response), None, "{path}");
        assert!(!varies(&response), "{path}");
    }

    let smaller = site_with("[compression]\nmin_length = 16\ntypes = [\"image/png\"]\n").await;
    let small = smaller
        .get("/static/small.css", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(coding(&small), None, "text/css is no longer listed");
    let image = smaller
        .get("/static/image.png", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(coding(&image), Some("gzip"));
}

#[tokio::test]
async fn head_range_and_not_modified_are_never_compressed() {
    let site = site().await;
    let accept = ("accept-encoding", "gzip, br, zstd");

    let head = site
        .send(Method::HEAD, "/static/style.css", &[accept])
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(coding(&head), None);
    assert!(varies(&head));
    assert!(head.body.is_empty());

    let range = site
        .get("/static/style.css", &[accept, ("range", "bytes=0-99")])
        .await;
    assert_eq!(range.status, 206);
    assert_eq!(coding(&range), None);
    assert_eq!(range.body, site.css[..100]);

    // A compressed response's tag revalidates (If-None-Match compares weakly), and the 304
    // carries the tag the client holds.
    let compressed = site.get("/static/style.css", &[accept]).await;
    let weak = compressed.header("etag").unwrap().to_owned();
    assert!(weak.starts_with("W/\""), "{weak}");
    let not_modified = site
        .get("/static/style.css", &[accept, ("if-none-match", &weak)])
        .await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(coding(&not_modified), None);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(weak.as_str()));
    assert!(varies(&not_modified));

    // If-Range compares strongly: the weak tag never names the bytes a range would come from,
    // so the whole file is sent, uncompressed since a Range was asked for.
    let resumed = site
        .get(
            "/static/style.css",
            &[accept, ("range", "bytes=0-99"), ("if-range", &weak)],
        )
        .await;
    assert_eq!(resumed.status, 200);
    assert_eq!(coding(&resumed), None);
    assert_eq!(resumed.body, site.css);
    // ... while the identity response's strong tag still gets its range.
    let strong = weak.trim_start_matches("W/");
    let resumed = site
        .get(
            "/static/style.css",
            &[accept, ("range", "bytes=0-99"), ("if-range", strong)],
        )
        .await;
    assert_eq!(resumed.status, 206);
    assert_eq!(resumed.body, site.css[..100]);
}

/// A script's answer: the test backend sends `body` back as text/plain.
fn script_target(body: &str, extra: &str) -> String {
    format!("/index.php?body={}{extra}", body.replace(' ', "%20"))
}

#[tokio::test]
async fn script_responses_are_compressed_only_when_scripts_is_on() {
    let page = "a secret page that reflects what you sent ".repeat(40);
    let target = script_target(&page, "");
    let accept = [("accept-encoding", "gzip")];

    let off = site().await;
    let response = off.get(&target, &accept).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        coding(&response),
        None,
        "scripts are off by default (BREACH)"
    );
    assert_eq!(response.text(), page);
    assert!(!varies(&response));

    let on = site_with("[compression]\nscripts = true\n").await;
    let response = on.get(&target, &accept).await;
    assert_eq!(coding(&response), Some("gzip"));
    assert!(varies(&response));
    assert_eq!(decode("gzip", &response.body), page.as_bytes());

    let no_transform = script_target(&page, "&header=Cache-Control:%20no-transform");
    let response = on.get(&no_transform, &accept).await;
    assert_eq!(coding(&response), None);
    assert_eq!(response.text(), page);

    let encoded = script_target(&page, "&header=Content-Encoding:%20identity");
    let response = on.get(&encoded, &accept).await;
    assert_eq!(
        coding(&response),
        Some("identity"),
        "the app's own coding stands"
    );
    assert_eq!(response.text(), page);

    let static_off = site_with("[compression]\nstatic = false\nscripts = true\n").await;
    let response = static_off.css_with("gzip").await;
    assert_eq!(coding(&response), None);
    assert!(!varies(&response));
}

#[tokio::test]
async fn precompressed_files_are_served_verbatim_and_preferred() {
    let site = site().await;
    let br = site
        .get("/static/app.js", &[("accept-encoding", "br")])
        .await;
    assert_eq!(br.status, 200);
    assert_eq!(coding(&br), Some("br"));
    assert_eq!(br.body, site.js_br, "app.js.br, byte for byte");
    assert_eq!(
        br.header("content-length"),
        Some(site.js_br.len().to_string().as_str())
    );
    assert!(varies(&br));
    assert!(br.header("content-type").unwrap().contains("javascript"));

    // zstd is preferred, but there is no app.js.zst: the .br file beats compressing on the fly.
    let preferred = site
        .get("/static/app.js", &[("accept-encoding", "zstd, br, gzip")])
        .await;
    assert_eq!(coding(&preferred), Some("br"));
    assert_eq!(preferred.body, site.js_br);

    let gz = site
        .get("/static/app.js", &[("accept-encoding", "gzip, br;q=0.5")])
        .await;
    assert_eq!(coding(&gz), Some("gzip"));
    assert_eq!(gz.body, site.js_gz);

    // A client that accepts no coding with a file gets the original; one that accepts only
    // zstd gets it compressed on the fly.
    let identity = site
        .get("/static/app.js", &[("accept-encoding", "br;q=0, gzip;q=0")])
        .await;
    assert_eq!(coding(&identity), None);
    assert_eq!(identity.body, site.js);
    assert!(varies(&identity));
    let zstd = site
        .get("/static/app.js", &[("accept-encoding", "zstd")])
        .await;
    assert_eq!(coding(&zstd), Some("zstd"));
    assert_eq!(decode("zstd", &zstd.body), site.js);

    // Each file has its own strong tag.
    let tags = [&br, &gz, &identity].map(|response| response.header("etag").unwrap());
    assert!(tags.iter().all(|tag| tag.starts_with('"')), "{tags:?}");
    assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2]);
    let revalidated = site
        .get(
            "/static/app.js",
            &[("accept-encoding", "br"), ("if-none-match", tags[0])],
        )
        .await;
    assert_eq!(revalidated.status, 304);

    // A range is always cut from the original file.
    let range = site
        .get(
            "/static/app.js",
            &[("accept-encoding", "br"), ("range", "bytes=0-7")],
        )
        .await;
    assert_eq!(range.status, 206);
    assert_eq!(coding(&range), None);
    assert_eq!(range.body, site.js[..8]);

    let off = site_with("[compression]\nprecompressed = false\n").await;
    let on_the_fly = off
        .get("/static/app.js", &[("accept-encoding", "br")])
        .await;
    assert_eq!(coding(&on_the_fly), Some("br"));
    assert_ne!(on_the_fly.body, site.js_br);
    assert_eq!(decode("br", &on_the_fly.body), site.js);
}

#[tokio::test]
async fn the_access_log_counts_the_compressed_bytes_sent() {
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("access.log");
    let site = site_with(&format!("access_log = '{}'", log.display())).await;
    let response = site.css_with("gzip").await;
    assert_eq!(coding(&response), Some("gzip"));
    support::wait_until("the request is logged", || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("style.css"))
    })
    .await;
    let line = std::fs::read_to_string(&log).unwrap();
    let expected = format!("\" 200 {} ", response.body.len());
    assert!(line.contains(&expected), "{expected} in {line}");
}

#[tokio::test]
async fn http2_clients_get_the_same_coding() {
    let site = site().await;
    let mut client = HttpClient::http2(site.gateway.local_addr).await;
    let request = Request::get("/static/style.css")
        .header("accept-encoding", "br")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(coding(&response), Some("br"));
    assert!(varies(&response));
    assert_eq!(decode("br", &response.body), site.css);
}

/// php-fpm's own output (several STDOUT records, no Content-Length), gzip on the fly, as
/// bench/run's `compressed` scenario sends it: the body must decode whole, over keep-alive.
#[tokio::test]
async fn a_php_fpm_page_is_compressed_whole() {
    let root = tempfile::tempdir().unwrap();
    let page = "<?php for ($i = 0; $i < 2000; $i++) { echo \"<tr><td>$i</td><td>row $i of the listing</td></tr>\\n\"; }";
    std::fs::write(root.path().join("index.php"), page).unwrap();
    let Some(fpm) = fcgi_testkit::php::PhpFpm::start(fcgi_testkit::php::PhpFpmOptions {
        docroot: root.path().to_path_buf(),
        ..fcgi_testkit::php::PhpFpmOptions::default()
    })
    .await
    else {
        return;
    };
    let settings = format!(
        "root = '{}'\n[compression]\nscripts = true\nencodings = [\"gzip\"]\n",
        root.path().display()
    );
    let gateway = start_gateway(&settings, &fpm.address(), "").await;
    let expected: String = (0..2000)
        .map(|i| format!("<tr><td>{i}</td><td>row {i} of the listing</td></tr>\n"))
        .collect();
    let mut client = HttpClient::http1(gateway.local_addr).await;
    for _ in 0..3 {
        let request = Request::get("/index.php")
            .header("accept-encoding", "gzip")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.send(request).await.unwrap();
        assert_eq!(coding(&response), Some("gzip"));
        assert_eq!(decode("gzip", &response.body), expected.as_bytes());
    }
}
