//! Carries a response from the backend to the client at two different speeds.
//!
//! A pump task reads the backend as fast as it sends and releases the backend connection at
//! END_REQUEST; the client reads the spool at its own pace. Output is kept in memory up to
//! `response_buffer_size`, then appended to a nameless temp file, so a slow client holds
//! neither a backend connection (and the app worker behind it) nor unbounded memory.
//! If the client goes away first, the pump stops and drops the stream, which aborts the request
//! (FCGI_ABORT_REQUEST, then the drain per `abort_drain_timeout`); the reader's drop wakes the
//! pump, so a silent backend does not keep the request until its next record. The same happens
//! when the client falls `max_response_buffer` bytes behind: the pump never waits for the client
//! (on a multiplexed connection that would stall every other request), so this bound is what
//! keeps a client that stopped reading from filling the disk; the client's body ends in an error.
//!
//! After END_REQUEST the pump stays as a watchdog while the client still has bytes to read: a
//! client that takes nothing for `send_timeout` loses the rest of its response, and its memory
//! and temp file are freed. On HTTP/1.1 the socket's own `send_timeout` comes first; this one
//! is for an HTTP/2 stream whose client keeps the connection busy but never opens the stream's
//! flow-control window, so hyper never asks for its body.
//!
//! When the app declared a `Content-Length`, the reader hands out exactly that many bytes
//! (`response_framing.rs`): more are dropped, fewer end the body in an error. A client that has
//! been given every declared byte has *not* gone away when hyper drops the body (it does so as
//! soon as the length is written, often before the app's END_REQUEST): the pump then reads on
//! to END_REQUEST, discarding any excess, so the connection goes back to the pool and the app
//! never sees an abort for a response that was delivered. Excess ends the client's HTTP/1.1
//! connection ([`CloseAfterResponse`]): the pump asks for that as soon as the bytes received
//! pass the declared length, before it hands any of them to the reader, so a cut the reader
//! makes always comes after the request to close.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fcgi::client::{ResponseEvent, ResponseStream};
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::body::{CloseAfterResponse, ResponseBody};
use crate::request_name::{request_error, request_warn, RequestName};
use crate::response_framing::{BodyFit, ClientFraming};

/// Largest piece read back from the temp file at once.
const FILE_READ_CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct SpoolState {
    memory: VecDeque<Bytes>,
    memory_bytes: usize,
    file: Option<Arc<std::fs::File>>,
    /// Bytes of the temp file fully written and readable.
    file_length: u64,
    /// Bytes of the temp file the client has read.
    file_read: u64,
    /// `Some(Ok)` after END_REQUEST, `Some(Err)` when the backend failed mid-response.
    end: Option<Result<(), String>>,
    reader: ReaderState,
    /// Since when bytes have waited for the client without it taking any; `None` while the
    /// client has read everything written so far.
    stalled_since: Option<tokio::time::Instant>,
}

/// Where the client's side of the spool is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ReaderState {
    /// Still taking the body.
    #[default]
    Reading,
    /// Given every byte the app declared: what the backend still sends is not for it.
    HasEverything,
    /// Dropped before the end: the client went away.
    Gone,
}

/// How much of a response a spool holds for its client.
#[derive(Clone, Copy, Debug)]
pub struct SpoolLimits {
    /// Kept in memory up to this (`response_buffer_size`), then in a temp file.
    pub memory: usize,
    /// Unread bytes, memory and file together, before the request is aborted
    /// (`max_response_buffer`).
    pub total: u64,
    /// How long bytes may wait without the client taking any (`send_timeout`).
    pub send_timeout: std::time::Duration,
}

struct Spool {
    state: Mutex<SpoolState>,
    /// One reader, one writer: `notify_one` keeps a permit when the reader is not waiting.
    changed: Notify,
    /// The reader's end (gone, or has everything): wakes a pump waiting on a silent backend.
    reader_done: Notify,
    limits: SpoolLimits,
    /// The app's `Content-Length`, if it sent one.
    declared: Option<u64>,
    /// Named in the pump's warnings: the request span carries it too, but only when debug
    /// logging enables that span.
    name: RequestName,
    /// The client's HTTP/1.x connection, to end when the app overruns its declared length;
    /// `None` over HTTP/2.
    close: Option<CloseAfterResponse>,
}

