//! Tests of the CGI header block parser, including property tests over arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::header::{CONTENT_TYPE, SET_COOKIE};
use proptest::prelude::*;

use super::*;

fn complete(buf: &[u8]) -> (CgiHead, usize) {
    match parse_head(buf) {
        Ok(HeadParse::Complete { head, body_start }) => (head, body_start),
        other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(buf)),
    }
}

#[test]
fn php_style_crlf_head() {
    let buf = b"X-Powered-By: PHP/8.2\r\nContent-type: text/html; charset=UTF-8\r\n\r\n<html>";
    let (head, body_start) = complete(buf);
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers[CONTENT_TYPE], "text/html; charset=UTF-8");
    assert_eq!(head.headers["x-powered-by"], "PHP/8.2");
    assert_eq!(&buf[body_start..], b"<html>");
}

#[test]
fn bare_lf_and_mixed_line_ends() {
    let (head, body_start) = complete(b"Content-Type: text/plain\nX-A: 1\r\n\nbody");
    assert_eq!(head.headers.len(), 2);
    assert_eq!(body_start, 34);
    let (_, body_start) = complete(b"X-A: 1\n\r\nrest");
    assert_eq!(body_start, 9);
}

#[test]
fn status_header_sets_the_status_and_is_removed() {
    let (head, _) = complete(b"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n");
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert!(!head.headers.contains_key("status"));
    assert_eq!(head.headers.len(), 1);
    let (head, _) = complete(b"status:503\n\n");
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);
    let (head, _) = complete(b"Status: 299\tCustom\n\n");
    assert_eq!(head.status.as_u16(), 299);
}

#[test]
fn location_without_status_is_a_302() {
    let (head, _) = complete(b"Location: /login\r\n\r\n");
    assert_eq!(head.status, StatusCode::FOUND);
    assert_eq!(head.headers[LOCATION], "/login");
    let (head, _) = complete(b"Status: 301 Moved Permanently\r\nLocation: /new\r\n\r\n");
    assert_eq!(head.status, StatusCode::MOVED_PERMANENTLY);
    let (head, _) = complete(b"Location: /created\r\nStatus: 201\r\n\r\n");
    assert_eq!(head.status, StatusCode::CREATED);
}

#[test]
fn repeated_headers_stay_separate() {
    let (head, _) = complete(b"Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\n\r\n");
    let cookies: Vec<_> = head.headers.get_all(SET_COOKIE).iter().collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
}

#[test]
fn values_are_trimmed_and_may_be_empty() {
    let (head, _) = complete(b"X-Empty:\r\nX-Padded: \t  v  \r\n\r\n");
    assert_eq!(head.headers["x-empty"], "");
    assert_eq!(head.headers["x-padded"], "v");
}

#[test]
fn empty_head_means_200_and_no_headers() {
    let (head, body_start) = complete(b"\r\nbody");
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.headers.is_empty());
    assert_eq!(body_start, 2);
}

#[test]
fn incomplete_until_the_empty_line() {
    for partial in [
        &b""[..],
        b"Content-Type: text/html",
        b"Content-Type: text/html\r\n",
        b"A: 1\r\n\r",
    ] {
        assert_eq!(
            parse_head(partial),
            Ok(HeadParse::Incomplete),
            "{partial:?}"
        );
    }
}

