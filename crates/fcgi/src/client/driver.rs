//! The task that owns one backend socket: it writes what request handles queue, with vectored
//! writes straight from the frames' shared buffers, reads every record, routes it by request id,
//! and ends the connection on EOF, an error, or anything a parked connection should not receive.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use super::connection::{
    lock_ids, record_header, ConnectionId, EventResult, RequestKey, ResponseEvent, Shared,
};
use super::error::ConnectionFailure;
use crate::net::{ReadHalf, WriteHalf};
use crate::protocol::{Frame, Record, RecordBody, RecordDecoder, RecordType, RequestId};

/// Requests queued for writing beyond this make handles wait: a large upload cannot fill memory.
const MAX_QUEUED_COMMANDS: usize = 16;
/// How much the driver asks the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;
/// A retired connection waits this long for the backend to close first, so the backend side,
/// not the gateway's ephemeral ports, keeps the TIME_WAIT entry.
const RETIRE_GRACE: Duration = Duration::from_secs(1);
/// A close this soon after END_REQUEST comes from a worker exiting after its last request
/// (php-fpm's `pm.max_requests`), not from an idle timeout: the two arrive back to back.
const CLOSE_RIGHT_AFTER_END: Duration = Duration::from_millis(2);
/// At most this many buffers go into one vectored write.
const MAX_IO_SLICES: usize = 64;

/// Bytes queued for the socket: a pre-encoded block or one record over a shared buffer.
pub(super) enum Outgoing {
    Block(Bytes),
    Frame(Frame),
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Block(bytes) => bytes.len(),
            Outgoing::Frame(frame) => frame.len(),
        }
    }

    fn io_slices<'a>(&'a self, written: usize, out: &mut [IoSlice<'a>]) -> usize {
        match self {
            Outgoing::Block(bytes) => match out.first_mut() {
                Some(slot) => {
                    *slot = IoSlice::new(&bytes[written..]);
                    1
                }
                None => 0,
            },
            Outgoing::Frame(frame) => frame.io_slices(written, out),
        }
    }
}

pub(super) enum Command {
    Begin {
        request: RequestKey,
        events: mpsc::UnboundedSender<EventResult>,
        /// Response bytes sent to `events` and not yet taken out by the reader.
        unread: Arc<AtomicUsize>,
        payload: Vec<Outgoing>,
    },
    Write(Vec<Outgoing>),
    /// No more requests: wait for the backend to close (bounded), then drop the socket.
    Retire,
    /// The caller gave up on a request: send FCGI_ABORT_REQUEST (FastCGI 1.0 §5.4), and with
    /// `close` drop the connection once that record is out.
    Abort {
        request: RequestKey,
        close: bool,
    },
}

struct Route {
    request_id: RequestId,
    sequence: u64,
    events: mpsc::UnboundedSender<EventResult>,
    unread: Arc<AtomicUsize>,
    /// Aborted for running too far ahead of its reader: its output is dropped, and the route
    /// stays until END_REQUEST so the id is not reused before the backend lets go of it.
    overflowed: bool,
}

/// What the pool learns when a driver stops.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClosedReport {
    pub(crate) connection: ConnectionId,
    /// It died of a protocol error with several requests in flight: the backend does not
    /// multiplex.
    pub(crate) multiplexing_refused: bool,
}

/// What the pool tells a new driver.
pub(super) struct DriverSettings {
    pub(super) send_timeout: Duration,
    pub(super) max_request_buffer: usize,
    pub(super) on_closed: Box<dyn FnOnce(ClosedReport) + Send>,
}

pub(super) struct Driver {
    shared: Arc<Shared>,
    read: ReadHalf,
    write: WriteHalf,
    read_buffer: BytesMut,
    decoder: RecordDecoder,
    commands: mpsc::Receiver<Command>,
    /// Requests in flight; a handful at most, so a vector beats a map.
    routes: Vec<Route>,
    outgoing: VecDeque<Outgoing>,
    /// Bytes of `outgoing.front()` already written.
    written: usize,
    send_timeout: Duration,
    write_deadline: Option<tokio::time::Instant>,
    retire_deadline: Option<tokio::time::Instant>,
    /// Close as soon as everything queued has been written (after an abort).
    close_when_flushed: bool,
    /// When the last END_REQUEST arrived: a close right after it is a worker recycling.
    last_end: Option<std::time::Instant>,
}

