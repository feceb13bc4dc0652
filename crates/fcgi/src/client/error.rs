//! What can go wrong between the gateway and a backend, as one typed error.
//!
//! The gateway turns these into HTTP statuses in one place; the predicates here
//! (`is_timeout`, `is_queue_timeout`, ...) are the contract, the Display text is for logs.

use std::io;
use std::time::Duration;

use crate::net::Address;
use crate::protocol::ProtocolError;

/// Why a connection stopped carrying requests. Cloneable because every request in flight on
/// the connection receives a copy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionFailure {
    /// The backend closed the connection (EOF) before the request ended.
    #[error("the backend closed the connection")]
    ClosedByBackend,
    /// A socket error; the kind and the OS message are kept.
    #[error("backend socket error: {message}")]
    Io {
        /// The error's kind, for decisions.
        kind: io::ErrorKind,
        /// The OS message, for logs.
        message: String,
    },
    /// The backend sent bytes that are not valid FastCGI.
    #[error("the backend broke the FastCGI protocol: {0}")]
    Protocol(ProtocolError),
    /// The backend sent a record that belongs to no request in flight, or a type a client
    /// never receives (BEGIN_REQUEST, PARAMS, ...).
    #[error("the backend sent an unexpected record (type {record_type}, request id {request_id})")]
    Unexpected {
        /// The record's type byte.
        record_type: u8,
        /// The record's request id.
        request_id: u16,
    },
    /// A write to the backend made no progress within `send_timeout`.
    #[error("a write to the backend stalled for {0:?}")]
    SendTimeout(Duration),
    /// This side closed the connection (pool shutdown, a failed request, an abort).
    #[error("the connection was closed by the gateway")]
    ClosedByGateway,
    /// The request's reader fell `limit` bytes behind the backend; the request alone was
    /// aborted so the connection's other requests keep flowing.
    #[error("the response ran {limit} bytes ahead of its reader; the request was aborted")]
    ResponseBufferExceeded {
        /// `max_request_buffer`.
        limit: usize,
    },
    /// The backend broke the protocol while several requests shared the connection: it does
    /// not multiplex, whatever it was thought to do. The request may go again on a connection
    /// of its own.
    #[error(
        "the backend failed with several requests on one connection ({0}); it does not multiplex"
    )]
    MultiplexingRefused(String),
}

impl From<io::Error> for ConnectionFailure {
    fn from(error: io::Error) -> Self {
        ConnectionFailure::Io {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

/// A request to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be established.
    #[error("connecting to {address} failed: {source}")]
    Connect {
        /// The backend.
        address: Address,
        /// The OS error (refused, no such file, ...).
        source: io::Error,
    },
    /// The connection was not established within `connect_timeout`.
    #[error("connecting to {address} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The backend.
        address: Address,
        /// The configured limit.
        timeout: Duration,
    },
    /// Every connection stayed busy for `queue_timeout`.
    #[error("no connection to {address} became free within {timeout:?}")]
    QueueTimeout {
        /// The backend.
        address: Address,
        /// The configured limit.
        timeout: Duration,
    },
    /// `max_queue` requests were already waiting; this one was refused at once.
    #[error("{max_queue} requests already wait for {address}; refusing more")]
    QueueFull {
        /// The backend.
        address: Address,
        /// The configured limit.
        max_queue: usize,
    },
    /// The backend's listen queue stayed full until `queue_timeout` (connect gave EAGAIN).
    #[error("the listen queue of {address} is full")]
    ListenQueueFull {
        /// The backend.
        address: Address,
    },
    /// The backend sent nothing for `read_timeout` while the request was in flight.
    #[error("{address} sent nothing for {timeout:?}")]
    ReadTimeout {
        /// The backend.
        address: Address,
        /// The configured limit.
        timeout: Duration,
    },
    /// The connection failed while the request was in flight.
    #[error("request to {address} failed: {failure}")]
    Connection {
        /// The backend.
        address: Address,
        /// What happened to the connection.
        failure: ConnectionFailure,
    },
    /// The request already ended (END_REQUEST, or a failure reported before); nothing follows.
    #[error("the request already ended")]
    RequestEnded,
    /// The request body could not be read from where the gateway kept it.
    #[error("reading the request body failed: {0}")]
    RequestBody(io::Error),
}

impl ClientError {
    /// A connect, read or send deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ClientError::ConnectTimeout { .. }
                | ClientError::ReadTimeout { .. }
                | ClientError::Connection {
                    failure: ConnectionFailure::SendTimeout(_),
                    ..
                }
        )
    }

    /// The request waited in the queue for `queue_timeout` and never reached the backend.
    pub fn is_queue_timeout(&self) -> bool {
        matches!(self, ClientError::QueueTimeout { .. })
    }

    /// The backend or its queue is full: the request never reached the application, and trying
    /// again a little later may succeed (503 with Retry-After).
    pub fn is_overloaded(&self) -> bool {
        matches!(
            self,
            ClientError::QueueTimeout { .. }
                | ClientError::QueueFull { .. }
                | ClientError::ListenQueueFull { .. }
        )
    }

    /// The connection died under the request (EOF, reset, write error): on a reused
    /// connection before any answer, the backend most likely closed it while it sat idle.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            ClientError::Connection {
                failure: ConnectionFailure::ClosedByBackend
                    | ConnectionFailure::Io { .. }
                    | ConnectionFailure::MultiplexingRefused(_),
                ..
            }
        )
    }

    /// The connection failed because the backend does not multiplex: worth sending again on
    /// a connection of its own even if this one was fresh.
    pub fn is_multiplexing_refused(&self) -> bool {
        matches!(
            self,
            ClientError::Connection {
                failure: ConnectionFailure::MultiplexingRefused(_),
                ..
            }
        )
    }

    /// A connect found the backend's listen queue full.
    pub fn is_listen_queue_full(&self) -> bool {
        matches!(self, ClientError::ListenQueueFull { .. })
    }

    /// The backend could not be reached at all.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::ConnectTimeout { .. }
        )
    }

    /// The backend answered with something that is not FastCGI.
    pub fn is_protocol(&self) -> bool {
        matches!(
            self,
            ClientError::Connection {
                failure: ConnectionFailure::Protocol(_),
                ..
            }
        )
    }
}
