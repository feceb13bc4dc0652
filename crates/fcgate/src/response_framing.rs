//! fcgate's own framing of a backend response toward the client: which of the app's headers
//! reach the client, and how long the body is.
//!
//! The app's `Content-Length` is a claim, not a frame: written to the client verbatim it let a
//! script whose body outgrew its header smuggle a second response onto a keep-alive connection
//! (response splitting), and a body shorter than the header made the client eat the next
//! response. So the claim is checked here ([`declared_length`]: a number, the same in every
//! copy, else a 502), the header itself is removed, and the proxy re-states the length from
//! what it actually sends: cut at the declared length when the app sent more, an error when it
//! sent less ([`BodyFit`]). Pure: no I/O, no clock; the proxy and the spool act on the answers.
//!
//! Headers that describe one hop (RFC 9110 §7.6.1) are the app's business with its own
//! connection, not the client's, and HTTP/2 forbids them: [`strip_hop_by_hop`].

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers removed whatever `Connection` says (RFC 9110 §7.6.1, RFC 9112 §7).
/// `Proxy-Connection` and `Keep-Alive` are not standard but old clients and apps send them.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Why the app's `Content-Length` cannot be believed; the client gets a 502.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentLengthError {
    /// Not a plain decimal number (`abc`, `-1`, `+5`, empty, too big for 64 bits).
    #[error("the backend sent an invalid Content-Length {0:?}")]
    Invalid(String),
    /// Several copies (or a comma list) that disagree.
    #[error("the backend sent conflicting Content-Length values ({0} and {1})")]
    Conflicting(u64, u64),
}

/// Removes every hop-by-hop header, including each one `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Nearly every response has none. One look at each of its few names (standard names compare
    // as small integers) settles that for a fraction of a hashed removal per hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // The names a `Connection` header lists are hop-by-hop too (RFC 9110 §7.6.1); collected
    // first because they are removed from the map being read.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// The body length the app declared, removing its `Content-Length` from `headers`: `None` when
/// it declared none. Identical copies (`5, 5` or two headers) are one claim, as RFC 9110 §8.6
/// allows a recipient to read them; anything else is an error.
pub fn declared_length(headers: &mut HeaderMap) -> Result<Option<u64>, ContentLengthError> {
    let mut declared: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&byte| byte == b',') {
            let length = parse_length(item.trim_ascii()).ok_or_else(|| {
                ContentLengthError::Invalid(String::from_utf8_lossy(value.as_bytes()).into_owned())
            })?;
            match declared {
                Some(earlier) if earlier != length => {
                    return Err(ContentLengthError::Conflicting(earlier, length))
                }
                _ => declared = Some(length),
            }
        }
    }
    headers.remove(header::CONTENT_LENGTH);
    Ok(declared)
}

/// `1*DIGIT` (RFC 9110 §8.6): no sign, no spaces inside, and it must fit in a `u64`.
fn parse_length(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// How the body toward the client is framed, decided from the request and the app's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// The app declared no length: the body is whatever it sends (chunked on HTTP/1.1).
    Undeclared,
    /// The app declared this length: exactly this many bytes, or an error.
    Declared(u64),
    /// HEAD, 204 or 304: the client gets no body whatever the app sends.
    Bodiless,
}

impl ClientFraming {
    /// The framing for a response with `status` to a request that `is_head`, given the length
    /// the app `declared`.
    pub fn new(is_head: bool, status: http::StatusCode, declared: Option<u64>) -> ClientFraming {
        let bodiless = is_head
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED;
        match declared {
            _ if bodiless => ClientFraming::Bodiless,
            Some(length) => ClientFraming::Declared(length),
            None => ClientFraming::Undeclared,
        }
    }

    /// The declared length the body must match, if it must match one.
    pub fn declared(self) -> Option<u64> {
        match self {
            ClientFraming::Declared(length) => Some(length),
            ClientFraming::Undeclared | ClientFraming::Bodiless => None,
        }
    }
}

/// How a body the app finished sending compares with what it declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFit {
    /// No declaration, or exactly the declared length: sent as it is.
    Matches,
    /// More than declared: the client gets the declared bytes, the rest is dropped.
    Longer {
        /// The declared length, where the body is cut.
        declared: u64,
        /// Bytes the app sent in all.
        sent: u64,
    },
    /// Less than declared: the client's response ends in an error, so it never takes the
    /// short body for a complete one.
    Shorter {
        /// The declared length.
        declared: u64,
        /// Bytes the app sent in all.
        sent: u64,
    },
}

