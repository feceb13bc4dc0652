//! The body of a range response: one range's bytes, or several ranges as
//! `multipart/byteranges` (RFC 9110 §14.6). The whole body is laid out before its first byte
//! goes (the text between parts, and which file bytes go where), so its Content-Length is
//! exact; the bytes are then read from the open file 64 KiB at a time, never all at once.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::range_header::ByteRange;
use crate::body::{self, ResponseBody};

/// The largest read, as tower-http's `ServeFile` reads.
const READ_CHUNK: usize = 64 * 1024;

/// What a response body is made of, in order.
pub(crate) struct Layout {
    pieces: Vec<Piece>,
    length: u64,
}

enum Piece {
    /// Delimiters and part headers.
    Text(Bytes),
    /// `remaining` file bytes from offset `next`.
    File { next: u64, remaining: u64 },
}

impl Layout {
    /// The file's bytes in `range`, alone: a single range is sent as the body itself, with its
    /// Content-Range in the response head.
    pub(crate) fn single(range: ByteRange) -> Layout {
        Layout {
            pieces: vec![Piece::File {
                next: range.first,
                remaining: range.len(),
            }],
            length: range.len(),
        }
    }

    /// The whole file of `length` bytes.
    pub(crate) fn whole(length: u64) -> Layout {
        Layout {
            pieces: vec![Piece::File {
                next: 0,
                remaining: length,
            }],
            length,
        }
    }

