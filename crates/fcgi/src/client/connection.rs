//! One client connection to a FastCGI backend.
//!
//! A driver task owns the socket (STYLE: one task per socket, handles talk to it through
//! channels). It writes what request handles queue, with vectored writes straight from the
//! frames' shared buffers, and it reads every record the backend sends and routes it by request
//! id to that request's event channel. Because the driver reads all the time, a connection parked
//! idle in the pool notices at once when the backend closes it or sends something unexpected,
//! and reports that through the `on_closed` callback the pool gave it: a dead connection is not
//! handed out. The pool decides which requests share a connection; this module only keeps the
//! ids apart, so several requests in flight on one connection need no change here.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::error::{ClientError, ConnectionFailure};
use super::request_ids::RequestIds;
use crate::net::{self, Address, ReadHalf, WriteHalf};
use crate::protocol::{
    BeginRequest, EndRequest, Frame, ParamsWriter, ProtocolStatus, Record, RecordBody,
    RecordDecoder, RecordHeader, RecordType, RequestId, Role, HEADER_LEN, MAX_RECORD_CONTENT,
};

/// Identifies a connection within its pool, for logs and the pool's bookkeeping.
pub type ConnectionId = u64;

/// Requests queued for writing beyond this make handles wait: a large upload cannot fill memory.
const MAX_QUEUED_COMMANDS: usize = 16;
/// How much the driver asks the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;
/// A retired connection waits this long for the backend to close first, so the backend side,
/// not the gateway's ephemeral ports, keeps the TIME_WAIT entry.
const RETIRE_GRACE: Duration = Duration::from_secs(1);
/// At most this many buffers go into one vectored write.
const MAX_IO_SLICES: usize = 64;

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

/// The request body to send as FCGI_STDIN.
pub enum RequestBody {
    /// No body: only the empty record that ends the stream.
    Empty,
    /// A body held in memory; sent without copying.
    Memory(Bytes),
    /// A body read from somewhere else (a temp file), `length` bytes long.
    Reader {
        /// Where to read it.
        reader: Box<dyn AsyncRead + Send + Unpin>,
        /// Exactly how many bytes it holds (CONTENT_LENGTH must match, or php-fpm hangs).
        length: u64,
    },
}

type EventResult = Result<ResponseEvent, ConnectionFailure>;

