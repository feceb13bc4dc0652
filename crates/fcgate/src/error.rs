//! Every way a request can fail inside the gateway, and the one place that turns each into an
//! HTTP status, a short body and a log line.
//!
//! Library errors arrive typed ([`fcgi::client::ClientError`]); the decision which status a
//! cause deserves lives only in [`GatewayError::status`] (STYLE: linkerd's `ServerRescue`).

use std::io;

use bytes::Bytes;
use fcgi::client::ClientError;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, ResponseBody};
use crate::cgi_response::CgiHeadError;
use crate::request_guard::Refusal;
use crate::request_name::{request_info, request_warn, RequestName};
use crate::response_framing::ContentLengthError;

/// Why the gateway answered with an error instead of the application's response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Talking to the backend failed (connect, queue, timeouts, broken connection).
    #[error(transparent)]
    Backend(#[from] ClientError),
    /// The backend's response did not start with a valid CGI header block.
    #[error("the backend sent an invalid CGI header block: {0}")]
    BadResponseHead(#[from] CgiHeadError),
    /// The backend's `Content-Length` is not a number, or its copies disagree.
    #[error(transparent)]
    BadResponseLength(#[from] ContentLengthError),
    /// The backend ended the request before sending a complete header block.
    #[error("the backend ended the request without a CGI header block")]
    MissingResponseHead,
    /// The backend kept answering FCGI_OVERLOADED; the request was never processed.
    #[error("the backend answered FCGI_OVERLOADED {attempts} times")]
    Overloaded {
        /// How many times it was tried.
        attempts: u32,
    },
    /// The backend kept answering FCGI_CANT_MPX_CONN, even on a connection of the request's own.
    #[error("the backend answered FCGI_CANT_MPX_CONN {attempts} times")]
    CannotMultiplex {
        /// How many times it was tried.
        attempts: u32,
    },
    /// The request body is larger than `client_max_body_size`.
    #[error("request body larger than client_max_body_size ({limit} bytes)")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The request head breaks a rule every request must keep (`request_guard.rs`).
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// The request cannot be served as written (bad path, bad encoding).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client stopped sending the body or sent a malformed one.
    #[error("reading the request body from the client failed: {0}")]
    ClientBody(#[source] hyper::Error),
    /// The client sent no body bytes for `client_body_timeout`.
    #[error("the client sent no request body bytes for {timeout:?} ({received} bytes received)")]
    ClientBodyTimeout {
        /// The configured timeout.
        timeout: std::time::Duration,
        /// Body bytes received before it stalled.
        received: u64,
    },
    /// The request bodies held at once reached `max_request_body_buffer_total`.
    #[error("request body buffers are full (max_request_body_buffer_total = {limit} bytes)")]
    BodyBuffersFull {
        /// The configured budget.
        limit: u64,
    },
    /// A temp file for spooling could not be written or read.
    #[error("spooling to a temp file failed: {0}")]
    Spool(io::Error),
    /// No upstream server is configured.
    #[error("no upstream server is configured")]
    NoUpstream,
    /// The rules cannot route the request: a rewrite cycle, or a rewrite to an unusable path.
    /// The configuration's mistake, not the client's.
    #[error("rules: {0}")]
    Rules(String),
    /// No `[[site]]` names the request's host and `unknown_hosts = "reject"`.
    #[error("no site answers this host (unknown_hosts = \"reject\")")]
    UnknownHost,
    /// The app's `X-Accel-Redirect` names something that cannot be served.
    #[error("X-Accel-Redirect: {0}")]
    AccelRedirect(String),
}

impl GatewayError {
    /// The status the client gets. Connect refused → 502, connect or read timeout → 504,
    /// queue timeout → 503 (with Retry-After), a broken backend → 502.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Backend(error) if error.is_overloaded() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Overloaded { .. } | GatewayError::BodyBuffersFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Backend(error) if error.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Backend(error) if error.is_request_body() => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            GatewayError::Backend(_)
            | GatewayError::BadResponseHead(_)
            | GatewayError::BadResponseLength(_)
            | GatewayError::MissingResponseHead
            | GatewayError::CannotMultiplex { .. }
            | GatewayError::NoUpstream => StatusCode::BAD_GATEWAY,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::ClientBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::BadRequest(_) | GatewayError::ClientBody(_) => StatusCode::BAD_REQUEST,
            GatewayError::Spool(_) | GatewayError::Rules(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::AccelRedirect(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::Refused(refusal) => match refusal {
                Refusal::Trace => StatusCode::METHOD_NOT_ALLOWED,
                Refusal::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
                Refusal::TargetTooLong { .. } => StatusCode::URI_TOO_LONG,
                Refusal::HeaderLineTooLong { .. } | Refusal::HeadTooLarge { .. } => {
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                }
                Refusal::MissingHost
                | Refusal::RepeatedHost
                | Refusal::InvalidHost
                | Refusal::ControlCharactersInPath => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// Whether the answer comes before the request body was read in full.
    fn leaves_body_unread(&self) -> bool {
        matches!(
            self,
            GatewayError::BadRequest(_)
                | GatewayError::ClientBody(_)
                | GatewayError::BodyTooLarge { .. }
                | GatewayError::ClientBodyTimeout { .. }
                | GatewayError::BodyBuffersFull { .. }
                | GatewayError::Refused(_)
                | GatewayError::UnknownHost
        )
    }

    /// The response for this error, logging it once at a level that says who must act.
    /// The line names the request (id, method, path), so an operator can find it without
    /// debug logging.
    pub fn into_response(self, name: &RequestName) -> Response<ResponseBody> {
        let status = self.status();
        if status.is_server_error() {
            request_warn!(name, status = status.as_u16(), "{self}");
        } else {
            request_info!(name, status = status.as_u16(), "{self}");
        }
        let mut response = plain_response(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // Refused before the body was read: its unread rest would be taken for the next
        // request, so the connection ends with this answer (HTTP/2 ignores the header).
        if self.leaves_body_unread() {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Marks a response fcgate made itself (an error, a deny, a 404), which a site's
/// `error_pages` may replace; the app's own answers are never replaced.
#[derive(Debug, Clone, Copy)]
pub struct GatewayAnswer;

/// A response whose body is the status line's reason: short, and enough for a human.
pub fn plain_response(status: StatusCode) -> Response<ResponseBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(body::full(Bytes::from(text)));
    *response.status_mut() = status;
    response.extensions_mut().insert(GatewayAnswer);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