impl Spool {
    fn lock(&self) -> MutexGuard<'_, SpoolState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn push(&self, data: Bytes) -> std::io::Result<()> {
        let (file, offset) = {
            let mut state = self.lock();
            if state.memory_bytes == 0 && state.file_length == state.file_read {
                state.stalled_since = Some(tokio::time::Instant::now());
            }
            if state.file.is_none() && state.memory_bytes + data.len() <= self.limits.memory {
                state.memory_bytes += data.len();
                state.memory.push_back(data);
                drop(state);
                self.changed.notify_one();
                return Ok(());
            }
            (state.file.clone(), state.file_length)
        };
        let file = match file {
            Some(file) => file,
            None => {
                let file = Arc::new(tokio::task::spawn_blocking(tempfile::tempfile).await??);
                self.lock().file = Some(Arc::clone(&file));
                file
            }
        };
        let length = data.len() as u64;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, offset)).await??;
        self.lock().file_length += length;
        self.changed.notify_one();
        Ok(())
    }

    /// Ends the client's connection after this response if `received` body bytes are more
    /// than the app declared.
    fn check_overrun(&self, received: u64) {
        if self.declared.is_some_and(|declared| received > declared) {
            if let Some(close) = &self.close {
                close.request();
            }
        }
    }

    fn finish(&self, end: Result<(), String>) {
        self.lock().end = Some(end);
        self.changed.notify_one();
    }

    fn reader(&self) -> ReaderState {
        self.lock().reader
    }

    /// The reader ends in `state`; buffered output nobody will read is freed at once.
    fn reader_done(&self, state: ReaderState) {
        {
            let mut spool = self.lock();
            spool.reader = state;
            spool.memory.clear();
            spool.memory_bytes = 0;
            spool.file = None;
            spool.file_length = 0;
            spool.file_read = 0;
        }
        self.reader_done.notify_one();
    }

    /// The client took `bytes`; the clock of `send_timeout` starts again if more wait.
    fn taken(state: &mut SpoolState) {
        let more_waiting = state.memory_bytes > 0 || state.file_length > state.file_read;
        state.stalled_since = more_waiting.then(tokio::time::Instant::now);
    }

    /// Drops what the client did not take in time; its body ends in an error.
    fn give_up_on_reader(&self, why: &str) {
        {
            let mut state = self.lock();
            state.end = Some(Err(why.to_owned()));
            state.memory.clear();
            state.memory_bytes = 0;
            state.file = None;
            state.file_length = 0;
            state.file_read = 0;
            state.stalled_since = None;
        }
        self.changed.notify_one();
    }

    /// Bytes written for the client and not read by it yet.
    fn unread(&self) -> u64 {
        let state = self.lock();
        state.memory_bytes as u64 + (state.file_length - state.file_read)
    }
}

/// The client's side of a spool.
struct SpoolReader {
    spool: Arc<Spool>,
    file_offset: u64,
    /// Declared bytes not handed out yet; `None` when the app declared no length.
    remaining: Option<u64>,
}

