//! The admin listener (`admin_listen`, off unless set): `/metrics` for Prometheus
//! (`admin/exposition.rs`), `/status` — a page for a person to read during an incident — and
//! `/status.json`, what the page plots (`admin/status.rs`). It is a listener of its own so that
//! it can be bound to a private address, is never subject to the data side's client limits,
//! and a scrape never queues behind user traffic. HTTP/1.1 only, GET and HEAD only; at most
//! [`MAX_ADMIN_CONNECTIONS`] at once, each with a header timeout, so a stuck scraper cannot pile
//! up tasks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client_connection::ClientConnections;
use crate::proxy::Gateway;

pub mod exposition;
pub mod status;

/// Admin connections served at once; more wait in the backlog.
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Time allowed for an admin request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The status page: one self-contained file (its script and chart library inlined), so it
/// works on a host without internet access. uPlot (`admin/vendor/uplot/`, MIT) takes the place
/// of the page's two markers once, at the first request.
static STATUS_PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("admin/status.html")
        .replacen(
            "/*UPLOT_CSS*/",
            include_str!("admin/vendor/uplot/uPlot.min.css"),
            1,
        )
        .replacen(
            "/*UPLOT_JS*/",
            include_str!("admin/vendor/uplot/uPlot.iife.min.js"),
            1,
        )
});

/// A running admin listener.
pub struct AdminServer {
    /// Where it listens.
    pub local_addr: SocketAddr,
    /// Ends when the listener has stopped.
    pub task: JoinHandle<()>,
}

struct Admin {
    gateway: Arc<Gateway>,
    connections: Arc<ClientConnections>,
    registry: Registry,
    history: Arc<status::History>,
}

/// Serves the admin endpoints for `gateway` on `listener` (bound by the caller, before it
/// drops privileges) until `shutdown`.
pub fn start(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    connections: Arc<ClientConnections>,
    shutdown: CancellationToken,
) -> std::io::Result<AdminServer> {
    let local_addr = listener.local_addr()?;
    let history = Arc::new(status::History::default());
    tokio::spawn(Arc::clone(&history).run(Arc::clone(&gateway), shutdown.clone()));
    let admin = Arc::new(Admin {
        registry: exposition::registry(Arc::clone(&gateway), Arc::clone(&connections)),
        gateway,
        connections,
        history,
    });
    let task = tokio::spawn(serve(listener, admin, shutdown));
    Ok(AdminServer { local_addr, task })
}

async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!("admin listener: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let admin = Arc::clone(&admin);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.respond(&request)) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!("admin connection: {error}");
                    }
                }
            }
        });
    }
}

impl Admin {
    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match request.uri().path() {
            "/metrics" => match exposition::encode(&self.registry) {
                Ok(body) => with_type(body.into(), exposition::CONTENT_TYPE),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
            },
            "/status.json" => {
                let report = self.history.report(&self.gateway, &self.connections);
                match serde_json::to_vec(&report) {
                    Ok(body) => with_type(body.into(), "application/json"),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
                }
            }
            "/status" => with_type(
                Bytes::from_static(STATUS_PAGE.as_bytes()),
                "text/html; charset=utf-8",
            ),
            "/" => {
                let mut response = text(StatusCode::FOUND, "see /status\n");
                response
                    .headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/status"));
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /status, /status.json or /metrics\n",
            ),
        }
    }
}

fn with_type(body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Figures of this instant: a cache must never answer for a later one.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = with_type(
        Bytes::from_static(body.as_bytes()),
        "text/plain; charset=utf-8",
    );
    *response.status_mut() = status;
    response
}
