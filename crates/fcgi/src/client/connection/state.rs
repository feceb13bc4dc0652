//! One client connection's protocol state, without I/O: commands from request handles and bytes
//! from the backend go in; records to write, and each request's events, come out. Request ids,
//! routes, the write queue, the decoder and every rule about them live here; `driver.rs` feeds
//! the state from the socket and the command channel. Nothing here touches a socket or reads a
//! clock (`now` is passed in), so `state_tests.rs` drives it alone. Each request's events go
//! straight into its channel: an unbounded send neither waits nor needs a runtime, and it spares
//! the driver a second pass over what the state would otherwise hand back.
//!
//! **Request ids.** The state takes an id when it takes a request's `Begin` and frees it when it
//! reads that request's END_REQUEST (FastCGI 1.0 §3.3: the application owns the id until then).
//! Both happen in the one task that runs the connection, in the order the socket sees them, so
//! the ids need no lock. The lowest free id is taken: a connection that carries one request at a
//! time always uses id 1, and ids in flight never collide. A handle never learns its request's
//! id: it encodes BEGIN_REQUEST and PARAMS with [`PLACEHOLDER_ID`], which the state overwrites
//! in each record header, and names its request in later commands by [`RequestKey`] — which
//! request of the connection it is. Body records and aborts for a request that has ended find no
//! route and are dropped, so they never go out under an id that a newer request holds.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;
use tokio_util::codec::Decoder;

use super::event_queue;
use super::request_ids::RequestIds;
use crate::client::error::ConnectionFailure;
use crate::client::probe;
use crate::protocol::{
    EndRequest, Frame, Record, RecordBody, RecordDecoder, RecordType, RequestId, HEADER_LEN,
};

/// Records queued for writing beyond this make handles wait: a large upload cannot fill memory.
pub(super) const MAX_QUEUED_COMMANDS: usize = 16;
/// A close this soon after END_REQUEST comes from a worker exiting after its last request
/// (php-fpm's `pm.max_requests`), not from an idle timeout: the two arrive back to back.
const CLOSE_RIGHT_AFTER_END: Duration = Duration::from_millis(2);
/// The id handles encode their records with; the state puts the real one in. The management id,
/// so that a record that ever escaped unstamped would be refused, not taken for a request.
pub(super) const PLACEHOLDER_ID: RequestId = RequestId::MANAGEMENT;

/// One request on one connection: which of the connection's requests it is (its count of
/// requests started when this one began). Ids are reused once a request ends; this is not, so a
/// late abort or body record can never hit the request that reused the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestKey {
    pub(crate) sequence: u64,
}

/// Something the backend sent for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseEvent {
    /// A piece of the response stream (CGI headers, then the body).
    Stdout(Bytes),
    /// A piece of the error stream, for the log.
    Stderr(Bytes),
    /// The request is over; nothing else comes for it.
    End(EndRequest),
}

pub(super) type EventResult = Result<ResponseEvent, ConnectionFailure>;

/// How the backend met the handshake asked on this connection (see [`Command::Handshake`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandshakeAnswer {
    /// FCGI_GET_VALUES_RESULT or FCGI_UNKNOWN_TYPE: the app read the question.
    Answered,
    /// A request's answer came first: the app does not answer management records at all.
    Ignored,
}

/// Where the handshake on this connection stands.
enum Handshake {
    NotAsked,
    /// Asked and not answered yet; the sender is whoever waits for the answer, if anyone.
    Waiting(Option<oneshot::Sender<HandshakeAnswer>>),
    /// Answered (or given up on): further management answers are echoes to ignore — Go's
    /// net/http/fcgi follows each GET_VALUES_RESULT with an empty one, libfcgi answers the
    /// trailing question only when the next record arrives.
    Over,
}

