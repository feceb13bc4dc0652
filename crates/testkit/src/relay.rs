//! A relay between a gateway and its backend that counts connections, so a test can prove how
//! many backend connections the gateway opened and how many it holds at once, and watches the
//! FastCGI records going by (`watch.rs`), so it can prove how the gateway used them: requests
//! in flight on one connection, request ids reused too early, aborts.
//!
//! Each accepted connection gets its own connection to the backend and bytes are copied both
//! ways, unchanged. When the backend closes, the relay closes the gateway's side after the last
//! byte; when the gateway half-closes, the backend's write side is shut down and its reply still
//! flows back.

mod watch;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use fcgi::net::{connect, Address, Listener};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::{JoinHandle, JoinSet};

use watch::{ConnectionRequests, HeaderScanner, RequestCounters};

/// Bytes copied per read: large, so watching records costs little per byte.
const COPY_BUFFER: usize = 64 * 1024;

/// A running relay; dropping it stops accepting and cuts every relayed connection.
pub struct CountingRelay {
    address: Address,
    counters: Arc<Counters>,
    accept_loop: JoinHandle<()>,
    _directory: TempDir,
}

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    requests: Arc<RequestCounters>,
}

/// Holds one count in `open` while a relayed connection is in use: from the gateway's first
/// bytes until either side closes it. Counting from the first bytes rather than the accept
/// keeps a reconnect from overlapping the close it follows: the gateway closes A, then
/// connects B, and the relay may accept B before it has read A's FIN, but B's first record
/// comes a round trip later.
struct OpenConnection(Arc<Counters>);

impl OpenConnection {
    fn new(counters: &Arc<Counters>) -> OpenConnection {
        let open = counters.open.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_open.fetch_max(open, Ordering::SeqCst);
        OpenConnection(Arc::clone(counters))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl CountingRelay {
    /// Starts relaying to `backend`: from a unix socket in a tempdir when the backend is a unix
    /// socket, else from `127.0.0.1:<free port>`.
    pub async fn start(backend: Address) -> CountingRelay {
        let directory = tempfile::Builder::new()
            .prefix("relay-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a tempdir for the relay: {error}"));
        let listen = match backend {
            Address::Unix(_) => crate::Listen::Unix,
            Address::Tcp(_) => crate::Listen::Tcp,
        };
        let bind = listen.bind_address(directory.path(), "relay.sock");
        let listener = Listener::bind(&bind)
            .await
            .unwrap_or_else(|error| panic!("relay cannot bind {bind}: {error}"));
        let address = listener
            .local_address()
            .unwrap_or_else(|error| panic!("relay has no local address: {error}"));
        let counters = Arc::new(Counters::default());
        let accept_loop = tokio::spawn(accept_loop(listener, backend, Arc::clone(&counters)));
        CountingRelay {
            address,
            counters,
            accept_loop,
            _directory: directory,
        }
    }

    /// Where the gateway should connect instead of the backend.
    pub fn address(&self) -> Address {
        self.address.clone()
    }

    /// Connections accepted so far.
    pub fn connections_opened(&self) -> u64 {
        self.counters.opened.load(Ordering::SeqCst)
    }

    /// Connections in use right now: the gateway has sent on them and neither side has closed.
    pub fn connections_open(&self) -> u64 {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// The most connections in use at the same time (see [`Self::connections_open`]).
    pub fn max_open(&self) -> u64 {
        self.counters.max_open.load(Ordering::SeqCst)
    }

    /// BEGIN_REQUEST records the gateway sent, over all connections.
    pub fn requests_begun(&self) -> u64 {
        self.counters.requests.begun.load(Ordering::SeqCst)
    }

    /// The most requests ever in flight at once on a single connection: from the gateway's
    /// BEGIN_REQUEST to the backend's END_REQUEST (or the connection's end). Above 1 only when
    /// the gateway multiplexed.
    pub fn max_concurrent_requests_on_one_connection(&self) -> u64 {
        self.counters
            .requests
            .max_in_flight_on_one_connection
            .load(Ordering::SeqCst)
    }

    /// BEGIN_REQUEST records for an id still in flight on that connection, its END_REQUEST not
    /// yet sent by the backend (aborted or not). A correct gateway keeps this at 0.
    pub fn id_reused_while_active(&self) -> u64 {
        self.counters
            .requests
            .id_reused_while_active
            .load(Ordering::SeqCst)
    }

    /// ABORT_REQUEST records the gateway sent.
    pub fn abort_requests_seen(&self) -> u64 {
        self.counters.requests.aborts.load(Ordering::SeqCst)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        // Dropping the loop drops its JoinSet, which aborts every relayed connection.
        self.accept_loop.abort();
    }
}

async fn accept_loop(listener: Listener, backend: Address, counters: Arc<Counters>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _peer)) => {
                    counters.opened.fetch_add(1, Ordering::SeqCst);
                    let backend = backend.clone();
                    let counters = Arc::clone(&counters);
                    connections.spawn(async move {
                        if let Ok(server) = connect(&backend).await {
                            relay(client, server, counters).await;
                        }
                    });
                }
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Relays until one side is done.
async fn relay(client: fcgi::net::Stream, server: fcgi::net::Stream, counters: Arc<Counters>) {
    let requests = ConnectionRequests::new(Arc::clone(&counters.requests));
    let open: Mutex<Option<OpenConnection>> = Mutex::new(None);
    let mut counted = false;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut gateway_records = HeaderScanner::default();
    let mut backend_records = HeaderScanner::default();
    let mut upstream = std::pin::pin!(pump(client_read, server_write, |bytes| {
        if !counted {
            counted = true;
            *open.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(OpenConnection::new(&counters));
        }
        gateway_records.scan(bytes, |header| requests.sent_by_gateway(header));
    }));
    let mut downstream = std::pin::pin!(pump(server_read, client_write, |bytes| {
        backend_records.scan(bytes, |header| requests.sent_by_backend(header));
    }));
    // A connection counts as open from the gateway's connect until either side closes it: the
    // gateway no longer has it once it has closed its end, whatever the backend still drains.
    // The gateway's side is dropped only after the count is released: dropping a write half
    // shuts it down, and the gateway, seeing that, may connect again at once.
    let release = || drop(open.lock().unwrap_or_else(PoisonError::into_inner).take());
    let mut gateway_side = None;
    tokio::select! {
        (result, mut server_write) = &mut upstream => {
            release();
            if result.is_ok() {
                // The gateway half-closed: pass that on and let the backend's answer drain.
                let _ = server_write.shutdown().await;
                gateway_side = Some(downstream.await.1);
            }
        }
        // The backend closed (or either side failed): everything goes.
        (_, client_write) = &mut downstream => gateway_side = Some(client_write),
    }
    release();
    drop(gateway_side);
}

/// Copies until EOF or an error, showing `watch` each read before it is written on; hands the
/// writer back so the caller can shut it down.
async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    mut watch: impl FnMut(&[u8]),
) -> (io::Result<()>, W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; COPY_BUFFER];
    let result = loop {
        let read = match reader.read(&mut buffer).await {
            Ok(0) => break Ok(()),
            Ok(read) => read,
            Err(error) => break Err(error),
        };
        watch(&buffer[..read]);
        if let Err(error) = writer.write_all(&buffer[..read]).await {
            break Err(error);
        }
    };
    (result, writer)
}
