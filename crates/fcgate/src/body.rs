//! The one response body type every handler returns: application output, static files and
//! error pages all travel as a boxed body, so the HTTP layer sees a single type. Also how a
//! body tells the HTTP/1.1 connection it travels on to end after it ([`CloseAfterResponse`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The body of every response fcgate sends.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A body held entirely in memory.
pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `bytes`, then `error`: a body that ends before its declared length must fail, so that the
/// client's connection is closed (HTTP/1.1) or its stream reset (HTTP/2) instead of the short
/// body passing for a complete one.
pub fn then_error(bytes: Bytes, error: std::io::Error) -> ResponseBody {
    use futures_util::StreamExt;
    let data = futures_util::stream::once(async move { Ok(Frame::data(bytes)) });
    let failure = futures_util::stream::once(async move { Err(after_flush(error).await) });
    StreamBody::new(data.chain(failure)).boxed_unsync()
}

/// `error`, after giving the connection one turn: hyper drops what it has buffered when a body
/// fails, and flushes only while the body is pending, so without this the client would get
/// nothing at all instead of the bytes the app did send.
pub async fn after_flush(error: std::io::Error) -> std::io::Error {
    tokio::task::yield_now().await;
    error
}

/// Asks an HTTP/1.x client connection to end after the response in progress and to answer
/// nothing more. An app whose body overran its `Content-Length` does not know where its own
/// output ends; the cut keeps the excess off the wire, and ending the connection keeps anything
/// else about this exchange from being trusted, as `Connection: close` does when the overrun is
/// known before the head goes out. Once the head is out, only the connection can act: hyper
/// stops polling a body as soon as its declared length is written, so a body error after it
/// would never be seen.
///
/// The client connection hands one to each HTTP/1.x request it serves, refuses requests
/// once it is requested, and ends the connection (also when it was idle or parked). HTTP/2
/// requests carry none: a stream ends cleanly at its declared length, and the connection's
/// other streams are not concerned.
#[derive(Clone, Debug, Default)]
pub struct CloseAfterResponse(CancellationToken);

impl CloseAfterResponse {
    /// Ends with `parent` too: the connection's own end (shutdown, or room made for a
    /// newcomer) is one more reason to answer nothing more.
    pub fn child_of(parent: &CancellationToken) -> CloseAfterResponse {
        CloseAfterResponse(parent.child_token())
    }

    /// The connection is to end after the response in progress.
    pub fn request(&self) {
        self.0.cancel();
    }

    /// Whether the connection is to end.
    pub fn is_requested(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once the connection is to end.
    pub fn requested(&self) -> WaitForCancellationFuture<'_> {
        self.0.cancelled()
    }

    /// The token that is cancelled when the connection is to end.
    pub fn token(&self) -> &CancellationToken {
        &self.0
    }
}