/// Bytes queued for the socket: a pre-encoded block or one record over a shared buffer.
enum Outgoing {
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

enum Command {
    Begin {
        request_id: RequestId,
        events: mpsc::UnboundedSender<EventResult>,
        payload: Vec<Outgoing>,
    },
    Write(Vec<Outgoing>),
    /// No more requests: wait for the backend to close (bounded), then drop the socket.
    Retire,
    /// The caller gave up on a request: send FCGI_ABORT_REQUEST (FastCGI 1.0 §5.4), and with
    /// `close` drop the connection once that record is out.
    Abort {
        request_id: RequestId,
        close: bool,
    },
}

/// State shared by the handle and the driver.
struct Shared {
    id: ConnectionId,
    address: Address,
    opened_at: Instant,
    closed: AtomicBool,
    requests_started: AtomicU64,
    close: CancellationToken,
    ids: Mutex<RequestIds>,
}

/// A handle on one open connection. The pool owns it while idle, a lease while busy.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

impl Connection {
    /// Connects to `address` and starts the driver. `on_closed` runs once, from the driver,
    /// when the connection is gone for any reason.
    pub(crate) async fn open(
        address: &Address,
        id: ConnectionId,
        send_timeout: Duration,
        socket_keepalive: bool,
        on_closed: Box<dyn FnOnce(ConnectionId) + Send>,
    ) -> std::io::Result<Connection> {
        let stream = net::connect(address).await?;
        if socket_keepalive {
            stream.set_keepalive()?;
        }
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            id,
            address: address.clone(),
            opened_at: Instant::now(),
            closed: AtomicBool::new(false),
            requests_started: AtomicU64::new(0),
            close: CancellationToken::new(),
            ids: Mutex::new(RequestIds::default()),
        });
        let (commands, command_receiver) = mpsc::channel(MAX_QUEUED_COMMANDS);
        let driver = Driver {
            shared: Arc::clone(&shared),
            read,
            write,
            read_buffer: BytesMut::with_capacity(READ_CHUNK),
            decoder: RecordDecoder,
            commands: command_receiver,
            routes: Vec::new(),
            outgoing: VecDeque::new(),
            written: 0,
            send_timeout,
            write_deadline: None,
            retire_deadline: None,
            close_when_flushed: false,
        };
        tokio::spawn(async move {
            let shared = Arc::clone(&driver.shared);
            driver.run().await;
            on_closed(shared.id);
        });
        Ok(Connection { shared, commands })
    }

    /// This connection's id within its pool.
    pub(crate) fn id(&self) -> ConnectionId {
        self.shared.id
    }

    /// True once the driver has stopped: the connection can carry nothing more.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Requests started on this connection so far.
    pub(crate) fn requests_started(&self) -> u64 {
        self.shared.requests_started.load(Ordering::Relaxed)
    }

    /// Time since the connection was established.
    pub(crate) fn age(&self) -> Duration {
        self.shared.opened_at.elapsed()
    }

    /// Closes at once; requests in flight fail.
    pub(crate) fn close(&self) {
        self.shared.close.cancel();
    }

    /// Stops taking requests and lets the backend close first (bounded), which leaves the
    /// TIME_WAIT entry on the backend's side. Used after a request sent without KEEP_CONN.
    pub(crate) fn retire(&self) {
        if self.commands.try_send(Command::Retire).is_err() {
            self.close();
        }
    }

    /// Sends FCGI_ABORT_REQUEST for `request_id`; with `close`, the connection closes once it is
    /// written. Falls back to closing at once when the driver's queue is full.
    pub(crate) fn abort(&self, request_id: RequestId, close: bool) {
        if self
            .commands
            .try_send(Command::Abort { request_id, close })
            .is_err()
        {
            self.close();
        }
    }

    /// Sends BEGIN_REQUEST, the params that `write_params` produces and the body, and returns
    /// the stream of what the backend answers. `keep_conn` is the FCGI_KEEP_CONN flag: without
    /// it the backend closes the connection after this request (FastCGI 1.0 §5.1).
    pub(crate) async fn send_request<F>(
        &self,
        keep_conn: bool,
        write_params: F,
        body: RequestBody,
        read_timeout: Duration,
    ) -> Result<Events, ClientError>
    where
        F: FnOnce(&mut dyn FnMut(&[u8], &[u8])),
    {
        let request_id = self
            .lock_ids()
            .allocate()
            .ok_or_else(|| self.failed(ConnectionFailure::ClosedByGateway))?;
        self.shared.requests_started.fetch_add(1, Ordering::Relaxed);

        let mut head = BytesMut::with_capacity(1024);
        let begin = BeginRequest {
            role: Role::Responder,
            keep_conn,
        };
        head.extend_from_slice(&record_header(RecordType::BeginRequest, request_id, 8));
        head.extend_from_slice(&begin.encode());
        {
            let mut params = ParamsWriter::new(&mut head, RecordType::Params, request_id);
            write_params(&mut |name, value| params.push(name, value));
            params.finish();
        }
        let mut payload = vec![Outgoing::Block(head.freeze())];
        let mut streamed_body = None;
        match body {
            RequestBody::Empty => {}
            RequestBody::Memory(bytes) => payload.extend(
                crate::protocol::stream_frames(RecordType::Stdin, request_id, bytes)
                    .map(Outgoing::Frame),
            ),
            RequestBody::Reader { reader, length } => streamed_body = Some((reader, length)),
        }
        let end_of_stdin = Outgoing::Frame(Frame::end_of_stream(RecordType::Stdin, request_id));
        if streamed_body.is_none() {
            payload.push(end_of_stdin);
        }

        let (events, event_receiver) = mpsc::unbounded_channel();
        self.command(Command::Begin {
            request_id,
            events,
            payload,
        })
        .await?;
        if let Some((reader, length)) = streamed_body {
            self.stream_body(request_id, reader, length).await?;
            self.command(Command::Write(vec![Outgoing::Frame(Frame::end_of_stream(
                RecordType::Stdin,
                request_id,
            ))]))
            .await?;
        }
        Ok(Events {
            request_id,
            shared: Arc::clone(&self.shared),
            events: event_receiver,
            read_timeout,
            observer: None,
            first_response: None,
            silence_reported: false,
        })
    }

    async fn stream_body(
        &self,
        request_id: RequestId,
        mut reader: Box<dyn AsyncRead + Send + Unpin>,
        length: u64,
    ) -> Result<(), ClientError> {
        let mut remaining = length;
        while remaining > 0 {
            let chunk_len = remaining.min(MAX_RECORD_CONTENT as u64) as usize;
            let mut chunk = BytesMut::zeroed(chunk_len);
            reader
                .read_exact(&mut chunk)
                .await
                .map_err(ClientError::RequestBody)?;
            remaining -= chunk_len as u64;
            let frame = Frame::new(RecordType::Stdin, request_id, chunk.freeze());
            self.command(Command::Write(vec![Outgoing::Frame(frame)]))
                .await?;
        }
        Ok(())
    }

    async fn command(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| self.failed(ConnectionFailure::ClosedByBackend))
    }

    fn failed(&self, failure: ConnectionFailure) -> ClientError {
        ClientError::Connection {
            address: self.shared.address.clone(),
            failure,
        }
    }

    fn lock_ids(&self) -> std::sync::MutexGuard<'_, RequestIds> {
        lock_ids(&self.shared)
    }
}

