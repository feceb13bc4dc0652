//! The one response body type every handler returns: application output, static files and
//! error pages all travel as a boxed body, so the HTTP layer sees a single type.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// The body of every response fcgate sends.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A body held entirely in memory.
pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}
