//! Asks a backend for its limits with FCGI_GET_VALUES (FastCGI 1.0 §4.1) on a management
//! connection of its own, then closes it.
//!
//! The connection is closed as soon as the answer is in: php-fpm and php-cgi answer and then
//! keep the connection open, and with process-per-connection backends an open connection holds a
//! worker. A backend that ignores management records is given `timeout`, no more.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

use crate::net::{self, Address};
use crate::protocol::{
    decode_pairs, encode_get_values, RecordBody, RecordDecoder, FCGI_MAX_CONNS, FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
};

/// What a backend announced; a value it left out is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendValues {
    /// FCGI_MAX_CONNS: concurrent connections it accepts.
    pub max_conns: Option<usize>,
    /// FCGI_MAX_REQS: concurrent requests it accepts.
    pub max_reqs: Option<usize>,
    /// FCGI_MPXS_CONNS: whether it multiplexes requests over one connection.
    pub mpxs_conns: Option<bool>,
}

/// Why the backend's limits are unknown.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection.
    #[error("connecting for FCGI_GET_VALUES failed: {0}")]
    Connect(std::io::Error),
    /// Reading or writing the management connection failed, or it closed without an answer.
    #[error("FCGI_GET_VALUES exchange failed: {0}")]
    Io(std::io::Error),
    /// The answer was not valid FastCGI.
    #[error("invalid FCGI_GET_VALUES_RESULT: {0}")]
    Protocol(crate::protocol::ProtocolError),
    /// No answer within the time given.
    #[error("no FCGI_GET_VALUES_RESULT within {0:?}")]
    Timeout(Duration),
}

/// Connects to `address`, asks for FCGI_MAX_CONNS, FCGI_MAX_REQS and FCGI_MPXS_CONNS, and
/// closes the connection. The whole exchange takes at most `timeout`.
pub async fn get_values(address: &Address, timeout: Duration) -> Result<BackendValues, ProbeError> {
    tokio::time::timeout(timeout, exchange(address))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

/// How long the probe waits for the backend to close its side after the answer.
const CLOSE_WAIT: Duration = Duration::from_millis(250);

/// Half-closes and waits for the backend's close: a process-per-connection backend frees the
/// worker that served the probe only then, and the pool must not count that worker free (and
/// open another connection) before it is.
async fn let_the_backend_close(mut stream: net::Stream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 512];
    while let Ok(read) = stream.read(&mut sink).await {
        if read == 0 {
            return;
        }
    }
}

async fn exchange(address: &Address) -> Result<BackendValues, ProbeError> {
    let mut stream = net::connect(address).await.map_err(ProbeError::Connect)?;
    stream
        .write_all(&values_request())
        .await
        .map_err(ProbeError::Io)?;
    let mut buffer = BytesMut::with_capacity(512);
    let mut decoder = RecordDecoder;
    loop {
        while let Some(record) = decoder.decode(&mut buffer).map_err(ProbeError::Protocol)? {
            // Anything else on a management connection (UNKNOWN_TYPE, stray records) is not
            // the answer; keep reading until the answer or the deadline.
            if let RecordBody::GetValuesResult(content) = record.body {
                let pairs = decode_pairs(&content).map_err(ProbeError::Protocol)?;
                let values = parse_values(&pairs);
                let _ = tokio::time::timeout(CLOSE_WAIT, let_the_backend_close(stream)).await;
                return Ok(values);
            }
        }
        if stream.read_buf(&mut buffer).await.map_err(ProbeError::Io)? == 0 {
            return Err(ProbeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// FCGI_GET_VALUES asking for the three values this crate reads, then an empty one: libfcgi
/// (Perl's FCGI, fcgiwrap) answers a management record only once it has read the next record's
/// header, so without one after it the question would wait — and a single-process app would be
/// held — until the asker gives up. The second answer, when it comes, is ignored. Encoded once.
pub(crate) fn values_request() -> Bytes {
    static QUESTION: OnceLock<Bytes> = OnceLock::new();
    QUESTION
        .get_or_init(|| {
            let mut request = BytesMut::from(&question_ahead_of_request()[..]);
            encode_get_values(&mut request, &[]);
            request.freeze()
        })
        .clone()
}

/// The same question alone, for the front of a request's write (`Lease::set_unrepeatable`, on
/// every POST over a reused connection): the request's BEGIN_REQUEST is the record libfcgi
/// waits for, so the empty question would only cost a second answer. php-fpm writes each
/// answer as a segment of its own, and each took the gateway a wake-up, a read and a
/// TCP_QUICKACK (bench/results/speed-profile.md, "What the POST probe costs").
pub(crate) fn question_ahead_of_request() -> Bytes {
    static QUESTION: OnceLock<Bytes> = OnceLock::new();
    QUESTION
        .get_or_init(|| {
            let mut request = BytesMut::new();
            encode_get_values(&mut request, VALUES_ASKED);
            request.freeze()
        })
        .clone()
}

/// The names asked for, and the only ones read from the answer.
const VALUES_ASKED: &[&str] = &[FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS];

fn parse_values(pairs: &[(bytes::Bytes, bytes::Bytes)]) -> BackendValues {
    let number =
        |value: &[u8]| -> Option<usize> { std::str::from_utf8(value).ok()?.trim().parse().ok() };
    let mut values = BackendValues::default();
    for (name, value) in pairs {
        match &name[..] {
            name if name == FCGI_MAX_CONNS.as_bytes() => values.max_conns = number(value),
            name if name == FCGI_MAX_REQS.as_bytes() => values.max_reqs = number(value),
            name if name == FCGI_MPXS_CONNS.as_bytes() => {
                values.mpxs_conns = number(value).map(|flag| flag != 0)
            }
            _ => {}
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn reads_the_three_values_and_ignores_the_rest() {
        let pairs = [
            (
                Bytes::from_static(b"FCGI_MPXS_CONNS"),
                Bytes::from_static(b"0"),
            ),
            (
                Bytes::from_static(b"FCGI_MAX_REQS"),
                Bytes::from_static(b"2"),
            ),
            (
                Bytes::from_static(b"FCGI_MAX_CONNS"),
                Bytes::from_static(b"3"),
            ),
            (Bytes::from_static(b"OTHER"), Bytes::from_static(b"9")),
        ];
        assert_eq!(
            parse_values(&pairs),
            BackendValues {
                max_conns: Some(3),
                max_reqs: Some(2),
                mpxs_conns: Some(false)
            }
        );
    }

    #[test]
    fn a_value_that_is_not_a_number_is_left_unknown() {
        let pairs = [(
            Bytes::from_static(b"FCGI_MAX_CONNS"),
            Bytes::from_static(b"many"),
        )];
        assert_eq!(parse_values(&pairs).max_conns, None);
    }
}