#[test]
fn malformed_heads_are_errors() {
    type Expectation = fn(&CgiHeadError) -> bool;
    let cases: [(&[u8], Expectation); 9] = [
        (b"Hello world\n\n", |e| {
            matches!(e, CgiHeadError::MalformedLine { line: 1, .. })
        }),
        (b"A: 1\n folded\n\n", |e| {
            matches!(e, CgiHeadError::MalformedLine { line: 2, .. })
        }),
        (b": no name\n\n", |e| {
            matches!(e, CgiHeadError::MalformedLine { .. })
        }),
        (b"Bad Name: x\n\n", |e| {
            matches!(e, CgiHeadError::InvalidName { .. })
        }),
        (b"X-A: a\x00b\n\n", |e| {
            matches!(e, CgiHeadError::InvalidValue { .. })
        }),
        (b"X-A: a\rb\n\n", |e| {
            matches!(e, CgiHeadError::InvalidValue { .. })
        }),
        (b"Status: abc\n\n", |e| {
            matches!(e, CgiHeadError::InvalidStatus(_))
        }),
        (b"Status: 2000\n\n", |e| {
            matches!(e, CgiHeadError::InvalidStatus(_))
        }),
        (b"Status: 100 Continue\n\n", |e| {
            matches!(e, CgiHeadError::InvalidStatus(_))
        }),
    ];
    for (buf, expected) in cases {
        let error = parse_head(buf).expect_err("must be refused");
        assert!(
            expected(&error),
            "{:?} -> {error:?}",
            String::from_utf8_lossy(buf)
        );
    }
    for status in [
        "Status: 99\n\n",
        "Status:\n\n",
        "Status: 20\n\n",
        "Status: 099\n\n",
    ] {
        assert!(
            matches!(
                parse_head(status.as_bytes()),
                Err(CgiHeadError::InvalidStatus(_))
            ),
            "{status:?}"
        );
    }
}

#[test]
fn a_head_without_end_is_refused_at_the_limit() {
    let mut buf = Vec::new();
    while buf.len() < MAX_HEAD_LEN - 100 {
        buf.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    assert_eq!(parse_head(&buf), Ok(HeadParse::Incomplete));
    buf.resize(MAX_HEAD_LEN, b'a');
    assert_eq!(parse_head(&buf), Err(CgiHeadError::TooLong));
    let mut at_limit = vec![b'a'; MAX_HEAD_LEN];
    at_limit.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_head(&at_limit), Err(CgiHeadError::TooLong));
}

#[test]
fn a_head_ending_exactly_at_the_limit_is_accepted() {
    let mut buf = b"X-Fill: ".to_vec();
    buf.resize(MAX_HEAD_LEN - 2, b'v');
    buf.extend_from_slice(b"\n\n");
    buf.extend_from_slice(b"body beyond the limit");
    let (head, body_start) = complete(&buf);
    assert_eq!(body_start, MAX_HEAD_LEN);
    assert_eq!(head.headers["x-fill"].len(), MAX_HEAD_LEN - 2 - 8);
}

fn header_line() -> impl Strategy<Value = String> {
    ("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}", prop::bool::ANY).prop_map(
        |(name, value, crlf)| {
            let name = if name.eq_ignore_ascii_case("status") {
                "X-Status".into()
            } else {
                name
            };
            format!(
                "{name}: {}{}",
                value.trim(),
                if crlf { "\r\n" } else { "\n" }
            )
        },
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_head(&buf);
    }

    #[test]
    fn arbitrary_header_lines_never_panic(
        lines in prop::collection::vec("[ -~\t\r\n\u{80}-\u{ff}]{0,40}", 0..10)
    ) {
        let _ = parse_head(lines.concat().as_bytes());
    }

    #[test]
    fn chunk_by_chunk_is_incomplete_until_the_blank_line(
        lines in prop::collection::vec(header_line(), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let head_text = format!("{}\r\n", lines.concat());
        let mut buf = head_text.clone().into_bytes();
        buf.extend_from_slice(&body);
        for end in 0..head_text.len() {
            prop_assert_eq!(parse_head(&buf[..end]), Ok(HeadParse::Incomplete));
        }
        let whole = parse_head(&buf);
        for end in head_text.len()..=buf.len() {
            prop_assert_eq!(&parse_head(&buf[..end]), &whole);
        }
        let Ok(HeadParse::Complete { head, body_start }) = whole else {
            return Err(TestCaseError::fail(format!("not complete: {whole:?}")));
        };
        prop_assert_eq!(body_start, head_text.len());
        prop_assert_eq!(head.status, StatusCode::OK);
        prop_assert_eq!(head.headers.len(), lines.len());
    }
}
