//! What a log line names a request by: its id, method and path.
//!
//! Every warning about a request carries all three as fields (`request`, `method`, `path`), so
//! an operator finds the request from one line at the default level. The request's tracing
//! span carries them too, but only when debug logging enables it; making that span info-level
//! would cost every request a formatted span, where these fields cost only the lines that are
//! written. The `request_*!` macros add the three fields to a `tracing` event.

use http::{Method, Uri};

/// A request as its log lines name it. Cheap to clone: the method is inline for the standard
/// ones and the URI shares its buffer.
#[derive(Clone, Debug)]
pub struct RequestName {
    /// The gateway's request id, also in the access log.
    pub id: u64,
    method: Method,
    uri: Uri,
}

impl RequestName {
    pub fn new(id: u64, method: Method, uri: Uri) -> RequestName {
        RequestName { id, method, uri }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The path without the query: queries carry tokens that logs should not keep.
    pub fn path(&self) -> &str {
        self.uri.path()
    }
}

/// `tracing::warn!` naming a request: `request_warn!(name, "text {x}")`, with further fields
/// before the text as in `tracing`.
macro_rules! request_warn {
    ($name:expr, $($rest:tt)+) => {
        tracing::warn!(
            request = $name.id,
            method = %$name.method(),
            path = $name.path(),
            $($rest)+
        )
    };
}

/// `tracing::info!` naming a request, as [`request_warn!`].
macro_rules! request_info {
    ($name:expr, $($rest:tt)+) => {
        tracing::info!(
            request = $name.id,
            method = %$name.method(),
            path = $name.path(),
            $($rest)+
        )
    };
}

/// `tracing::error!` naming a request, as [`request_warn!`].
macro_rules! request_error {
    ($name:expr, $($rest:tt)+) => {
        tracing::error!(
            request = $name.id,
            method = %$name.method(),
            path = $name.path(),
            $($rest)+
        )
    };
}

pub(crate) use {request_error, request_info, request_warn};
