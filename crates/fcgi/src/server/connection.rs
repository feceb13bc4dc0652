//! One task per connection: reads records into the [`ConnectionState`], runs handlers as their
//! own tasks, and is the only writer of the socket. Handler output reaches it through one
//! bounded channel, so a request's output always precedes its END_REQUEST, and the output of
//! concurrent handlers is interleaved message by message: each message is at most one 32 KiB
//! record (`response.rs`), and handlers waiting for room in the channel are served in turn,
//! so a handler streaming megabytes delays a small response by a few records, not to its end.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, Id as TaskId, JoinSet};
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

use super::budget::RequestBudget;
use super::config::ServerConfig;
use super::error::ServerError;
use super::reader::RecordReader;
use super::request::{Handler, Request};
use super::response::{Outgoing, ResponseWriter, Slot};
use super::state::{Action, ConnectionState};
use crate::idle::Registration;
use crate::net::{Stream, WriteHalf};
use crate::protocol::RecordEncoder;

/// Handler messages buffered before handlers wait for the socket: bounds memory per connection
/// to about this many 32 KiB records, and how far a new response can queue behind others.
const OUTGOING_CAPACITY: usize = 16;

/// Handler output already waiting in the channel is gathered into one write up to this size:
/// many small responses share a syscall, and the bound keeps the reader from waiting long.
const WRITE_COALESCE: usize = 64 * 1024;

/// Serve one accepted connection until the peer closes, KEEP_CONN=0 ends it, or an error.
/// Only the per-connection bound applies: there is no server around it to share `max_reqs`.
pub async fn serve_connection<H: Handler>(
    stream: Stream,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
) -> Result<(), ServerError> {
    let budget = Arc::new(RequestBudget::unlimited());
    serve_connection_within(stream, handler, config, budget).await
}

/// [`serve_connection`] for a server with its own accept loop: requests of this connection
/// also draw on `budget`, shared by all the server's connections (FastCGI 1.0 §4.1
/// `FCGI_MAX_REQS`), and are refused with OVERLOADED when it is spent.
pub async fn serve_connection_within<H: Handler>(
    stream: Stream,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    budget: Arc<RequestBudget>,
) -> Result<(), ServerError> {
    drive_connection(
        stream,
        handler,
        config,
        budget,
        CancellationToken::new(),
        None,
    )
    .await
}

/// [`serve_connection_within`] that also stops taking requests when `shutdown` fires, closing
/// the connection once its active requests have ended, and reports to `registration` whether
/// it is idle, closing when asked to while it is ([`crate::idle`]).
pub(crate) async fn drive_connection<H: Handler>(
    stream: Stream,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    budget: Arc<RequestBudget>,
    shutdown: CancellationToken,
    registration: Option<Registration>,
) -> Result<(), ServerError> {
    let (read_half, write_half) = stream.into_split();
    let (outgoing_tx, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);
    let jitter = config.close_after_requests_jitter;
    let close_delay = config.close_after_requests_delay;
    let mut state = ConnectionState::new(config, budget);
    if jitter > 0 {
        // std's per-instance random hash keys: randomness enough for a test knob.
        use std::hash::{BuildHasher, Hasher};
        let draw = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        state.close_later_by(draw % (jitter + 1));
    }
    let mut driver = Driver {
        state,
        handler,
        writer: write_half,
        outgoing_tx,
        handlers: JoinSet::new(),
        running: HashMap::new(),
        task_slots: HashMap::new(),
        write_buffer: BytesMut::new(),
        close_delay,
    };
    // Dropping the driver on return aborts the handlers still running (the JoinSet owns them).
    driver
        .run(
            RecordReader::new(read_half),
            outgoing_rx,
            shutdown,
            registration,
        )
        .await
}

struct Driver<H> {
    state: ConnectionState,
    handler: Arc<H>,
    writer: WriteHalf,
    outgoing_tx: mpsc::Sender<Outgoing>,
    handlers: JoinSet<()>,
    running: HashMap<Slot, AbortHandle>,
    task_slots: HashMap<TaskId, Slot>,
    write_buffer: BytesMut,
    /// `close_after_requests_delay`.
    close_delay: std::time::Duration,
}

