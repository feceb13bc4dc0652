//! The range paths against tower-http's own answers, on a temp file: the ETag format this module
//! relies on, and what each kind of range request gets (the php-fpm-backed table is in
//! `tests/static_files.rs`; these run without php-fpm).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http_body_util::BodyExt;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

/// A 100,000-byte file last modified an hour ago (its date is a strong validator).
fn fixture() -> Fixture {
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let (dir, path) = file_an_hour_old("data.bin", &bytes);
    Fixture {
        _dir: dir,
        path,
        bytes,
    }
}

/// `bytes` written to `name` in a temp dir, its mtime an hour ago.
fn file_an_hour_old(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    (dir, path)
}

fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
    let mut request = Request::builder().method(method).uri("/data.bin");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap().into_parts().0
}

async fn send(
    fixture: &Fixture,
    method: Method,
    headers: &[(&str, &str)],
) -> (Response<()>, Bytes) {
    let response = serve(&fixture.path, parts(method, headers), None).await;
    let (head, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(head, ()), body)
}

fn header<'a>(response: &'a Response<()>, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

#[tokio::test]
async fn the_etag_is_the_one_serve_file_sends() {
    let fixture = fixture();
    let (plain, _) = send(&fixture, Method::GET, &[]).await;
    let metadata = std::fs::metadata(&fixture.path).unwrap();
    let expected = validators::serve_file_etag(metadata.len(), metadata.modified().unwrap());
    assert_eq!(Some(header(&plain, "etag")), expected.as_deref());
}

#[tokio::test]
async fn several_ranges_are_one_multipart_body() {
    let fixture = fixture();
    let (response, body) = send(&fixture, Method::GET, &[("range", "bytes=0-9,90000-")]).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    let content_type = header(&response, "content-type");
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap();
    assert_eq!(header(&response, "content-length"), body.len().to_string());
    let mut expected = format!(
        "--{boundary}\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: bytes 0-9/100000\r\n\r\n"
    )
    .into_bytes();
    expected.extend_from_slice(&fixture.bytes[..10]);
    expected.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: bytes 90000-99999/100000\r\n\r\n"
        )
        .as_bytes(),
    );
    expected.extend_from_slice(&fixture.bytes[90_000..]);
    expected.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    assert_eq!(body.as_ref(), expected.as_slice());
    assert!(response.headers().contains_key("etag"));
    assert!(response.headers().contains_key("last-modified"));
    assert!(!response.headers().contains_key("content-range"));
}

#[tokio::test]
async fn if_range_with_a_stale_validator_sends_the_whole_file() {
    let fixture = fixture();
    let (plain, _) = send(&fixture, Method::GET, &[]).await;
    let etag = header(&plain, "etag").to_owned();
    let last_modified = header(&plain, "last-modified").to_owned();
    let weak = format!("W/{etag}");
    for (validator, status) in [
        (etag.as_str(), StatusCode::PARTIAL_CONTENT),
        (last_modified.as_str(), StatusCode::PARTIAL_CONTENT),
        ("\"stale\"", StatusCode::OK),
        (weak.as_str(), StatusCode::OK),
        ("Thu, 01 Jan 2015 00:00:00 GMT", StatusCode::OK),
    ] {
        let (response, body) = send(
            &fixture,
            Method::GET,
            &[("range", "bytes=10-19"), ("if-range", validator)],
        )
        .await;
        assert_eq!(response.status(), status, "{validator}");
        if status == StatusCode::OK {
            assert_eq!(body.as_ref(), fixture.bytes.as_slice(), "{validator}");
            assert_eq!(header(&response, "content-length"), "100000");
            assert_eq!(header(&response, "etag"), etag);
        } else {
            assert_eq!(body.as_ref(), &fixture.bytes[10..20], "{validator}");
            assert_eq!(header(&response, "content-range"), "bytes 10-19/100000");
        }
    }
}

