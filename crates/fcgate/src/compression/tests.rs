//! The negotiation and the decisions of `compression.rs`, without sockets: Accept-Encoding in,
//! the ranked codings out; a response in, its headers (and body) out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use bytes::Bytes;
use http_body_util::BodyExt;

const SERVER: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

fn ranked(accept_encoding: &[&str], preference: &[Coding]) -> Vec<Coding> {
    let mut headers = HeaderMap::new();
    for value in accept_encoding {
        headers.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
    }
    negotiate(&headers, preference).iter().collect()
}

#[test]
fn no_field_or_an_empty_one_is_identity() {
    assert_eq!(ranked(&[], &SERVER), []);
    assert_eq!(ranked(&[""], &SERVER), []);
    assert_eq!(ranked(&["identity"], &SERVER), []);
}

#[test]
fn equal_q_values_follow_the_server_preference() {
    assert_eq!(
        ranked(&["gzip, deflate, br, zstd"], &SERVER),
        [Coding::Zstd, Coding::Brotli, Coding::Gzip]
    );
    let gzip_first = [Coding::Gzip, Coding::Brotli, Coding::Zstd];
    assert_eq!(
        ranked(&["zstd, br, gzip"], &gzip_first),
        [Coding::Gzip, Coding::Brotli, Coding::Zstd]
    );
}

#[test]
fn higher_q_values_win_over_the_server_preference() {
    assert_eq!(
        ranked(&["zstd;q=0.5, br;q=0.8, gzip"], &SERVER),
        [Coding::Gzip, Coding::Brotli, Coding::Zstd]
    );
    assert_eq!(
        ranked(&["gzip;q=0.001", "br;Q=0.002"], &SERVER),
        [Coding::Brotli, Coding::Gzip]
    );
}

#[test]
fn q_zero_refuses_a_coding() {
    assert_eq!(ranked(&["gzip;q=0"], &SERVER), []);
    assert_eq!(ranked(&["gzip;q=0.000, br"], &SERVER), [Coding::Brotli]);
    assert_eq!(ranked(&["*;q=0"], &SERVER), []);
    assert_eq!(ranked(&["*;q=0, identity;q=0"], &SERVER), []);
}

#[test]
fn the_wildcard_stands_for_codings_not_named() {
    assert_eq!(ranked(&["*"], &SERVER), SERVER);
    assert_eq!(
        ranked(&["*;q=0.5, gzip"], &SERVER),
        [Coding::Gzip, Coding::Zstd, Coding::Brotli]
    );
    assert_eq!(
        ranked(&["br;q=0, *"], &SERVER),
        [Coding::Zstd, Coding::Gzip]
    );
    assert_eq!(ranked(&["*;q=0, gzip"], &SERVER), [Coding::Gzip]);
}

#[test]
fn only_enabled_codings_are_offered() {
    assert_eq!(ranked(&["zstd, br, gzip"], &[Coding::Gzip]), [Coding::Gzip]);
    assert_eq!(ranked(&["br"], &[Coding::Gzip]), []);
}

#[test]
fn names_are_case_insensitive_and_x_gzip_is_gzip() {
    assert_eq!(ranked(&["GZip"], &SERVER), [Coding::Gzip]);
    assert_eq!(ranked(&["x-gzip"], &SERVER), [Coding::Gzip]);
    assert_eq!(ranked(&[" br ; q=1.0 "], &SERVER), [Coding::Brotli]);
}

#[test]
fn an_unreadable_q_value_drops_its_element_only() {
    for bad in [
        "gzip;q=2",
        "gzip;q=1.5",
        "gzip;q=0.1234",
        "gzip;q=-1",
        "gzip;q=.5",
    ] {
        assert_eq!(ranked(&[bad, "br"], &SERVER), [Coding::Brotli], "{bad}");
    }
}

#[test]
fn q_values_parse_to_thousandths() {
    assert_eq!(parse_qvalue("0"), Some(0));
    assert_eq!(parse_qvalue("0."), Some(0));
    assert_eq!(parse_qvalue("0.5"), Some(500));
    assert_eq!(parse_qvalue("0.125"), Some(125));
    assert_eq!(parse_qvalue("1"), Some(1000));
    assert_eq!(parse_qvalue("1.000"), Some(1000));
    assert_eq!(parse_qvalue("1.001"), None);
    assert_eq!(parse_qvalue(""), None);
}

#[test]
fn types_match_exactly_or_by_wildcard_and_never_event_streams() {
    let types = ["text/*".to_owned(), "application/json".to_owned()];
    assert!(type_listed(&types, "text/html; charset=utf-8"));
    assert!(type_listed(&types, "TEXT/CSS"));
    assert!(type_listed(&types, "application/json"));
    assert!(!type_listed(&types, "application/json-seq"));
    assert!(!type_listed(&types, "image/png"));
    assert!(!type_listed(&types, "text/event-stream"));
    assert!(!type_listed(&types, "nonsense"));
}

