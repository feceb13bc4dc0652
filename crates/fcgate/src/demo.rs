//! The bundled demo FastCGI application: a real backend built on the library's server side.
//!
//! `fcgate` with no arguments starts it on a unix socket in a temp directory and serves it, so a
//! newcomer sees the whole path work; `fcgate demo-app --listen ADDR` runs it alone as a backend
//! for other servers and for benchmarks. It does next to no work per request, which makes it
//! the yardstick for the gateway's own cost.

use std::sync::Arc;

use fcgi::net::{Address, Listener};
use fcgi::server::{Handler, HandlerOutcome, Request, ResponseWriter, ServerConfig};
use tokio_util::sync::CancellationToken;

/// Answers every request with a short page describing the request it got.
pub struct DemoApp;

impl Handler for DemoApp {
    async fn handle(&self, request: Request, response: &mut ResponseWriter) -> HandlerOutcome {
        let param = |name: &str| String::from_utf8_lossy(request.param(name).unwrap_or_default());
        let page = format!(
            "Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             Hello from fcgate's demo FastCGI app.\n\
             method: {}\nuri: {}\nprotocol: {}\nbody bytes: {}\n",
            param("REQUEST_METHOD"),
            param("REQUEST_URI"),
            param("SERVER_PROTOCOL"),
            request.stdin.len(),
        );
        if response.stdout(page.as_bytes()).await.is_err() {
            return HandlerOutcome::CloseConnection;
        }
        HandlerOutcome::Complete { app_status: 0 }
    }
}

/// The limits the demo app announces through FCGI_GET_VALUES and enforces. It multiplexes:
/// 16384 requests in all over up to 256 connections (FCGI_MAX_REQS, FCGI_MAX_CONNS), and any
/// connection may carry all 16384, so a client reading FCGI_MAX_REQS as a per-connection limit
/// (HAProxy does) is never refused what was announced (`fcgi::server`'s rule). A client that
/// divides (fcgate) puts 64 on each.
pub fn server_config() -> ServerConfig {
    let max_reqs = 256 * 64;
    ServerConfig {
        max_conns: 256,
        max_reqs,
        max_reqs_per_conn: max_reqs,
        mpxs_conns: true,
        ..ServerConfig::default()
    }
}

/// Binds `address` and serves the demo app until `shutdown` fires.
pub async fn serve(address: &Address, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = Listener::bind(address).await?;
    fcgi::server::serve(listener, Arc::new(DemoApp), server_config(), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::server_config;

    #[test]
    fn the_demo_app_accepts_on_one_connection_what_it_announces() {
        let config = server_config();
        assert!(config.max_reqs_per_conn >= config.max_reqs);
        assert_eq!(config.max_reqs / config.max_conns, 64);
        let library = fcgi::server::ServerConfig::default();
        assert!(library.max_reqs_per_conn >= library.max_reqs);
    }
}
