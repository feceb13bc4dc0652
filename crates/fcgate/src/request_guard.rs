//! What a request must be before fcgate routes it, whatever serves it: the checks hyper leaves to
//! the application, made once on the parsed head, for HTTP/1.1 and HTTP/2 alike.
//!
//! A valid Host (RFC 9112 §3.2: missing on HTTP/1.1, repeated or malformed is a 400), a bounded
//! request target (414) and bounded header fields (431, nginx's `large_client_header_buffers`),
//! no TRACE unless `allow_trace` (405, as nginx always answers), no transfer coding but
//! `chunked` (501: hyper removes `chunked` and
//! would hand the app a still-gzipped body, unmarked), and no control characters in the decoded
//! path (400). Pure: the caller turns a [`Refusal`] into a response in `error.rs`.

use http::header::{HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{Method, Version};

use crate::cgi_params::is_valid_host;
use crate::route::decodes_to_control_characters;

/// What a request head may be: its sizes (`max_request_target`, `max_header_line`,
/// `max_request_head`) and its method (`allow_trace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request target (path and query), in bytes.
    pub max_request_target: usize,
    /// Longest header field, `name: value`, in bytes.
    pub max_header_line: usize,
    /// Longest head in all: the request target and every header field.
    pub max_request_head: usize,
    /// Pass TRACE on to the app instead of answering 405.
    pub allow_trace: bool,
}

/// Why a request is refused before it is routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// HTTP/1.1 without Host (RFC 9112 §3.2).
    #[error("the request has no Host header")]
    MissingHost,
    /// More than one Host header.
    #[error("the request has more than one Host header")]
    RepeatedHost,
    /// A Host that is not `name[:port]`.
    #[error("the request's Host is not a valid authority")]
    InvalidHost,
    /// TRACE echoes the request, cookies included (cross-site tracing).
    #[error("TRACE is not allowed")]
    Trace,
    /// A transfer coding other than `chunked`.
    #[error("the request uses a transfer coding other than chunked")]
    UnsupportedTransferCoding,
    /// The request target is longer than `max_request_target`.
    #[error("the request target is longer than {limit} bytes")]
    TargetTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// One header field is longer than `max_header_line`.
    #[error("header `{name}` is longer than {limit} bytes")]
    HeaderLineTooLong {
        /// The header's name.
        name: String,
        /// The limit in force.
        limit: usize,
    },
    /// The head in all is longer than `max_request_head`.
    #[error("the request head is longer than {limit} bytes")]
    HeadTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// `%0d%0a`, `%00` and the like in the path.
    #[error("the decoded path holds control characters")]
    ControlCharactersInPath,
}

/// Checks `parts` against the rules above; the first broken one is the answer.
pub fn check(parts: &Parts, limits: &HeadLimits) -> Result<(), Refusal> {
    if parts.method == Method::TRACE && !limits.allow_trace {
        return Err(Refusal::Trace);
    }
    check_sizes(parts, limits)?;
    check_host(parts)?;
    let codings = parts.headers.get_all(TRANSFER_ENCODING).iter();
    let only_chunked = codings
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .all(|coding| coding.eq_ignore_ascii_case(b"chunked"));
    if !only_chunked {
        return Err(Refusal::UnsupportedTransferCoding);
    }
    if decodes_to_control_characters(parts.uri.path()) {
        return Err(Refusal::ControlCharactersInPath);
    }
    Ok(())
}

fn check_sizes(parts: &Parts, limits: &HeadLimits) -> Result<(), Refusal> {
    let target = parts
        .uri
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > limits.max_request_target {
        return Err(Refusal::TargetTooLong {
            limit: limits.max_request_target,
        });
    }
    let mut head = target;
    for (name, value) in &parts.headers {
        // `Name: value` and its CRLF, as the client sent it on HTTP/1.1.
        let line = name.as_str().len() + 2 + value.len() + 2;
        if line > limits.max_header_line {
            return Err(Refusal::HeaderLineTooLong {
                name: name.as_str().to_owned(),
                limit: limits.max_header_line,
            });
        }
        head += line;
    }
    if head > limits.max_request_head {
        return Err(Refusal::HeadTooLarge {
            limit: limits.max_request_head,
        });
    }
    Ok(())
}

