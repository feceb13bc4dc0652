//! One client connection to a FastCGI backend: the handle requests use, over a pure state and
//! an I/O shell.
//!
//! - `state.rs`: the protocol state without I/O — request ids, routes by id, the write queue,
//!   the decoder, and the rules (idle records, overflow, abort, retire). Tested alone.
//! - `driver.rs`: the one task that owns the socket (STYLE: one task per socket, handles talk to
//!   it through a channel) and feeds the state; it reads all the time, so a connection parked
//!   idle in the pool notices at once when the backend closes it or sends something unexpected,
//!   and reports that through the pool's `on_closed` callback: a dead connection is not handed
//!   out.
//! - `events.rs`: the receiving end of one request; `event_queue.rs`: the queue its events
//!   come through, from the state's route to the reader; `request.rs`: a request as records;
//!   `shared.rs`: the few atomics handle, driver and readers share; `request_ids.rs`: the
//!   state's id allocator.
//!
//! Here: the handle. It encodes a request (`request.rs`) on the caller's task and queues it as
//! commands; a body longer than one record goes to the driver record by record, so the requests
//! sharing a connection take turns on the socket instead of one upload holding it for its whole
//! length. The pool decides which requests share a connection; the state keeps their ids apart.
//! Imports run one way — handle → driver → state, handle → events → state, handle → request →
//! state, state and events → event_queue — and no file here imports the handle.

pub(super) mod driver;
mod event_queue;
pub(super) mod events;
mod request;
mod request_ids;
mod shared;
mod state;
#[cfg(test)]
mod state_tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use self::driver::{Driver, DriverSettings};
use self::events::Events;
use self::request::{encode_head, MemoryBody};
use self::shared::Shared;
use self::state::{Command, Stdin};
use super::error::{ClientError, ConnectionFailure, ErrorKind};
use crate::net::{self, Address};
use crate::protocol::MAX_RECORD_CONTENT;

