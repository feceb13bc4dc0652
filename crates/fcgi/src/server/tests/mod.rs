//! Socket tests of the application-side server: a real listener (unix socket in a fresh
//! directory, or 127.0.0.1:0) and a raw-record client built from the codec, so every byte the
//! server writes is checked as a peer would see it. This file is the harness; the tests are in
//! `requests.rs` (what one request sees), `lifecycle.rs` (aborts, limits, closing) and
//! `multiplexing.rs` (concurrent requests: bounds and fair output).

mod lifecycle;
mod multiplexing;
mod requests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::net::{connect, Address, Stream};
use crate::protocol::{
    decode_pairs, encode_get_values, encode_stream_record, BeginRequest, EndRequest, ParamsWriter,
    ProtocolStatus, Record, RecordBody, RecordDecoder, RecordEncoder, RecordType, RequestId, Role,
    UnknownType, FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, MAX_RECORD_CONTENT,
};

/// Guards every wait on the server so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// The test application; the `MODE` param picks a behaviour.
struct TestApp {
    /// Receives the id of every `hang` request whose handler was dropped (aborted).
    hang_dropped: mpsc::UnboundedSender<RequestId>,
}

struct DropReporter(mpsc::UnboundedSender<RequestId>, RequestId);

impl Drop for DropReporter {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

impl Handler for TestApp {
    async fn handle(&self, request: Request, response: &mut ResponseWriter) -> HandlerOutcome {
        let app_status = request
            .param_str("STATUS")
            .and_then(|status| status.parse().ok())
            .unwrap_or(0);
        match request.param_str("MODE").unwrap_or("echo") {
            "big" => {
                let size: usize = request.param_str("SIZE").unwrap().parse().unwrap();
                let piece: usize = request
                    .param_str("PIECE")
                    .map_or(10_000, |piece| piece.parse().unwrap());
                for piece in big_body(size).chunks(piece) {
                    response.stdout(piece).await.unwrap();
                }
            }
            "stderr" => {
                response.stdout(b"out-1 ").await.unwrap();
                response.stderr(b"warning").await.unwrap();
                response.stdout(b"out-2").await.unwrap();
            }
            "panic" => panic!("the test handler panics on purpose"),
            "crash" => {
                response.stdout(b"partial").await.unwrap();
                return HandlerOutcome::CloseConnection;
            }
            "hang" => {
                let _reporter = DropReporter(self.hang_dropped.clone(), request.request_id);
                response.stdout(b"started").await.unwrap();
                response.flush().await.unwrap();
                std::future::pending::<()>().await;
            }
            _ => {
                let name = request.param_str("NAME").unwrap_or("-");
                let header = format!(
                    "id={} role={:?} name={name} stdin=",
                    request.request_id.0, request.role
                );
                response.stdout(header.as_bytes()).await.unwrap();
                response.stdout(&request.stdin).await.unwrap();
            }
        }
        HandlerOutcome::Complete { app_status }
    }
}

/// What the `big` mode sends: `size` bytes that reveal a lost or reordered record.
fn big_body(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

struct TestServer {
    address: Address,
    shutdown: CancellationToken,
    task: JoinHandle<io::Result<()>>,
    hang_dropped: mpsc::UnboundedReceiver<RequestId>,
    _directory: Option<TempDirectory>,
}

/// A fresh directory for a unix socket, removed on drop.
struct TempDirectory(PathBuf);

impl Drop for TempDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_directory() -> TempDirectory {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "fcgi-server-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&path).unwrap();
    TempDirectory(path)
}

async fn start_tcp(config: ServerConfig) -> TestServer {
    start(Address::Tcp("127.0.0.1:0".into()), None, config).await
}

async fn start_unix(config: ServerConfig) -> TestServer {
    let directory = temp_directory();
    let address = Address::Unix(directory.0.join("app.sock"));
    start(address, Some(directory), config).await
}

async fn start(
    address: Address,
    directory: Option<TempDirectory>,
    config: ServerConfig,
) -> TestServer {
    let listener = Listener::bind(&address).await.unwrap();
    let address = listener.local_address().unwrap();
    let (hang_tx, hang_rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let app = Arc::new(TestApp {
        hang_dropped: hang_tx,
    });
    let task = tokio::spawn(serve(listener, app, config, shutdown.clone()));
    TestServer {
        address,
        shutdown,
        task,
        hang_dropped: hang_rx,
        _directory: directory,
    }
}

/// What the client saw for one request.
#[derive(Debug, Default)]
struct Response {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_ended: bool,
    stderr_ended: bool,
    end: Option<EndRequest>,
}

struct RawClient {
    stream: Stream,
    buffer: BytesMut,
}

impl RawClient {
    async fn connect(address: &Address) -> RawClient {
        RawClient {
            stream: connect(address).await.unwrap(),
            buffer: BytesMut::new(),
        }
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, request_id: u16, body: RecordBody) {
        let mut wire = BytesMut::new();
        let record = Record {
            request_id: RequestId(request_id),
            body,
        };
        RecordEncoder.encode(record, &mut wire).unwrap();
        self.send_bytes(&wire).await;
    }

    async fn begin(&mut self, request_id: u16, keep_conn: bool) {
        let begin = BeginRequest {
            role: Role::Responder,
            keep_conn,
        };
        self.send(request_id, RecordBody::BeginRequest(begin)).await;
    }

    /// BEGIN_REQUEST, the params in one stream, then `stdin` and its terminator.
    async fn request(
        &mut self,
        request_id: u16,
        keep_conn: bool,
        params: &[(&str, &str)],
        stdin: &[u8],
    ) {
        // One write, so a server that drops the connection midway cannot fail a later write.
        let id = RequestId(request_id);
        let mut wire = BytesMut::new();
        let begin = BeginRequest {
            role: Role::Responder,
            keep_conn,
        };
        let begin = Record {
            request_id: id,
            body: RecordBody::BeginRequest(begin),
        };
        RecordEncoder.encode(begin, &mut wire).unwrap();
        let mut writer = ParamsWriter::new(&mut wire, RecordType::Params, id);
        for (name, value) in params {
            writer.push(name.as_bytes(), value.as_bytes());
        }
        writer.finish();
        if !stdin.is_empty() {
            encode_stream_record(&mut wire, RecordType::Stdin, id, stdin);
        }
        encode_stream_record(&mut wire, RecordType::Stdin, id, &[]);
        self.send_bytes(&wire).await;
    }

    /// The next record, or `None` once the server closed the connection.
    async fn read_record(&mut self) -> Option<Record> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(record) = RecordDecoder.decode(&mut self.buffer).unwrap() {
                    return Some(record);
                }
                // A server closing with our bytes unread makes TCP send a reset: also "closed".
                let read = match self.stream.read_buf(&mut self.buffer).await {
                    Err(error) if error.kind() == io::ErrorKind::ConnectionReset => 0,
                    other => other.unwrap(),
                };
                if read == 0 {
                    assert!(self.buffer.is_empty(), "connection closed inside a record");
                    return None;
                }
            }
        })
        .await
        .expect("server did not answer in time")
    }

    /// Reads until END_REQUEST for `request_id`; records of other requests are not expected.
    async fn response(&mut self, request_id: u16) -> Response {
        let mut response = Response::default();
        while response.end.is_none() {
            let record = self
                .read_record()
                .await
                .expect("connection closed before END_REQUEST");
            assert_eq!(record.request_id, RequestId(request_id), "{record:?}");
            match record.body {
                RecordBody::Stdout(content) if content.is_empty() => response.stdout_ended = true,
                RecordBody::Stdout(content) => response.stdout.extend_from_slice(&content),
                RecordBody::Stderr(content) if content.is_empty() => response.stderr_ended = true,
                RecordBody::Stderr(content) => response.stderr.extend_from_slice(&content),
                RecordBody::EndRequest(end) => response.end = Some(end),
                other => panic!("unexpected record {other:?}"),
            }
        }
        response
    }

    /// Waits for a `hang` handler's first output, so the handler is known to be running.
    async fn expect_started(&mut self, request_id: u16) {
        let record = self.read_record().await.unwrap();
        assert_eq!(record.request_id, RequestId(request_id));
        assert_eq!(
            record.body,
            RecordBody::Stdout(Bytes::from_static(b"started"))
        );
    }

    async fn expect_closed(&mut self) {
        assert_eq!(
            self.read_record().await,
            None,
            "connection should be closed"
        );
    }
}

fn completed(app_status: u32) -> Option<EndRequest> {
    Some(EndRequest {
        app_status,
        protocol_status: ProtocolStatus::RequestComplete,
    })
}

fn refused(protocol_status: ProtocolStatus) -> Option<EndRequest> {
    Some(EndRequest {
        app_status: 0,
        protocol_status,
    })
}
