//! A deliberately tiny FastCGI responder client, written from the spec and independent of the
//! `fcgi` crate, so the harness's backends are checked against something that is not themselves.

use std::io;

use fcgi::net::{connect, Address, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
const KEEP_CONN: u8 = 1;

/// What came back for one request.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// `(appStatus, protocolStatus)` from END_REQUEST; `None` when the connection closed first.
    pub(crate) end: Option<(u32, u8)>,
}

impl Reply {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The CGI body: stdout after the blank line ending the header block.
    pub(crate) fn body(&self) -> &[u8] {
        let text = &self.stdout;
        for separator in [&b"\r\n\r\n"[..], &b"\n\n"[..]] {
            if let Some(at) = text.windows(separator.len()).position(|w| w == separator) {
                return &text[at + separator.len()..];
            }
        }
        &[]
    }

    /// The CGI header block's lines.
    pub(crate) fn header_lines(&self) -> Vec<String> {
        let text = self.stdout_text();
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        head.lines().map(str::to_owned).collect()
    }
}

pub(crate) struct Connection {
    stream: Stream,
}

impl Connection {
    pub(crate) async fn open(address: &Address) -> io::Result<Connection> {
        Ok(Connection {
            stream: connect(address).await?,
        })
    }

    /// Sends one request with id 1 and reads records until its END_REQUEST or EOF.
    pub(crate) async fn request(
        &mut self,
        params: &[(&str, &str)],
        stdin: &[u8],
        keep_conn: bool,
    ) -> io::Result<Reply> {
        self.stream
            .write_all(&encode_request(params, stdin, keep_conn))
            .await?;
        self.read_reply().await
    }

    pub(crate) async fn read_reply(&mut self) -> io::Result<Reply> {
        let mut reply = Reply::default();
        loop {
            let mut header = [0u8; 8];
            match self.stream.read_exact(&mut header).await {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(reply),
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => return Ok(reply),
                Err(error) => return Err(error),
            }
            if header[0] != 1 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a FastCGI record header: {header:?}"),
                ));
            }
            let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
            let mut content = vec![0u8; length + usize::from(header[6])];
            self.stream.read_exact(&mut content).await?;
            content.truncate(length);
            match header[1] {
                STDOUT => reply.stdout.extend_from_slice(&content),
                STDERR => reply.stderr.extend_from_slice(&content),
                END_REQUEST => {
                    let app_status =
                        u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
                    reply.end = Some((app_status, content[4]));
                    return Ok(reply);
                }
                _ => {}
            }
        }
    }

    /// True when the peer closes the connection within `within`.
    pub(crate) async fn closed_within(&mut self, within: std::time::Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    pub(crate) async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub(crate) async fn read_to_end(&mut self) -> Vec<u8> {
        let mut received = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.stream.read_to_end(&mut received),
        )
        .await;
        received
    }
}

/// One request on a fresh connection (no KEEP_CONN).
pub(crate) async fn request(address: &Address, params: &[(&str, &str)], stdin: &[u8]) -> Reply {
    let mut connection = Connection::open(address)
        .await
        .unwrap_or_else(|error| panic!("connect to {address}: {error}"));
    connection
        .request(params, stdin, false)
        .await
        .unwrap_or_else(|error| panic!("FastCGI request to {address}: {error}"))
}

/// CGI params for a GET of `script` (relative to `docroot`) with `query`.
pub(crate) fn php_params(
    docroot: &std::path::Path,
    script: &str,
    query: &str,
) -> Vec<(String, String)> {
    vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("REQUEST_METHOD".into(), "GET".into()),
        (
            "SCRIPT_FILENAME".into(),
            docroot
                .join(script.trim_start_matches('/'))
                .display()
                .to_string(),
        ),
        ("SCRIPT_NAME".into(), script.into()),
        ("REQUEST_URI".into(), format!("{script}?{query}")),
        ("QUERY_STRING".into(), query.into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REDIRECT_STATUS".into(), "200".into()),
        ("CONTENT_LENGTH".into(), "0".into()),
    ]
}

pub(crate) fn as_pairs(params: &[(String, String)]) -> Vec<(&str, &str)> {
    params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

fn record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
    let length = u16::try_from(content.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&[1, kind, 0, 1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(content);
}

fn encode_length(out: &mut Vec<u8>, length: usize) {
    if length < 128 {
        out.push(length as u8);
    } else {
        out.extend_from_slice(&(length as u32 | 0x8000_0000).to_be_bytes());
    }
}

/// Request id 1: BEGIN_REQUEST, PARAMS, STDIN, each stream ended by an empty record.
pub(crate) fn encode_request(params: &[(&str, &str)], stdin: &[u8], keep_conn: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let flags = if keep_conn { KEEP_CONN } else { 0 };
    let mut begin = RESPONDER.to_be_bytes().to_vec();
    begin.extend_from_slice(&[flags, 0, 0, 0, 0, 0]);
    record(&mut out, BEGIN_REQUEST, &begin);
    let mut encoded = Vec::new();
    for (name, value) in params {
        encode_length(&mut encoded, name.len());
        encode_length(&mut encoded, value.len());
        encoded.extend_from_slice(name.as_bytes());
        encoded.extend_from_slice(value.as_bytes());
    }
    for chunk in encoded.chunks(65535) {
        record(&mut out, PARAMS, chunk);
    }
    record(&mut out, PARAMS, &[]);
    for chunk in stdin.chunks(65535) {
        record(&mut out, STDIN, chunk);
    }
    record(&mut out, STDIN, &[]);
    out
}
