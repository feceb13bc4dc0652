//! The gateway side of FastCGI: a connection that carries requests by id and the pool that caps,
//! reuses and hands out connections to one backend.
//!
//! The life of a request here: [`Pool::checkout`] yields a [`Lease`] on one connection;
//! [`Lease::send_request`] writes BEGIN_REQUEST, PARAMS and STDIN and turns the lease into a
//! [`ResponseStream`]; the caller reads [`ResponseEvent`]s up to `End`, at which point the
//! connection goes back to the pool by itself. Dropping the stream earlier aborts the request.

mod capacity;
mod connection;
mod error;
mod lease;
mod multiplex;
mod pool;
mod pool_config;
mod probe;
mod stats;

pub use capacity::{CapReduction, CapSource};
pub use connection::{ConnectionId, RequestBody, ResponseEvent};
pub use error::ClientError;
pub use lease::{Lease, ResponseStream};
pub use pool::Pool;
pub use pool_config::{ConfiguredCap, Multiplexing, PoolConfig};
pub use probe::{get_values, BackendValues, ProbeError};
pub use stats::PoolStats;