impl<H: Handler> Driver<H> {
    async fn run(
        &mut self,
        mut reader: RecordReader<crate::net::ReadHalf>,
        mut outgoing_rx: mpsc::Receiver<Outgoing>,
        shutdown: CancellationToken,
        registration: Option<Registration>,
    ) -> Result<(), ServerError> {
        let mut actions = Vec::new();
        let mut reading = true;
        let mut draining = false;
        let evict = registration
            .as_ref()
            .map_or_else(CancellationToken::new, |registration| {
                registration.evict_token().clone()
            });
        let mut eviction_seen = false;
        // Registered as busy until its first request ends ([`crate::idle`]).
        let mut was_idle = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    self.state.begin_drain(&mut actions);
                }
                () = evict.cancelled(), if !eviction_seen => {
                    eviction_seen = true;
                    // A request that arrived since the accept loop chose us wins: it waits
                    // for a slot instead.
                    if self.state.is_idle() {
                        tracing::debug!("closing an idle connection to make room for a new one");
                        return Ok(());
                    }
                }
                Some(message) = outgoing_rx.recv() => {
                    self.on_outgoing(message, &mut actions);
                    while self.write_buffer.len() < WRITE_COALESCE {
                        let Ok(message) = outgoing_rx.try_recv() else {
                            break;
                        };
                        self.on_outgoing(message, &mut actions);
                    }
                }
                Some(joined) = self.handlers.join_next_with_id() => {
                    let task_id = match &joined {
                        Ok((task_id, ())) => *task_id,
                        Err(error) => error.id(),
                    };
                    let slot = self.task_slots.remove(&task_id);
                    if let (Err(error), Some(slot)) = (joined, slot) {
                        if error.is_panic() && self.state.is_current(slot) {
                            return Err(ServerError::HandlerPanicked(slot.request_id));
                        }
                    }
                }
                record = reader.next_record(), if reading => match record? {
                    Some(record) => self.state.on_record(record, &mut actions)?,
                    None => {
                        reading = false;
                        self.state.on_end_of_input(&mut actions);
                    }
                },
            }
            if self.apply(&mut actions).await? {
                return Ok(());
            }
            let idle = self.state.is_idle();
            if idle != was_idle {
                was_idle = idle;
                if let Some(registration) = &registration {
                    registration.set_idle(idle);
                }
            }
        }
    }

    /// Stages a handler's output for the next write, in channel order, or ends its request.
    fn on_outgoing(&mut self, message: Outgoing, actions: &mut Vec<Action>) {
        match message {
            Outgoing::Output { slot, records } => {
                if self.state.is_current(slot) {
                    self.write_buffer.extend_from_slice(&records);
                }
            }
            Outgoing::Finished { slot, outcome } => {
                self.running.remove(&slot);
                self.state.on_handler_finished(slot, outcome, actions);
            }
        }
    }

    /// Carries out `actions`, then writes everything staged; true once the connection is closed.
    async fn apply(&mut self, actions: &mut Vec<Action>) -> Result<bool, ServerError> {
        let mut close = false;
        for action in actions.drain(..) {
            match action {
                Action::Send(record) => RecordEncoder.encode(record, &mut self.write_buffer)?,
                Action::Start { slot, request } => self.start(slot, request),
                Action::Abort(slot) => {
                    if let Some(task) = self.running.remove(&slot) {
                        task.abort();
                    }
                }
                Action::Close => close = true,
            }
        }
        if !self.write_buffer.is_empty() {
            self.writer.write_all(&self.write_buffer).await?;
            self.write_buffer.clear();
        }
        if close {
            if !self.close_delay.is_zero() {
                tokio::time::sleep(self.close_delay).await;
            }
            // The peer may already be gone; the records it needed were written above.
            let _ = self.writer.shutdown().await;
        }
        Ok(close)
    }

    fn start(&mut self, slot: Slot, request: Request) {
        let handler = Arc::clone(&self.handler);
        let mut response = ResponseWriter::new(slot, self.outgoing_tx.clone());
        let task = self.handlers.spawn(async move {
            let outcome = handler.handle(request, &mut response).await;
            response.finish(outcome).await;
        });
        self.task_slots.insert(task.id(), slot);
        self.running.insert(slot, task);
    }
}
