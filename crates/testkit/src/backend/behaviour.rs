//! What the test backend answers, decided per request by QUERY_STRING so a test can drive it
//! through the gateway: `token`, `sleep_ms`, `size`, `status`, `crash`, `stderr`, and for
//! apps that get their own framing wrong `content_length` (sent verbatim), `body` (the whole
//! body), `header` (an extra `Name: value` line, repeatable), `end_delay_ms` (END_REQUEST
//! that long after the body, as Go and flup apps do) and `head_bytes` (only the first N bytes
//! of the header block and no body: an app that ends, or with `crash` dies, mid-head).
//! `size=N` answers N pattern bytes with `Content-Length: N`; every other answer is a text
//! describing the request and the connection that carried it.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fcgi::server::{Handler, HandlerOutcome, Request, ResponseWriter};

use crate::pattern_from;

/// Bodies are written in pieces of this size, so a large `size=N` streams.
const WRITE_CHUNK: usize = 64 * 1024;

/// The handler of one connection: it knows the connection's number and counts its requests,
/// so every answer can prove which connection carried it.
pub(super) struct ConnectionHandler {
    connection: u64,
    requests_served: AtomicU64,
    overload: Arc<OverloadInjector>,
}

impl ConnectionHandler {
    pub(super) fn new(connection: u64, overload: Arc<OverloadInjector>) -> ConnectionHandler {
        ConnectionHandler {
            connection,
            requests_served: AtomicU64::new(0),
            overload,
        }
    }
}

/// Refuses every n-th request of the whole backend with FCGI_OVERLOADED, as an app shedding
/// load does; n = 0 refuses nothing. A request with a `token` is refused at most once, so a
/// client that retries gets through and a test can demand that every request succeeds.
#[derive(Default)]
pub(super) struct OverloadInjector {
    pub(super) every: AtomicU64,
    seen: AtomicU64,
    pub(super) refused: AtomicU64,
    refused_tokens: Mutex<HashSet<String>>,
}

impl OverloadInjector {
    fn refuse_this_one(&self, token: Option<&str>) -> bool {
        let every = self.every.load(Ordering::SeqCst);
        if every == 0 {
            return false;
        }
        let mut refused_tokens = self
            .refused_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if token.is_some_and(|token| refused_tokens.contains(token)) {
            return false;
        }
        let seen = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if seen % every != 0 {
            return false;
        }
        if let Some(token) = token {
            refused_tokens.insert(token.to_owned());
        }
        self.refused.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// The instructions a request carries in its query string.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Instructions {
    pub(super) token: Option<String>,
    pub(super) sleep: Option<Duration>,
    pub(super) size: Option<usize>,
    pub(super) status: Option<u16>,
    pub(super) crash: bool,
    pub(super) stderr: Option<String>,
    pub(super) content_length: Option<String>,
    pub(super) body: Option<String>,
    pub(super) headers: Vec<String>,
    pub(super) end_delay: Option<Duration>,
    pub(super) head_bytes: Option<usize>,
}

impl Instructions {
    /// Unknown keys and unparsable numbers are ignored: the gateway may add its own query.
    pub(super) fn from_query(query: &str) -> Instructions {
        let mut instructions = Instructions::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match key {
                "token" => instructions.token = Some(value),
                "sleep_ms" => {
                    instructions.sleep = value.parse().ok().map(Duration::from_millis);
                }
                "size" => instructions.size = value.parse().ok(),
                "status" => instructions.status = value.parse().ok(),
                "crash" => instructions.crash = value == "1",
                "stderr" => instructions.stderr = Some(value),
                "content_length" => instructions.content_length = Some(value),
                "body" => instructions.body = Some(value),
                "header" => instructions.headers.push(value),
                "end_delay_ms" => {
                    instructions.end_delay = value.parse().ok().map(Duration::from_millis);
                }
                "head_bytes" => instructions.head_bytes = value.parse().ok(),
                _ => {}
            }
        }
        instructions
    }
}