fn lock_ids(shared: &Shared) -> std::sync::MutexGuard<'_, RequestIds> {
    // The allocator holds no invariant a panicking holder could break half-way.
    shared
        .ids
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn record_header(record_type: RecordType, request_id: RequestId, length: u16) -> [u8; HEADER_LEN] {
    RecordHeader {
        record_type,
        request_id,
        content_length: length,
        padding_length: 0,
    }
    .encode()
}

/// Told what a request's response shows about the backend's capacity; the pool implements it.
pub(crate) trait ResponseObserver: Send + Sync {
    /// A fresh connection's first request got its first answer after `waited`.
    fn first_response(&self, connection: ConnectionId, waited: Duration);
    /// A fresh connection's first request is still unanswered after its bound; `completed_before`
    /// is the pool's count of finished requests when it was sent.
    fn still_unanswered(&self, connection: ConnectionId, completed_before: u64);
    /// The backend refused a request with FCGI_OVERLOADED.
    fn overloaded(&self, connection: ConnectionId);
}

/// Watches the first request on a fresh connection: an answer that does not start within
/// `bound` may mean the connection sits in the backend's listen backlog, unserved.
pub(crate) struct FirstResponseWatch {
    pub(crate) sent_at: tokio::time::Instant,
    pub(crate) bound: Duration,
    pub(crate) completed_before: u64,
}

/// What the backend answers to one request, event by event; the pool-aware wrapper is
/// [`super::ResponseStream`].
pub(crate) struct Events {
    pub(crate) request_id: RequestId,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<EventResult>,
    read_timeout: Duration,
    observer: Option<Arc<dyn ResponseObserver>>,
    first_response: Option<FirstResponseWatch>,
    silence_reported: bool,
}

impl Events {
    pub(crate) fn observe(
        &mut self,
        observer: Arc<dyn ResponseObserver>,
        first_response: Option<FirstResponseWatch>,
    ) {
        self.observer = Some(observer);
        self.first_response = first_response;
    }

