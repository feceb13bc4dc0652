//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, v1 text and v2 binary) that a
//! load balancer sends at the start of each connection on a listener marked `proxy_protocol`,
//! so that fcgate learns the real client's address instead of the balancer's.
//!
//! The header's syntax is [`ppp`]'s business: it turns a complete v1 line or v2 block into
//! addresses. This module owns the framing around it, which ppp leaves to its caller: which
//! version the first bytes announce, how many bytes to read (a v2 header never past its
//! announced length, so the client's request stays in the socket), the size bound (107 bytes
//! for v1, which ppp is not trusted to enforce on its own, 16 + 65535 for v2), and the one
//! deadline for the whole header. [`parse`] is pure and never panics, whatever the bytes (it is
//! fuzzed); [`read_header`] drives it over a stream.
//!
//! The rules:
//! - The version is decided as soon as the first bytes allow it: v2 starts with the 12-byte
//!   signature `\r\n\r\n\0\r\nQUIT\n`, v1 with `PROXY `. A byte that rules out both is an error
//!   at once: a client talking HTTP straight to this listener, or a balancer not configured to
//!   send the header, must not wait for the deadline.
//! - v1 is one line ending in CRLF, at most 107 bytes with it: once the line can no longer end
//!   within 107 bytes it is an error. A bare LF or a CR not followed by LF is an error too.
//!   `PROXY UNKNOWN` leaves the connection's own addresses, and what follows `UNKNOWN` up to the
//!   CRLF is ignored, as the spec says.
//! - v2 is 16 bytes plus the big-endian length in bytes 14–15; the whole length is read before
//!   ppp parses it, and TLVs are skipped unread. The version nibble must be 2 and the command
//!   LOCAL (0) or PROXY (1). LOCAL (a balancer's own health check) leaves the connection's own
//!   addresses whatever its address block holds, as the spec says; PROXY must carry one of the
//!   spec's seven family/protocol bytes, and only TCP over IPv4 or IPv6 replaces the addresses
//!   (UNSPEC, UDP and UNIX sockets leave them).
//! - [`read_header`] returns the bytes it read past a v1 header (v1 has no length, so it reads
//!   up to 107 bytes at a time): the start of the client's request, for the HTTP parser.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ppp::PartialResult;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest v1 header, CRLF included (the spec's worst case, `PROXY UNKNOWN` with two full
/// IPv6 addresses and ports, plus slack it grants).
pub const MAX_V1_HEADER_LEN: usize = 107;

/// The longest v2 header: the 16-byte fixed part plus the most its 16-bit length can announce.
pub const MAX_V2_HEADER_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;

/// How a v2 header starts; chosen by the spec so that it cannot begin a v1 header or an HTTP
/// request.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// How a v1 header starts.
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// The v2 signature, the version/command byte, the family/protocol byte and the length.
const V2_FIXED_LEN: usize = 16;

/// v2 commands (the low nibble of byte 12).
const V2_LOCAL: u8 = 0x0;
const V2_PROXY: u8 = 0x1;

/// The family/protocol bytes (byte 13) the spec defines: UNSPEC, then TCP and UDP over IPv4,
/// IPv6 and UNIX sockets. "Other values are unspecified and must not be emitted in version 2 of
/// this protocol and must be rejected as invalid by receivers."
const V2_FAMILIES: [u8; 7] = [0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32];

/// What the first bytes of a connection hold so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed: what there is so far is the start of a valid header.
    Incomplete,
    /// A complete header; what follows its `length` bytes belongs to the client's HTTP.
    Complete {
        /// What the header says about the connection.
        header: ProxyHeader,
        /// The header's length in bytes (at most [`MAX_V2_HEADER_LEN`]).
        length: usize,
    },
}

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied TCP connection: the client's address and the address it connected to on the
    /// proxy.
    Proxied {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to, on the proxy.
        destination: SocketAddr,
        /// v2's PP2_TYPE_SSL says the client spoke TLS to the proxy (HAProxy's
        /// `send-proxy-v2-ssl`): PHP gets HTTPS=on. Always false from v1, which cannot say.
        client_tls: bool,
    },
    /// v2 LOCAL (the balancer's own health check), v1 UNKNOWN, or v2 with an address family
    /// other than TCP over IPv4 or IPv6 (UNSPEC, UDP, UNIX sockets): the connection's own
    /// addresses stand.
    Local,
}

impl ProxyHeader {
    /// Whether the proxy says the client connected to it over TLS.
    pub fn client_tls(&self) -> bool {
        matches!(
            self,
            Self::Proxied {
                client_tls: true,
                ..
            }
        )
    }

    /// The (client, server) addresses PHP sees (`REMOTE_ADDR`, `SERVER_ADDR` and their ports),
    /// given the connection's own `peer` and `local` addresses.
    pub fn addresses(&self, peer: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
        match *self {
            Self::Proxied {
                source,
                destination,
                ..
            } => (source, destination),
            Self::Local => (peer, local),
        }
    }
}

