//! One client connection to a FastCGI backend: the handle requests use.
//!
//! A driver task (`driver.rs`) owns the socket (STYLE: one task per socket, handles talk to it
//! through channels): it writes what this handle queues and routes every record the backend sends
//! by request id to that request's [`Events`] (`events.rs`). Because the driver reads all the
//! time, a connection parked idle in the pool notices at once when the backend closes it or sends
//! something unexpected, and reports that through the `on_closed` callback the pool gave it: a
//! dead connection is not handed out. Here: encoding a request (BEGIN_REQUEST, PARAMS, STDIN)
//! into frames, request id allocation, abort and retirement. The pool decides which requests
//! share a connection; this module only keeps the ids apart. A body longer than one record goes
//! to the driver record by record, so the requests sharing a connection take turns on the socket
//! instead of one upload holding it for its whole length.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::driver::{Command, Driver, DriverSettings, Outgoing};
use super::error::{ClientError, ConnectionFailure};
use super::events::Events;
use super::request_ids::RequestIds;
use crate::net::{self, Address};
use crate::protocol::{
    BeginRequest, EndRequest, Frame, ParamsWriter, RecordHeader, RecordType, RequestId, Role,
    HEADER_LEN, MAX_RECORD_CONTENT,
};

/// Identifies a connection within its pool, for logs and the pool's bookkeeping.
pub type ConnectionId = u64;

/// One request on one connection: its id, and which use of that id it is. An id is reused once
/// its request has ended; an abort issued late must not hit the request that reused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestKey {
    pub(crate) id: RequestId,
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

pub(super) type EventResult = Result<ResponseEvent, ConnectionFailure>;

/// State shared by the handle and the driver.
pub(super) struct Shared {
    pub(super) id: ConnectionId,
    pub(super) address: Address,
    pub(super) opened_at: Instant,
    pub(super) closed: AtomicBool,
    /// Requests started so far; also each request's [`RequestKey::sequence`].
    pub(super) requests_started: AtomicU64,
    pub(super) close: CancellationToken,
    pub(super) ids: Mutex<RequestIds>,
    /// The backend closed the connection right after an END_REQUEST (see `driver.rs`).
    pub(super) closed_right_after_end: AtomicBool,
    /// Requests share this connection: a reader that falls behind costs its request, since
    /// pausing the socket would stall the others. Alone on it, a request pauses the socket.
    pub(super) multiplexed: AtomicBool,
    /// Unread response bytes one request may have before that.
    pub(super) max_request_buffer: usize,
    /// A reader took its request's unread bytes back under the bound: resume reading.
    pub(super) reader_caught_up: tokio::sync::Notify,
}

impl Shared {
    fn new(id: ConnectionId, address: &Address, max_request_buffer: usize) -> Arc<Shared> {
        Arc::new(Shared {
            id,
            address: address.clone(),
            opened_at: Instant::now(),
            closed: AtomicBool::new(false),
            requests_started: AtomicU64::new(0),
            close: CancellationToken::new(),
            ids: Mutex::new(RequestIds::default()),
            closed_right_after_end: AtomicBool::new(false),
            multiplexed: AtomicBool::new(false),
            max_request_buffer,
            reader_caught_up: tokio::sync::Notify::new(),
        })
    }
}

/// A handle on one open connection. The pool owns it while idle, a lease while busy; the
/// leases of a multiplexed connection hold clones.
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

