//! What can go wrong between the gateway and a backend, as one typed error.
//!
//! [`ClientError`] is opaque: the gateway turns it into an HTTP status in one place by asking
//! its predicates (`is_timeout`, `is_queue_timeout`, ...), which are the contract; the variants
//! behind them ([`ErrorKind`], [`ConnectionFailure`]) are this crate's to change. Causes are
//! kept typed (the `io::Error`, the `ProtocolError`), not as text; the Display text is for logs.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::net::Address;
use crate::protocol::ProtocolError;

/// Why a connection stopped carrying requests. Cloneable because every request in flight on
/// the connection receives a copy.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum ConnectionFailure {
    /// The backend closed the connection (EOF) before the request ended.
    #[error("the backend closed the connection")]
    ClosedByBackend,
    /// A socket error, shared by every request that was on the connection.
    #[error("backend socket error: {0}")]
    Io(Arc<io::Error>),
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
    MultiplexingRefused(Box<ConnectionFailure>),
    /// The connection failed (for the reason inside) before a single byte of this request was
    /// written: the application never saw it, so it may go again whatever its method.
    #[error("{0}, before the request was sent")]
    NotSent(Box<ConnectionFailure>),
}

/// Socket errors compare by kind: the same failure, whatever the OS said about it.
impl PartialEq for ConnectionFailure {
    fn eq(&self, other: &Self) -> bool {
        use ConnectionFailure as F;
        match (self, other) {
            (F::ClosedByBackend, F::ClosedByBackend) | (F::ClosedByGateway, F::ClosedByGateway) => {
                true
            }
            (F::Io(a), F::Io(b)) => a.kind() == b.kind(),
            (F::Protocol(a), F::Protocol(b)) => a == b,
            (
                F::Unexpected {
                    record_type: a,
                    request_id: b,
                },
                F::Unexpected {
                    record_type: c,
                    request_id: d,
                },
            ) => (a, b) == (c, d),
            (F::SendTimeout(a), F::SendTimeout(b)) => a == b,
            (F::ResponseBufferExceeded { limit: a }, F::ResponseBufferExceeded { limit: b }) => {
                a == b
            }
            (F::MultiplexingRefused(a), F::MultiplexingRefused(b)) => a == b,
            (F::NotSent(a), F::NotSent(b)) => a == b,
            _ => false,
        }
    }
}

impl From<io::Error> for ConnectionFailure {
    fn from(error: io::Error) -> Self {
        ConnectionFailure::Io(Arc::new(error))
    }
}

/// A request to a backend failed. Ask the predicates what happened; the Display text says it
/// for the log.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ClientError(#[from] ErrorKind);

/// What [`ClientError`] holds.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ErrorKind {
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
            &self.0,
            ErrorKind::ConnectTimeout { .. }
                | ErrorKind::ReadTimeout { .. }
                | ErrorKind::Connection {
                    failure: ConnectionFailure::SendTimeout(_),
                    ..
                }
        )
    }

    /// The request waited in the queue for `queue_timeout` and never reached the backend.
    pub fn is_queue_timeout(&self) -> bool {
        matches!(&self.0, ErrorKind::QueueTimeout { .. })
    }

    /// The backend or its queue is full: the request never reached the application, and trying
    /// again a little later may succeed (503 with Retry-After).
    pub fn is_overloaded(&self) -> bool {
        matches!(
            &self.0,
            ErrorKind::QueueTimeout { .. }
                | ErrorKind::QueueFull { .. }
                | ErrorKind::ListenQueueFull { .. }
        )
    }

    /// The connection died under the request (EOF, reset, write error): on a reused
    /// connection before any answer, the backend most likely closed it while it sat idle.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            &self.0,
            ErrorKind::Connection {
                failure: ConnectionFailure::ClosedByBackend
                    | ConnectionFailure::Io(_)
                    | ConnectionFailure::MultiplexingRefused(_)
                    | ConnectionFailure::NotSent(_),
                ..
            }
        )
    }

    /// The connection failed before any byte of the request was written: nothing reached the
    /// application, so sending it again cannot run it twice — a POST included.
    pub fn is_not_sent(&self) -> bool {
        matches!(
            &self.0,
            ErrorKind::Connection {
                failure: ConnectionFailure::NotSent(_),
                ..
            }
        )
    }

    /// The connection failed because the backend does not multiplex: worth sending again on
    /// a connection of its own even if this one was fresh.
    pub fn is_multiplexing_refused(&self) -> bool {
        matches!(
            &self.0,
            ErrorKind::Connection {
                failure: ConnectionFailure::MultiplexingRefused(_),
                ..
            }
        )
    }

    /// A connect found the backend's listen queue full.
    pub fn is_listen_queue_full(&self) -> bool {
        matches!(&self.0, ErrorKind::ListenQueueFull { .. })
    }

    /// The backend could not be reached at all.
    pub fn is_connect(&self) -> bool {
        matches!(
            &self.0,
            ErrorKind::Connect { .. } | ErrorKind::ConnectTimeout { .. }
        )
    }

    /// The backend answered with something that is not FastCGI.
    pub fn is_protocol(&self) -> bool {
        matches!(
            &self.0,
            ErrorKind::Connection {
                failure: ConnectionFailure::Protocol(_),
                ..
            }
        )
    }

    /// The request body could not be read from where the gateway kept it: the gateway's own
    /// fault, not the backend's.
    pub fn is_request_body(&self) -> bool {
        matches!(self.0, ErrorKind::RequestBody(_))
    }

    /// The backend sent nothing for `read_timeout`.
    pub fn is_read_timeout(&self) -> bool {
        matches!(self.0, ErrorKind::ReadTimeout { .. })
    }

    /// The response ran `max_request_buffer` bytes ahead of its reader on a shared connection,
    /// and this request alone was aborted.
    pub fn is_response_buffer_exceeded(&self) -> bool {
        matches!(
            &self.0,
            ErrorKind::Connection {
                failure: ConnectionFailure::ResponseBufferExceeded { .. },
                ..
            }
        )
    }

    /// The request had already ended; nothing more will come for it.
    pub fn is_request_ended(&self) -> bool {
        matches!(self.0, ErrorKind::RequestEnded)
    }
}
