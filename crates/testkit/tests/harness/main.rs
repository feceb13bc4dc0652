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