impl BodyFit {
    /// Compares `sent` bytes with the `declared` length, if any.
    pub fn of(declared: Option<u64>, sent: u64) -> BodyFit {
        match declared {
            Some(declared) if sent > declared => BodyFit::Longer { declared, sent },
            Some(declared) if sent < declared => BodyFit::Shorter { declared, sent },
            _ => BodyFit::Matches,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut map = headers(&[
            ("Connection", "close, X-Secret"),
            ("Connection", "x-other"),
            ("X-Secret", "1"),
            ("X-Other", "2"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Transfer-Encoding", "chunked"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "websocket"),
            ("TE", "trailers"),
            ("Content-Type", "text/html"),
            ("Set-Cookie", "a=1"),
        ]);
        strip_hop_by_hop(&mut map);
        let left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type", "set-cookie"]);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in &HOP_BY_HOP {
            let mut map = headers(&[(name.as_str(), "x"), ("Content-Type", "text/html")]);
            strip_hop_by_hop(&mut map);
            let left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
            assert_eq!(left, ["content-type"], "{name}");
        }
        let mut clean = headers(&[("Content-Type", "text/html"), ("X-Powered-By", "PHP")]);
        strip_hop_by_hop(&mut clean);
        assert_eq!(clean.len(), 2);
    }

    #[test]
    fn a_connection_header_naming_garbage_removes_only_itself() {
        let mut map = headers(&[("Connection", "not a name, ,"), ("X-A", "1")]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn declared_length_is_parsed_and_removed() {
        let mut map = headers(&[("Content-Length", "5"), ("Content-Type", "text/plain")]);
        assert_eq!(declared_length(&mut map), Ok(Some(5)));
        assert!(!map.contains_key(header::CONTENT_LENGTH));
        assert_eq!(declared_length(&mut headers(&[])), Ok(None));
        let same_twice = &mut headers(&[("Content-Length", "7"), ("Content-Length", " 7")]);
        assert_eq!(declared_length(same_twice), Ok(Some(7)));
        assert_eq!(
            declared_length(&mut headers(&[("Content-Length", "7, 7")])),
            Ok(Some(7))
        );
        assert_eq!(
            declared_length(&mut headers(&[("Content-Length", "0")])),
            Ok(Some(0))
        );
    }

    #[test]
    fn invalid_or_conflicting_lengths_are_errors() {
        for value in [
            "abc",
            "",
            "-1",
            "+5",
            "5 5",
            "0x10",
            "5,",
            "99999999999999999999",
        ] {
            let result = declared_length(&mut headers(&[("Content-Length", value)]));
            assert!(
                matches!(result, Err(ContentLengthError::Invalid(_))),
                "{value:?} -> {result:?}"
            );
        }
        assert_eq!(
            declared_length(&mut headers(&[
                ("Content-Length", "5"),
                ("Content-Length", "6")
            ])),
            Err(ContentLengthError::Conflicting(5, 6))
        );
        assert_eq!(
            declared_length(&mut headers(&[("Content-Length", "5, 6")])),
            Err(ContentLengthError::Conflicting(5, 6))
        );
    }

    #[test]
    fn head_204_and_304_are_bodiless_whatever_was_declared() {
        use http::StatusCode;
        assert_eq!(
            ClientFraming::new(true, StatusCode::OK, Some(5)),
            ClientFraming::Bodiless
        );
        assert_eq!(
            ClientFraming::new(false, StatusCode::NOT_MODIFIED, Some(5)),
            ClientFraming::Bodiless
        );
        assert_eq!(
            ClientFraming::new(false, StatusCode::NO_CONTENT, None),
            ClientFraming::Bodiless
        );
        assert_eq!(
            ClientFraming::new(false, StatusCode::OK, Some(5)),
            ClientFraming::Declared(5)
        );
        assert_eq!(
            ClientFraming::new(false, StatusCode::NOT_FOUND, None),
            ClientFraming::Undeclared
        );
        assert_eq!(ClientFraming::Declared(5).declared(), Some(5));
        assert_eq!(ClientFraming::Bodiless.declared(), None);
    }

    #[test]
    fn body_fit_compares_sent_with_declared() {
        assert_eq!(BodyFit::of(None, 10), BodyFit::Matches);
        assert_eq!(BodyFit::of(Some(10), 10), BodyFit::Matches);
        assert_eq!(
            BodyFit::of(Some(5), 10),
            BodyFit::Longer {
                declared: 5,
                sent: 10
            }
        );
        assert_eq!(
            BodyFit::of(Some(10), 5),
            BodyFit::Shorter {
                declared: 10,
                sent: 5
            }
        );
    }
}
