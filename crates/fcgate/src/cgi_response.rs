//! The CGI header block at the start of a FastCGI application's STDOUT (RFC 3875 §6).
//!
//! Pure: the caller accumulates STDOUT bytes and calls [`parse_head`] until it returns
//! [`HeadParse::Complete`]; everything after `body_start` is the response body. Lines may end
//! with CRLF (PHP) or a bare LF (many other apps); the block ends at the first empty line.
//! Which headers are hop-by-hop, and what to do with the app's Content-Length, is the proxy's
//! business, not this parser's.

use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};

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
    /// `Status:` is not a 3-digit final status (200-999) with an optional reason.
    #[error("invalid CGI Status header {0:?}")]
    InvalidStatus(String),
}

/// Longest excerpt of offending input quoted in an error.
const EXCERPT_LEN: usize = 64;

fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_LEN)]).into_owned()
}

/// Parses the header block at the start of `buf`.
pub fn parse_head(buf: &[u8]) -> Result<HeadParse, CgiHeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD_LEN)];
    let mut lines = Vec::new();
    let mut line_start = 0;
    let body_start = loop {
        let Some(newline) = find_newline(&window[line_start..]) else {
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
    let head = parse_lines(&lines)?;
    Ok(HeadParse::Complete { head, body_start })
}

fn find_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&byte| byte == b'\n')
}

fn parse_lines(lines: &[&[u8]]) -> Result<CgiHead, CgiHeadError> {
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
    // An informational status cannot end a response; the app's real one would be lost.
    if status.is_informational() {
        return Err(invalid());
    }
    Ok(status)
}

#[cfg(test)]
mod tests;
