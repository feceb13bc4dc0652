//! The task that owns one backend socket: the I/O shell around [`ConnectionState`]. It selects
//! over the socket, the handles' command channel, the close signal and two timers (send timeout,
//! retire grace), and hands whatever arrives to the state; what the state queues it writes with
//! vectored writes straight from the frames' shared buffers. Every protocol rule is the
//! state's; the timers and the socket are this file's.

use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::shared::{ConnectionId, Shared};
use super::state::{Command, ConnectionState, MAX_QUEUED_COMMANDS};
use crate::client::error::ConnectionFailure;
use crate::net::{ReadHalf, WriteHalf};

/// How much the driver asks the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;
/// A retired connection waits this long for the backend to close first, so the backend side,
/// not the gateway's ephemeral ports, keeps the TIME_WAIT entry.
const RETIRE_GRACE: Duration = Duration::from_secs(1);
/// At most this many buffers go into one vectored write.
const MAX_IO_SLICES: usize = 64;

/// What the pool learns when a driver stops.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClosedReport {
    pub(crate) connection: ConnectionId,
    /// It died of a protocol error with several requests in flight: the backend does not
    /// multiplex.
    pub(crate) multiplexing_refused: bool,
}

/// What the pool tells a new driver.
pub(crate) struct DriverSettings {
    pub(crate) send_timeout: Duration,
    pub(crate) max_request_buffer: usize,
    pub(crate) on_closed: Box<dyn FnOnce(ClosedReport) + Send>,
}