/// A piece of a request's FCGI_STDIN stream: at most one record of content, and whether the
/// stream ends with it. Both leave in the same write (see `request.rs`).
#[derive(Debug, Default)]
pub(super) struct Stdin {
    /// At most `MAX_RECORD_CONTENT` bytes; empty for none.
    pub(super) content: Bytes,
    pub(super) end_of_stream: bool,
}

/// What a request handle asks of the connection.
pub(super) enum Command {
    /// A new request: route the backend's records for it to `events`, and queue its head
    /// (BEGIN_REQUEST and PARAMS, encoded with [`PLACEHOLDER_ID`]) and the start of its body.
    Begin {
        request: RequestKey,
        /// Where the request's response goes; it also counts the bytes sent there and not yet
        /// taken out by the reader.
        events: event_queue::Sender<EventResult>,
        head: BytesMut,
        stdin: Stdin,
        /// The request must not run twice: FCGI_GET_VALUES goes ahead of it in the same write.
        /// The backend reads its records in order, so if the connection ends with the question
        /// unanswered, the request was never read — it failed as not sent.
        ask_first: bool,
    },
    /// More of a request's body; one record per command, so requests take turns on the socket.
    Write { request: RequestKey, stdin: Stdin },
    /// Ask FCGI_GET_VALUES (FastCGI 1.0 §4.1) before any request, and tell `answer` when the
    /// backend answers: that shows a worker took the connection out of the listen queue. (The
    /// question is the probe's, with an empty GET_VALUES after it for libfcgi's sake.)
    Handshake {
        answer: oneshot::Sender<HandshakeAnswer>,
    },
    /// No more requests: the driver waits for the backend to close (bounded).
    Retire,
    /// The caller gave up on a request: send FCGI_ABORT_REQUEST (FastCGI 1.0 §5.4), and with
    /// `close` end the connection once everything queued is written.
    Abort { request: RequestKey, close: bool },
}

/// Bytes queued for the socket: a request's head, a management record, or one record over a
/// shared buffer.
enum Outgoing {
    /// Written from the buffer the handle encoded it in: freezing that into `Bytes` would cost
    /// every request one more allocation.
    Head(BytesMut),
    Block(Bytes),
    Frame(Frame),
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Head(head) => head.len(),
            Outgoing::Block(bytes) => bytes.len(),
            Outgoing::Frame(frame) => frame.len(),
        }
    }

    fn io_slices<'a>(&'a self, written: usize, out: &mut [IoSlice<'a>]) -> usize {
        let block: &[u8] = match self {
            Outgoing::Head(head) => head,
            Outgoing::Block(bytes) => bytes,
            Outgoing::Frame(frame) => return frame.io_slices(written, out),
        };
        match (out.first_mut(), block.get(written..)) {
            (Some(slot), Some(rest)) => {
                *slot = IoSlice::new(rest);
                1
            }
            _ => 0,
        }
    }
}

struct Route {
    id: RequestId,
    sequence: u64,
    events: event_queue::Sender<EventResult>,
    /// Aborted for running too far ahead of its reader: its output is dropped, and the route
    /// stays until END_REQUEST so the id is not reused before the backend lets go of it.
    overflowed: bool,
    /// `queued_bytes` when its BEGIN_REQUEST was queued: until `written_bytes` passes it, not
    /// a byte of this request has left.
    queued_at: u64,
    /// An FCGI_GET_VALUES went ahead of it (`Command::Begin::ask_first`).
    behind_question: bool,
}

/// How the connection ended, for the pool and then for the requests in flight.
#[derive(Debug)]
pub(super) struct Ending {
    pub(super) failure: ConnectionFailure,
    /// It died of a protocol error with several requests in flight: the backend does not
    /// multiplex.
    pub(super) multiplexing_refused: bool,
}

