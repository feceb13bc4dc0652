//! Reads whole records off the socket. Cancel-safe, so the connection task can wait on it in
//! `select!` beside handler output: a record is either returned or left in the buffer.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Decoder;

use super::error::ServerError;
use crate::protocol::{Record, RecordDecoder};

/// Room asked for before each read; records are often small, so reads batch several.
const READ_CHUNK: usize = 16 * 1024;

pub(crate) struct RecordReader<R> {
    io: R,
    buffer: BytesMut,
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    pub(crate) fn new(io: R) -> Self {
        RecordReader {
            io,
            buffer: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// The next record; `None` when the peer closed between records.
    pub(crate) async fn next_record(&mut self) -> Result<Option<Record>, ServerError> {
        loop {
            if let Some(record) = RecordDecoder.decode(&mut self.buffer)? {
                return Ok(Some(record));
            }
            // Without spare capacity `read_buf` would return 0, indistinguishable from EOF.
            self.buffer.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.buffer).await? == 0 {
                return match self.buffer.len() {
                    0 => Ok(None),
                    received => Err(ServerError::TruncatedRecord(received)),
                };
            }
        }
    }
}