pub(super) struct Driver {
    shared: Arc<Shared>,
    read: ReadHalf,
    write: WriteHalf,
    read_buffer: BytesMut,
    commands: mpsc::Receiver<Command>,
    state: ConnectionState,
    send_timeout: Duration,
    write_deadline: Option<tokio::time::Instant>,
    retire_deadline: Option<tokio::time::Instant>,
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
            commands: command_receiver,
            state: ConnectionState::new(settings.max_request_buffer),
            send_timeout: settings.send_timeout,
            write_deadline: None,
            retire_deadline: None,
        };
        tokio::spawn(driver.run(settings.on_closed));
        commands
    }

    /// Drives the socket until it ends, then tells the pool (`on_closed`) before the requests in
    /// flight learn why: a request that retries finds the pool already knowing.
    async fn run(mut self, on_closed: Box<dyn FnOnce(ClosedReport) + Send>) {
        let failure = self.drive().await;
        // Before anyone hears of the close: the pool learns from it when the requests return.
        let closed_by_backend = matches!(
            failure,
            ConnectionFailure::ClosedByBackend | ConnectionFailure::Io(_)
        );
        if closed_by_backend && self.state.closed_right_after_end(std::time::Instant::now()) {
            self.shared
                .closed_right_after_end
                .store(true, Ordering::Release);
        }
        self.shared
            .requests_ended
            .store(self.state.requests_ended(), Ordering::Release);
        self.shared.closed.store(true, Ordering::Release);
        self.shared.close.cancel();
        let in_flight = self.state.in_flight();
        if !matches!(failure, ConnectionFailure::ClosedByGateway) || in_flight > 0 {
            tracing::debug!(
                connection = self.shared.id,
                backend = %self.shared.address,
                in_flight,
                "backend connection closed: {failure}"
            );
        }
        let ending = self.state.end(failure);
        on_closed(ClosedReport {
            connection: self.shared.id,
            multiplexing_refused: ending.multiplexing_refused,
        });
        self.state.fail_all(&ending.failure);
        // Requests still in the command queue never reached the state, let alone the socket:
        // typically one handed this connection just as the backend closed it (a worker
        // recycling right after its END_REQUEST). They may go again whatever their method.
        // `recv`, not `try_recv`: a handle that took its place in the queue before the close
        // but has not put its command there yet is still coming, and `recv` waits for it while
        // `try_recv` says "empty". The command then either landed in a queue nobody read (its
        // request waited out `read_timeout`) or was dropped with the receiver (its request,
        // told only "closed", counted as sent: a 502 for a POST). On a loaded machine that was
        // about one run in 30 of the recycling test in tests/backend.rs.
        self.commands.close();
        while let Some(command) = self.commands.recv().await {
            if let Command::Begin { events, .. } = command {
                let _ = events.send(Err(ConnectionFailure::NotSent(Box::new(
                    ending.failure.clone(),
                ))));
            }
        }
    }

    async fn drive(&mut self) -> ConnectionFailure {
        // Pinned once: a fresh close future per turn of the loop would register with (and
        // leave) the token's waiter list under its lock on every read and write.
        let closed = self.shared.close.clone().cancelled_owned();
        tokio::pin!(closed);
        loop {
            if self.state.closes_now() {
                return ConnectionFailure::ClosedByGateway;
            }
            let want_write = self.state.wants_write();
            if want_write && self.write_deadline.is_none() {
                self.write_deadline = Some(tokio::time::Instant::now() + self.send_timeout);
            }
            if self.state.is_retiring() && self.retire_deadline.is_none() {
                self.retire_deadline = Some(tokio::time::Instant::now() + RETIRE_GRACE);
            }
            let take_commands = self.state.takes_commands();
            if self.read_buffer.capacity() - self.read_buffer.len() < READ_CHUNK / 4 {
                self.read_buffer.reserve(READ_CHUNK);
            }
            let multiplexed = self.shared.multiplexed.load(Ordering::Acquire);
            let read_paused = self.state.reader_far_behind(multiplexed);
            tokio::select! {
                biased;
                () = &mut closed => return ConnectionFailure::ClosedByGateway,
                result = write_some(&mut self.write, &self.state), if want_write => {
                    match result {
                        Ok(0) => return std::io::Error::from(std::io::ErrorKind::WriteZero).into(),
                        Ok(count) => {
                            self.write_deadline = None;
                            self.state.wrote(count);
                        }
                        Err(error) => return error.into(),
                    }
                }
                () = self.shared.reader_caught_up.notified(), if read_paused => {}
                result = self.read.read_buf(&mut self.read_buffer), if !read_paused => match result {
                    Ok(0) => return ConnectionFailure::ClosedByBackend,
                    Ok(_) => {
                        let now = std::time::Instant::now();
                        if let Err(failure) = self.state.on_read(&mut self.read_buffer, multiplexed, now) {
                            return failure;
                        }
                        if self.state.in_flight() > 0 {
                            // More is coming: do not let the backend wait for our ACK.
                            self.read.acknowledge_now();
                        }
                    }
                    Err(error) => return error.into(),
                },
                command = self.commands.recv(), if take_commands => match command {
                    Some(command) => self.state.on_command(command),
                    None => return ConnectionFailure::ClosedByGateway,
                },
                () = sleep_until(self.write_deadline), if want_write => {
                    return ConnectionFailure::SendTimeout(self.send_timeout);
                }
                () = sleep_until(self.retire_deadline), if self.retire_deadline.is_some() => {
                    return ConnectionFailure::ClosedByGateway;
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one. Built lazily: a disabled branch of the
/// driver's `select!` is still constructed every turn, and this costs no clock read then.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn write_some(write: &mut WriteHalf, state: &ConnectionState) -> std::io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
    let filled = state.io_slices(&mut slices);
    write.write_vectored(&slices[..filled]).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::client::connection::event_queue;
    use crate::client::connection::state::{RequestKey, Stdin};
    use crate::net::{Address, Stream};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_whose_sender_had_its_slot_before_the_close_is_failed_as_not_sent() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (read, write) = Stream::Unix(ours).into_split();
        let shared = Shared::new(1, &Address::Unix("pair".into()), 1 << 20);
        let commands = Driver::spawn(
            Arc::clone(&shared),
            read,
            write,
            DriverSettings {
                send_timeout: Duration::from_secs(5),
                max_request_buffer: 1 << 20,
                on_closed: Box::new(|_| {}),
            },
        );
        // A handle that has its place in the queue and is about to fill it: the instant a
        // request is handed the connection as the backend closes it.
        let permit = commands.reserve().await.unwrap();
        drop(theirs);
        while !shared.closed.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Long enough for the driver to have drained the queue and stopped, had it not waited.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (events, mut receiver) = event_queue::channel();
        permit.send(Command::Begin {
            request: RequestKey { sequence: 0 },
            events,
            head: BytesMut::new(),
            stdin: Stdin::default(),
            ask_first: false,
        });
        let answer = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .expect("the request hears of the close instead of waiting for read_timeout");
        assert!(
            matches!(answer, Some(Err(ConnectionFailure::NotSent(_)))),
            "{answer:?}"
        );
    }
}
