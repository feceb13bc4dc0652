//! The backend the pool tests talk to: the library's own application server on a unix socket
//! in a tempdir, behind an accept loop that counts connections (accepted, open, the most open
//! at once) and, through [`HandlerWatch`], the handlers running and the ones cancelled. Its
//! handler, [`EchoHandler`], is driven per request by params.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fcgi::client::{ClientError, Pool, RequestBody, ResponseStream};
use fcgi::net::{Address, Listener};
use fcgi::server::{
    serve_connection, Handler, HandlerOutcome, Request, ResponseWriter, ServerConfig,
};
// The gateway's tests wait the same way: one copy, in the testkit.
pub use fcgi_testkit::wait_until;

/// What the backend saw.
#[derive(Default)]
pub struct Counts {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub max_open: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// Handlers dropped before their end: the server cancelled them (an abort).
    pub cancelled: AtomicU64,
}

/// Held by a handler while it runs: counts it in flight, and as cancelled unless
/// [`HandlerWatch::finish`] is called before it is dropped.
pub struct HandlerWatch {
    counts: Arc<Counts>,
    finished: bool,
}

impl HandlerWatch {
    pub fn enter(counts: &Arc<Counts>) -> HandlerWatch {
        let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counts.max_in_flight.fetch_max(now, Ordering::SeqCst);
        HandlerWatch {
            counts: Arc::clone(counts),
            finished: false,
        }
    }

    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for HandlerWatch {
    fn drop(&mut self) {
        self.counts.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.counts.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Params it obeys: `HANG` never answers; `EARLY_OUTPUT` sends the header block at once;
/// `SLEEP_MS` waits; then `BYTES=N` sends N bytes, else the body is `TOKEN`'s value.
pub struct EchoHandler {
    pub counts: Arc<Counts>,
}

const HEADER_BLOCK: &[u8] = b"Content-Type: text/plain\r\n\r\n";

impl Handler for EchoHandler {
    async fn handle(&self, request: Request, response: &mut ResponseWriter) -> HandlerOutcome {
        let mut watch = HandlerWatch::enter(&self.counts);
        if request.param("HANG").is_some() {
            std::future::pending::<()>().await;
        }
        let early = request.param("EARLY_OUTPUT").is_some();
        if early
            && (response.stdout(HEADER_BLOCK).await.is_err() || response.flush().await.is_err())
        {
            return HandlerOutcome::CloseConnection;
        }
        if let Some(ms) = request.param_str("SLEEP_MS") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        }
        if !early && response.stdout(HEADER_BLOCK).await.is_err() {
            return HandlerOutcome::CloseConnection;
        }
        if let Some(bytes) = request.param_str("BYTES") {
            let chunk = vec![b'x'; 32 * 1024];
            let mut left: usize = bytes.parse().unwrap();
            while left > 0 {
                let take = left.min(chunk.len());
                if response.stdout(&chunk[..take]).await.is_err() {
                    return HandlerOutcome::CloseConnection;
                }
                left -= take;
            }
        } else {
            let token = request.param_str("TOKEN").unwrap_or("");
            if response.stdout(token.as_bytes()).await.is_err() {
                return HandlerOutcome::CloseConnection;
            }
        }
        watch.finish();
        HandlerOutcome::Complete { app_status: 0 }
    }
}

/// The [`EchoHandler`] backend with `server`'s limits.
pub async fn start_echo_backend(server: ServerConfig) -> Backend {
    start_backend(server, |counts| EchoHandler { counts }).await
}

pub struct Backend {
    pub address: Address,
    pub counts: Arc<Counts>,
    _dir: tempfile::TempDir,
}

/// Serves `make_handler(counts)` with `server`'s limits until the test ends.
pub async fn start_backend<H: Handler>(
    server: ServerConfig,
    make_handler: impl FnOnce(Arc<Counts>) -> H,
) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let address = Address::Unix(dir.path().join("backend.sock"));
    let listener = Listener::bind(&address).await.unwrap();
    let counts = Arc::new(Counts::default());
    let handler = Arc::new(make_handler(Arc::clone(&counts)));
    let server = Arc::new(server);
    let task_counts = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counts = Arc::clone(&task_counts);
            counts.accepted.fetch_add(1, Ordering::SeqCst);
            let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
            counts.max_open.fetch_max(open, Ordering::SeqCst);
            let (handler, server) = (Arc::clone(&handler), Arc::clone(&server));
            tokio::spawn(async move {
                let _ = serve_connection(stream, handler, server).await;
                counts.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Backend {
        address,
        counts,
        _dir: dir,
    }
}

/// Checks out a connection and sends a GET with `params`.
pub async fn send(pool: &Pool, params: &[(&str, &str)]) -> Result<ResponseStream, ClientError> {
    let lease = pool.checkout().await?;
    lease
        .send_request(
            |add| {
                add(b"REQUEST_METHOD", b"GET");
                for (name, value) in params {
                    add(name.as_bytes(), value.as_bytes());
                }
            },
            RequestBody::Empty,
        )
        .await
}
