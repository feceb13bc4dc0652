//! A deliberately slow HTTP/1.1 client: one GET over a raw TCP socket with a small receive
//! buffer, its body read a few KiB at a time at a fixed rate, so a test can be the slow reader
//! that must not stall anyone else, or a client that vanishes mid-response.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::pattern_from;

/// Bytes taken off the socket per read, and the receive buffer asked of the kernel: small, so
/// the server's writes block soon after the client stops reading.
const READ_PIECE: usize = 4 * 1024;

/// Headers larger than this are a broken server, not a slow one.
const MAX_HEAD: usize = 64 * 1024;

/// How a [`slow_get`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowRead {
    /// Body bytes per second, at most (0 is treated as 1).
    pub bytes_per_second: u64,
    /// Drop the connection once this many body bytes have arrived: a client that vanishes.
    pub give_up_after: Option<u64>,
    /// Drop the connection after this long, whatever has arrived.
    pub deadline: Duration,
}

/// What a [`slow_get`] got.
#[derive(Clone, Debug)]
pub struct SlowResponse {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// Body bytes received (after de-chunking).
    pub body_len: u64,
    /// The body received so far is a prefix of the [`pattern_bytes`](crate::pattern_bytes)
    /// pattern, as the test backend's `size=N` and `download.php` send.
    pub body_is_pattern: bool,
    /// The whole body arrived, by its Content-Length, its last chunk, or the server's close.
    pub complete: bool,
    /// From connecting to the last byte read.
    pub elapsed: Duration,
}

impl SlowResponse {
    /// The value of header `name` as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// `GET path_and_query` with `Connection: close`, reading the body at `read.bytes_per_second`
/// (4 KiB per read, then a pause). Errors only when no response head arrives; a body cut short
/// (by the server, `give_up_after` or the deadline) is a response with `complete: false`.
pub async fn slow_get(
    addr: SocketAddr,
    path_and_query: &str,
    read: SlowRead,
) -> anyhow::Result<SlowResponse> {
    let started = Instant::now();
    let stop_at = started + read.deadline;
    let mut stream = tokio::time::timeout_at(stop_at, connect(addr))
        .await
        .context("connecting before the deadline")??;
    let request =
        format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .context("sending the request")?;
    let (head, leftover) = tokio::time::timeout_at(stop_at, read_head(&mut stream))
        .await
        .context("waiting for the response head")??;
    let mut body = BodyReader::new(&head.headers)?;
    let rate = read.bytes_per_second.max(1);
    let give_up_after = read.give_up_after.unwrap_or(u64::MAX);
    let body_started = Instant::now();
    let mut received_raw = 0u64;
    let mut piece = leftover;
    loop {
        body.feed(&piece);
        if body.complete || body.received >= give_up_after {
            break;
        }
        received_raw += piece.len() as u64;
        // Pace by bytes taken off the socket: the point is how fast the kernel buffer drains.
        let due = body_started + Duration::from_secs_f64(received_raw as f64 / rate as f64);
        if due >= stop_at {
            break;
        }
        tokio::time::sleep_until(due).await;
        piece.resize(READ_PIECE, 0);
        let read = match tokio::time::timeout_at(stop_at, stream.read(&mut piece)).await {
            Ok(Ok(read)) => read,
            Ok(Err(_)) | Err(_) => break,
        };
        piece.truncate(read);
        if read == 0 {
            body.end_of_stream();
            break;
        }
    }
    Ok(SlowResponse {
        status: head.status,
        headers: head.headers,
        body_len: body.received,
        body_is_pattern: body.is_pattern,
        complete: body.complete,
        elapsed: started.elapsed(),
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("creating a socket")?;
    // Set before connecting: the window scale is agreed in the handshake.
    socket
        .set_recv_buffer_size(READ_PIECE as u32)
        .context("SO_RCVBUF")?;
    socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))
}

struct Head {
    status: StatusCode,
    headers: HeaderMap,
}

/// Reads up to the end of the head; returns it and the body bytes that came with it.
async fn read_head(stream: &mut TcpStream) -> anyhow::Result<(Head, Vec<u8>)> {
    let mut received = Vec::new();
    let mut piece = [0u8; READ_PIECE];
    loop {
        let read = stream.read(&mut piece).await.context("reading the head")?;
        if read == 0 {
            bail!("the server closed before a complete response head");
        }
        received.extend_from_slice(&piece[..read]);
        let mut header_slots = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut header_slots);
        match response
            .parse(&received)
            .context("parsing the response head")?
        {
            httparse::Status::Complete(head_len) => {
                let status = StatusCode::from_u16(response.code.unwrap_or_default())
                    .context("status code")?;
                let mut headers = HeaderMap::new();
                for header in response.headers.iter() {
                    headers.append(
                        HeaderName::from_bytes(header.name.as_bytes()).context("header name")?,
                        HeaderValue::from_bytes(header.value).context("header value")?,
                    );
                }
                let leftover = received.split_off(head_len);
                return Ok((Head { status, headers }, leftover));
            }
            httparse::Status::Partial if received.len() > MAX_HEAD => {
                bail!("response head over {MAX_HEAD} bytes")
            }
            httparse::Status::Partial => {}
        }
    }
}

