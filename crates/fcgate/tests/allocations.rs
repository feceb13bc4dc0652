//! Allocations per request on the gateway's hot path, counted rather than timed (counts are
//! stable on a noisy machine): a typical browser request's FastCGI params encoded into PARAMS
//! records, and a PHP response's CGI head parsed into the HTTP response. The bounds keep a
//! per-param or per-header allocation from creeping back (there were 42 for the params and 7
//! for the head before they were taken out).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use fcgate::body;
use fcgate::cgi_params::{for_each_param, ConnectionInfo, ScriptTarget};
use fcgate::cgi_response::{parse_head, HeadParse};
use fcgate::config::{SiteConfig, SiteMode};
use fcgi::protocol::{ParamsWriter, RecordType, RequestId};
use http::request::Parts;
use http::{Request, Response};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The counters are process-wide: measurements take turns.
static MEASURING: Mutex<()> = Mutex::new(());

/// Allocations plus reallocations one run of `operation` makes, after a first run has brought
/// reused buffers to size. The least of a few runs: the test harness may allocate on another
/// thread (reporting a finished test) during one of them.
fn allocations_of(mut operation: impl FnMut()) -> usize {
    let _turn = MEASURING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    operation();
    (0..5)
        .map(|_| {
            let region = Region::new(GLOBAL);
            operation();
            let change = region.change();
            change.allocations + change.reallocations
        })
        .min()
        .unwrap_or(usize::MAX)
}

/// A browser's GET for a page, as hyper hands it over; the cookie arrives as two headers
/// (HTTP/2 clients split it), which the params join into one.
fn browser_request() -> Parts {
    let request = Request::get("/blog/2024/05/a-post-title?page=2&sort=recent")
        .header("host", "www.example.org")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
        )
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .header("accept-language", "en-GB,en;q=0.7,de;q=0.3")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("referer", "https://www.example.org/blog/2024/05/")
        .header(
            "cookie",
            "PHPSESSID=8f3c2a9be1d04c7a9f6e2b1d0c3a5e7f; theme=dark",
        )
        .header("cookie", "consent=1")
        .header("upgrade-insecure-requests", "1")
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-mode", "navigate")
        .body(())
        .unwrap();
    request.into_parts().0
}

fn site() -> SiteConfig {
    SiteConfig {
        mode: SiteMode::App,
        underscores_in_headers: false,
        extra_params: Vec::new(),
        rules: Default::default(),
        error_pages: Default::default(),
        upstream: None,
    }
}

/// Encodes the params into `records` (cleared first, so its capacity carries over the way a
/// connection's write buffer would) and returns how many pairs there were.
fn encode_params(
    records: &mut BytesMut,
    parts: &Parts,
    connection: &ConnectionInfo,
    target: &ScriptTarget,
    site: &SiteConfig,
) -> usize {
    records.clear();
    let mut pairs = 0;
    let mut writer = ParamsWriter::new(records, RecordType::Params, RequestId(1));
    for_each_param(parts, connection, target, 0, site, &mut |name, value| {
        pairs += 1;
        writer.push(name, value);
    });
    writer.finish();
    pairs
}

fn connection() -> ConnectionInfo {
    ConnectionInfo::new(
        "203.0.113.57:51234".parse().unwrap(),
        "10.0.0.5:8080".parse().unwrap(),
        false,
    )
}

#[test]
fn params_of_a_php_request() {
    let (parts, connection, site) = (browser_request(), connection(), site());
    let target = ScriptTarget {
        script_filename: "/var/www/app/public/index.php".into(),
        script_name: "/index.php".into(),
        path_info: "/blog/2024/05/a-post-title".into(),
        document_root: Some(std::path::Path::new("/var/www/app/public").into()),
        query: None,
        remote_user: None,
    };
    let mut records = BytesMut::new();
    let mut pairs = 0;
    let allocations = allocations_of(|| {
        pairs = encode_params(&mut records, &parts, &connection, &target, &site);
    });
    assert_eq!(pairs, 31, "the request is the typical one measured");
    // The one buffer that PATH_TRANSLATED and the joined cookie share.
    assert!(allocations <= 1, "{allocations} allocations for the params");
}

#[test]
fn params_of_an_app_request() {
    let (parts, connection, site) = (browser_request(), connection(), site());
    let mut records = BytesMut::new();
    let mut pairs = 0;
    let allocations = allocations_of(|| {
        let target = ScriptTarget::app(parts.uri.path());
        pairs = encode_params(&mut records, &parts, &connection, &target, &site);
    });
    assert_eq!(pairs, 29, "the request is the typical one measured");
    // PATH_INFO's String in the target, and the joined cookie.
    assert!(allocations <= 2, "{allocations} allocations for the params");
}

#[test]
fn php_response_head() {
    let stdout = Bytes::from_static(
        b"X-Powered-By: PHP/8.2.36\r\nContent-type: text/html; charset=UTF-8\r\n\r\n<h1>Hi</h1>",
    );
    let allocations = allocations_of(|| {
        let Ok(HeadParse::Complete { head, body_start }) = parse_head(&stdout) else {
            panic!("the head is complete");
        };
        let mut response = Response::new(body::full(stdout.slice(body_start..)));
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        std::hint::black_box(response);
    });
    // The header map's two tables, the name http has no constant for (X-Powered-By), the boxed
    // body; the values are slices of the STDOUT record.
    assert!(allocations <= 4, "{allocations} allocations for the head");
}
