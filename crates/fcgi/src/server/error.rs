//! Why the application side dropped a connection.

use std::io;

use crate::protocol::{ProtocolError, RequestId};

/// Why [`serve_connection`](super::serve_connection) ended a connection other than cleanly.
#[derive(thiserror::Error, Debug)]
pub enum ServerError {
    /// Reading or writing the socket failed.
    #[error("connection i/o failed: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not FastCGI, or PARAMS over the configured limit.
    #[error("peer broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer closed the connection in the middle of a record.
    #[error("connection closed inside a record ({0} bytes of it received)")]
    TruncatedRecord(usize),
    /// A request's STDIN stream is over the configured limit.
    #[error("request {request_id:?} sent more than {limit} bytes of stdin")]
    StdinTooLarge {
        /// The request.
        request_id: RequestId,
        /// The limit it exceeded.
        limit: usize,
    },
    /// BEGIN_REQUEST for an id that already has a request in progress.
    #[error("BEGIN_REQUEST for request {0:?}, which is already in progress")]
    DuplicateRequest(RequestId),
    /// The handler of a request panicked; its output is incomplete, so the connection goes.
    #[error("handler for request {0:?} panicked")]
    HandlerPanicked(RequestId),
}