// What the pool and the lease import from `super::connection`; the driver's settings and a
// request's events keep their paths `super::driver` and `super::events` (`client/mod.rs`).
pub use self::shared::ConnectionId;
pub use self::state::ResponseEvent;
pub(crate) use self::state::{HandshakeAnswer, RequestKey};

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
    pub(crate) async fn open(
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

    /// Starts the handshake on a new connection (see `state::Command::Handshake`); the answer
    /// comes through the receiver, which closes without one if the connection ends first.
    pub(crate) async fn handshake(
        &self,
    ) -> Result<oneshot::Receiver<HandshakeAnswer>, ClientError> {
        let (answer, receiver) = oneshot::channel();
        self.command(Command::Handshake { answer }).await?;
        Ok(receiver)
    }

    /// The backend answered on this connection before its first request: it is not waiting in
    /// the listen queue, so that request needs no watch for saturation.
    pub(crate) fn confirm_worker(&self) {
        self.shared.worker_confirmed.store(true, Ordering::Release);
    }

    pub(crate) fn worker_confirmed(&self) -> bool {
        self.shared.worker_confirmed.load(Ordering::Acquire)
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

    /// Requests the backend finished on this connection; known once it has closed.
    pub(crate) fn requests_ended(&self) -> u64 {
        self.shared.requests_ended.load(Ordering::Acquire)
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

    /// Sends FCGI_ABORT_REQUEST for `request`, after whatever this connection's requests
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
    /// it the backend closes the connection after this request (FastCGI 1.0 §5.1). `ask_first`:
    /// FCGI_GET_VALUES goes ahead of it, so that a connection that dies before answering proves
    /// the request unread (`state::Command::Begin`).
    pub(crate) async fn send_request<F>(
        &self,
        keep_conn: bool,
        ask_first: bool,
        write_params: F,
        body: RequestBody,
        read_timeout: Duration,
    ) -> Result<Events, ClientError>
    where
        F: FnOnce(&mut dyn FnMut(&[u8], &[u8])),
    {
        let request = RequestKey {
            sequence: self.shared.requests_started.fetch_add(1, Ordering::Relaxed),
        };
        let head = encode_head(keep_conn, write_params);
        let (mut memory_body, streamed_body) = match body {
            RequestBody::Empty => (Some(MemoryBody::new(Bytes::new())), None),
            RequestBody::Memory(bytes) => (Some(MemoryBody::new(bytes)), None),
            RequestBody::Reader { reader, length } => (None, Some((reader, length))),
        };
        // The head goes with the first body record (and the end of STDIN, if that record is the
        // last), in one command: a small request is one write.
        let stdin = memory_body
            .as_mut()
            .and_then(Iterator::next)
            .unwrap_or_default();
        let (events, event_receiver) = event_queue::channel();
        // A driver already gone never saw the request: the application did not either.
        self.commands
            .send(Command::Begin {
                request,
                events,
                head,
                stdin,
                ask_first,
            })
            .await
            .map_err(|_| {
                self.failed(ConnectionFailure::NotSent(Box::new(
                    ConnectionFailure::ClosedByBackend,
                )))
            })?;
        if let Some((reader, length)) = streamed_body {
            if let Err(error) = self.stream_body(request, reader, length).await {
                // Half a request is on the wire; on a shared connection only it must go.
                self.abort(request, false);
                return Err(error);
            }
        } else {
            for stdin in memory_body.into_iter().flatten() {
                self.command(Command::Write { request, stdin }).await?;
            }
        }
        Ok(Events::new(
            request,
            Arc::clone(&self.shared),
            event_receiver,
            read_timeout,
        ))
    }

    /// Sends `length` bytes of `reader` as STDIN records, the end of the stream in one write with
    /// the last of them.
    async fn stream_body(
        &self,
        request: RequestKey,
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
                .map_err(|error| ClientError::from(ErrorKind::RequestBody(error)))?;
            remaining -= chunk_len as u64;
            let stdin = Stdin {
                content: chunk.freeze(),
                end_of_stream: remaining == 0,
            };
            self.command(Command::Write { request, stdin }).await?;
        }
        if length == 0 {
            // A declared length of zero: only the end of the stream.
            let stdin = Stdin {
                content: Bytes::new(),
                end_of_stream: true,
            };
            self.command(Command::Write { request, stdin }).await?;
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
        ClientError::from(ErrorKind::Connection {
            address: self.shared.address.clone(),
            failure,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::IoSlice;

    use super::state::ConnectionState;
    use super::*;
    use crate::protocol::RecordType;

    /// A handle with no driver: what it queues lands in the returned receiver.
    fn detached() -> (Connection, mpsc::Receiver<Command>) {
        let (commands, receiver) = mpsc::channel(4);
        let address = Address::Tcp("127.0.0.1:9".to_owned());
        let shared = Shared::new(1, &address, 1 << 20);
        (Connection { shared, commands }, receiver)
    }

    /// Each command's STDIN records as the connection state queues them for one write, as
    /// (record type, content length) per record; a Begin counts as one write.
    async fn queued_writes(body: RequestBody) -> Vec<Vec<(u8, usize)>> {
        let (connection, mut receiver) = detached();
        let sender = tokio::spawn(async move {
            connection
                .send_request(true, false, |_| {}, body, Duration::from_secs(1))
                .await
                .map(|_| ())
        });
        let mut state = ConnectionState::new(1 << 20);
        let mut writes = Vec::new();
        while let Some(command) = receiver.recv().await {
            if !matches!(command, Command::Begin { .. } | Command::Write { .. }) {
                continue;
            }
            state.on_command(command);
            let bytes = drain(&mut state);
            let mut records = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let length = usize::from(u16::from_be_bytes([bytes[at + 4], bytes[at + 5]]));
                if bytes[at + 1] == STDIN {
                    records.push((STDIN, length));
                }
                at += 8 + length + usize::from(bytes[at + 6]);
            }
            writes.push(records);
        }
        assert!(matches!(sender.await, Ok(Ok(()))));
        writes
    }

    fn drain(state: &mut ConnectionState) -> Vec<u8> {
        let mut bytes = Vec::new();
        while state.wants_write() {
            let mut slices = [IoSlice::new(&[]); 64];
            let filled = state.io_slices(&mut slices);
            let before = bytes.len();
            for slice in &slices[..filled] {
                bytes.extend_from_slice(slice);
            }
            state.wrote(bytes.len() - before);
        }
        bytes
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
