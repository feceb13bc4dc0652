//! One accepted connection: `fcgi::server::serve_connection_within` on one end of a socket pair,
//! and a pump between the other end and the client that tracks requests in progress (several at
//! once on a multiplexed connection) and diverts them in the Hang and Garbage modes.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fcgi::net::Stream;
use fcgi::server::{serve_connection_within, RequestBudget, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::behaviour::ConnectionHandler;
use super::records::{Disposition, EndRequestCounter, IncomingFilter};
use super::{Mode, Shared, TrackedConnection};

/// What the Garbage mode answers: plausible bytes from the wrong protocol.
const GARBAGE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nnot fastcgi";

/// A registered connection; unregisters itself (and stops counting as open) when dropped.
pub(super) struct Connection {
    number: u64,
    client: Option<Stream>,
    shared: Arc<Shared>,
}

impl Connection {
    /// Counts the connection as open and makes it visible to `close_idle_connections`.
    /// `None` if its descriptor cannot be duplicated (the connection is then just dropped).
    pub(super) fn register(
        number: u64,
        client: Stream,
        shared: &Arc<Shared>,
    ) -> Option<Connection> {
        let descriptor = match &client {
            Stream::Tcp(stream) => stream.as_fd().try_clone_to_owned(),
            Stream::Unix(stream) => stream.as_fd().try_clone_to_owned(),
        }
        .ok()?;
        let tracked = TrackedConnection {
            requests_in_progress: 0,
            socket: socket2::Socket::from(descriptor),
        };
        shared.connections().insert(number, tracked);
        let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_open.fetch_max(open, Ordering::SeqCst);
        Some(Connection {
            number,
            client: Some(client),
            shared: Arc::clone(shared),
        })
    }

    /// Serves until either side closes; requests draw on the backend-wide `budget`.
    pub(super) async fn serve(mut self, config: Arc<ServerConfig>, budget: Arc<RequestBudget>) {
        let Some(client) = self.client.take() else {
            return;
        };
        let Ok((server_end, pump_end)) = UnixStream::pair() else {
            return;
        };
        let handler = Arc::new(ConnectionHandler::new(
            self.number,
            Arc::clone(&self.shared.overload),
        ));
        let server = serve_connection_within(Stream::Unix(server_end), handler, config, budget);
        // When the pump returns it drops its end, so the server sees EOF and returns too; when
        // the server returns (a crash, KEEP_CONN=0) the pump sees EOF on its end.
        let _ = tokio::join!(server, self.pump(client, pump_end));
    }

    /// Copies both ways at once (a direction never waits on the other, so a large request
    /// body and a large response cannot deadlock) until either side closes.
    async fn pump(&self, client: Stream, server: UnixStream) {
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let to_server = async {
            let mut incoming = IncomingFilter::new();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let Ok(read @ 1..) = client_read.read(&mut buffer).await else {
                    return false;
                };
                let filtered = incoming.feed(&buffer[..read], || self.disposition());
                self.shared
                    .requests
                    .fetch_add(filtered.requests_begun, Ordering::SeqCst);
                self.shared
                    .requests_started(self.number, filtered.requests_started);
                if server_write.write_all(&filtered.forward).await.is_err() {
                    return false;
                }
                if filtered.garbage_due {
                    return true;
                }
            }
        };
        let to_client = async {
            let mut outgoing = EndRequestCounter::default();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let Ok(read @ 1..) = server_read.read(&mut buffer).await else {
                    return;
                };
                if client_write.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
                // Counted only once written: "idle" means the client has the whole answer.
                let ended = outgoing.scan(&buffer[..read]);
                self.shared.requests_ended(self.number, ended);
            }
        };
        let garbage_due = tokio::select! {
            garbage_due = to_server => garbage_due,
            () = to_client => false,
        };
        if garbage_due {
            let _ = client_write.write_all(GARBAGE).await;
            let _ = client_write.shutdown().await;
        }
    }

    fn disposition(&self) -> Disposition {
        match self.shared.mode() {
            Mode::Normal => Disposition::Serve,
            Mode::Hang => Disposition::Hang,
            Mode::Garbage => Disposition::Garbage,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.connections().remove(&self.number);
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}
