//! The handler's side of a response: [`ResponseWriter`] batches STDOUT/STDERR into records and
//! hands them to the connection task, which owns the socket. Messages of one request arrive in
//! the order written, its `Finished` last, so END_REQUEST always follows the output.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::request::HandlerOutcome;
use crate::protocol::{encode_stream_record, RecordType, RequestId};

/// Output is sent to the connection once this much is buffered, and no message carries more:
/// large enough for few records and channel messages, small enough that a streaming handler's
/// output leaves promptly and that concurrent responses interleave finely on the wire.
const SEND_THRESHOLD: usize = 32 * 1024;

/// One run of a handler. Request ids are reused by clients (FastCGI 1.0 §3.3); the generation
/// tells output of an aborted run from output of a later request with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    pub(crate) request_id: RequestId,
    pub(crate) generation: u64,
}

/// What a handler task sends to its connection task.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Encoded STDOUT/STDERR records.
    Output { slot: Slot, records: Bytes },
    /// The handler returned; nothing more comes from this slot.
    Finished { slot: Slot, outcome: HandlerOutcome },
}

/// Writes STDOUT and STDERR records for one request. Output is buffered up to 32 KiB, then
/// sent as one record of at most 32 KiB, however large the write: the connection interleaves
/// concurrent requests at that grain. Switching stream sends what the other stream had
/// buffered, so the peer sees the streams in the order written.
#[derive(Debug)]
pub struct ResponseWriter {
    slot: Slot,
    outgoing: mpsc::Sender<Outgoing>,
    pending_type: RecordType,
    pending: BytesMut,
    stderr_used: bool,
}

impl ResponseWriter {
    pub(crate) fn new(slot: Slot, outgoing: mpsc::Sender<Outgoing>) -> Self {
        ResponseWriter {
            slot,
            outgoing,
            pending_type: RecordType::Stdout,
            pending: BytesMut::new(),
            stderr_used: false,
        }
    }

    /// The request this writer answers.
    pub fn request_id(&self) -> RequestId {
        self.slot.request_id
    }

    /// Appends to the response body stream. Fails once the connection is gone.
    pub async fn stdout(&mut self, data: &[u8]) -> io::Result<()> {
        self.write(RecordType::Stdout, data).await
    }

    /// Appends to the error stream. Fails once the connection is gone.
    pub async fn stderr(&mut self, data: &[u8]) -> io::Result<()> {
        self.stderr_used = true;
        self.write(RecordType::Stderr, data).await
    }

    /// Sends whatever is buffered now, for handlers that stream.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let record = self.encode(&self.pending);
        self.pending.clear();
        self.send_records(record).await
    }

    async fn write(&mut self, record_type: RecordType, mut data: &[u8]) -> io::Result<()> {
        // An empty record would end the stream (FastCGI 1.0 §3.3); the server does that itself.
        if data.is_empty() {
            return Ok(());
        }
        if record_type != self.pending_type {
            self.flush().await?;
            self.pending_type = record_type;
        }
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= SEND_THRESHOLD {
                // A whole record straight from the caller's bytes, without buffering them.
                let (content, rest) = data.split_at(SEND_THRESHOLD);
                self.send_records(self.encode(content)).await?;
                data = rest;
                continue;
            }
            let room = SEND_THRESHOLD - self.pending.len();
            let (content, rest) = data.split_at(room.min(data.len()));
            self.pending.extend_from_slice(content);
            data = rest;
            if self.pending.len() >= SEND_THRESHOLD {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// One record of the pending stream type around `content` (at most `SEND_THRESHOLD`).
    fn encode(&self, content: &[u8]) -> Bytes {
        let mut record = BytesMut::new();
        encode_stream_record(
            &mut record,
            self.pending_type,
            self.slot.request_id,
            content,
        );
        record.freeze()
    }

    /// Sends the rest of the output, ends the streams on a normal outcome, then reports the
    /// outcome. Errors are dropped: they only mean the connection is already gone.
    pub(crate) async fn finish(mut self, outcome: HandlerOutcome) {
        let _ = self.flush().await;
        if let HandlerOutcome::Complete { .. } = outcome {
            let mut terminators = BytesMut::new();
            encode_stream_record(
                &mut terminators,
                RecordType::Stdout,
                self.slot.request_id,
                &[],
            );
            if self.stderr_used {
                encode_stream_record(
                    &mut terminators,
                    RecordType::Stderr,
                    self.slot.request_id,
                    &[],
                );
            }
            let _ = self.send_records(terminators.freeze()).await;
        }
        let finished = Outgoing::Finished {
            slot: self.slot,
            outcome,
        };
        let _ = self.outgoing.send(finished).await;
    }

    async fn send_records(&self, records: Bytes) -> io::Result<()> {
        let output = Outgoing::Output {
            slot: self.slot,
            records,
        };
        self.outgoing
            .send(output)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "FastCGI connection closed"))
    }
}
