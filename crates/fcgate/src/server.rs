//! The HTTP front's listener: accepts TCP connections, hands each to its own task
//! (`client_connection.rs` serves HTTP/1.1 with keep-alive and HTTP/2 with prior knowledge on
//! the same port), and shuts down gracefully: stop accepting, let requests in flight finish
//! within `shutdown_timeout`, then return.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cgi_params::ConnectionInfo;
use crate::client_connection::{ClientConnections, HttpFront};
use crate::config::Config;
use crate::proxy::Gateway;

/// A gateway serving on a bound port; tests start one on `127.0.0.1:0`.
pub struct RunningGateway {
    /// Where it listens.
    pub local_addr: SocketAddr,
    /// The request handler and its pools (tests read the pool stats).
    pub gateway: Arc<Gateway>,
    /// How many client connections are open, and how many of those are parked.
    pub connections: Arc<ClientConnections>,
    /// Cancel to shut down gracefully.
    pub shutdown: CancellationToken,
    /// Finishes when the shutdown is complete.
    pub task: JoinHandle<()>,
}

impl RunningGateway {
    /// Shuts down gracefully and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Binds `config.listen` and starts serving in a background task.
pub async fn start(config: Config) -> std::io::Result<RunningGateway> {
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let gateway = Gateway::new(config);
    let shutdown = CancellationToken::new();
    let connections = Arc::new(ClientConnections::default());
    let task = tokio::spawn(serve(
        listener,
        Arc::clone(&gateway),
        shutdown.clone(),
        Arc::clone(&connections),
    ));
    Ok(RunningGateway {
        local_addr,
        gateway,
        connections,
        shutdown,
        task,
    })
}

/// Accepts until `shutdown` fires, then drains connections for at most `shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    connections: Arc<ClientConnections>,
) {
    let front = Arc::new(HttpFront::new(
        Arc::clone(&gateway),
        shutdown.clone(),
        connections,
    ));
    let tasks = TaskTracker::new();
    loop {
        let (stream, remote_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::error!("accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(local_addr) = stream.local_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let info = ConnectionInfo::new(remote_addr, local_addr, false);
        tasks.spawn(Arc::clone(&front).serve(stream, info));
    }
    drop(listener);
    tasks.close();
    let timeout = gateway.config().shutdown_timeout;
    tracing::info!("shutting down: waiting up to {timeout:?} for requests in flight");
    if tokio::time::timeout(timeout, tasks.wait()).await.is_err() {
        tracing::warn!("shutdown_timeout passed with requests still in flight; closing them");
    }
    for pool in gateway.upstream().pools() {
        pool.close_idle();
    }
}