impl SpoolReader {
    /// The next piece of the body, cut to the declared length.
    async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        if self.remaining == Some(0) {
            return None;
        }
        let chunk = self.next_spooled_chunk().await;
        let Some(remaining) = self.remaining.as_mut() else {
            return chunk;
        };
        match chunk {
            Some(Ok(mut data)) => {
                if data.len() as u64 >= *remaining {
                    // Fits in usize: it is shorter than `data`.
                    data.truncate(*remaining as usize);
                    *remaining = 0;
                    self.spool.reader_done(ReaderState::HasEverything);
                } else {
                    *remaining -= data.len() as u64;
                }
                Some(Ok(data))
            }
            None => {
                let short = std::io::Error::other(format!(
                    "the backend sent less data than declared ({remaining} bytes missing)"
                ));
                Some(Err(crate::body::after_flush(short).await))
            }
            failed => failed,
        }
    }

    async fn next_spooled_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            let file_read = {
                let mut state = self.spool.lock();
                if let Some(chunk) = state.memory.pop_front() {
                    state.memory_bytes -= chunk.len();
                    Spool::taken(&mut state);
                    return Some(Ok(chunk));
                }
                match &state.file {
                    Some(file) if self.file_offset < state.file_length => {
                        let available = state.file_length - self.file_offset;
                        Some((Arc::clone(file), available.min(FILE_READ_CHUNK as u64)))
                    }
                    _ => match &state.end {
                        Some(Ok(())) => return None,
                        Some(Err(reason)) => {
                            return Some(Err(std::io::Error::other(reason.clone())))
                        }
                        None => None,
                    },
                }
            };
            match file_read {
                Some((file, length)) => {
                    let offset = self.file_offset;
                    let read = tokio::task::spawn_blocking(move || {
                        let mut chunk = vec![0; length as usize];
                        file.read_exact_at(&mut chunk, offset).map(|()| chunk)
                    })
                    .await;
                    let chunk = match read {
                        Ok(Ok(chunk)) => chunk,
                        Ok(Err(error)) => return Some(Err(error)),
                        Err(join_error) => return Some(Err(std::io::Error::other(join_error))),
                    };
                    self.file_offset += length;
                    let mut state = self.spool.lock();
                    state.file_read = self.file_offset;
                    Spool::taken(&mut state);
                    drop(state);
                    return Some(Ok(Bytes::from(chunk)));
                }
                None => self.spool.changed.notified().await,
            }
        }
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        if self.spool.reader() == ReaderState::Reading {
            self.spool.reader_done(ReaderState::Gone);
        }
    }
}

/// Starts the pump for a response whose head has been parsed: `already_read` is the body data
/// that came with the head, `framing` what the client is to get of the body, `close` the
/// client's HTTP/1.x connection. Returns the body the client reads.
pub fn spool_response(
    already_read: Vec<Bytes>,
    events: ResponseStream,
    limits: SpoolLimits,
    framing: ClientFraming,
    name: RequestName,
    close: Option<CloseAfterResponse>,
) -> ResponseBody {
    let already_received = already_read.iter().map(|chunk| chunk.len() as u64).sum();
    let remaining = match framing {
        ClientFraming::Undeclared => None,
        ClientFraming::Declared(length) => Some(length),
        ClientFraming::Bodiless => Some(0),
    };
    let state = if remaining == Some(0) {
        // Nothing of it is for the client: the pump only reads on to END_REQUEST.
        SpoolState {
            reader: ReaderState::HasEverything,
            ..SpoolState::default()
        }
    } else {
        SpoolState {
            memory_bytes: already_read.iter().map(Bytes::len).sum(),
            stalled_since: (!already_read.is_empty()).then(tokio::time::Instant::now),
            memory: already_read.into(),
            ..SpoolState::default()
        }
    };
    let spool = Arc::new(Spool {
        state: Mutex::new(state),
        changed: Notify::new(),
        reader_done: Notify::new(),
        limits,
        declared: framing.declared(),
        name,
        close,
    });
    spool.check_overrun(already_received);
    // In the request's span, so the pump's debug lines sit under the request like the rest.
    tokio::spawn(pump(events, Arc::clone(&spool), already_received).in_current_span());
    let reader = SpoolReader {
        spool,
        file_offset: 0,
        remaining,
    };
    let chunks = futures_util::stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next_chunk().await?;
        Some((chunk.map(hyper::body::Frame::data), reader))
    });
    // Fused: a body may be polled again after its end (tower-http's compression does), and
    // `unfold` panics when it is.
    StreamBody::new(futures_util::StreamExt::fuse(chunks)).boxed_unsync()
}