#[test]
fn precompressed_variants_are_asked_for_in_our_order() {
    let precompressed = Precompressed {
        ranked: Ranked {
            codings: [Some(Coding::Brotli), Some(Coding::Gzip), None],
        },
        enabled: [true; 3],
    };
    assert_eq!(precompressed.accept_encoding().unwrap(), "br,gzip;q=0.9");
    let identity = Precompressed {
        ranked: Ranked::default(),
        enabled: [true; 3],
    };
    assert_eq!(identity.accept_encoding(), None);
}

fn settings() -> CompressionSettings {
    crate::config::parse_file_text("")
        .unwrap()
        .validate()
        .unwrap()
        .compression
}

fn wanted(accept_encoding: &str) -> Wanted {
    let request = Request::get("/")
        .header(header::ACCEPT_ENCODING, accept_encoding)
        .body(())
        .unwrap();
    Wanted::of(&settings(), &request)
}

fn static_response(content_type: &str, body: &'static [u8]) -> Response<ResponseBody> {
    let mut response = Response::new(crate::body::full(Bytes::from_static(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap(),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
    response.extensions_mut().insert(StaticFile);
    response
}

const TEXT: &[u8] = &[b'a'; 4096];

#[tokio::test]
async fn a_compressed_response_has_a_weak_etag_vary_and_no_length() {
    let response = apply(
        &settings(),
        &wanted("gzip"),
        static_response("text/css", TEXT),
    )
    .await;
    let headers = response.headers();
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(headers[header::VARY], "Accept-Encoding");
    assert_eq!(headers[header::ETAG], "W/\"abc\"");
    assert!(!headers.contains_key(header::CONTENT_LENGTH));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.len() < TEXT.len() / 10);
}

#[tokio::test]
async fn identity_keeps_the_strong_etag_but_still_varies() {
    let response = apply(
        &settings(),
        &wanted("identity"),
        static_response("text/css", TEXT),
    )
    .await;
    let headers = response.headers();
    assert!(!headers.contains_key(header::CONTENT_ENCODING));
    assert_eq!(headers[header::VARY], "Accept-Encoding");
    assert_eq!(headers[header::ETAG], "\"abc\"");
}

#[tokio::test]
async fn vary_is_not_repeated() {
    let mut response = static_response("text/css", TEXT);
    response.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("Origin, accept-encoding"),
    );
    let response = apply(&settings(), &wanted("br"), response).await;
    assert_eq!(response.headers().get_all(header::VARY).iter().count(), 1);
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "br");
}

#[tokio::test]
async fn responses_that_must_stay_as_they_are() {
    type Change = fn(&mut Response<ResponseBody>);
    let cases: [(&str, Change); 5] = [
        ("no-transform", |response| {
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, No-Transform"),
            );
        }),
        ("already encoded", |response| {
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        }),
        ("206", |response| {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }),
        ("204", |response| {
            *response.status_mut() = StatusCode::NO_CONTENT
        }),
        ("a script's, scripts off", |response| {
            response.extensions_mut().remove::<StaticFile>();
        }),
    ];
    for (case, change) in cases {
        let mut response = static_response("text/css", TEXT);
        change(&mut response);
        let response = apply(&settings(), &wanted("gzip"), response).await;
        assert_ne!(
            response
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.as_bytes()),
            Some(&b"gzip"[..]),
            "{case}"
        );
    }
}

#[tokio::test]
async fn small_bodies_and_unlisted_types_are_left_alone_without_vary() {
    for response in [
        static_response("text/css", b"tiny"),
        static_response("image/png", TEXT),
    ] {
        let response = apply(&settings(), &wanted("gzip"), response).await;
        assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
        assert!(!response.headers().contains_key(header::VARY));
    }
}

#[tokio::test]
async fn a_304_confirms_the_weak_tag_the_client_holds() {
    let not_modified = |etag: &'static str| {
        let mut response = Response::new(crate::body::full(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
            .headers_mut()
            .insert(header::ETAG, HeaderValue::from_static(etag));
        response.extensions_mut().insert(StaticFile);
        response
    };
    let request = |if_none_match: &'static str| {
        let request = Request::get("/")
            .header(header::ACCEPT_ENCODING, "gzip")
            .header(header::IF_NONE_MATCH, if_none_match)
            .body(())
            .unwrap();
        Wanted::of(&settings(), &request)
    };
    let held_compressed = apply(&settings(), &request("W/\"abc\""), not_modified("\"abc\"")).await;
    assert_eq!(held_compressed.headers()[header::ETAG], "W/\"abc\"");
    assert_eq!(held_compressed.headers()[header::VARY], "Accept-Encoding");
    let held_identity = apply(&settings(), &request("\"abc\""), not_modified("\"abc\"")).await;
    assert_eq!(held_identity.headers()[header::ETAG], "\"abc\"");
    let other = apply(&settings(), &request("W/\"xyz\""), not_modified("\"abc\"")).await;
    assert_eq!(other.headers()[header::ETAG], "\"abc\"");
}