    /// `ranges` of a file of `complete_length` bytes as the parts of a `multipart/byteranges`
    /// body delimited by `boundary`, each part headed by the file's `content_type` (when it has
    /// one) and its `Content-Range`, as in the example of RFC 9110 §14.6.
    pub(crate) fn multipart(
        ranges: &[ByteRange],
        complete_length: u64,
        content_type: Option<&HeaderValue>,
        boundary: &str,
    ) -> Layout {
        let mut pieces = Vec::with_capacity(ranges.len() * 2 + 1);
        let mut length = 0;
        for (index, range) in ranges.iter().enumerate() {
            // The CRLF before each later delimiter belongs to the delimiter (RFC 2046 §5.1.1).
            let mut head = Vec::with_capacity(128);
            if index > 0 {
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            if let Some(content_type) = content_type {
                head.extend_from_slice(b"Content-Type: ");
                head.extend_from_slice(content_type.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(
                format!(
                    "Content-Range: bytes {}-{}/{complete_length}\r\n\r\n",
                    range.first, range.last
                )
                .as_bytes(),
            );
            length += head.len() as u64 + range.len();
            pieces.push(Piece::Text(Bytes::from(head)));
            pieces.push(Piece::File {
                next: range.first,
                remaining: range.len(),
            });
        }
        let close = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        length += close.len() as u64;
        pieces.push(Piece::Text(close));
        Layout { pieces, length }
    }

    /// The body's length in bytes.
    pub(crate) fn length(&self) -> u64 {
        self.length
    }

    /// The body, read from `file` as the client takes it. A file that ends before a range does
    /// (truncated while being sent) fails the body, so the client sees a broken response
    /// instead of a short one passing for complete.
    pub(crate) fn into_body(self, file: File) -> ResponseBody {
        let reader = Reader {
            file,
            pieces: self.pieces.into(),
            cursor: None,
        };
        let frames = futures_util::stream::try_unfold(reader, |mut reader| async move {
            match reader.next_chunk().await {
                Ok(chunk) => Ok(chunk.map(|chunk| (Frame::data(chunk), reader))),
                Err(error) => Err(body::after_flush(error).await),
            }
        });
        // Fused: a body may be polled again after its end (tower-http's compression does), and
        // `try_unfold` panics when it is.
        StreamBody::new(futures_util::StreamExt::fuse(frames)).boxed_unsync()
    }
}

/// A fresh boundary for each response: 128 bits no file can be prepared to contain, as a
/// boundary must not occur in the parts it separates (RFC 2046 §5.1.1). `RandomState` gives
/// randomly keyed hashers without a dependency; the counter keeps two calls apart regardless.
pub(crate) fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let high = RandomState::new().hash_one(count);
    let low = RandomState::new().hash_one(count ^ high);
    format!("{high:016x}{low:016x}")
}

struct Reader {
    file: File,
    pieces: VecDeque<Piece>,
    /// The file's offset, once this reader has set it.
    cursor: Option<u64>,
}

impl Reader {
    /// The next bytes of the body; `None` at its end.
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let Some(piece) = self.pieces.front_mut() else {
                return Ok(None);
            };
            let (next, remaining) = match piece {
                Piece::Text(text) => {
                    let text = std::mem::take(text);
                    self.pieces.pop_front();
                    return Ok(Some(text));
                }
                Piece::File { remaining: 0, .. } => {
                    self.pieces.pop_front();
                    continue;
                }
                Piece::File { next, remaining } => (next, remaining),
            };
            if self.cursor != Some(*next) {
                self.file.seek(SeekFrom::Start(*next)).await?;
            }
            let want = usize::try_from(*remaining).map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
            let mut chunk = BytesMut::zeroed(want);
            let read = self.file.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file became shorter while it was being sent",
                ));
            }
            chunk.truncate(read);
            *next += read as u64;
            *remaining -= read as u64;
            self.cursor = Some(*next);
            return Ok(Some(chunk.freeze()));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).await.unwrap();
        (dir, file)
    }

    fn data(length: usize) -> Vec<u8> {
        (0..length).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_multipart_body_is_as_long_as_announced_and_byte_exact() {
        let bytes = data(200_000);
        let (_dir, file) = file_with(&bytes).await;
        let ranges = [
            ByteRange {
                first: 150_000,
                last: 199_999,
            },
            ByteRange { first: 0, last: 0 },
            ByteRange {
                first: 10,
                last: 80_009,
            },
        ];
        let content_type = HeaderValue::from_static("application/octet-stream");
        let layout = Layout::multipart(&ranges, 200_000, Some(&content_type), "B0UND");
        let announced = layout.length();
        let body = layout.into_body(file).collect().await.unwrap().to_bytes();
        assert_eq!(body.len() as u64, announced);
        let mut expected = Vec::new();
        for (index, range) in ranges.iter().enumerate() {
            if index > 0 {
                expected.extend_from_slice(b"\r\n");
            }
            expected.extend_from_slice(
                format!(
                    "--B0UND\r\nContent-Type: application/octet-stream\r\n\
                     Content-Range: bytes {}-{}/200000\r\n\r\n",
                    range.first, range.last
                )
                .as_bytes(),
            );
            let (first, last) = (range.first as usize, range.last as usize);
            expected.extend_from_slice(&bytes[first..=last]);
        }
        expected.extend_from_slice(b"\r\n--B0UND--\r\n");
        assert_eq!(body.as_ref(), expected.as_slice());
    }

    #[tokio::test]
    async fn without_a_content_type_parts_carry_only_their_range() {
        let (_dir, file) = file_with(b"0123456789").await;
        let ranges = [
            ByteRange { first: 0, last: 1 },
            ByteRange { first: 8, last: 9 },
        ];
        let layout = Layout::multipart(&ranges, 10, None, "b");
        let announced = layout.length();
        let body = layout.into_body(file).collect().await.unwrap().to_bytes();
        assert_eq!(
            body.as_ref(),
            b"--b\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
              \r\n--b\r\nContent-Range: bytes 8-9/10\r\n\r\n89\r\n--b--\r\n"
        );
        assert_eq!(body.len() as u64, announced);
    }

    #[tokio::test]
    async fn single_and_whole_bodies_are_the_bytes_alone() {
        let bytes = data(150_000);
        let (_dir, file) = file_with(&bytes).await;
        let single = Layout::single(ByteRange {
            first: 70_000,
            last: 149_999,
        });
        assert_eq!(single.length(), 80_000);
        let body = single.into_body(file).collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), &bytes[70_000..]);
        let (_dir, file) = file_with(&bytes).await;
        let whole = Layout::whole(150_000).into_body(file);
        assert_eq!(
            whole.collect().await.unwrap().to_bytes().as_ref(),
            &bytes[..]
        );
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_ranges_fails_the_body() {
        let (_dir, file) = file_with(b"short").await;
        let body = Layout::single(ByteRange { first: 2, last: 99 }).into_body(file);
        let error = body.collect().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn boundaries_differ() {
        let first = boundary();
        let second = boundary();
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }
}