impl Driver {
    /// Starts the driver of a freshly connected socket; `on_closed` runs once it has stopped.
    pub(super) fn spawn(
        shared: Arc<Shared>,
        read: ReadHalf,
        write: WriteHalf,
        settings: DriverSettings,
    ) -> mpsc::Sender<Command> {
        let (commands, command_receiver) = mpsc::channel(MAX_QUEUED_COMMANDS);
        let driver = Driver {
            shared,
            read,
            write,
            read_buffer: BytesMut::with_capacity(READ_CHUNK),
            decoder: RecordDecoder,
            commands: command_receiver,
            routes: Vec::new(),
            outgoing: VecDeque::new(),
            written: 0,
            send_timeout: settings.send_timeout,
            write_deadline: None,
            retire_deadline: None,
            close_when_flushed: false,
            last_end: None,
        };
        let on_closed = settings.on_closed;
        tokio::spawn(driver.run(on_closed));
        commands
    }

    /// Drives the socket until it ends, then tells the pool (`on_closed`) before the requests in
    /// flight learn why: a request that retries finds the pool already knowing.
    async fn run(mut self, on_closed: Box<dyn FnOnce(ClosedReport) + Send>) {
        let mut failure = self.drive().await;
        self.shared.closed.store(true, Ordering::Release);
        self.shared.close.cancel();
        if !matches!(failure, ConnectionFailure::ClosedByGateway) || !self.routes.is_empty() {
            tracing::debug!(
                connection = self.shared.id,
                backend = %self.shared.address,
                in_flight = self.routes.len(),
                "backend connection closed: {failure}"
            );
        }
        let multiplexing_refused = self.routes.len() > 1
            && matches!(
                failure,
                ConnectionFailure::Protocol(_) | ConnectionFailure::Unexpected { .. }
            );
        if multiplexing_refused {
            failure = ConnectionFailure::MultiplexingRefused(failure.to_string());
        }
        on_closed(ClosedReport {
            connection: self.shared.id,
            multiplexing_refused,
        });
        for route in self.routes.drain(..) {
            let _ = route.events.send(Err(failure.clone()));
        }
    }