impl Connection {
    /// Connects to `address` and starts the driver. `settings.on_closed` runs once, from the
    /// driver, when the connection is gone for any reason.
    pub(super) async fn open(
        address: &Address,
        id: ConnectionId,
        socket_keepalive: bool,
        settings: DriverSettings,
    ) -> std::io::Result<Connection> {
        let stream = net::connect(address).await?;
        if socket_keepalive {
            stream.set_keepalive()?;
        }
        let (read, write) = stream.into_split();
        let shared = Shared::new(id, address, settings.max_request_buffer);
        let commands = Driver::spawn(Arc::clone(&shared), read, write, settings);
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

    /// The backend closed this connection right after an END_REQUEST, as a worker that exits
    /// after its last request does.
    pub(crate) fn closed_right_after_end(&self) -> bool {
        self.shared.closed_right_after_end.load(Ordering::Acquire)
    }

    /// Whether requests share this connection; the pool says so when it puts the connection in
    /// its shared list or takes it out.
    pub(crate) fn set_multiplexed(&self, multiplexed: bool) {
        self.shared
            .multiplexed
            .store(multiplexed, Ordering::Release);
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
        self.control(Command::Retire);
    }

    /// Sends FCGI_ABORT_REQUEST for `request_id`, after whatever this connection's requests
    /// queued before; with `close`, the connection closes once it is written.
    pub(crate) fn abort(&self, request: RequestKey, close: bool) {
        self.control(Command::Abort { request, close });
    }

    /// Queues a command that must not wait (it is issued from `Drop`). A full queue — many
    /// requests given up at once, on a shared connection — hands it to a task that waits its
    /// turn; closing the connection instead would cut every other request on it.
    fn control(&self, command: Command) {
        match self.commands.try_send(command) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        let commands = self.commands.clone();
                        runtime.spawn(async move {
                            let _ = commands.send(command).await;
                        });
                    }
                    Err(_) => self.close(),
                }
            }
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
        let request = RequestKey {
            id: request_id,
            sequence: self.shared.requests_started.fetch_add(1, Ordering::Relaxed),
        };

        // A browser request's params run to about 1.1 KiB: room for them without a regrowth.
        let mut head = BytesMut::with_capacity(2048);
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
        // Head, the first body record and the end of STDIN.
        let mut payload = Vec::with_capacity(3);
        payload.push(Outgoing::Block(head.freeze()));
        let mut later_records = Vec::new();
        let mut streamed_body = None;
        match body {
            RequestBody::Empty => {}
            RequestBody::Memory(bytes) => {
                let mut frames =
                    crate::protocol::stream_frames(RecordType::Stdin, request_id, bytes)
                        .map(Outgoing::Frame);
                payload.extend(frames.next());
                later_records.extend(frames);
            }
            RequestBody::Reader { reader, length } => streamed_body = Some((reader, length)),
        }
        // The end of STDIN always goes out in one write with the body's last record: an app
        // that has read CONTENT_LENGTH bytes answers at once, and libfcgi takes an empty STDIN
        // record arriving after its END_REQUEST for a protocol error and drops the connection.
        let end_of_stdin = || Outgoing::Frame(Frame::end_of_stream(RecordType::Stdin, request_id));
        if streamed_body.is_none() && later_records.is_empty() {
            payload.push(end_of_stdin());
        }

        let (events, event_receiver) = mpsc::unbounded_channel();
        let unread = Arc::new(AtomicUsize::new(0));
        self.command(Command::Begin {
            request,
            events,
            unread: Arc::clone(&unread),
            payload,
        })
        .await?;
        // One record per command: the channel interleaves them with other requests' records.
        let mut later_records = later_records.into_iter().peekable();
        while let Some(record) = later_records.next() {
            let mut write = vec![record];
            if later_records.peek().is_none() {
                write.push(end_of_stdin());
            }
            self.command(Command::Write(write)).await?;
        }
        if let Some((reader, length)) = streamed_body {
            let streamed = self
                .stream_body(request_id, reader, length, end_of_stdin())
                .await;
            if let Err(error) = streamed {
                // Half a request is on the wire; on a shared connection only it must go.
                self.abort(request, false);
                return Err(error);
            }
        }
        Ok(Events::new(
            request,
            Arc::clone(&self.shared),
            event_receiver,
            unread,
            read_timeout,
        ))
    }

    /// Sends `length` bytes of `reader` as STDIN records, `end_of_stdin` in one write with the
    /// last of them.
    async fn stream_body(
        &self,
        request_id: RequestId,
        mut reader: Box<dyn AsyncRead + Send + Unpin>,
        length: u64,
        end_of_stdin: Outgoing,
    ) -> Result<(), ClientError> {
        let mut remaining = length;
        let mut end_of_stdin = Some(end_of_stdin);
        while remaining > 0 {
            let chunk_len = remaining.min(MAX_RECORD_CONTENT as u64) as usize;
            let mut chunk = BytesMut::zeroed(chunk_len);
            reader
                .read_exact(&mut chunk)
                .await
                .map_err(ClientError::RequestBody)?;
            remaining -= chunk_len as u64;
            let frame = Frame::new(RecordType::Stdin, request_id, chunk.freeze());
            let mut write = vec![Outgoing::Frame(frame)];
            if remaining == 0 {
                write.extend(end_of_stdin.take());
            }
            self.command(Command::Write(write)).await?;
        }
        // A declared length of zero: only the end of the stream.
        if let Some(end_of_stdin) = end_of_stdin {
            self.command(Command::Write(vec![end_of_stdin])).await?;
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

pub(super) fn lock_ids(shared: &Shared) -> std::sync::MutexGuard<'_, RequestIds> {
    // The allocator holds no invariant a panicking holder could break half-way.
    shared
        .ids
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn record_header(
    record_type: RecordType,
    request_id: RequestId,
    length: u16,
) -> [u8; HEADER_LEN] {
    RecordHeader {
        record_type,
        request_id,
        content_length: length,
        padding_length: 0,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle with no driver: what it queues for the socket lands in the returned receiver.
    fn detached() -> (Connection, mpsc::Receiver<Command>) {
        let (commands, receiver) = mpsc::channel(4);
        let address = Address::Tcp("127.0.0.1:9".to_owned());
        let shared = Shared::new(1, &address, 1 << 20);
        (Connection { shared, commands }, receiver)
    }

    /// Each queued write, as (record type, content length) per record; a Begin counts as one
    /// write of its payload.
    async fn queued_writes(body: RequestBody) -> Vec<Vec<(u8, usize)>> {
        let (connection, mut receiver) = detached();
        let sender = tokio::spawn(async move {
            connection
                .send_request(true, |_| {}, body, Duration::from_secs(1))
                .await
                .map(|_| ())
        });
        let mut writes = Vec::new();
        while let Some(command) = receiver.recv().await {
            let outgoing = match command {
                Command::Begin { payload, .. } => payload,
                Command::Write(outgoing) => outgoing,
                Command::Retire | Command::Abort { .. } => continue,
            };
            writes.push(
                outgoing
                    .iter()
                    .filter_map(|outgoing| match outgoing {
                        Outgoing::Frame(frame) => {
                            let mut encoded = BytesMut::new();
                            frame.encode_into(&mut encoded);
                            Some((encoded[1], frame.content().len()))
                        }
                        Outgoing::Block(_) => None,
                    })
                    .collect(),
            );
        }
        assert!(matches!(sender.await, Ok(Ok(()))));
        writes
    }

    const STDIN: u8 = RecordType::Stdin.as_u8();

    #[tokio::test]
    async fn the_end_of_stdin_leaves_with_the_last_body_record() {
        let body = Bytes::from(vec![b'x'; MAX_RECORD_CONTENT * 2 + 10]);
        let writes = queued_writes(RequestBody::Memory(body)).await;
        assert_eq!(
            writes.last(),
            Some(&vec![(STDIN, 10), (STDIN, 0)]),
            "every write: {writes:?}"
        );

        let length = (MAX_RECORD_CONTENT + 3) as u64;
        let reader = Box::new(std::io::Cursor::new(vec![b'y'; length as usize]));
        let writes = queued_writes(RequestBody::Reader { reader, length }).await;
        assert_eq!(
            writes.last(),
            Some(&vec![(STDIN, 3), (STDIN, 0)]),
            "every write: {writes:?}"
        );
    }

    #[tokio::test]
    async fn a_small_body_goes_out_with_the_request_head() {
        let writes = queued_writes(RequestBody::Memory(Bytes::from_static(b"hello"))).await;
        assert_eq!(writes, vec![vec![(STDIN, 5), (STDIN, 0)]]);
        let writes = queued_writes(RequestBody::Empty).await;
        assert_eq!(writes, vec![vec![(STDIN, 0)]]);
    }
}