/// Requests in flight on one connection, what is queued for the socket, and the decoder.
pub(super) struct ConnectionState {
    /// Requests in flight; a handful at most, so a vector beats a map.
    routes: Vec<Route>,
    ids: RequestIds,
    outgoing: VecDeque<Outgoing>,
    /// Bytes of `outgoing.front()` already written.
    written: usize,
    decoder: RecordDecoder,
    max_request_buffer: usize,
    /// Takes no more commands; the driver waits for the backend's close.
    retiring: bool,
    /// Close as soon as everything queued has been written (after an abort).
    close_when_flushed: bool,
    /// When the last END_REQUEST arrived: a close right after it is a worker recycling.
    last_end: Option<Instant>,
    /// A record arrived after the last END_REQUEST: the backend was answering again.
    heard_since_end: bool,
    /// END_REQUESTs read: the requests the backend finished on this connection.
    requests_ended: u64,
    /// Bytes ever queued and ever written: which requests a failure caught unsent.
    queued_bytes: u64,
    written_bytes: u64,
    handshake: Handshake,
}

impl ConnectionState {
    pub(super) fn new(max_request_buffer: usize) -> ConnectionState {
        ConnectionState {
            routes: Vec::new(),
            ids: RequestIds::default(),
            outgoing: VecDeque::new(),
            written: 0,
            decoder: RecordDecoder,
            max_request_buffer,
            retiring: false,
            close_when_flushed: false,
            last_end: None,
            heard_since_end: false,
            requests_ended: 0,
            queued_bytes: 0,
            written_bytes: 0,
            handshake: Handshake::NotAsked,
        }
    }

    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Begin {
                request,
                events,
                mut head,
                stdin,
                ask_first,
            } => {
                let Some(id) = self.ids.allocate() else {
                    // 65,535 requests in flight on one connection: this one alone is refused.
                    let _ = events.send(Err(ConnectionFailure::ClosedByGateway));
                    return;
                };
                stamp_request_id(&mut head, id);
                if ask_first {
                    self.queue(Outgoing::Block(probe::question_ahead_of_request()));
                    self.handshake = Handshake::Waiting(None);
                }
                self.routes.push(Route {
                    id,
                    sequence: request.sequence,
                    events,
                    overflowed: false,
                    queued_at: self.queued_bytes,
                    behind_question: ask_first,
                });
                self.queue(Outgoing::Head(head));
                self.queue_stdin(id, stdin);
            }
            Command::Write { request, stdin } => {
                if let Some(id) = self.id_of(request) {
                    self.queue_stdin(id, stdin);
                }
            }
            Command::Handshake { answer } => {
                self.queue(Outgoing::Block(probe::values_request()));
                self.handshake = Handshake::Waiting(Some(answer));
            }
            Command::Retire => self.retiring = true,
            Command::Abort { request, close } => {
                // Only while that very request is in flight: once it ended, its id may belong
                // to a newer request already.
                if let Some(id) = self.id_of(request) {
                    self.queue_abort(id);
                }
                self.close_when_flushed |= close;
            }
        }
    }

    /// Decodes and routes every whole record in `buffer`, leaving a partial one there.
    /// `multiplexed`: whether requests share the connection now (see `Shared::multiplexed`).
    pub(super) fn on_read(
        &mut self,
        buffer: &mut BytesMut,
        multiplexed: bool,
        now: Instant,
    ) -> Result<(), ConnectionFailure> {
        while let Some(record) = self
            .decoder
            .decode(buffer)
            .map_err(ConnectionFailure::Protocol)?
        {
            self.route(record, multiplexed, now)?;
        }
        Ok(())
    }

    /// Whether the backend's close (or reset), seen `now`, came right after an END_REQUEST
    /// with nothing heard since: a worker that exits after its last request, not a dead
    /// backend — even when the next request had already been handed the connection, which is
    /// the race a learned close pattern ends.
    pub(super) fn closed_right_after_end(&self, now: Instant) -> bool {
        !self.heard_since_end
            && self
                .last_end
                .is_some_and(|at| now.saturating_duration_since(at) < CLOSE_RIGHT_AFTER_END)
    }

    /// The requests the backend finished on this connection.
    pub(super) fn requests_ended(&self) -> u64 {
        self.requests_ended
    }

    /// Requests in flight: begun, and no END_REQUEST read for them yet.
    pub(super) fn in_flight(&self) -> usize {
        self.routes.len()
    }

    pub(super) fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether the driver may take another command: not once retiring, and not while the queue
    /// for the socket is full (the handles wait: backpressure on uploads).
    pub(super) fn takes_commands(&self) -> bool {
        !self.retiring && self.outgoing.len() < MAX_QUEUED_COMMANDS
    }

    pub(super) fn is_retiring(&self) -> bool {
        self.retiring
    }

    /// An abort asked for the connection to close, and everything queued before it is out.
    pub(super) fn closes_now(&self) -> bool {
        self.close_when_flushed && self.outgoing.is_empty()
    }

    /// A request alone on this connection whose reader fell `max_request_buffer` behind: the
    /// driver stops reading until it catches up, so the backend waits (TCP flow control) instead
    /// of memory filling up. A shared connection never pauses; see `route`.
    pub(super) fn reader_far_behind(&self, multiplexed: bool) -> bool {
        !multiplexed
            && self.routes.iter().any(|route| {
                route.events.unread().load(Ordering::Acquire) > self.max_request_buffer
            })
    }

    /// Fills `out` with what is queued for the socket, oldest first; returns how many slices.
    pub(super) fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (index, item) in self.outgoing.iter().enumerate() {
            // A frame takes up to 3 slices; stop before one would not fit.
            let Some(room) = out.get_mut(filled..).filter(|room| room.len() >= 3) else {
                break;
            };
            let skip = if index == 0 { self.written } else { 0 };
            filled += item.io_slices(skip, room);
        }
        filled
    }

    /// `count` bytes of the queue went out.
    pub(super) fn wrote(&mut self, mut count: usize) {
        self.written_bytes += count as u64;
        while count > 0 {
            let Some(front) = self.outgoing.front() else {
                return;
            };
            let left = front.len() - self.written;
            if count < left {
                self.written += count;
                return;
            }
            count -= left;
            self.written = 0;
            self.outgoing.pop_front();
        }
    }

    /// The connection ends with `failure`: what the pool is told, and then each request.
    pub(super) fn end(&self, failure: ConnectionFailure) -> Ending {
        let multiplexing_refused = self.routes.len() > 1
            && matches!(
                failure,
                ConnectionFailure::Protocol(_) | ConnectionFailure::Unexpected { .. }
            );
        let failure = if multiplexing_refused {
            ConnectionFailure::MultiplexingRefused(Box::new(failure))
        } else {
            failure
        };
        Ending {
            failure,
            multiplexing_refused,
        }
    }

    /// Tells every request in flight that the connection is gone, and why — and a request of
    /// which not a byte was written, that it was never sent.
    pub(super) fn fail_all(&mut self, failure: &ConnectionFailure) {
        // The backend never got past the question: it read none of the requests behind it.
        let question_unanswered = matches!(self.handshake, Handshake::Waiting(_));
        for route in self.routes.drain(..) {
            let unread = route.behind_question && question_unanswered;
            let failure = if self.written_bytes <= route.queued_at || unread {
                ConnectionFailure::NotSent(Box::new(failure.clone()))
            } else {
                failure.clone()
            };
            let _ = route.events.send(Err(failure));
        }
    }

    fn queue(&mut self, outgoing: Outgoing) {
        self.queued_bytes += outgoing.len() as u64;
        self.outgoing.push_back(outgoing);
    }

    fn id_of(&self, request: RequestKey) -> Option<RequestId> {
        self.routes
            .iter()
            .find(|route| route.sequence == request.sequence)
            .map(|route| route.id)
    }

    fn queue_stdin(&mut self, id: RequestId, stdin: Stdin) {
        if !stdin.content.is_empty() {
            let frame = Frame::new(RecordType::Stdin, id, stdin.content);
            self.queue(Outgoing::Frame(frame));
        }
        if stdin.end_of_stream {
            let end = Frame::end_of_stream(RecordType::Stdin, id);
            self.queue(Outgoing::Frame(end));
        }
    }

    fn queue_abort(&mut self, id: RequestId) {
        let abort = Frame::new(RecordType::AbortRequest, id, Bytes::new());
        self.queue(Outgoing::Frame(abort));
    }

    fn end_handshake(&mut self, answer: HandshakeAnswer) {
        if let Handshake::Waiting(Some(waiting)) =
            std::mem::replace(&mut self.handshake, Handshake::Over)
        {
            let _ = waiting.send(answer);
        }
    }

    fn route(
        &mut self,
        record: Record,
        multiplexed: bool,
        now: Instant,
    ) -> Result<(), ConnectionFailure> {
        let management_answer = matches!(
            record.body,
            RecordBody::GetValuesResult(_) | RecordBody::UnknownType(_)
        );
        if record.request_id == RequestId::MANAGEMENT
            && management_answer
            && !matches!(self.handshake, Handshake::NotAsked)
        {
            self.end_handshake(HandshakeAnswer::Answered);
            return Ok(());
        }
        let position = self
            .routes
            .iter()
            .position(|route| route.id == record.request_id);
        let Some(position) = position else {
            // FastCGI 1.0 §3.3 says to ignore records for inactive ids; but with nothing in
            // flight the backend has no business talking, and a parked connection that does
            // is not one to hand out.
            if self.routes.is_empty() {
                return Err(unexpected(&record));
            }
            return Ok(());
        };
        // The backend reads its records in order: a request sent after the question is answered
        // first only by an app that skips management records.
        self.end_handshake(HandshakeAnswer::Ignored);
        self.heard_since_end = true;
        let event = match record.body {
            RecordBody::Stdout(data) => ResponseEvent::Stdout(data),
            RecordBody::Stderr(data) => ResponseEvent::Stderr(data),
            RecordBody::EndRequest(end) => {
                self.last_end = Some(now);
                self.heard_since_end = false;
                self.requests_ended += 1;
                let route = self.routes.swap_remove(position);
                self.ids.release(route.id);
                let _ = route.events.send(Ok(ResponseEvent::End(end)));
                return Ok(());
            }
            _ => return Err(unexpected(&record)),
        };
        let limit = self.max_request_buffer;
        let route = &mut self.routes[position];
        if route.overflowed {
            return Ok(());
        }
        let length = match &event {
            ResponseEvent::Stdout(data) | ResponseEvent::Stderr(data) => data.len(),
            ResponseEvent::End(_) => 0,
        };
        let unread = route.events.unread().fetch_add(length, Ordering::AcqRel) + length;
        if unread > limit && multiplexed {
            // Never stop reading a shared connection for one slow reader: give up on its
            // request alone (FastCGI has no flow control to ask the backend to wait).
            route.overflowed = true;
            let _ = route
                .events
                .send(Err(ConnectionFailure::ResponseBufferExceeded { limit }));
            let id = route.id;
            self.queue_abort(id);
            return Ok(());
        }
        // A receiver that is gone belongs to a request the gateway gave up on (aborted, the
        // route kept until END_REQUEST): the data has nowhere to go.
        let _ = route.events.send(Ok(event));
        Ok(())
    }
}

/// Writes `id` into the header of every record in `records`, whole records back to back.
fn stamp_request_id(records: &mut [u8], id: RequestId) {
    let mut at = 0;
    while let Some(header) = records.get_mut(at..at + HEADER_LEN) {
        header[2..4].copy_from_slice(&id.0.to_be_bytes());
        let content = usize::from(u16::from_be_bytes([header[4], header[5]]));
        at += HEADER_LEN + content + usize::from(header[6]);
    }
}

fn unexpected(record: &Record) -> ConnectionFailure {
    ConnectionFailure::Unexpected {
        record_type: record.record_type().as_u8(),
        request_id: record.request_id.0,
    }
}