/// HTTP/2 and absolute-form requests carry the host in the URI (hyper checked it); a Host
/// header beside it is only passed on when valid. HTTP/1.1 in origin form needs exactly one.
fn check_host(parts: &Parts) -> Result<(), Refusal> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::RepeatedHost);
    }
    match first {
        Some(host) if !is_valid_host(host.as_bytes()) => Err(Refusal::InvalidHost),
        Some(_) => Ok(()),
        None if parts.uri.authority().is_some() => Ok(()),
        None if parts.version == Version::HTTP_11 => Err(Refusal::MissingHost),
        // HTTP/1.0 predates Host.
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_request_target: 100,
        max_header_line: 60,
        max_request_head: 200,
        allow_trace: false,
    };

    fn parts(builder: http::request::Builder) -> Parts {
        builder.body(()).unwrap().into_parts().0
    }

    fn get(uri: &str) -> http::request::Builder {
        http::Request::get(uri).header(HOST, "example.com")
    }

    #[test]
    fn an_ordinary_request_passes() {
        assert_eq!(check(&parts(get("/index.php?a=1")), &LIMITS), Ok(()));
        let h2 = http::Request::get("https://example.com/").version(Version::HTTP_2);
        assert_eq!(check(&parts(h2), &LIMITS), Ok(()));
        let http10 = http::Request::get("/").version(Version::HTTP_10);
        assert_eq!(check(&parts(http10), &LIMITS), Ok(()));
        let chunked = get("/").header(TRANSFER_ENCODING, "chunked");
        assert_eq!(check(&parts(chunked), &LIMITS), Ok(()));
    }

    #[test]
    fn host_must_be_there_once_and_valid() {
        let missing = http::Request::get("/");
        assert_eq!(check(&parts(missing), &LIMITS), Err(Refusal::MissingHost));
        let twice = get("/").header(HOST, "other.example");
        assert_eq!(check(&parts(twice), &LIMITS), Err(Refusal::RepeatedHost));
        for host in ["a b", "evil/x?y#z", "\"><script>", "a@evil", "", "[::1"] {
            let request = http::Request::get("/").header(HOST, host);
            assert_eq!(
                check(&parts(request), &LIMITS),
                Err(Refusal::InvalidHost),
                "{host:?}"
            );
        }
        for host in [
            "example.com:8080",
            "127.0.0.1",
            "[::1]:80",
            "xn--bcher-kva.de",
        ] {
            let request = http::Request::get("/").header(HOST, host);
            assert_eq!(check(&parts(request), &LIMITS), Ok(()), "{host:?}");
        }
    }

    #[test]
    fn trace_and_foreign_transfer_codings_are_refused() {
        let trace = http::Request::builder()
            .method(Method::TRACE)
            .uri("/")
            .header(HOST, "x");
        let trace = parts(trace);
        assert_eq!(check(&trace, &LIMITS), Err(Refusal::Trace));
        let allowed = HeadLimits {
            allow_trace: true,
            ..LIMITS
        };
        assert_eq!(check(&trace, &allowed), Ok(()));
        for coding in ["gzip, chunked", "gzip", "identity"] {
            let request = get("/").header(TRANSFER_ENCODING, coding);
            assert_eq!(
                check(&parts(request), &LIMITS),
                Err(Refusal::UnsupportedTransferCoding),
                "{coding}"
            );
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let long_target = format!("/{}", "a".repeat(100));
        assert_eq!(
            check(&parts(get(&long_target)), &LIMITS),
            Err(Refusal::TargetTooLong { limit: 100 })
        );
        let long_line = get("/").header("x-long", "v".repeat(60));
        assert!(matches!(
            check(&parts(long_line), &LIMITS),
            Err(Refusal::HeaderLineTooLong { name, limit: 60 }) if name == "x-long"
        ));
        let mut many = get("/");
        for index in 0..6 {
            many = many.header(format!("x-{index}"), "v".repeat(30));
        }
        assert_eq!(
            check(&parts(many), &LIMITS),
            Err(Refusal::HeadTooLarge { limit: 200 })
        );
    }

    #[test]
    fn control_characters_in_the_decoded_path_are_refused() {
        assert_eq!(
            check(&parts(get("/x.php/%0d%0aSet-Cookie:a")), &LIMITS),
            Err(Refusal::ControlCharactersInPath)
        );
    }
}
