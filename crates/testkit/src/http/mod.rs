//! The HTTP side of a test: a keep-alive client ([`HttpClient`]), a bounded load runner
//! ([`run_load`]), a raw byte exchange for malformed-input tests ([`raw_exchange`]) and a
//! client that reads its response slowly or vanishes halfway ([`slow_get`]).

mod client;
mod load;
mod raw;
mod slow;

use bytes::Bytes;

pub use client::HttpClient;
pub use load::{run_load, LoadReport};
pub use raw::raw_exchange;
pub use slow::{slow_get, SlowRead, SlowResponse};

/// A fully read response.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: http::StatusCode,
    /// The response headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced), for assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name` as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}
