//! The one response body type every handler returns: application output, static files and
//! error pages all travel as a boxed body, so the HTTP layer sees a single type.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

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
