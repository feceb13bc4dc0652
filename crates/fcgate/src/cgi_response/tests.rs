//! Tests of the CGI header block parser, including property tests over arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http::header::{CONTENT_TYPE, SET_COOKIE};
use proptest::prelude::*;

use super::*;

fn parse(buf: &[u8]) -> Result<HeadParse, CgiHeadError> {
    parse_head(&Bytes::copy_from_slice(buf))
}

fn complete(buf: &[u8]) -> (CgiHead, usize) {
    match parse(buf) {
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
fn early_hints_is_the_one_informational_status_accepted() {
    let buf = b"Status: 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nStatus: 200\r\n\r\n";
    let (head, body_start) = complete(buf);
    assert_eq!(head.status, StatusCode::EARLY_HINTS);
    assert_eq!(&buf[body_start..], b"Status: 200\r\n\r\n");
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
        assert_eq!(parse(partial), Ok(HeadParse::Incomplete), "{partial:?}");
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
        let error = parse(buf).expect_err("must be refused");
        assert!(
            expected(&error),
            "{:?} -> {error:?}",
            String::from_utf8_lossy(buf)
        );
    }
    for status in [
        "Status: 600\n\n",
        "Status: 999 Beyond\n\n",
        "Status: 101 Switching Protocols\n\n",
        "Status: 102\n\n",
        "Status: 99\n\n",
        "Status:\n\n",
        "Status: 20\n\n",
        "Status: 099\n\n",
    ] {
        assert!(
            matches!(
                parse(status.as_bytes()),
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
    assert_eq!(parse(&buf), Ok(HeadParse::Incomplete));
    buf.resize(MAX_HEAD_LEN, b'a');
    assert_eq!(parse(&buf), Err(CgiHeadError::TooLong));
    let mut at_limit = vec![b'a'; MAX_HEAD_LEN];
    at_limit.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse(&at_limit), Err(CgiHeadError::TooLong));
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
        let _ = parse(&buf);
    }

    #[test]
    fn arbitrary_header_lines_never_panic(
        lines in prop::collection::vec("[ -~\t\r\n\u{80}-\u{ff}]{0,40}", 0..10)
    ) {
        let _ = parse(lines.concat().as_bytes());
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
            prop_assert_eq!(parse(&buf[..end]), Ok(HeadParse::Incomplete));
        }
        let whole = parse(&buf);
        for end in head_text.len()..=buf.len() {
            prop_assert_eq!(&parse(&buf[..end]), &whole);
        }
        let Ok(HeadParse::Complete { head, body_start }) = whole else {
            return Err(TestCaseError::fail(format!("not complete: {whole:?}")));
        };
        prop_assert_eq!(body_start, head_text.len());
        prop_assert_eq!(head.status, StatusCode::OK);
        prop_assert_eq!(head.headers.len(), lines.len());
    }
}

/// The parser as first written (every line collected, then parsed; values copied): the
/// zero-copy one must give the same answer for any input.
fn reference_parse(buf: &[u8]) -> Result<HeadParse, CgiHeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD_LEN)];
    let mut lines = Vec::new();
    let mut line_start = 0;
    let body_start = loop {
        let Some(newline) = window[line_start..].iter().position(|&byte| byte == b'\n') else {
            if buf.len() >= MAX_HEAD_LEN {
                return Err(CgiHeadError::TooLong);
            }
            return Ok(HeadParse::Incomplete);
        };
        let line_end = line_start + newline;
        let line = window[line_start..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&window[line_start..line_end]);
        if line.is_empty() {
            break line_end + 1;
        }
        lines.push(line);
        line_start = line_end + 1;
    };
    let mut headers = HeaderMap::new();
    let mut status = None;
    for (index, line) in lines.iter().enumerate() {
        let line_number = index + 1;
        let malformed = || CgiHeadError::MalformedLine {
            line: line_number,
            text: excerpt(line),
        };
        let colon = line
            .iter()
            .position(|&byte| byte == b':')
            .ok_or_else(malformed)?;
        let (raw_name, raw_value) = (&line[..colon], &line[colon + 1..]);
        if raw_name
            .first()
            .is_none_or(|byte| byte.is_ascii_whitespace())
        {
            return Err(malformed());
        }
        let name = HeaderName::from_bytes(raw_name).map_err(|_| CgiHeadError::InvalidName {
            line: line_number,
            name: excerpt(raw_name),
        })?;
        let trimmed = raw_value.trim_ascii();
        if name.as_str() == "status" {
            status = Some(parse_status(trimmed)?);
            continue;
        }
        let value = HeaderValue::from_bytes(trimmed).map_err(|_| CgiHeadError::InvalidValue {
            line: line_number,
            name: name.as_str().to_owned(),
        })?;
        headers.append(name, value);
    }
    let status = match status {
        Some(status) => status,
        None if headers.contains_key(LOCATION) => StatusCode::FOUND,
        None => StatusCode::OK,
    };
    Ok(HeadParse::Complete {
        head: CgiHead { status, headers },
        body_start,
    })
}

fn head_like_line() -> impl Strategy<Value = String> {
    prop_oneof![
        header_line(),
        "(Status|status): ?[0-9]{3}([ \t][A-Za-z ]{0,6})?\r?\n",
        "(Status|status|STATUS|Location|X-A|x-a|Set-Cookie)[ :\t]{0,3}[ -~\t\r\u{80}-\u{ff}]{0,12}(\r\n|\n|\r\r\n)",
        "[ -~\t\r\u{80}-\u{ff}]{0,20}(\r\n|\n)",
    ]
}

proptest! {
    #[test]
    fn same_answer_as_the_reference_parser(
        lines in prop::collection::vec(head_like_line(), 0..8),
        end in prop::sample::select(vec!["", "\r\n", "\n", "\r\nbody", "\nbody"]),
    ) {
        let buf = format!("{}{end}", lines.concat()).into_bytes();
        prop_assert_eq!(parse(&buf), reference_parse(&buf));
    }
}