    async fn drive(&mut self) -> ConnectionFailure {
        loop {
            let want_write = !self.outgoing.is_empty();
            if self.close_when_flushed && !want_write {
                return ConnectionFailure::ClosedByGateway;
            }
            if want_write && self.write_deadline.is_none() {
                self.write_deadline = Some(tokio::time::Instant::now() + self.send_timeout);
            }
            let take_commands =
                self.retire_deadline.is_none() && self.outgoing.len() < MAX_QUEUED_COMMANDS;
            if self.read_buffer.capacity() - self.read_buffer.len() < READ_CHUNK / 4 {
                self.read_buffer.reserve(READ_CHUNK);
            }
            let read_paused = self.reader_far_behind();
            let far_future = tokio::time::Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                biased;
                _ = self.shared.close.cancelled() => return ConnectionFailure::ClosedByGateway,
                result = write_some(&mut self.write, &self.outgoing, self.written), if want_write => {
                    match result {
                        Ok(0) => return std::io::Error::from(std::io::ErrorKind::WriteZero).into(),
                        Ok(count) => self.advance(count),
                        Err(error) => return error.into(),
                    }
                }
                () = self.shared.reader_caught_up.notified(), if read_paused => {}
                result = self.read.read_buf(&mut self.read_buffer), if !read_paused => match result {
                    Ok(0) => {
                        if self.routes.is_empty()
                            && self
                                .last_end
                                .is_some_and(|at| at.elapsed() < CLOSE_RIGHT_AFTER_END)
                        {
                            self.shared
                                .closed_right_after_end
                                .store(true, Ordering::Release);
                        }
                        return ConnectionFailure::ClosedByBackend;
                    }
                    Ok(_) => {
                        if let Err(failure) = self.route_records() {
                            return failure;
                        }
                        if !self.routes.is_empty() {
                            // More is coming: do not let the backend wait for our ACK.
                            self.read.acknowledge_now();
                        }
                    }
                    Err(error) => return error.into(),
                },
                command = self.commands.recv(), if take_commands => match command {
                    Some(command) => self.accept(command),
                    None => return ConnectionFailure::ClosedByGateway,
                },
                _ = tokio::time::sleep_until(self.write_deadline.unwrap_or(far_future)), if want_write => {
                    return ConnectionFailure::SendTimeout(self.send_timeout);
                }
                _ = tokio::time::sleep_until(self.retire_deadline.unwrap_or(far_future)), if self.retire_deadline.is_some() => {
                    return ConnectionFailure::ClosedByGateway;
                }
            }
        }
    }

    fn accept(&mut self, command: Command) {
        match command {
            Command::Begin {
                request,
                events,
                unread,
                payload,
            } => {
                self.routes.push(Route {
                    request_id: request.id,
                    sequence: request.sequence,
                    events,
                    unread,
                    overflowed: false,
                });
                self.outgoing.extend(payload);
            }
            Command::Write(payload) => self.outgoing.extend(payload),
            Command::Retire => {
                self.retire_deadline = Some(tokio::time::Instant::now() + RETIRE_GRACE);
            }
            Command::Abort { request, close } => {
                // Only while that very request is in flight: once it ended, its id may belong
                // to a newer request already.
                let in_flight = self.routes.iter().any(|route| {
                    route.request_id == request.id && route.sequence == request.sequence
                });
                if in_flight {
                    self.queue_abort(request.id);
                }
                self.close_when_flushed |= close;
            }
        }
    }

    /// A request alone on this connection whose reader fell `max_request_buffer` behind: stop
    /// reading until it catches up, so the backend waits (TCP flow control) instead of memory
    /// filling up. A shared connection never pauses; see `route`.
    fn reader_far_behind(&self) -> bool {
        !self.shared.multiplexed.load(Ordering::Acquire)
            && self
                .routes
                .iter()
                .any(|route| route.unread.load(Ordering::Acquire) > self.shared.max_request_buffer)
    }

    fn queue_abort(&mut self, request_id: RequestId) {
        let header = record_header(RecordType::AbortRequest, request_id, 0);
        self.outgoing
            .push_back(Outgoing::Block(Bytes::copy_from_slice(&header)));
    }

    fn advance(&mut self, mut count: usize) {
        self.write_deadline = None;
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

    fn route_records(&mut self) -> Result<(), ConnectionFailure> {
        while let Some(record) = self
            .decoder
            .decode(&mut self.read_buffer)
            .map_err(ConnectionFailure::Protocol)?
        {
            self.route(record)?;
        }
        Ok(())
    }

    fn route(&mut self, record: Record) -> Result<(), ConnectionFailure> {
        let position = self
            .routes
            .iter()
            .position(|route| route.request_id == record.request_id);
        let Some(position) = position else {
            // FastCGI 1.0 §3.3 says to ignore records for inactive ids; but with nothing in
            // flight the backend has no business talking, and a parked connection that does
            // is not one to hand out.
            if self.routes.is_empty() {
                return Err(unexpected(&record));
            }
            return Ok(());
        };
        let event = match record.body {
            RecordBody::Stdout(data) => ResponseEvent::Stdout(data),
            RecordBody::Stderr(data) => ResponseEvent::Stderr(data),
            RecordBody::EndRequest(end) => {
                self.last_end = Some(std::time::Instant::now());
                let route = self.routes.swap_remove(position);
                lock_ids(&self.shared).release(record.request_id);
                let _ = route.events.send(Ok(ResponseEvent::End(end)));
                return Ok(());
            }
            _ => return Err(unexpected(&record)),
        };
        let route = &mut self.routes[position];
        if route.overflowed {
            return Ok(());
        }
        let length = match &event {
            ResponseEvent::Stdout(data) | ResponseEvent::Stderr(data) => data.len(),
            ResponseEvent::End(_) => 0,
        };
        let unread = route.unread.fetch_add(length, Ordering::AcqRel) + length;
        let limit = self.shared.max_request_buffer;
        if unread > limit && self.shared.multiplexed.load(Ordering::Acquire) {
            // Never stop reading a shared connection for one slow reader: give up on its
            // request alone (FastCGI has no flow control to ask the backend to wait).
            route.overflowed = true;
            let _ = route
                .events
                .send(Err(ConnectionFailure::ResponseBufferExceeded { limit }));
            let request_id = route.request_id;
            self.queue_abort(request_id);
            return Ok(());
        }
        // A receiver that is gone belongs to a request the gateway gave up on (aborted, the
        // route kept until END_REQUEST): the data has nowhere to go.
        let _ = route.events.send(Ok(event));
        Ok(())
    }
}

fn unexpected(record: &Record) -> ConnectionFailure {
    ConnectionFailure::Unexpected {
        record_type: record.record_type().as_u8(),
        request_id: record.request_id.0,
    }
}

async fn write_some(
    write: &mut WriteHalf,
    outgoing: &VecDeque<Outgoing>,
    written: usize,
) -> std::io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
    let mut filled = 0;
    for (index, item) in outgoing.iter().enumerate() {
        if filled + 3 > MAX_IO_SLICES {
            break;
        }
        let skip = if index == 0 { written } else { 0 };
        filled += item.io_slices(skip, &mut slices[filled..]);
    }
    write.write_vectored(&slices[..filled]).await
}
