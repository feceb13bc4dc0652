//! The project's instrumented FastCGI test backend: `fcgi::server` behind an accept loop of our
//! own, which counts connections, emulates process-per-connection workers, and can hang, answer
//! garbage, or close idle connections the way a recycled php-fpm worker does.
//!
//! Each accepted connection is served through a socket pair: `fcgi::server::serve_connection`
//! runs on one end, and a pump (`pump.rs`) copies between the other end and the client, watching
//! record boundaries. That is how the backend knows, exactly, whether a request is in progress
//! on a connection, and can divert a request before the server sees it. Per-request behaviour
//! (token, sleep, size, status, crash, stderr) lives in `behaviour.rs`.
//!
//! With `server.mpxs_conns` a connection carries several requests at once: the pump counts
//! every BEGIN_REQUEST in and every END_REQUEST out, so it knows how many are in flight on each
//! connection, and all connections share one FCGI_MAX_REQS budget, as `fcgi::server::serve`'s
//! do.

mod behaviour;
mod pump;
mod records;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use fcgi::net::{Address, Listener};
use fcgi::server::{RequestBudget, ServerConfig};
use tempfile::TempDir;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::Listen;

/// How to start a [`TestBackend`].
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// A unix socket in a tempdir, or `127.0.0.1:0`.
    pub listen: Listen,
    /// Process-per-connection emulation: at most this many connections served at once; further
    /// connections are NOT accepted (they wait in the kernel backlog), exactly like php-fpm
    /// workers. `None`: no limit.
    pub workers: Option<usize>,
    /// The FastCGI server's own limits and capabilities (multiplexing, max requests…).
    /// `max_reqs` bounds requests over all connections. To test a client's fallback, set
    /// `announced_mpxs_conns: Some(true)` with `mpxs_conns: false`: GET_VALUES then claims
    /// FCGI_MPXS_CONNS=1 while a second request on a connection gets FCGI_CANT_MPX_CONN.
    pub server: ServerConfig,
}

/// How the backend treats each new request, read when its BEGIN_REQUEST arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Serve it as its query string says.
    #[default]
    Normal,
    /// Read it and never answer; the connection stays a black hole from then on.
    Hang,
    /// Read it, answer `HTTP/1.1 200 OK…` (not FastCGI) and close the connection.
    Garbage,
}

/// A running test backend. Dropping it closes the listener and every connection.
pub struct TestBackend {
    address: Address,
    shared: Arc<Shared>,
    accept_loop: JoinHandle<()>,
    _directory: TempDir,
}

/// What the accept loop, the pumps and the test share.
struct Shared {
    mode: Mutex<Mode>,
    overload: Arc<behaviour::OverloadInjector>,
    accepted: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    requests: AtomicU64,
    max_in_flight_on_one_connection: AtomicU64,
    connections: Mutex<HashMap<u64, TrackedConnection>>,
}

/// A live connection as [`TestBackend::close_idle_connections`] sees it.
struct TrackedConnection {
    requests_in_progress: u64,
    /// A duplicate of the client socket's descriptor, so a test can shut the connection down
    /// synchronously from outside the task that owns it.
    socket: socket2::Socket,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TrackedConnection>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn requests_started(&self, connection: u64, count: u64) {
        if let Some(tracked) = self.connections().get_mut(&connection) {
            tracked.requests_in_progress += count;
            self.max_in_flight_on_one_connection
                .fetch_max(tracked.requests_in_progress, Ordering::SeqCst);
        }
    }

    fn requests_ended(&self, connection: u64, count: u64) {
        if let Some(tracked) = self.connections().get_mut(&connection) {
            tracked.requests_in_progress = tracked.requests_in_progress.saturating_sub(count);
        }
    }
}

impl TestBackend {
    /// Binds (`options.listen`) and starts accepting.
    pub async fn start(options: BackendOptions) -> TestBackend {
        let directory = backend_directory();
        let bind = options
            .listen
            .bind_address(directory.path(), "backend.sock");
        Self::start_in(directory, &bind, options).await
    }

    /// Binds `address` (ignoring `options.listen`) and starts accepting; for the
    /// `fcgi-test-backend` binary and tests that need a fixed address.
    pub async fn start_at(address: &Address, options: BackendOptions) -> TestBackend {
        Self::start_in(backend_directory(), address, options).await
    }

    async fn start_in(directory: TempDir, bind: &Address, options: BackendOptions) -> TestBackend {
        let listener = Listener::bind(bind)
            .await
            .unwrap_or_else(|error| panic!("test backend cannot bind {bind}: {error}"));
        let address = listener
            .local_address()
            .unwrap_or_else(|error| panic!("test backend has no local address: {error}"));
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Normal),
            overload: Arc::default(),
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            max_open: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            max_in_flight_on_one_connection: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
        });
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            options.workers,
            Arc::new(options.server),
            Arc::clone(&shared),
        ));
        TestBackend {
            address,
            shared,
            accept_loop,
            _directory: directory,
        }
    }

    /// Where the backend listens.
    pub fn address(&self) -> Address {
        self.address.clone()
    }

    /// Sets how requests that begin from now on are treated.
    pub fn set_mode(&self, mode: Mode) {
        *self
            .shared
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn connections_open(&self) -> u64 {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at the same time.
    pub fn max_connections_open(&self) -> u64 {
        self.shared.max_open.load(Ordering::SeqCst)
    }

    /// From now on, refuse every `n`-th request with FCGI_OVERLOADED (0: none); a request
    /// carrying `token=` is refused at most once, so a retry of it succeeds.
    pub fn overload_every(&self, n: u64) {
        self.shared.overload.every.store(n, Ordering::SeqCst);
    }

    /// Requests refused with FCGI_OVERLOADED so far.
    pub fn overloaded_answers(&self) -> u64 {
        self.shared.overload.refused.load(Ordering::SeqCst)
    }

    /// Requests received (BEGIN_REQUEST records), in every mode.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The most requests ever in flight at once on a single connection, from BEGIN_REQUEST in
    /// to END_REQUEST out (refused ones included: the client did send them concurrently).
    pub fn max_concurrent_requests_on_one_connection(&self) -> u64 {
        self.shared
            .max_in_flight_on_one_connection
            .load(Ordering::SeqCst)
    }

    /// Closes every connection that has no request in progress (as a recycled php-fpm worker
    /// does). The close is done when this returns: the client's next read sees EOF.
    pub fn close_idle_connections(&self) {
        for tracked in self.shared.connections().values() {
            if tracked.requests_in_progress == 0 {
                let _ = tracked.socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn backend_directory() -> TempDir {
    tempfile::Builder::new()
        .prefix("fcgi-backend-")
        .tempdir()
        .unwrap_or_else(|error| panic!("cannot create a tempdir for the backend: {error}"))
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        // The loop owns the connection tasks (a JoinSet): aborting it ends them all.
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    listener: Listener,
    workers: Option<usize>,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
) {
    let worker_slots = workers.map(|workers| Arc::new(Semaphore::new(workers)));
    let budget = Arc::new(RequestBudget::new(config.max_reqs as usize));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // Like a php-fpm pool with every worker busy: do not even accept.
        let permit = match &worker_slots {
            Some(slots) => match Arc::clone(slots).acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => return,
            },
            None => None,
        };
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(_) => {
                // Out of descriptors and the like: back off rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let number = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(connection) = pump::Connection::register(number, stream, &shared) else {
            continue;
        };
        let config = Arc::clone(&config);
        let budget = Arc::clone(&budget);
        connections.spawn(async move {
            let _permit = permit;
            connection.serve(config, budget).await;
        });
    }
}