/// Why a connection's PROXY header was refused; the connection is closed without a response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    /// The first bytes are neither a v1 nor a v2 header.
    #[error("not a PROXY protocol header (the connection must start with one on this listener)")]
    NotProxyProtocol,
    /// A v1 line with no CRLF within [`MAX_V1_HEADER_LEN`] bytes.
    #[error("PROXY v1 header longer than {MAX_V1_HEADER_LEN} bytes")]
    V1TooLong,
    /// A complete v1 line that does not parse.
    #[error("invalid PROXY v1 header: {0}")]
    InvalidV1(String),
    /// A v2 header with a bad version, command, family or address block.
    #[error("invalid PROXY v2 header: {0}")]
    InvalidV2(String),
    /// The peer closed the connection (or its sending side) before the header was complete.
    #[error(
        "the connection closed before its PROXY header was complete ({received} bytes received)"
    )]
    Closed {
        /// How many bytes of the header had arrived; 0 for a bare TCP health check.
        received: usize,
    },
    /// The whole header did not arrive within the deadline.
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    /// Reading from the connection failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Looks at the first bytes of a connection: a complete header, the start of one, or an error
/// as soon as the bytes cannot start a valid header. Only the header's own bytes are looked at
/// (at most [`MAX_V2_HEADER_LEN`]); what follows it may be anything.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ProxyProtocolError> {
    Ok(match frame(bytes)? {
        Frame::Incomplete { .. } => Parsed::Incomplete,
        Frame::Complete { header, length } => Parsed::Complete { header, length },
    })
}

/// Reads the header from the start of `stream` within `timeout` (one deadline for the whole
/// header, however many reads it takes). Returns it and the bytes read past it: the start of
/// the client's request, usually empty (always for v2), which the caller feeds to the HTTP
/// parser first.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(ProxyHeader, Bytes), ProxyProtocolError> {
    match tokio::time::timeout(timeout, read_until_complete(stream)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ProxyProtocolError::Timeout(timeout)),
    }
}

async fn read_until_complete<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(ProxyHeader, Bytes), ProxyProtocolError> {
    // Grown only as far as the header may reach: 16 bytes until the version is known, then 107
    // for v1 or the announced length for v2.
    let mut buf = Vec::new();
    let mut filled = 0;
    loop {
        let read_up_to = match frame(&buf[..filled])? {
            Frame::Complete { header, length } => {
                let read_ahead = buf.get(length..filled).unwrap_or_default();
                return Ok((header, Bytes::copy_from_slice(read_ahead)));
            }
            Frame::Incomplete { read_up_to } => read_up_to,
        };
        // `frame` promises filled < read_up_to <= MAX_V2_HEADER_LEN (the property tests check
        // it); clamped anyway so that a broken promise cannot loop on empty reads or grow the
        // buffer without bound: at the bound, the empty read ends as `Closed`.
        let read_up_to = read_up_to.max(filled + 1).min(MAX_V2_HEADER_LEN);
        if buf.len() < read_up_to {
            buf.resize(read_up_to, 0);
        }
        let read = stream.read(&mut buf[filled..read_up_to]).await?;
        if read == 0 {
            return Err(ProxyProtocolError::Closed { received: filled });
        }
        filled += read;
    }
}

/// [`Parsed`], with how far the reader may read while the header is incomplete.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// The header needs more bytes; it ends at or before `read_up_to` (always more than the
    /// bytes given).
    Incomplete {
        read_up_to: usize,
    },
    Complete {
        header: ProxyHeader,
        length: usize,
    },
}

fn frame(bytes: &[u8]) -> Result<Frame, ProxyProtocolError> {
    if bytes.is_empty() {
        // Either version may follow: read no more than v2's fixed part, which v2 needs anyway
        // and which is more than the shortest v1 header (`PROXY UNKNOWN\r\n`, 15 bytes).
        return Ok(Frame::Incomplete {
            read_up_to: V2_FIXED_LEN,
        });
    }
    if starts_like(bytes, V2_SIGNATURE) {
        frame_v2(bytes)
    } else if starts_like(bytes, V1_PREFIX) {
        frame_v1(bytes)
    } else {
        Err(ProxyProtocolError::NotProxyProtocol)
    }
}

/// Whether `bytes` and `prefix` agree as far as both go.
fn starts_like(bytes: &[u8], prefix: &[u8]) -> bool {
    let common = bytes.len().min(prefix.len());
    bytes[..common] == prefix[..common]
}

fn frame_v1(bytes: &[u8]) -> Result<Frame, ProxyProtocolError> {
    let incomplete = Ok(Frame::Incomplete {
        read_up_to: MAX_V1_HEADER_LEN,
    });
    // Past 107 bytes nothing can belong to the header, so the search stops there.
    let window = &bytes[..bytes.len().min(MAX_V1_HEADER_LEN)];
    let Some(end) = memchr::memchr2(b'\r', b'\n', window) else {
        // The line must end with CRLF by byte 107, so the CR must come by byte 106.
        return if window.len() >= MAX_V1_HEADER_LEN - 1 {
            Err(ProxyProtocolError::V1TooLong)
        } else {
            incomplete
        };
    };
    if window[end] == b'\n' {
        return Err(ProxyProtocolError::InvalidV1(
            "the line ends with a bare LF, not CRLF".into(),
        ));
    }
    let length = end + 2;
    if length > MAX_V1_HEADER_LEN {
        return Err(ProxyProtocolError::V1TooLong);
    }
    match window.get(end + 1) {
        None => incomplete,
        Some(b'\n') => Ok(Frame::Complete {
            header: parse_v1_line(&window[..length])?,
            length,
        }),
        Some(_) => Err(ProxyProtocolError::InvalidV1(
            "a CR not followed by LF".into(),
        )),
    }
}

