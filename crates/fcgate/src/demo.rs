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

/// Answers every request with a short page describing the request it got, including a
/// checksum of the body (FNV-1a, 64 bits) so a client can tell the body arrived intact. Two
/// query words make it a test peer for other gateways (`bench/interop.sh`): `bytes=N` answers
/// N bytes of a fixed pattern (`0123456789abcdef` repeated) with their Content-Length, and
/// `status=NNN` answers that status.
pub struct DemoApp;

impl Handler for DemoApp {
    async fn handle(&self, request: Request, response: &mut ResponseWriter) -> HandlerOutcome {
        let param = |name: &str| String::from_utf8_lossy(request.param(name).unwrap_or_default());
        let query = param("QUERY_STRING");
        let wanted = |key: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                .and_then(|value| value.parse::<u64>().ok())
        };
        let code = wanted("status")
            .filter(|code| (200..600).contains(code))
            .unwrap_or(200);
        // RFC 3875 §6.3.3: `Status: 404 Not Found`. nginx copies the value into its status
        // line, and without a reason phrase that line lacks the space RFC 9112 §4 requires.
        let reason = u16::try_from(code)
            .ok()
            .and_then(|code| http::StatusCode::from_u16(code).ok())
            .and_then(|code| code.canonical_reason())
            .unwrap_or("Unknown");
        let status = format!("{code} {reason}");
        let written = match wanted("bytes") {
            Some(length) => {
                let head = format!(
                    "Status: {status}\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {length}\r\nX-Demo: bytes\r\n\r\n"
                );
                write_pattern(response, head.as_bytes(), length).await
            }
            None => {
                let page = format!(
                    "Status: {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
                     X-Demo: page\r\n\r\n\
                     Hello from fcgate's demo FastCGI app.\n\
                     method: {}\nuri: {}\nprotocol: {}\nbody bytes: {}\nbody fnv1a64: {:016x}\n",
                    param("REQUEST_METHOD"),
                    param("REQUEST_URI"),
                    param("SERVER_PROTOCOL"),
                    request.stdin.len(),
                    fnv1a64(&request.stdin),
                );
                response.stdout(page.as_bytes()).await
            }
        };
        if written.is_err() {
            return HandlerOutcome::CloseConnection;
        }
        HandlerOutcome::Complete { app_status: 0 }
    }
}

/// The pattern `bytes=N` answers: `0123456789abcdef` repeated, cut at `length`.
const PATTERN: &[u8; 16] = b"0123456789abcdef";

async fn write_pattern(
    response: &mut ResponseWriter,
    head: &[u8],
    length: u64,
) -> std::io::Result<()> {
    const PIECE: usize = 64 * 1024;
    response.stdout(head).await?;
    let piece: Vec<u8> = PATTERN.iter().copied().cycle().take(PIECE).collect();
    let mut left = length;
    while left > 0 {
        // PIECE is a multiple of the pattern's length, so every piece starts it afresh.
        let take = usize::try_from(left).map_or(PIECE, |left| left.min(PIECE));
        response.stdout(&piece[..take]).await?;
        left -= take as u64;
    }
    Ok(())
}

/// FNV-1a, 64 bits: a checksum any client can compute in a few lines.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
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
    use super::{fnv1a64, server_config};

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_demo_app_accepts_on_one_connection_what_it_announces() {
        let config = server_config();
        assert!(config.max_reqs_per_conn >= config.max_reqs);
        assert_eq!(config.max_reqs / config.max_conns, 64);
        let library = fcgi::server::ServerConfig::default();
        assert!(library.max_reqs_per_conn >= library.max_reqs);
    }
}
