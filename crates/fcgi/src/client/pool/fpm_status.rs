//! The listen queue of a php-fpm pool on another host, read from its status page
//! (`pm.status_path`, `?json`): the remote stand-in for the look at a local backend's listen
//! queue (`crate::backlog`). The request goes through the pool like any other, on one of its
//! connections — a worker this pool holds answers it at once, where a new connection would wait
//! in the very queue it asks about. php-fpm answers it in the worker without running PHP.

use std::time::Duration;

use super::Pool;
use crate::client::{RequestBody, ResponseEvent};

/// A status answer takes a round trip and a worker's microseconds; more means a busy pool, and
/// the next look comes soon anyway.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// A status page is a few hundred bytes; a body beyond this is not one.
const MAX_STATUS_BYTES: usize = 64 * 1024;

/// Connections waiting in the listen queue of `pool`'s php-fpm, from its status page at `path`;
/// `None` when the page could not be had or read (not php-fpm, a wrong path, a timeout).
pub(super) async fn listen_queue(pool: &Pool, path: &str) -> Option<u32> {
    tokio::time::timeout(STATUS_TIMEOUT, fetch(pool, path))
        .await
        .ok()
        .flatten()
        .and_then(|body| parse_listen_queue(&body))
}

async fn fetch(pool: &Pool, path: &str) -> Option<Vec<u8>> {
    let lease = pool.checkout().await.ok()?;
    let uri = format!("{path}?json");
    let params = |add: &mut dyn FnMut(&[u8], &[u8])| {
        for (name, value) in [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", path),
            ("SCRIPT_FILENAME", path),
            ("REQUEST_URI", uri.as_str()),
            ("QUERY_STRING", "json"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_SOFTWARE", "fcgate"),
            ("SERVER_NAME", "localhost"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("CONTENT_LENGTH", "0"),
        ] {
            add(name.as_bytes(), value.as_bytes());
        }
    };
    let mut response = lease.send_request(params, RequestBody::Empty).await.ok()?;
    let mut body = Vec::new();
    loop {
        match response.next_event().await.ok()? {
            ResponseEvent::Stdout(data) => {
                if body.len() + data.len() > MAX_STATUS_BYTES {
                    return None;
                }
                body.extend_from_slice(&data);
            }
            ResponseEvent::Stderr(_) => {}
            ResponseEvent::End(_) => return Some(body),
        }
    }
}

/// `"listen queue":N` from php-fpm's JSON status (after the CGI headers).
fn parse_listen_queue(response: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"\"listen queue\":";
    let at = response
        .windows(KEY.len())
        .position(|window| window == KEY)?;
    let digits: Vec<u8> = response[at + KEY.len()..]
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_listen_queue;

    #[test]
    fn the_listen_queue_is_read_from_php_fpms_json_status_and_nothing_else() {
        // php-fpm 8.2's answer to /status?json, headers and all.
        let page =
            b"Content-type: application/json\r\nExpires: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n\
            {\"pool\":\"www\",\"process manager\":\"static\",\"start time\":1733385600,\
            \"start since\":12,\"accepted conn\":812,\"listen queue\":3,\"max listen queue\":7,\
            \"listen queue len\":4096,\"idle processes\":0,\"active processes\":4,\
            \"total processes\":4,\"max active processes\":4,\"max children reached\":0,\
            \"slow requests\":0}";
        assert_eq!(parse_listen_queue(page), Some(3));
        assert_eq!(parse_listen_queue(b"{\"listen queue\": 12}"), Some(12));
        assert_eq!(parse_listen_queue(b"<html>File not found.</html>"), None);
        assert_eq!(parse_listen_queue(b"{\"listen queue\":\"x\"}"), None);
    }
}
