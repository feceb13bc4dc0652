//! What a handler receives and returns: the collected [`Request`], the [`Handler`] trait and
//! the [`HandlerOutcome`] that decides how the request ends on the wire.

use std::future::Future;

use bytes::Bytes;

use super::response::ResponseWriter;
use crate::protocol::{RequestId, Role};

/// One request, complete: PARAMS decoded and STDIN read to its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The id the client gave it.
    pub request_id: RequestId,
    /// The role asked for: Responder or Authorizer (others are refused before a handler runs).
    pub role: Role,
    /// Whether the client keeps the connection open after this request.
    pub keep_conn: bool,
    /// The PARAMS name-value pairs in the order sent.
    pub params: Vec<(Bytes, Bytes)>,
    /// The whole STDIN stream (empty for an Authorizer).
    pub stdin: Bytes,
}

impl Request {
    /// The value of param `name`; the last one wins if it was sent twice.
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .rev()
            .find(|(candidate, _)| candidate.as_ref() == name.as_bytes())
            .map(|(_, value)| value.as_ref())
    }

    /// The value of param `name` if it is present and UTF-8.
    pub fn param_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.param(name)?).ok()
    }
}

/// How a handler finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerOutcome {
    /// Normal end: the streams are closed and END_REQUEST carries `app_status`.
    Complete {
        /// The application's exit status.
        app_status: u32,
    },
    /// Drop the connection without END_REQUEST, as a crashing application would (for tests).
    CloseConnection,
    /// Refuse the request unprocessed: END_REQUEST with FCGI_OVERLOADED and no output
    /// (FastCGI 1.0 §5.5), which tells the client it may send it again later. Anything the
    /// handler wrote is discarded by the client.
    Overloaded,
}

/// The application: called once per request, with the response streams to write to.
pub trait Handler: Send + Sync + 'static {
    /// Serves `request`, writing STDOUT/STDERR through `response`. The server flushes what is
    /// buffered, ends the streams and sends END_REQUEST after the returned future completes.
    fn handle(
        &self,
        request: Request,
        response: &mut ResponseWriter,
    ) -> impl Future<Output = HandlerOutcome> + Send;
}