    /// The next event, or why none will come. After [`ResponseEvent::End`] do not call again.
    pub(crate) async fn next_event(&mut self) -> Result<ResponseEvent, ClientError> {
        let deadline = tokio::time::Instant::now() + self.read_timeout;
        let received = loop {
            let watch_deadline = match (&self.first_response, self.silence_reported) {
                (Some(watch), false) => Some(watch.sent_at + watch.bound),
                _ => None,
            };
            match watch_deadline {
                Some(at) if at < deadline => {
                    match tokio::time::timeout_at(at, self.events.recv()).await {
                        Ok(received) => break Some(received),
                        Err(_) => self.report_silence(),
                    }
                }
                _ => {
                    break tokio::time::timeout_at(deadline, self.events.recv())
                        .await
                        .ok()
                }
            }
        };
        match received {
            Some(Some(Ok(event))) => {
                self.noticed(&event);
                Ok(event)
            }
            Some(Some(Err(failure))) => Err(self.failed(failure)),
            Some(None) => Err(self.failed(ConnectionFailure::ClosedByBackend)),
            None => Err(ClientError::ReadTimeout {
                address: self.shared.address.clone(),
                timeout: self.read_timeout,
            }),
        }
    }

    /// The next event if one has already arrived; `None` when the backend has not sent more
    /// yet. Lets the caller answer small, finished responses without waiting or spooling.
    pub(crate) fn try_next_event(&mut self) -> Option<Result<ResponseEvent, ClientError>> {
        let failure = match self.events.try_recv() {
            Ok(Ok(event)) => {
                self.noticed(&event);
                return Some(Ok(event));
            }
            Err(mpsc::error::TryRecvError::Empty) => return None,
            Ok(Err(failure)) => failure,
            Err(mpsc::error::TryRecvError::Disconnected) => ConnectionFailure::ClosedByBackend,
        };
        Some(Err(self.failed(failure)))
    }

    fn failed(&self, failure: ConnectionFailure) -> ClientError {
        ClientError::Connection {
            address: self.shared.address.clone(),
            failure,
        }
    }

    fn report_silence(&mut self) {
        self.silence_reported = true;
        if let (Some(observer), Some(watch)) = (&self.observer, &self.first_response) {
            observer.still_unanswered(self.shared.id, watch.completed_before);
        }
    }

    fn noticed(&mut self, event: &ResponseEvent) {
        let Some(observer) = &self.observer else {
            return;
        };
        if let Some(watch) = self.first_response.take() {
            observer.first_response(self.shared.id, watch.sent_at.elapsed());
        }
        if let ResponseEvent::End(end) = event {
            if end.protocol_status == ProtocolStatus::Overloaded {
                observer.overloaded(self.shared.id);
            }
        }
    }
}

struct Route {
    request_id: RequestId,
    events: mpsc::UnboundedSender<EventResult>,
}

struct Driver {
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
}

impl Driver {
    async fn run(mut self) {
        let failure = self.drive().await;
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
                result = self.read.read_buf(&mut self.read_buffer) => match result {
                    Ok(0) => return ConnectionFailure::ClosedByBackend,
                    Ok(_) => {
                        if let Err(failure) = self.route_records() {
                            return failure;
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
                request_id,
                events,
                payload,
            } => {
                self.routes.push(Route { request_id, events });
                self.outgoing.extend(payload);
            }
            Command::Write(payload) => self.outgoing.extend(payload),
            Command::Retire => {
                self.retire_deadline = Some(tokio::time::Instant::now() + RETIRE_GRACE);
            }
            Command::Abort { request_id, close } => {
                let header = record_header(RecordType::AbortRequest, request_id, 0);
                self.outgoing
                    .push_back(Outgoing::Block(Bytes::copy_from_slice(&header)));
                self.close_when_flushed |= close;
            }
        }
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
                let route = self.routes.swap_remove(position);
                lock_ids(&self.shared).release(record.request_id);
                let _ = route.events.send(Ok(ResponseEvent::End(end)));
                return Ok(());
            }
            _ => return Err(unexpected(&record)),
        };
        // A receiver that is gone belongs to a request the gateway gave up on; its lease
        // closes the connection, so the data has nowhere to go.
        let _ = self.routes[position].events.send(Ok(event));
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