/// Reads the backend to END_REQUEST into the spool; `received` counts the body bytes so far.
async fn pump(mut events: ResponseStream, spool: Arc<Spool>, mut received: u64) {
    let name = &spool.name;
    loop {
        if spool.reader() == ReaderState::Gone {
            // Debug logging enables the request span, which names the request.
            tracing::debug!("client went away mid-response; aborting the request");
            return; // dropping the stream aborts the request
        }
        let event = tokio::select! {
            event = events.next_event() => event,
            // Waiting for the next record is cancel-safe; the reader's state is looked at above.
            () = spool.reader_done.notified() => continue,
        };
        match event {
            Ok(ResponseEvent::Stdout(data)) => {
                received += data.len() as u64;
                spool.check_overrun(received);
                if spool.reader() == ReaderState::HasEverything {
                    continue; // excess over the declared length: reported at the end
                }
                if let Err(error) = spool.push(data).await {
                    request_error!(name, "response spool failed: {error}");
                    spool.finish(Err(error.to_string()));
                    return;
                }
                if spool.unread() > spool.limits.total {
                    request_warn!(
                        name,
                        limit = spool.limits.total,
                        "the client reads slower than the backend writes and fell \
                         max_response_buffer behind; aborting the request"
                    );
                    spool.finish(Err("response exceeded max_response_buffer".to_owned()));
                    return; // dropping the stream aborts the request
                }
            }
            Ok(ResponseEvent::Stderr(data)) => log_backend_stderr(name, &data),
            // The connection went back to the pool with the END_REQUEST.
            Ok(ResponseEvent::End(_)) => {
                log_length_mismatch(name, BodyFit::of(spool.declared, received));
                spool.finish(Ok(()));
                drop(events);
                watch_reader(&spool).await;
                return;
            }
            Err(error) => {
                request_warn!(
                    name,
                    "backend failed mid-response, the client gets a truncated body: {error}"
                );
                spool.finish(Err(error.to_string()));
                return;
            }
        }
    }
}

/// Watches a finished response until its client has taken it all or gone: bytes that wait
/// `send_timeout` without the client taking any are dropped (module doc).
async fn watch_reader(spool: &Spool) {
    let timeout = spool.limits.send_timeout;
    loop {
        let stalled_since = {
            let state = spool.lock();
            if state.reader != ReaderState::Reading {
                return;
            }
            state.stalled_since
        };
        let Some(since) = stalled_since else {
            // Everything written was taken; the reader sees the end by itself.
            return;
        };
        if since.elapsed() >= timeout {
            request_warn!(
                spool.name,
                "the client took nothing of its response for {timeout:?} (send_timeout); \
                 dropping the rest"
            );
            spool.give_up_on_reader("the client stopped reading (send_timeout)");
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(since + timeout) => {}
            () = spool.reader_done.notified() => {}
        }
    }
}

/// One line for a body that does not match its `Content-Length`: the app has a bug worth
/// fixing, and the client got less than the app meant (cut, or an error).
pub fn log_length_mismatch(name: &RequestName, fit: BodyFit) {
    match fit {
        BodyFit::Matches => {}
        BodyFit::Longer { declared, sent } => request_warn!(
            name,
            declared,
            sent,
            "backend sent more data than declared; the body was cut at its Content-Length"
        ),
        BodyFit::Shorter { declared, sent } => request_warn!(
            name,
            declared,
            sent,
            "backend sent less data than declared; the client's response ends in an error"
        ),
    }
}

/// Writes the application's STDERR to the log, one line per line, tagged with the request.
/// Control characters (a carriage return that would overwrite the line on a terminal, escape
/// sequences) are escaped: the app's output must not forge or hide log lines.
pub fn log_backend_stderr(name: &RequestName, data: &[u8]) {
    for line in data.split(|&byte| byte == b'\n') {
        // A CRLF line end is a line end, not a carriage return to show.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        let line = escape_log_text(&text);
        let line = line.trim_end();
        if !line.is_empty() {
            request_warn!(name, "backend stderr: {line}");
        }
    }
}

/// `text` with every control character but tab written as `\r`, `\x1b` and the like.
fn escape_log_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => escaped.push(c),
            '\r' => escaped.push_str("\\r"),
            c if c.is_control() => escaped.extend(c.escape_default()),
            c => escaped.push(c),
        }
    }
    std::borrow::Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::escape_log_text;

    #[test]
    fn control_characters_in_backend_stderr_are_escaped() {
        assert_eq!(escape_log_text("plain\ttext"), "plain\ttext");
        assert_eq!(
            escape_log_text("fake\r2026 INFO all good"),
            "fake\\r2026 INFO all good"
        );
        assert_eq!(escape_log_text("\u{1b}[31mred"), "\\u{1b}[31mred");
    }
}