/// Parses one v1 line, CRLF included.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyProtocolError> {
    // "the receiver must ignore anything presented before the CRLF is found" after UNKNOWN;
    // ppp would reject more than four fields there, which the spec allows.
    if let Some(rest) = line.strip_prefix(b"PROXY UNKNOWN") {
        if matches!(rest.first(), Some(b' ' | b'\r')) {
            return Ok(ProxyHeader::Local);
        }
    }
    let header = ppp::v1::Header::try_from(line)
        .map_err(|error| ProxyProtocolError::InvalidV1(describe(&error)))?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(ip) => ProxyHeader::Proxied {
            source: SocketAddr::from((ip.source_address, ip.source_port)),
            destination: SocketAddr::from((ip.destination_address, ip.destination_port)),
            client_tls: false,
        },
        ppp::v1::Addresses::Tcp6(ip) => ProxyHeader::Proxied {
            source: SocketAddr::from((ip.source_address, ip.source_port)),
            destination: SocketAddr::from((ip.destination_address, ip.destination_port)),
            client_tls: false,
        },
        ppp::v1::Addresses::Unknown => ProxyHeader::Local,
    })
}

fn frame_v2(bytes: &[u8]) -> Result<Frame, ProxyProtocolError> {
    let incomplete = |read_up_to| Ok(Frame::Incomplete { read_up_to });
    // The signature is all there once byte 12 is; `frame` checked what there is of it.
    let Some(&version_command) = bytes.get(V2_SIGNATURE.len()) else {
        return incomplete(V2_FIXED_LEN);
    };
    let version = version_command >> 4;
    if version != 2 {
        return Err(ProxyProtocolError::InvalidV2(format!(
            "version {version} (only 2 exists)"
        )));
    }
    let command = version_command & 0x0F;
    if command != V2_LOCAL && command != V2_PROXY {
        return Err(ProxyProtocolError::InvalidV2(format!(
            "command {command:#x} (only LOCAL 0x0 and PROXY 0x1 exist)"
        )));
    }
    let (Some(&family), Some(&high), Some(&low)) = (bytes.get(13), bytes.get(14), bytes.get(15))
    else {
        return incomplete(V2_FIXED_LEN);
    };
    let length = V2_FIXED_LEN + usize::from(u16::from_be_bytes([high, low]));
    if command == V2_LOCAL {
        // "the receiver must accept this connection as valid and must use the real connection
        // endpoints and discard the protocol block including the family which is ignored":
        // ppp would still check the family and the block's size, so it is not asked.
        return if bytes.len() < length {
            incomplete(length)
        } else {
            Ok(Frame::Complete {
                header: ProxyHeader::Local,
                length,
            })
        };
    }
    if !V2_FAMILIES.contains(&family) {
        return Err(ProxyProtocolError::InvalidV2(format!(
            "address family and protocol {family:#04x} (not one the spec defines)"
        )));
    }
    // Only the header's own bytes: ppp parses whatever it is given, and a block too short for
    // its family is an error before the rest of it arrives.
    let available = &bytes[..bytes.len().min(length)];
    let header = match ppp::v2::Header::try_from(available) {
        Ok(header) => header,
        // ppp's "incomplete" is only believed while the header is: a complete one it calls
        // incomplete would have the reader wait for bytes that belong to the client.
        Err(error) if error.is_incomplete() && available.len() < length => {
            return incomplete(length);
        }
        Err(error) => return Err(ProxyProtocolError::InvalidV2(describe(&error))),
    };
    let stream = header.protocol == ppp::v2::Protocol::Stream;
    // PP2_TYPE_SSL's first byte holds PP2_CLIENT_SSL (0x01) when the client used TLS; a TLV
    // that does not parse is ignored with the rest of the TLVs.
    let client_tls = header.tlvs().any(|tlv| {
        tlv.is_ok_and(|tlv| {
            tlv.kind == ppp::v2::Type::SSL as u8
                && tlv.value.first().is_some_and(|client| client & 0x01 != 0)
        })
    });
    let header = match header.addresses {
        ppp::v2::Addresses::IPv4(ip) if stream => ProxyHeader::Proxied {
            source: SocketAddr::from((ip.source_address, ip.source_port)),
            destination: SocketAddr::from((ip.destination_address, ip.destination_port)),
            client_tls,
        },
        ppp::v2::Addresses::IPv6(ip) if stream => ProxyHeader::Proxied {
            source: SocketAddr::from((ip.source_address, ip.source_port)),
            destination: SocketAddr::from((ip.destination_address, ip.destination_port)),
            client_tls,
        },
        // UDP, UNIX sockets, UNSPEC: nothing fcgate can use as REMOTE_ADDR.
        _ => ProxyHeader::Local,
    };
    Ok(Frame::Complete { header, length })
}

