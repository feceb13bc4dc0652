//! FastCGI 1.0 for both ends of the wire.
//!
//! - [`protocol`]: the record codec — pure functions and structs over bytes, no I/O.
//! - [`net`]: backend addresses (`unix:/path`, `host:port`) and the stream type both ends use.
//! - [`client`]: an async client connection that routes records by request id, and the capped,
//!   shared connection pool a gateway puts in front of each backend.
//! - [`server`]: the application side — an async FastCGI server that runs a handler per request.
#![warn(missing_docs)]

pub mod backlog;
pub mod client;
pub mod idle;
pub mod net;
pub mod protocol;
pub mod server;