/// How the body ends (RFC 9112 §6.3), and where it is in the chunked framing.
enum Framing {
    Length { left: u64 },
    Chunked(ChunkState),
    UntilClose,
}

enum ChunkState {
    /// Collecting a chunk-size line.
    Size(Vec<u8>),
    Data {
        left: u64,
    },
    /// The CRLF after a chunk's data.
    DataEnd {
        left: usize,
    },
}

/// Counts and checks body bytes as they arrive, removing chunked framing.
struct BodyReader {
    framing: Framing,
    received: u64,
    is_pattern: bool,
    complete: bool,
}

impl BodyReader {
    fn new(headers: &HeaderMap) -> anyhow::Result<BodyReader> {
        let chunked = headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .any(|value| value.as_bytes().eq_ignore_ascii_case(b"chunked"));
        let framing = if chunked {
            Framing::Chunked(ChunkState::Size(Vec::new()))
        } else if let Some(length) = headers.get(http::header::CONTENT_LENGTH) {
            let left = length
                .to_str()
                .ok()
                .and_then(|length| length.parse().ok())
                .context("Content-Length")?;
            Framing::Length { left }
        } else {
            Framing::UntilClose
        };
        let complete = matches!(framing, Framing::Length { left: 0 });
        Ok(BodyReader {
            framing,
            received: 0,
            is_pattern: true,
            complete,
        })
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.complete {
            match &mut self.framing {
                Framing::UntilClose => {
                    self.content(bytes);
                    bytes = &[];
                }
                Framing::Length { left } => {
                    let take = bytes
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    self.complete = *left == 0;
                    let (content, rest) = bytes.split_at(take);
                    bytes = rest;
                    self.content(content);
                }
                Framing::Chunked(state) => {
                    let state = state_take(state);
                    bytes = self.chunked(state, bytes);
                }
            }
        }
    }

    /// Advances the chunked framing over the start of `bytes`; returns the rest.
    fn chunked<'a>(&mut self, state: ChunkState, bytes: &'a [u8]) -> &'a [u8] {
        let (next, rest) = match state {
            ChunkState::Size(mut line) => match bytes.iter().position(|&byte| byte == b'\n') {
                Some(end) => {
                    line.extend_from_slice(&bytes[..end]);
                    let text = String::from_utf8_lossy(&line);
                    let size = text.split(';').next().unwrap_or_default().trim();
                    // An unparsable size ends the body here, as incomplete.
                    let size = u64::from_str_radix(size, 16).unwrap_or(0);
                    if size == 0 {
                        self.complete = true;
                    }
                    (ChunkState::Data { left: size }, &bytes[end + 1..])
                }
                None => {
                    line.extend_from_slice(bytes);
                    (ChunkState::Size(line), &[][..])
                }
            },
            ChunkState::Data { left } => {
                let take = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let (content, rest) = bytes.split_at(take);
                self.content(content);
                let left = left - take as u64;
                if left == 0 {
                    (ChunkState::DataEnd { left: 2 }, rest)
                } else {
                    (ChunkState::Data { left }, rest)
                }
            }
            ChunkState::DataEnd { left } => {
                let take = bytes.len().min(left);
                let next = match left - take {
                    0 => ChunkState::Size(Vec::new()),
                    left => ChunkState::DataEnd { left },
                };
                (next, &bytes[take..])
            }
        };
        self.framing = Framing::Chunked(next);
        rest
    }

    fn content(&mut self, content: &[u8]) {
        if self.is_pattern {
            let offset = usize::try_from(self.received).unwrap_or(usize::MAX);
            self.is_pattern = content == pattern_from(offset, content.len()).as_slice();
        }
        self.received += content.len() as u64;
    }

    fn end_of_stream(&mut self) {
        if matches!(self.framing, Framing::UntilClose) {
            self.complete = true;
        }
    }
}

fn state_take(state: &mut ChunkState) -> ChunkState {
    std::mem::replace(state, ChunkState::Size(Vec::new()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn reader(headers: &[(&str, &str)]) -> BodyReader {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        BodyReader::new(&map).unwrap()
    }

    #[test]
    fn chunked_bodies_are_dechunked_however_they_are_cut() {
        let wire = b"4\r\n0123\r\n6;ext=1\r\n456789\r\n0\r\n\r\n";
        for piece in 1..wire.len() {
            let mut body = reader(&[("transfer-encoding", "chunked")]);
            for chunk in wire.chunks(piece) {
                body.feed(chunk);
            }
            assert!(body.complete, "pieces of {piece}");
            assert_eq!(body.received, 10);
            assert!(body.is_pattern);
        }
    }

    #[test]
    fn content_length_and_close_delimited_bodies_are_counted_and_checked() {
        let mut body = reader(&[("content-length", "12")]);
        body.feed(b"01234");
        assert!(!body.complete);
        body.feed(b"5678901 and more");
        assert!(body.complete && body.is_pattern);
        assert_eq!(body.received, 12);

        let mut body = reader(&[]);
        body.feed(b"012x");
        assert!(!body.complete && !body.is_pattern);
        body.end_of_stream();
        assert!(body.complete);
        assert_eq!(body.received, 4);
    }
}
