//! The request path as routing and rules see it: percent-decoded once, `.` and `..` resolved
//! lexically (never above the root), empty segments dropped, control characters refused. A
//! path is normalised once, before any rule looks at it, so `%2e%2e`, `//`, `/./` and
//! `%2F`-style tricks cannot reach a file or script by a spelling a rule does not match.

/// A decoded, normalised request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// Non-empty segments, none of them `.` or `..`, none containing `/` or a control character.
    pub segments: Vec<String>,
    /// The path ended in `/` (or `/.`, `/..`): a directory was asked for.
    pub trailing_slash: bool,
}

impl RequestPath {
    /// The path of a request target (percent-encoded); `None` for a path that does not start
    /// with `/`, a malformed escape, invalid UTF-8, a control character once decoded (NUL ends
    /// a C path early; CR/LF would reach PATH_INFO, PHP_SELF and logs), or `..` above the root.
    pub fn parse(uri_path: &str) -> Option<RequestPath> {
        if !uri_path.starts_with('/') {
            return None;
        }
        // Most paths have no escape: they are their own decoding, with no copy to make.
        if memchr::memchr(b'%', uri_path.as_bytes()).is_none() {
            return RequestPath::from_decoded(uri_path);
        }
        let decoded = String::from_utf8(percent_decode(uri_path)?).ok()?;
        RequestPath::from_decoded(&decoded)
    }

    /// A path already decoded (a rewrite's result): normalised, with the same refusals as
    /// [`RequestPath::parse`] but no second decoding, so a `%` that came out of the first one
    /// stays a `%`.
    pub fn from_decoded(decoded: &str) -> Option<RequestPath> {
        if !decoded.starts_with('/') || decoded.bytes().any(|byte| byte.is_ascii_control()) {
            return None;
        }
        let mut segments: Vec<String> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop()?;
                }
                name => segments.push(name.to_owned()),
            }
        }
        let last = decoded.rsplit('/').next().unwrap_or("");
        let trailing_slash = matches!(last, "" | "." | "..");
        Some(RequestPath {
            segments,
            trailing_slash,
        })
    }

    /// The normalised path as text, `/a/b` or `/a/b/`: what rules match against.
    pub fn text(&self) -> String {
        let mut text = slash_joined(&self.segments);
        if self.trailing_slash || self.segments.is_empty() {
            text.push('/');
        }
        text
    }
}

/// `/a/b` from `[a, b]`, allocated once with room for a trailing slash: the request's text for
/// rules, and SCRIPT_NAME (`route.rs`).
pub fn slash_joined(segments: &[String]) -> String {
    let mut text = String::with_capacity(slash_joined_len(segments) + 1);
    for segment in segments {
        text.push('/');
        text.push_str(segment);
    }
    text
}

/// The length of [`slash_joined`]`(segments)`: each segment with the slash before it.
pub fn slash_joined_len(segments: &[String]) -> usize {
    segments.iter().map(|segment| segment.len() + 1).sum()
}

/// Decodes `%XX` escapes; `None` for a malformed escape. `+` stays `+` (paths are not forms).
pub fn percent_decode(raw: &str) -> Option<Vec<u8>> {
    fn hex_digit(byte: u8) -> Option<u8> {
        char::from(byte)
            .to_digit(16)
            .and_then(|digit| u8::try_from(digit).ok())
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while let Some(&byte) = bytes.get(position) {
        if byte == b'%' {
            let high = hex_digit(*bytes.get(position + 1)?)?;
            let low = hex_digit(*bytes.get(position + 2)?)?;
            decoded.push(high << 4 | low);
            position += 3;
        } else {
            decoded.push(byte);
            position += 1;
        }
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn paths_are_normalised_once() {
        for (raw, text) in [
            ("/", "/"),
            ("/a//b/./c", "/a/b/c"),
            ("/a/b/../c/", "/a/c/"),
            ("/a/b/..", "/a/"),
            ("/%2e%2e/", "/"),
            ("/data/%2E/pages", "/data/pages"),
            ("/caf%C3%A9.css", "/café.css"),
            ("/a%2fb", "/a/b"),
        ] {
            if raw == "/%2e%2e/" {
                assert_eq!(RequestPath::parse(raw), None, "{raw}");
                continue;
            }
            assert_eq!(RequestPath::parse(raw).unwrap().text(), text, "{raw}");
        }
    }

    #[test]
    fn refusals() {
        for raw in [
            "", "a/b", "/..", "/a/../..", "/%zz", "/%0a", "/a%00b", "/%ff",
        ] {
            assert_eq!(RequestPath::parse(raw), None, "{raw:?}");
        }
    }

    proptest::proptest! {
        /// Skipping the decoding of a path without `%` changes nothing.
        #[test]
        fn a_path_without_escapes_parses_as_its_decoding_would(raw in "/[a-z./\\x01-\\x1f~-]{0,12}") {
            let decoded = String::from_utf8(percent_decode(&raw).unwrap()).unwrap();
            proptest::prop_assert_eq!(RequestPath::parse(&raw), RequestPath::from_decoded(&decoded));
        }
    }

    #[test]
    fn a_decoded_path_is_not_decoded_again() {
        let path = RequestPath::from_decoded("/100%25/x").unwrap();
        assert_eq!(path.text(), "/100%25/x");
        assert_eq!(RequestPath::from_decoded("/a\r\nb"), None);
        assert_eq!(RequestPath::from_decoded("relative"), None);
    }
}
