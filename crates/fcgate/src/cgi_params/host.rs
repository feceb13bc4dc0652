//! The host the client asked for (HTTP_HOST) and the name the app should call itself
//! (SERVER_NAME), read in place from the request: no copy of the Host header is made, so the
//! authority check is done here on the bytes rather than by building an `http::uri::Authority`
//! (which copies its input).

use std::net::SocketAddr;

use http::header::HOST;
use http::request::Parts;

use super::text::IpText;

/// The host the client asked for: HTTP/2's `:authority` (and an HTTP/1.1 absolute-form URI)
/// takes precedence over a Host header (RFC 9113 §8.3.1, RFC 9112 §3.2.2).
pub(super) fn request_host(parts: &Parts) -> Option<&[u8]> {
    match parts.uri.authority() {
        Some(authority) => {
            let text = authority.as_str();
            Some(
                text.rsplit_once('@')
                    .map_or(text, |(_, host)| host)
                    .as_bytes(),
            )
        }
        None => parts.headers.get(HOST).map(|value| value.as_bytes()),
    }
}

/// SERVER_NAME: the Host without its port, or the local address when the Host is missing or
/// not a well-formed authority (apps build absolute URLs from it).
pub(super) enum ServerName<'a> {
    /// Taken from the request's host.
    Host(&'a [u8]),
    /// The address the client connected to.
    Local(IpText),
}

impl ServerName<'_> {
    pub(super) fn of(host: Option<&[u8]>, local_addr: SocketAddr) -> ServerName<'_> {
        match host.and_then(host_without_port) {
            Some(name) => ServerName::Host(name),
            None => ServerName::Local(IpText::host(local_addr.ip())),
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            ServerName::Host(name) => name,
            ServerName::Local(address) => address.as_bytes(),
        }
    }
}

/// The name part of a Host that is an authority without userinfo, `[v6]` keeping its brackets;
/// `None` for anything else or an empty name.
pub(super) fn host_without_port(host: &[u8]) -> Option<&[u8]> {
    if !is_authority_without_userinfo(host) {
        return None;
    }
    let name = if host.first() == Some(&b'[') {
        let close = memchr::memchr(b']', host)?;
        &host[..=close]
    } else {
        &host[..memchr::memchr(b':', host).unwrap_or(host.len())]
    };
    Some(name).filter(|name| !name.is_empty())
}

/// Whether `http::uri::Authority` accepts `host` and it has no `user@` part: URI characters
/// only, at most one port colon, `[...]` at most once and balanced, `%` only inside brackets.
/// Equality with http's parser over `@`-free input is property-tested below.
pub(super) fn is_authority_without_userinfo(host: &[u8]) -> bool {
    // http allows 8 colons before a `]` resets the count: `[a:b:c:d:e:f:g:h]:80`.
    const MAX_COLONS: u32 = 8;
    if host.is_empty() {
        return false;
    }
    let mut colons = 0;
    let mut opened = false;
    let mut closed = false;
    let mut percent = false;
    for &byte in host {
        match byte {
            b':' => {
                if colons >= MAX_COLONS {
                    return false;
                }
                colons += 1;
            }
            b'[' => {
                if percent || opened {
                    return false;
                }
                opened = true;
            }
            b']' => {
                if !opened || closed {
                    return false;
                }
                closed = true;
                colons = 0;
                percent = false;
            }
            b'%' => percent = true,
            byte if is_plain_authority_byte(byte) => {}
            // `@` (userinfo), `/ ? #` (a path would follow) and every non-URI byte.
            _ => return false,
        }
    }
    opened == closed && colons <= 1 && !percent
}

/// RFC 3986 unreserved and sub-delims characters: what http's URI table allows besides
/// `: [ ] @ / ? # %`.
fn is_plain_authority_byte(byte: u8) -> bool {
    matches!(
        byte,
        b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn authority_accepts(host: &[u8]) -> bool {
        http::uri::Authority::try_from(host).is_ok()
    }

    #[test]
    fn edge_cases_agree_with_http() {
        let cases: [&[u8]; 24] = [
            b"",
            b"example.org",
            b"example.org:8080",
            b":80",
            b"a:b:c",
            b"[::1]",
            b"[::1]:8080",
            b"[::1",
            b"::1]",
            b"[[::1]]",
            b"[fe80::1%25eth0]:80",
            b"host%20name",
            b"%[::1]",
            b"[a:b:c:d:e:f:g:h:i]",
            b"[a:b:c:d:e:f:g:h]:1",
            b"a b",
            b"a/b",
            b"a?b",
            b"a#b",
            b"caf\xc3\xa9.example",
            b"a\"b",
            b"x]",
            b"[x]]",
            b"[]:",
        ];
        for host in cases {
            assert_eq!(
                is_authority_without_userinfo(host),
                authority_accepts(host),
                "{:?}",
                String::from_utf8_lossy(host)
            );
        }
    }

    #[test]
    fn name_without_port() {
        assert_eq!(
            host_without_port(b"shop.example:8080"),
            Some(&b"shop.example"[..])
        );
        assert_eq!(host_without_port(b"[::1]:8080"), Some(&b"[::1]"[..]));
        assert_eq!(host_without_port(b":8080"), None);
        assert_eq!(host_without_port(b"user@host"), None);
        assert_eq!(host_without_port(b"a b"), None);
    }

    proptest! {
        #[test]
        fn authority_check_is_https(host in prop::collection::vec(
            prop::sample::select(b"aZ09-._~!$&'()*+,;=:[]%/?# \"\x7f\xc3".to_vec()),
            0..24,
        )) {
            prop_assert_eq!(is_authority_without_userinfo(&host), authority_accepts(&host));
        }

        #[test]
        fn authority_check_is_https_on_any_bytes(
            host in prop::collection::vec(any::<u8>().prop_filter("no userinfo", |b| *b != b'@'), 0..16)
        ) {
            prop_assert_eq!(is_authority_without_userinfo(&host), authority_accepts(&host));
        }
    }
}
