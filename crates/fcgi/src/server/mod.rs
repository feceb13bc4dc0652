//! The application side of FastCGI: an async server that decodes requests, runs a
//! [`Handler`] for each, and answers management queries. It backs the test harness and any
//! Rust application that wants to sit behind a FastCGI gateway.
//!
//! # Announce on one connection what you accept
//!
//! A server's FCGI_GET_VALUES answer (from [`ServerConfig`]) is what clients plan by, and they
//! read it differently. FCGI_MAX_REQS is the whole application's bound in the spec (FastCGI 1.0
//! §4.1): fcgate divides it by FCGI_MAX_CONNS, but HAProxy takes it as the bound for each
//! connection. So a server must accept on one connection as many requests as FCGI_MAX_REQS
//! says, or announce no more than it accepts there. One that refuses (FCGI_OVERLOADED) fewer
//! hangs or fails the second kind of client: HAProxy put 101 requests on one connection of a
//! server that took 64, and 72 of 5,000 requests hung. Hence
//! [`ServerConfig::max_reqs_per_conn`] is at least [`ServerConfig::max_reqs`] by default; the
//! server-wide budget still bounds the total. Set it lower only to test how clients cope.
//!
//! FCGI_MAX_CONNS likewise must not leave a pooling client waiting: at that many connections
//! [`serve`] closes the longest-idle one for a newcomer (see [`ServerConfig::max_conns`]).
//!
//! Per connection, `state.rs` is the pure protocol state (which request ids are active and
//! what each waits for), `connection.rs` the one task that drives it and owns the socket,
//! `response.rs` the handler's writer, and `reader.rs` the cancel-safe record reader.
//! `budget.rs` is the one count all connections of a server share: FCGI_MAX_REQS.

mod budget;
mod config;
mod connection;
mod error;
mod reader;
mod request;
mod response;
mod state;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use budget::RequestBudget;
pub use config::ServerConfig;
pub use connection::{serve_connection, serve_connection_within};
pub use error::ServerError;
pub use request::{Handler, HandlerOutcome, Request};
pub use response::ResponseWriter;

use crate::idle::IdleRegistry;
use crate::net::Listener;

/// Pause after an accept error that is not about one connection (out of file descriptors,
/// say), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accept loop; stops accepting when `shutdown` fires, then waits (bounded by the caller) for
/// connections. At most `max_conns` connections are served at once. At the limit, a newcomer
/// takes the place of the longest-idle connection, which is closed ([`crate::idle`]): idle pooled
/// connections of one client must not leave another waiting in the listen backlog. Only when
/// every connection is busy do newcomers wait in the backlog, as with a busy php-fpm pool. At most `max_reqs` requests are in progress
/// over all connections, `max_reqs_per_conn` on one; beyond either a request is refused with
/// OVERLOADED. On shutdown each connection finishes its active requests, refuses new ones with
/// OVERLOADED and closes.
pub async fn serve<H: Handler>(
    listener: Listener,
    handler: Arc<H>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let connection_slots = Arc::new(Semaphore::new(config.max_conns.max(1) as usize));
    let budget = Arc::new(RequestBudget::new(config.max_reqs as usize));
    let config = Arc::new(config);
    let registry = IdleRegistry::new();
    let mut connections = JoinSet::new();
    let closed = |_| io::Error::other("connection semaphore closed");
    loop {
        while connections.try_join_next().is_some() {}
        let mut permit = Arc::clone(&connection_slots).try_acquire_owned().ok();
        if permit.is_none() {
            // At the limit: wait for a free slot, or for an idle connection to make room.
            tokio::select! {
                () = shutdown.cancelled() => break,
                acquired = Arc::clone(&connection_slots).acquire_owned() => {
                    permit = Some(acquired.map_err(closed)?);
                }
                () = registry.wait_for_idle() => {}
            }
        }
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let permit = match permit {
            Some(permit) => permit,
            None => {
                if let Ok(permit) = Arc::clone(&connection_slots).try_acquire_owned() {
                    permit
                } else {
                    // Its task ends at once and gives its slot to the newcomer; if it took a
                    // request meanwhile, the newcomer waits for the next free slot.
                    registry.evict_longest_idle();
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        acquired = Arc::clone(&connection_slots).acquire_owned() => {
                            acquired.map_err(closed)?
                        }
                    }
                }
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let handler = Arc::clone(&handler);
                let config = Arc::clone(&config);
                let budget = Arc::clone(&budget);
                let shutdown = shutdown.clone();
                // Busy until its first request ends (`crate::idle`).
                let registration = registry.register(CancellationToken::new(), false);
                connections.spawn(async move {
                    let _permit = permit;
                    let served = connection::drive_connection(
                        stream,
                        handler,
                        config,
                        budget,
                        shutdown,
                        Some(registration),
                    );
                    match served.await {
                        Ok(()) => tracing::debug!(%peer, "FastCGI connection closed"),
                        Err(error) => tracing::debug!(%peer, %error, "FastCGI connection dropped"),
                    }
                });
            }
            Err(error) if is_about_one_connection(&error) => {
                tracing::debug!(%error, "accept failed for one connection");
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

fn is_about_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