#[tokio::test]
async fn a_failed_precondition_wins_over_the_range() {
    let fixture = fixture();
    let (plain, _) = send(&fixture, Method::GET, &[]).await;
    let etag = header(&plain, "etag").to_owned();
    let (response, body) = send(
        &fixture,
        Method::GET,
        &[("range", "bytes=0-1,5-6"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let (response, _) = send(
        &fixture,
        Method::GET,
        &[("range", "bytes=0-1"), ("if-match", "\"other\"")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn unsatisfiable_and_ignored_ranges() {
    let fixture = fixture();
    let (response, body) = send(&fixture, Method::GET, &[("range", "bytes=100000-")]).await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&response, "content-range"), "bytes */100000");
    assert_eq!(header(&response, "content-length"), "0");
    assert!(!response.headers().contains_key("content-type"));
    assert!(body.is_empty());
    for ignored in [
        &[("range", "items=0-1")][..],
        &[("range", "bytes=0-1"), ("range", "bytes=2-3")],
    ] {
        let (response, body) = send(&fixture, Method::GET, ignored).await;
        assert_eq!(response.status(), StatusCode::OK, "{ignored:?}");
        assert_eq!(body.len(), 100_000);
    }
}

#[tokio::test]
async fn head_gets_the_headers_of_get_without_a_body() {
    let fixture = fixture();
    for range in ["bytes=0-9,20-29", "bytes=5-9", "bytes=200000-"] {
        let (get, get_body) = send(&fixture, Method::GET, &[("range", range)]).await;
        let (head, head_body) = send(&fixture, Method::HEAD, &[("range", range)]).await;
        assert_eq!(head.status(), get.status(), "{range}");
        assert!(head_body.is_empty());
        assert_eq!(
            header(&head, "content-length"),
            get_body.len().to_string(),
            "{range}"
        );
        for name in ["content-range", "etag", "last-modified", "accept-ranges"] {
            assert_eq!(
                head.headers().get(name),
                get.headers().get(name),
                "{range} {name}"
            );
        }
    }
}

#[tokio::test]
async fn a_missing_file_is_whatever_serve_file_says() {
    let fixture = fixture();
    std::fs::remove_file(&fixture.path).unwrap();
    let (response, _) = send(&fixture, Method::GET, &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// A small file written into a temp dir, an hour old.
fn small_file(name: &str, length: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let bytes: Vec<u8> = (0..length).map(|i| (i * 13 % 251) as u8).collect();
    file_an_hour_old(name, &bytes)
}

async fn status_headers_body(response: Response<ResponseBody>) -> (StatusCode, HeaderMap, Bytes) {
    let (head, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (head.status, head.headers, body)
}

#[tokio::test]
async fn a_small_file_read_inline_gets_exactly_serve_files_answer() {
    let limit = INLINE_READ_LIMIT as usize;
    for (name, length) in [
        ("style.css", 2048),
        ("empty.txt", 0),
        ("blob.unknown-extension", 100),
        ("no-extension", limit),
    ] {
        let (_dir, path) = small_file(name, length);
        for method in [Method::GET, Method::HEAD] {
            let inline = serve_small_inline(&path, &parts(method.clone(), &[]))
                .unwrap_or_else(|| panic!("{name} {method} not read inline"));
            let inline = status_headers_body(inline).await;
            let served = status_headers_body(serve_file(&path, parts(method.clone(), &[])).await);
            let served = served.await;
            assert_eq!(inline.0, served.0, "{name} {method}");
            assert_eq!(inline.2, served.2, "{name} {method}");
            for field in [
                header::CONTENT_TYPE,
                header::ACCEPT_RANGES,
                header::LAST_MODIFIED,
                header::ETAG,
            ] {
                assert_eq!(
                    inline.1.get(&field),
                    served.1.get(&field),
                    "{name} {method} {field}"
                );
            }
            let expected = length.to_string();
            assert_eq!(
                inline.1[header::CONTENT_LENGTH],
                expected.as_str(),
                "{name}"
            );
            assert_eq!(
                inline.2.len(),
                if method == Method::HEAD { 0 } else { length }
            );
        }
    }
}

#[tokio::test]
async fn conditions_large_files_and_other_methods_are_left_to_serve_file() {
    let (_dir, path) = small_file("style.css", 2048);
    for condition in [
        ("if-none-match", "\"x\""),
        ("if-match", "*"),
        ("if-modified-since", "Sat, 05 Dec 2026 10:00:00 GMT"),
        ("if-unmodified-since", "Sat, 05 Dec 2026 10:00:00 GMT"),
    ] {
        assert!(serve_small_inline(&path, &parts(Method::GET, &[condition])).is_none());
    }
    assert!(serve_small_inline(&path, &parts(Method::POST, &[])).is_none());
    let (_big_dir, big) = small_file("big.bin", INLINE_READ_LIMIT as usize + 1);
    assert!(serve_small_inline(&big, &parts(Method::GET, &[])).is_none());
    let directory = tempfile::tempdir().unwrap();
    assert!(serve_small_inline(directory.path(), &parts(Method::GET, &[])).is_none());
    assert!(serve_small_inline(&directory.path().join("gone"), &parts(Method::GET, &[])).is_none());
}
