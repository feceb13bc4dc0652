//! The one error type of the codec: every way bytes on the wire can fail to be FastCGI 1.0.
//!
//! Plain data (`Clone + Eq`) so tests can compare errors and a connection can hand the same
//! error to every request it was carrying.

use std::io;

use super::record::RecordType;

/// Why bytes could not be decoded as FastCGI, or a record could not be encoded.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The record header names a protocol version other than `FCGI_VERSION_1` (FastCGI 1.0 §3.3).
    #[error("unsupported FastCGI version {0} (only version 1 exists)")]
    UnsupportedVersion(u8),

    /// A fixed-size record body (BEGIN_REQUEST, END_REQUEST, UNKNOWN_TYPE) is shorter than its
    /// type requires.
    #[error("{record_type:?} record body is {actual} bytes, needs {expected}")]
    BodyTooShort {
        /// The type whose body was short.
        record_type: RecordType,
        /// Bytes the body must have.
        expected: usize,
        /// Bytes it had.
        actual: usize,
    },

    /// A name-value stream ended in the middle of a pair (FastCGI 1.0 §3.4).
    #[error("name-value data ends inside a pair ({0} bytes left over)")]
    NameValueTruncated(usize),

    /// The name-value stream of one request is larger than the configured cap.
    #[error("name-value data exceeds the limit of {limit} bytes")]
    ParamsTooLarge {
        /// The cap that was exceeded, in encoded bytes.
        limit: usize,
    },

    /// Content for a single (non-stream) record does not fit the 16-bit content length.
    #[error("{len} bytes do not fit in one record (at most 65535)")]
    ContentTooLong {
        /// The content length that was asked for.
        len: usize,
    },

    /// Reading or writing the transport failed; carried as kind and text so the error stays
    /// `Clone + Eq` (tokio-util's codec traits require a conversion from `io::Error`).
    #[error("i/o error: {message}")]
    Io {
        /// The original error kind.
        kind: io::ErrorKind,
        /// The original error text.
        message: String,
    },
}

impl From<io::Error> for ProtocolError {
    fn from(error: io::Error) -> Self {
        ProtocolError::Io {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl From<ProtocolError> for io::Error {
    fn from(error: ProtocolError) -> Self {
        match error {
            ProtocolError::Io { kind, message } => io::Error::new(kind, message),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