impl Handler for ConnectionHandler {
    async fn handle(&self, request: Request, response: &mut ResponseWriter) -> HandlerOutcome {
        let query = request.param_str("QUERY_STRING").unwrap_or_default();
        let instructions = Instructions::from_query(query);
        if self.overload.refuse_this_one(instructions.token.as_deref()) {
            return HandlerOutcome::Overloaded;
        }
        let index_on_connection = self.requests_served.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(delay) = instructions.sleep {
            tokio::time::sleep(delay).await;
        }
        // Write errors only mean the connection is gone; the outcome no longer matters then.
        if let Some(text) = &instructions.stderr {
            let _ = response.stderr(text.as_bytes()).await;
        }
        let head = header_block(&instructions);
        let head = match instructions.head_bytes {
            Some(length) => &head.as_bytes()[..length.min(head.len())],
            None => head.as_bytes(),
        };
        let _ = response.stdout(head).await;
        if instructions.crash {
            let _ = response.flush().await;
            return HandlerOutcome::CloseConnection;
        }
        if instructions.head_bytes.is_some() {
            // A cut head has no body after it: the app ended mid-head.
            return HandlerOutcome::Complete { app_status: 0 };
        }
        match instructions.size {
            Some(size) => {
                let mut offset = 0;
                while offset < size {
                    let length = WRITE_CHUNK.min(size - offset);
                    if response
                        .stdout(&pattern_from(offset, length))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    offset += length;
                }
            }
            None => {
                let body = instructions.body.clone().unwrap_or_else(|| {
                    describe(
                        &request,
                        &instructions,
                        self.connection,
                        index_on_connection,
                    )
                });
                let _ = response.stdout(body.as_bytes()).await;
            }
        }
        if let Some(delay) = instructions.end_delay {
            let _ = response.flush().await;
            tokio::time::sleep(delay).await;
        }
        HandlerOutcome::Complete { app_status: 0 }
    }
}

fn header_block(instructions: &Instructions) -> String {
    let mut head = String::new();
    if let Some(status) = instructions.status {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|code| code.canonical_reason())
            .unwrap_or("Unknown");
        let _ = write!(head, "Status: {status} {reason}\r\n");
    }
    let content_type = if instructions.size.is_some() {
        "application/octet-stream"
    } else {
        "text/plain"
    };
    let _ = write!(head, "Content-Type: {content_type}\r\n");
    // A known-length download, as most apps send one; download.php covers the unframed case.
    match (&instructions.content_length, instructions.size) {
        (Some(declared), _) => {
            let _ = write!(head, "Content-Length: {declared}\r\n");
        }
        (None, Some(size)) => {
            let _ = write!(head, "Content-Length: {size}\r\n");
        }
        (None, None) => {}
    }
    for line in &instructions.headers {
        let _ = write!(head, "{line}\r\n");
    }
    if let Some(token) = &instructions.token {
        let _ = write!(head, "X-Token: {token}\r\n");
    }
    head.push_str("\r\n");
    head
}

/// The default body: what arrived (CGI params by their names, then the STDIN length), and on
/// which connection, one `name: value` per line.
fn describe(request: &Request, instructions: &Instructions, connection: u64, index: u64) -> String {
    let param = |name| request.param_str(name).unwrap_or_default();
    let mut body = format!(
        "REQUEST_METHOD: {}\nREQUEST_URI: {}\nCONTENT_LENGTH: {}\nstdin: {}\n\
         connection: {connection}\nrequest_on_connection: {index}\n",
        param("REQUEST_METHOD"),
        param("REQUEST_URI"),
        param("CONTENT_LENGTH"),
        request.stdin.len(),
    );
    if let Some(token) = &instructions.token {
        let _ = writeln!(body, "token: {token}");
    }
    body
}

/// `%XX` and `+` decoding for query values; malformed escapes are kept as they are.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(index + 1..index + 3)
                    .and_then(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok());
                if let Some(byte) = hex {
                    decoded.push(byte);
                    index += 3;
                    continue;
                }
                decoded.push(b'%');
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn query_instructions_are_parsed_and_decoded() {
        let instructions = Instructions::from_query(
            "token=a%20b+c&sleep_ms=25&size=1000&status=503&crash=1&stderr=oh%21&other=x&size2",
        );
        assert_eq!(
            instructions,
            Instructions {
                token: Some("a b c".into()),
                sleep: Some(Duration::from_millis(25)),
                size: Some(1000),
                status: Some(503),
                crash: true,
                stderr: Some("oh!".into()),
                ..Instructions::default()
            }
        );
        let framing = Instructions::from_query(
            "content_length=5&body=hello%20world&header=X-A%3A%201&header=X-B%3A%202&end_delay_ms=5",
        );
        assert_eq!(framing.content_length.as_deref(), Some("5"));
        assert_eq!(framing.body.as_deref(), Some("hello world"));
        assert_eq!(framing.headers, ["X-A: 1", "X-B: 2"]);
        assert_eq!(framing.end_delay, Some(Duration::from_millis(5)));
        assert_eq!(Instructions::from_query("head_bytes=7").head_bytes, Some(7));
        assert_eq!(Instructions::from_query(""), Instructions::default());
        assert_eq!(Instructions::from_query("size=big&crash=0").size, None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn header_block_carries_status_and_token() {
        let instructions = Instructions::from_query("status=404&token=t1");
        assert_eq!(
            header_block(&instructions),
            "Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-Token: t1\r\n\r\n"
        );
        let instructions = Instructions::from_query("size=3");
        assert_eq!(
            header_block(&instructions),
            "Content-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\n"
        );
    }
}
