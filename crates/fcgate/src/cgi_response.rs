//! The CGI header block at the start of a FastCGI application's STDOUT (RFC 3875 §6).
//!
//! Pure: the caller accumulates STDOUT bytes and calls [`parse_head`] until it returns
//! [`HeadParse::Complete`]; everything after `body_start` is the response body. Lines may end
//! with CRLF (PHP) or a bare LF (many other apps); the block ends at the first empty line.
//! Which headers are hop-by-hop, and what to do with the app's Content-Length, is the proxy's
//! business, not this parser's.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};
use memchr::memchr;

/// A header block longer than this without its terminating empty line is an error, so a
/// backend that never ends its headers cannot make the gateway buffer without bound.
pub const MAX_HEAD_LEN: usize = 64 * 1024;

/// The status and headers an application sent before its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiHead {
    /// From `Status:`, else 302 when there is a `Location:`, else 200 (RFC 3875 §6.3.3).
    pub status: StatusCode,
    /// Every header but `Status`, repeated ones (Set-Cookie) kept as separate values.
    pub headers: HeaderMap,
}

/// The outcome of looking at the first bytes of STDOUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadParse {
    /// No empty line yet: feed more bytes.
    Incomplete,
    /// The block is complete; the body starts at `body_start` in the buffer given.
    Complete {
        /// Status and headers.
        head: CgiHead,
        /// Offset of the first body byte.
        body_start: usize,
    },
}

/// Why a header block was refused; the gateway answers 502.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgiHeadError {
    /// No empty line within [`MAX_HEAD_LEN`] bytes.
    #[error("CGI header block exceeds {MAX_HEAD_LEN} bytes")]
    TooLong,
    /// A line with no colon, or starting with whitespace (obsolete line folding).
    #[error("CGI header line {line} is not `Name: value`: {text:?}")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
        /// The start of the line, lossily decoded.
        text: String,
    },
    /// The name is not an HTTP token.
    #[error("CGI header line {line} has an invalid name {name:?}")]
    InvalidName {
        /// 1-based line number.
        line: usize,
        /// The start of the name, lossily decoded.
        name: String,
    },
    /// The value holds bytes HTTP does not allow (control characters).
    #[error("CGI header `{name}` on line {line} has an invalid value")]
    InvalidValue {
        /// 1-based line number.
        line: usize,
        /// The header name.
        name: String,
    },
    /// `Status:` is not a 3-digit final status (200-599), or 103, with an optional reason.
    #[error("invalid CGI Status header {0:?}")]
    InvalidStatus(String),
}

/// Longest excerpt of offending input quoted in an error.
const EXCERPT_LEN: usize = 64;

fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_LEN)]).into_owned()
}

/// Parses the header block at the start of `buf`. Header values are slices of `buf`, not
/// copies: a response head costs the header map and the names http does not know already.
pub fn parse_head(buf: &Bytes) -> Result<HeadParse, CgiHeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD_LEN)];
    let mut line_start = 0;
    let body_start = loop {
        let Some(newline) = memchr(b'\n', &window[line_start..]) else {
            if buf.len() >= MAX_HEAD_LEN {
                return Err(CgiHeadError::TooLong);
            }
            return Ok(HeadParse::Incomplete);
        };
        let line_end = line_start + newline;
        if matches!(&window[line_start..line_end], b"" | b"\r") {
            break line_end + 1;
        }
        line_start = line_end + 1;
    };
    // The lines before the empty one, each ending with its `\n`.
    let head = parse_lines(buf, line_start)?;
    Ok(HeadParse::Complete { head, body_start })
}

fn parse_lines(buf: &Bytes, lines_end: usize) -> Result<CgiHead, CgiHeadError> {
    let mut headers = HeaderMap::new();
    let mut status = None;
    let mut line_start = 0;
    let mut line_number = 0;
    while line_start < lines_end {
        line_number += 1;
        let newline =
            memchr(b'\n', &buf[line_start..lines_end]).map_or(lines_end, |at| line_start + at);
        let line_end = if newline > line_start && buf[newline - 1] == b'\r' {
            newline - 1
        } else {
            newline
        };
        let line = &buf[line_start..line_end];
        line_start = newline + 1;
        let malformed = || CgiHeadError::MalformedLine {
            line: line_number,
            text: excerpt(line),
        };
        let colon = memchr(b':', line).ok_or_else(malformed)?;
        let (raw_name, raw_value) = (&line[..colon], &line[colon + 1..]);
        if raw_name
            .first()
            .is_none_or(|byte| byte.is_ascii_whitespace())
        {
            return Err(malformed());
        }
        let trimmed = raw_value.trim_ascii();
        // Checked before building a HeaderName: http has no constant for it, so that would
        // allocate for a header that is dropped anyway.
        if raw_name.eq_ignore_ascii_case(b"status") {
            status = Some(parse_status(trimmed)?);
            continue;
        }
        let name = HeaderName::from_bytes(raw_name).map_err(|_| CgiHeadError::InvalidName {
            line: line_number,
            name: excerpt(raw_name),
        })?;
        let value_start =
            line_end - raw_value.len() + (raw_value.len() - raw_value.trim_ascii_start().len());
        let value = buf.slice(value_start..value_start + trimmed.len());
        let value =
            HeaderValue::from_maybe_shared(value).map_err(|_| CgiHeadError::InvalidValue {
                line: line_number,
                name: name.as_str().to_owned(),
            })?;
        headers.append(name, value);
    }
    let status = match status {
        Some(status) => status,
        // RFC 3875 §6.2.3: a client redirect response without Status is a 302.
        None if headers.contains_key(LOCATION) => StatusCode::FOUND,
        None => StatusCode::OK,
    };
    Ok(CgiHead { status, headers })
}

/// `404`, `404 Not Found`: the reason phrase is ignored, HTTP/2 has none anyway.
fn parse_status(value: &[u8]) -> Result<StatusCode, CgiHeadError> {
    let invalid = || CgiHeadError::InvalidStatus(excerpt(value));
    let code = value.get(..3).ok_or_else(invalid)?;
    let rest = &value[3..];
    let separated = rest
        .first()
        .is_none_or(|&byte| byte == b' ' || byte == b'\t');
    if !code.iter().all(u8::is_ascii_digit) || !separated {
        return Err(invalid());
    }
    let status = StatusCode::from_bytes(code).map_err(|_| invalid())?;
    // HTTP has no status outside 100-599 (RFC 9110 §15). An informational status cannot end a
    // response, so the app's real one would be lost; 103 Early Hints is the exception, because
    // a final head follows it (the proxy skips it).
    let final_or_early_hints =
        (200..600).contains(&status.as_u16()) || status == StatusCode::EARLY_HINTS;
    if !final_or_early_hints {
        return Err(invalid());
    }
    Ok(status)
}

#[cfg(test)]
mod tests;