/// ppp's message and its cause, in the style of fcgate's own: "Header contains invalid TCP port
/// for the source." becomes "header contains invalid TCP port for the source (invalid digit
/// found in string)".
fn describe(error: &dyn std::error::Error) -> String {
    let message = error.to_string();
    let message = message.trim_end_matches('.');
    let mut described = String::with_capacity(message.len());
    let mut chars = message.chars();
    if let Some(first) = chars.next() {
        described.push(first.to_ascii_lowercase());
        described.push_str(chars.as_str());
    }
    if let Some(source) = error.source() {
        described.push_str(&format!(" ({source})"));
    }
    described
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn complete(bytes: &[u8]) -> (ProxyHeader, usize) {
        match parse(bytes) {
            Ok(Parsed::Complete { header, length }) => (header, length),
            other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn error(bytes: &[u8]) -> ProxyProtocolError {
        match parse(bytes) {
            Err(error) => error,
            other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    /// A v2 header: signature, version/command byte, family/protocol byte, length, block.
    fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.push(version_command);
        header.push(family);
        header.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        header.extend_from_slice(block);
        header
    }

    fn ipv4_block(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        let (SocketAddr::V4(source), SocketAddr::V4(destination)) = (source, destination) else {
            panic!("not IPv4");
        };
        let mut block = Vec::new();
        block.extend_from_slice(&source.ip().octets());
        block.extend_from_slice(&destination.ip().octets());
        block.extend_from_slice(&source.port().to_be_bytes());
        block.extend_from_slice(&destination.port().to_be_bytes());
        block
    }

    #[test]
    fn a_v2_ssl_tlv_with_the_client_bit_says_the_client_used_tls() {
        let source: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let destination: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let with_ssl = |client: u8| {
            let mut block = ipv4_block(source, destination);
            // PP2_TYPE_SSL, length 5: client flags, then the 4-byte verify result.
            block.extend_from_slice(&[0x20, 0x00, 0x05, client, 0, 0, 0, 0]);
            v2(0x21, 0x11, &block)
        };
        for (client, expected) in [(0x01, true), (0x07, true), (0x00, false)] {
            let bytes = with_ssl(client);
            let Parsed::Complete { header, length } = parse(&bytes).unwrap() else {
                panic!("incomplete");
            };
            assert_eq!(length, bytes.len());
            assert_eq!(header.client_tls(), expected, "client flags {client:#04x}");
            assert_eq!(header.addresses(destination, source), (source, destination));
        }
        let v1 = parse(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 443\r\n").unwrap();
        assert!(matches!(v1, Parsed::Complete { header, .. } if !header.client_tls()));
    }

    fn ipv6_block(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        let (SocketAddr::V6(source), SocketAddr::V6(destination)) = (source, destination) else {
            panic!("not IPv6");
        };
        let mut block = Vec::new();
        block.extend_from_slice(&source.ip().octets());
        block.extend_from_slice(&destination.ip().octets());
        block.extend_from_slice(&source.port().to_be_bytes());
        block.extend_from_slice(&destination.port().to_be_bytes());
        block
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: addr(source),
            destination: addr(destination),
            client_tls: false,
        }
    }

    /// Valid headers of every kind, with what they parse to.
    fn valid_headers() -> Vec<(Vec<u8>, ProxyHeader)> {
        let v4 = (addr("192.0.2.7:54321"), addr("198.51.100.1:443"));
        let v6 = (addr("[2001:db8::7]:54321"), addr("[2001:db8::1]:443"));
        let mut with_tlvs = ipv4_block(v4.0, v4.1);
        // PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY "example.com", PP2_TYPE_NOOP.
        with_tlvs.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        with_tlvs.extend_from_slice(&[0x02, 0x00, 0x0B]);
        with_tlvs.extend_from_slice(b"example.com");
        with_tlvs.extend_from_slice(&[0x04, 0x00, 0x00]);
        vec![
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 54321 443\r\n".to_vec(),
                proxied("192.0.2.7:54321", "198.51.100.1:443"),
            ),
            (
                b"PROXY TCP6 2001:db8::7 2001:db8::1 54321 443\r\n".to_vec(),
                proxied("[2001:db8::7]:54321", "[2001:db8::1]:443"),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), ProxyHeader::Local),
            (
                b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(),
                ProxyHeader::Local,
            ),
            (
                v2(0x21, 0x11, &ipv4_block(v4.0, v4.1)),
                ProxyHeader::Proxied {
                    source: v4.0,
                    destination: v4.1,
                    client_tls: false,
                },
            ),
            (
                v2(0x21, 0x21, &ipv6_block(v6.0, v6.1)),
                ProxyHeader::Proxied {
                    source: v6.0,
                    destination: v6.1,
                    client_tls: false,
                },
            ),
            (
                v2(0x21, 0x11, &with_tlvs),
                ProxyHeader::Proxied {
                    source: v4.0,
                    destination: v4.1,
                    client_tls: false,
                },
            ),
            (v2(0x20, 0x00, &[]), ProxyHeader::Local),
            (v2(0x21, 0x31, &[0; 216]), ProxyHeader::Local),
        ]
    }

    #[test]
    fn v1_tcp4() {
        let (header, length) = complete(b"PROXY TCP4 192.0.2.7 198.51.100.1 54321 443\r\n");
        assert_eq!(header, proxied("192.0.2.7:54321", "198.51.100.1:443"));
        assert_eq!(length, 45);
    }

    #[test]
    fn v1_tcp6() {
        let line = b"PROXY TCP6 2001:db8::7 ::ffff:192.0.2.1 1 65535\r\n";
        let (header, length) = complete(line);
        assert_eq!(
            header,
            proxied("[2001:db8::7]:1", "[::ffff:192.0.2.1]:65535")
        );
        assert_eq!(length, line.len());
    }

    #[test]
    fn v1_unknown_leaves_the_connection_addresses() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN 192.0.2.7 198.51.100.1 54321 443\r\n",
            // More fields than TCP4 has: the spec says to ignore all of it, ppp would not.
            b"PROXY UNKNOWN a b c d e f g\r\n",
        ] {
            assert_eq!(complete(line), (ProxyHeader::Local, line.len()));
        }
    }

    #[test]
    fn v1_longest_line_is_accepted_and_one_more_byte_is_not() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(MAX_V1_HEADER_LEN - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(complete(&line), (ProxyHeader::Local, MAX_V1_HEADER_LEN));

        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(MAX_V1_HEADER_LEN - 1, b'x');
        line.extend_from_slice(b"\r\n");
        assert!(matches!(error(&line), ProxyProtocolError::V1TooLong));
    }

    #[test]
    fn v1_without_crlf_in_107_bytes_is_too_long() {
        let mut line = b"PROXY TCP4 ".to_vec();
        line.resize(MAX_V1_HEADER_LEN, b'1');
        assert!(matches!(error(&line), ProxyProtocolError::V1TooLong));
        // Already at 106: the CRLF could no longer end by byte 107.
        assert!(matches!(
            error(&line[..MAX_V1_HEADER_LEN - 1]),
            ProxyProtocolError::V1TooLong
        ));
        assert_eq!(
            parse(&line[..MAX_V1_HEADER_LEN - 2]).unwrap(),
            Parsed::Incomplete
        );
        // A CR as the 106th byte may still be followed by its LF.
        let mut line = line[..MAX_V1_HEADER_LEN - 2].to_vec();
        line.push(b'\r');
        assert_eq!(parse(&line).unwrap(), Parsed::Incomplete);
        // Arbitrarily much more: still an error, found within the first 107 bytes.
        let mut line = b"PROXY ".to_vec();
        line.resize(1 << 20, b'A');
        assert!(matches!(error(&line), ProxyProtocolError::V1TooLong));
    }

    #[test]
    fn v1_bad_lines_are_errors() {
        for line in [
            &b"PROXY TCP4 192.0.2.300 198.51.100.1 54321 443\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 54321 -1\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 054321 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 http 443\r\n",
            b"PROXY TCP4 2001:db8::7 2001:db8::1 54321 443\r\n",
            b"PROXY TCP6 192.0.2.7 198.51.100.1 54321 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 54321\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 54321 443 extra\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 54321 443\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 54321 443\r\n",
            b"PROXY tcp4 192.0.2.7 198.51.100.1 54321 443\r\n",
            b"PROXY \r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY TCP4 \xff 198.51.100.1 54321 443\r\n",
        ] {
            let error = error(line);
            assert!(
                matches!(error, ProxyProtocolError::InvalidV1(_)),
                "{:?} -> {error:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn v1_line_endings_other_than_crlf_are_errors_at_once() {
        for prefix in [
            &b"PROXY UNKNOWN\n"[..],
            b"PROXY UNKNOWN\rX",
            b"PROXY TCP4 1\n",
        ] {
            assert!(matches!(error(prefix), ProxyProtocolError::InvalidV1(_)));
        }
    }

    #[test]
    fn v1_error_messages_name_the_field() {
        let message = error(b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 443\r\n").to_string();
        assert!(
            message.starts_with(
                "invalid PROXY v1 header: header contains invalid TCP port for the source ("
            ),
            "{message}"
        );
        let message = error(b"PROXY TCP4 192.0.2.x 198.51.100.1 1 443\r\n").to_string();
        assert!(
            message.contains("invalid IP address for the source"),
            "{message}"
        );
    }

    #[test]
    fn v2_proxy_over_ipv4() {
        let header = v2(
            0x21,
            0x11,
            &ipv4_block(addr("192.0.2.7:54321"), addr("198.51.100.1:443")),
        );
        assert_eq!(
            complete(&header),
            (proxied("192.0.2.7:54321", "198.51.100.1:443"), 28)
        );
    }

    #[test]
    fn v2_proxy_over_ipv6() {
        let header = v2(
            0x21,
            0x21,
            &ipv6_block(addr("[2001:db8::7]:54321"), addr("[2001:db8::1]:443")),
        );
        assert_eq!(
            complete(&header),
            (proxied("[2001:db8::7]:54321", "[2001:db8::1]:443"), 52)
        );
    }

    #[test]
    fn v2_local_leaves_the_connection_addresses_whatever_its_block() {
        for header in [
            v2(0x20, 0x00, &[]),
            // The family is ignored for LOCAL: even one too short for its block, or undefined.
            v2(0x20, 0x11, &[]),
            v2(0x20, 0xFF, &[1, 2, 3]),
            v2(
                0x20,
                0x11,
                &ipv4_block(addr("192.0.2.7:1"), addr("192.0.2.8:2")),
            ),
        ] {
            assert_eq!(complete(&header), (ProxyHeader::Local, header.len()));
        }
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let (bytes, expected) = valid_headers().swap_remove(6);
        assert!(bytes.len() > 28, "the sample has TLVs");
        assert_eq!(complete(&bytes), (expected, bytes.len()));
        // Even ones ppp would not understand: they are not read.
        let mut block = ipv4_block(addr("192.0.2.7:1"), addr("192.0.2.8:2"));
        block.extend_from_slice(&[0xEE, 0xFF, 0xFF, 0x00]);
        assert_eq!(
            complete(&v2(0x21, 0x11, &block)),
            (proxied("192.0.2.7:1", "192.0.2.8:2"), 16 + block.len())
        );
    }

    #[test]
    fn v2_longest_header() {
        let mut block = ipv4_block(addr("192.0.2.7:1"), addr("192.0.2.8:2"));
        block.resize(usize::from(u16::MAX), 0);
        let header = v2(0x21, 0x11, &block);
        assert_eq!(header.len(), MAX_V2_HEADER_LEN);
        assert_eq!(
            complete(&header),
            (proxied("192.0.2.7:1", "192.0.2.8:2"), MAX_V2_HEADER_LEN)
        );
    }

    #[test]
    fn v2_families_other_than_tcp_leave_the_connection_addresses() {
        let v4 = ipv4_block(addr("192.0.2.7:1"), addr("192.0.2.8:2"));
        let v6 = ipv6_block(addr("[2001:db8::7]:1"), addr("[2001:db8::8]:2"));
        for (family, block) in [
            (0x00, &[][..]),
            (0x00, &v4[..]),
            (0x12, &v4[..]),
            (0x22, &v6[..]),
            (0x31, &[b'/'; 216][..]),
            (0x32, &[0; 216][..]),
        ] {
            let header = v2(0x21, family, block);
            assert_eq!(
                complete(&header),
                (ProxyHeader::Local, header.len()),
                "{family:#x}"
            );
        }
    }

    #[test]
    fn v2_bad_version_command_or_family_is_an_error() {
        let v4 = ipv4_block(addr("192.0.2.7:1"), addr("192.0.2.8:2"));
        for header in [
            v2(0x11, 0x11, &v4),
            v2(0x31, 0x11, &v4),
            v2(0x01, 0x11, &v4),
            v2(0x2F, 0x11, &v4),
            v2(0x22, 0x11, &v4),
            v2(0x21, 0x10, &v4),
            v2(0x21, 0x13, &v4),
            v2(0x21, 0x41, &v4),
            v2(0x21, 0x01, &v4),
            // A block too short for its family.
            v2(0x21, 0x11, &v4[..11]),
            v2(0x21, 0x21, &v4),
            v2(0x21, 0x31, &v4),
        ] {
            let error = error(&header);
            assert!(
                matches!(error, ProxyProtocolError::InvalidV2(_)),
                "{header:x?} -> {error:?}"
            );
        }
        // At once: the version/command byte is enough, as is byte 15 for a block too short.
        assert!(matches!(
            error(&v2(0x11, 0x11, &v4)[..13]),
            ProxyProtocolError::InvalidV2(_)
        ));
        assert!(matches!(
            error(&v2(0x2F, 0x11, &v4)[..13]),
            ProxyProtocolError::InvalidV2(_)
        ));
        assert!(matches!(
            error(&v2(0x21, 0x21, &v4)[..16]),
            ProxyProtocolError::InvalidV2(_)
        ));
        assert_eq!(
            error(&v2(0x11, 0x11, &v4)).to_string(),
            "invalid PROXY v2 header: version 1 (only 2 exists)"
        );
        assert_eq!(
            error(&v2(0x2F, 0x11, &v4)).to_string(),
            "invalid PROXY v2 header: command 0xf (only LOCAL 0x0 and PROXY 0x1 exist)"
        );
    }

    #[test]
    fn every_prefix_of_a_valid_header_is_incomplete() {
        for (bytes, expected) in valid_headers() {
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse(&bytes[..cut]).unwrap(),
                    Parsed::Incomplete,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(&bytes)
                );
                let Ok(Frame::Incomplete { read_up_to }) = frame(&bytes[..cut]) else {
                    unreachable!()
                };
                assert!(read_up_to > cut && read_up_to <= MAX_V2_HEADER_LEN);
                if bytes.starts_with(V2_SIGNATURE) {
                    // v2 is never read past its end.
                    assert!(read_up_to <= bytes.len(), "cut at {cut}: {read_up_to}");
                }
            }
            assert_eq!(complete(&bytes), (expected, bytes.len()));
        }
    }

    #[test]
    fn what_follows_the_header_is_not_looked_at() {
        for (bytes, expected) in valid_headers() {
            for tail in [
                &b"GET / HTTP/1.1\r\n"[..],
                b"\r\n",
                b"\xff\x00",
                &[0; 70000],
            ] {
                let mut input = bytes.clone();
                input.extend_from_slice(tail);
                assert_eq!(complete(&input), (expected, bytes.len()));
            }
        }
    }

    #[test]
    fn garbage_is_an_error_at_the_first_byte_that_rules_out_both_versions() {
        for byte in 0..=255u8 {
            if byte == b'\r' || byte == b'P' {
                continue;
            }
            assert!(matches!(
                error(&[byte]),
                ProxyProtocolError::NotProxyProtocol
            ));
        }
        assert!(matches!(
            error(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            ProxyProtocolError::NotProxyProtocol
        ));
        assert!(matches!(error(b"G"), ProxyProtocolError::NotProxyProtocol));
        assert!(matches!(
            error(b"PROXX"),
            ProxyProtocolError::NotProxyProtocol
        ));
        assert!(matches!(
            error(b"PROXY\t"),
            ProxyProtocolError::NotProxyProtocol
        ));
        assert!(matches!(
            error(b"POST /"),
            ProxyProtocolError::NotProxyProtocol
        ));
        // A TLS ClientHello on a listener expecting the header first.
        assert!(matches!(
            error(&[0x16, 0x03, 0x01]),
            ProxyProtocolError::NotProxyProtocol
        ));
        // v2's signature wrong in its last byte.
        let mut signature = V2_SIGNATURE.to_vec();
        signature[11] = b'X';
        assert!(matches!(
            error(&signature),
            ProxyProtocolError::NotProxyProtocol
        ));
        // HTTP/2's preface and a bare CRLF start like v2 but part at byte 2 or 3.
        assert!(matches!(
            error(b"\r\nGET"),
            ProxyProtocolError::NotProxyProtocol
        ));
        assert_eq!(
            error(b"GET / HTTP/1.1\r\n").to_string(),
            "not a PROXY protocol header (the connection must start with one on this listener)"
        );
    }

    #[test]
    fn addresses_apply_the_header() {
        let peer = addr("10.0.0.2:40000");
        let local = addr("10.0.0.1:80");
        let header = proxied("192.0.2.7:54321", "198.51.100.1:443");
        assert_eq!(
            header.addresses(peer, local),
            (addr("192.0.2.7:54321"), addr("198.51.100.1:443"))
        );
        assert_eq!(ProxyHeader::Local.addresses(peer, local), (peer, local));
    }

    #[tokio::test]
    async fn read_header_returns_the_bytes_past_a_v1_header() {
        let mut input =
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 54321 443\r\nGET / HTTP/1.1\r\n\r\n"[..];
        let (header, read_ahead) = read_header(&mut input, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(header, proxied("192.0.2.7:54321", "198.51.100.1:443"));
        // The reader may keep the rest of the request; together they are what followed.
        let mut rest = read_ahead.to_vec();
        rest.extend_from_slice(input);
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        assert!(
            !read_ahead.is_empty(),
            "v1 reads ahead: 107 bytes at a time"
        );
    }

    #[tokio::test]
    async fn read_header_never_reads_past_a_v2_header() {
        for (header, expected) in valid_headers() {
            let mut input = header.clone();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let mut reader = &input[..];
            let (parsed, read_ahead) = read_header(&mut reader, Duration::from_secs(1))
                .await
                .unwrap();
            assert_eq!(parsed, expected);
            let mut rest = read_ahead.to_vec();
            rest.extend_from_slice(reader);
            assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
            if header.starts_with(V2_SIGNATURE) {
                assert!(read_ahead.is_empty());
            }
        }
    }

    #[tokio::test]
    async fn read_header_with_the_header_split_across_many_writes() {
        for (header, expected) in valid_headers() {
            let (mut client, mut server) = tokio::io::duplex(4);
            // Closes its end when done, which ends `read_to_end` below.
            let writer = tokio::spawn({
                let header = header.clone();
                async move {
                    for chunk in header.chunks(3) {
                        client.write_all(chunk).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    client.write_all(b"GET /").await.unwrap();
                }
            });
            let (parsed, read_ahead) = read_header(&mut server, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(parsed, expected);
            let mut rest = read_ahead.to_vec();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"GET /");
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn read_header_from_a_peer_that_closes_mid_header() {
        let header = b"PROXY TCP4 192.0.2.7 198.51.100.1 54321 443\r\n";
        let mut input = &header[..20];
        let error = read_header(&mut input, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProxyProtocolError::Closed { received: 20 }),
            "{error:?}"
        );

        let v2 = v2(
            0x21,
            0x11,
            &ipv4_block(addr("192.0.2.7:1"), addr("192.0.2.8:2")),
        );
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&v2[..20]).await.unwrap();
        drop(client);
        let error = read_header(&mut server, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProxyProtocolError::Closed { received: 20 }),
            "{error:?}"
        );

        let error = read_header(&mut &b""[..], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the connection closed before its PROXY header was complete (0 bytes received)"
        );
    }

    #[tokio::test]
    async fn read_header_of_garbage_fails_without_waiting() {
        let (mut client, mut server) = tokio::io::duplex(64);
        // The peer stays open: the error must come from the first byte, not from EOF.
        client.write_all(b"G").await.unwrap();
        let error = read_header(&mut server, Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(matches!(error, ProxyProtocolError::NotProxyProtocol));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn read_header_times_out_on_a_silent_peer() {
        let (_client, mut server) = tokio::io::duplex(64);
        let error = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProxyProtocolError::Timeout(timeout) if timeout == Duration::from_secs(5))
        );
        assert_eq!(error.to_string(), "no PROXY header within 5s");
    }

    #[tokio::test(start_paused = true)]
    async fn read_header_deadline_covers_the_whole_header() {
        // A byte every second, each read well within the timeout, the header not.
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for &byte in b"PROXY TCP4 192.0.2.7 198.51.100.1 54321 443\r\n" {
                if client.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let started = tokio::time::Instant::now();
        let error = read_header(&mut server, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(error, ProxyProtocolError::Timeout(_)), "{error:?}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(11),
            "{elapsed:?}"
        );
        drop(server);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn read_header_over_loopback_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let mut bytes = v2(
                0x21,
                0x21,
                &ipv6_block(addr("[2001:db8::7]:54321"), addr("[2001:db8::1]:443")),
            );
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            stream.write_all(&bytes).await.unwrap();
            stream.shutdown().await.unwrap();
            stream
        });
        let (mut stream, peer) = listener.accept().await.unwrap();
        let (header, read_ahead) = read_header(&mut stream, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(header, proxied("[2001:db8::7]:54321", "[2001:db8::1]:443"));
        assert!(read_ahead.is_empty());
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let local = stream.local_addr().unwrap();
        assert_eq!(
            header.addresses(peer, local),
            (addr("[2001:db8::7]:54321"), addr("[2001:db8::1]:443"))
        );
        drop(client.await.unwrap());
    }

    /// A valid header of any kind, with what it parses to.
    fn any_valid_header() -> impl Strategy<Value = (Vec<u8>, ProxyHeader)> {
        let v4 = (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(source, destination, source_port, destination_port)| {
                (
                    SocketAddr::from((Ipv4Addr::from(source), source_port)),
                    SocketAddr::from((Ipv4Addr::from(destination), destination_port)),
                )
            });
        let v6 = (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(source, destination, source_port, destination_port)| {
                (
                    SocketAddr::from((Ipv6Addr::from(source), source_port)),
                    SocketAddr::from((Ipv6Addr::from(destination), destination_port)),
                )
            });
        let v1_line = |(source, destination): (SocketAddr, SocketAddr), protocol: &str| {
            let line = format!(
                "PROXY {protocol} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            );
            (
                line.into_bytes(),
                ProxyHeader::Proxied {
                    source,
                    destination,
                    client_tls: false,
                },
            )
        };
        // Never PP2_TYPE_SSL (0x20), which could make a random block say the client used TLS.
        let tlvs = proptest::collection::vec(
            any::<u8>().prop_map(|byte| if byte == 0x20 { 0x21 } else { byte }),
            0..300,
        );
        prop_oneof![
            v4.clone().prop_map(move |pair| v1_line(pair, "TCP4")),
            v6.clone().prop_map(move |pair| v1_line(pair, "TCP6")),
            "[ -~]{0,90}".prop_map(|rest| (
                format!("PROXY UNKNOWN {rest}\r\n").into_bytes(),
                ProxyHeader::Local
            )),
            (v4, tlvs.clone()).prop_map(|((source, destination), tlvs)| {
                let mut block = ipv4_block(source, destination);
                block.extend_from_slice(&tlvs);
                (
                    v2(0x21, 0x11, &block),
                    ProxyHeader::Proxied {
                        source,
                        destination,
                        client_tls: false,
                    },
                )
            }),
            (v6, tlvs.clone()).prop_map(|((source, destination), tlvs)| {
                let mut block = ipv6_block(source, destination);
                block.extend_from_slice(&tlvs);
                (
                    v2(0x21, 0x21, &block),
                    ProxyHeader::Proxied {
                        source,
                        destination,
                        client_tls: false,
                    },
                )
            }),
            (any::<u8>(), tlvs)
                .prop_map(|(family, block)| (v2(0x20, family, &block), ProxyHeader::Local)),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_keeps_its_promises(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            match frame(&bytes) {
                Ok(Frame::Incomplete { read_up_to }) => {
                    prop_assert!(read_up_to > bytes.len());
                    prop_assert!(read_up_to <= MAX_V2_HEADER_LEN);
                }
                Ok(Frame::Complete { length, .. }) => prop_assert!(length <= bytes.len()),
                Err(_) => {}
            }
        }

        #[test]
        fn parse_of_bytes_that_start_like_a_header_never_panics(
            v2_start in any::<bool>(),
            rest in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut bytes = if v2_start { V2_SIGNATURE.to_vec() } else { V1_PREFIX.to_vec() };
            bytes.extend_from_slice(&rest);
            match frame(&bytes) {
                Ok(Frame::Incomplete { read_up_to }) => {
                    prop_assert!(read_up_to > bytes.len());
                    prop_assert!(read_up_to <= MAX_V2_HEADER_LEN);
                }
                Ok(Frame::Complete { length, .. }) => prop_assert!(length <= bytes.len()),
                Err(_) => {}
            }
        }

        #[test]
        fn any_prefix_of_a_valid_header_is_incomplete(
            (bytes, expected) in any_valid_header(),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let cut = cut.index(bytes.len());
            prop_assert_eq!(parse(&bytes[..cut]).unwrap(), Parsed::Incomplete);
            let mut input = bytes.clone();
            input.extend_from_slice(&tail);
            prop_assert_eq!(
                parse(&input).unwrap(),
                Parsed::Complete { header: expected, length: bytes.len() }
            );
        }
    }
}
