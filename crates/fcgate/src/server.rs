//! The HTTP front: accepts TCP connections and serves HTTP/1.1 with keep-alive and HTTP/2 with
//! prior knowledge on the same port (hyper-util's auto builder), and shuts down gracefully:
//! stop accepting, let requests in flight finish within `shutdown_timeout`, then return.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cgi_params::ConnectionInfo;
use crate::config::Config;
use crate::proxy::Gateway;

/// A gateway serving on a bound port; tests start one on `127.0.0.1:0`.
pub struct RunningGateway {
    /// Where it listens.
    pub local_addr: SocketAddr,
    /// The request handler and its pools (tests read the pool stats).
    pub gateway: Arc<Gateway>,
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
    let task = tokio::spawn(serve(listener, Arc::clone(&gateway), shutdown.clone()));
    Ok(RunningGateway {
        local_addr,
        gateway,
        shutdown,
        task,
    })
}

/// Accepts until `shutdown` fires, then drains connections for at most `shutdown_timeout`.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let builder = http_builder(gateway.config());
    let graceful = GracefulShutdown::new();
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
        let connection = Arc::new(ConnectionInfo::new(remote_addr, local_addr, false));
        let gateway = Arc::clone(&gateway);
        let service = service_fn(move |request| {
            let gateway = Arc::clone(&gateway);
            let connection = Arc::clone(&connection);
            async move { Ok::<_, Infallible>(gateway.handle(request, &connection).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                log_connection_error(remote_addr, &*error);
            }
        });
    }
    drop(listener);
    let timeout = gateway.config().shutdown_timeout;
    tracing::info!("shutting down: waiting up to {timeout:?} for requests in flight");
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown_timeout passed with requests still in flight; closing them");
    }
    for pool in gateway.upstream().pools() {
        pool.close_idle();
    }
}

/// hyper answers malformed requests itself (400, 431 for oversized heads) and closes; that is
/// worth a line an operator can find. Clients that simply hang up are not.
fn log_connection_error(client: SocketAddr, error: &(dyn std::error::Error + 'static)) {
    match error.downcast_ref::<hyper::Error>() {
        Some(error) if error.is_parse() || error.is_parse_too_large() => {
            tracing::info!(%client, "rejected a malformed request: {error}");
        }
        Some(error) if error.is_timeout() => {
            tracing::info!(%client, "client too slow sending request headers: {error}");
        }
        _ => tracing::debug!(%client, "client connection ended: {error}"),
    }
}

fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.limits.client_header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
}
