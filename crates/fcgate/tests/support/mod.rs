//! Starting a gateway in-process for a test: a TOML snippet in, a running gateway on
//! `127.0.0.1:<free port>` out, with the pool figures at hand.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fcgate::server::RunningGateway;
use fcgi::client::PoolStats;
use fcgi::net::Address;

/// A gateway for `upstream` with the extra TOML `settings` (top-level keys first, then an
/// optional `[upstream]` body in `upstream_settings`).
pub async fn start_gateway(
    settings: &str,
    upstream: &Address,
    upstream_settings: &str,
) -> RunningGateway {
    // Tests that want the access log say where; the others keep stdout quiet.
    let access_log = if settings.contains("access_log") {
        ""
    } else {
        "access_log = \"off\"\n"
    };
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{access_log}{settings}\n[upstream]\nservers = [\"{upstream}\"]\n{upstream_settings}\n"
    );
    let config = fcgate::config::parse_file_text(&text)
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
        .validate()
        .unwrap_or_else(|error| panic!("{error}\n{text}"));
    fcgate::server::start(config).await.unwrap()
}

/// The first upstream server's pool figures.
pub fn pool_stats(gateway: &RunningGateway) -> PoolStats {
    gateway.gateway.upstream().servers()[0].pool().stats()
}

pub fn addr(gateway: &RunningGateway) -> SocketAddr {
    gateway.local_addr
}

/// Polls `condition` every few milliseconds for at most ten seconds.
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("not reached within 10 s: {what}");
}
