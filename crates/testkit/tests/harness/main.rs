//! Proves each piece of the harness works, against real processes and an independent FastCGI
//! client, before the gateway's own tests lean on it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backend;
mod fastcgi;
mod http;
mod multiplexing;
mod php;
mod relay;
mod slow_http;

use std::time::Duration;

/// Polls `condition` every 10 ms for up to 5 s: for effects of another process or task that
/// have no event to wait on.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
