//! Several requests on one FastCGI connection, seen from both instruments: the test backend
//! serves them concurrently (or claims to and refuses), and the relay in front of it counts
//! requests in flight per connection, ids reused too early and aborts — for php-fpm too.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fcgi::net::{connect, Address, Stream};
use fcgi::protocol::{
    decode_pairs, encode_get_values, encode_stream_record, BeginRequest, EndRequest, ParamsWriter,
    ProtocolStatus, Record, RecordBody, RecordDecoder, RecordEncoder, RecordType, RequestId, Role,
    FCGI_MPXS_CONNS,
};
use fcgi::server::ServerConfig;
use fcgi_testkit::backend::{BackendOptions, TestBackend};
use fcgi_testkit::php::{PhpFpm, PhpFpmOptions};
use fcgi_testkit::relay::CountingRelay;
use fcgi_testkit::{php_fixture_docroot, Listen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::fastcgi::{self, as_pairs, php_params};
use fcgi_testkit::wait_until;

const PATIENCE: Duration = Duration::from_secs(10);

/// A FastCGI client that sends requests with any id and reads records of any id, built on the
/// `fcgi` codec.
struct MultiplexingClient {
    stream: Stream,
    buffer: BytesMut,
}

/// A response as the client collected it.
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    end: Option<EndRequest>,
}

impl Collected {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl MultiplexingClient {
    async fn open(address: &Address) -> MultiplexingClient {
        MultiplexingClient {
            stream: connect(address).await.unwrap(),
            buffer: BytesMut::new(),
        }
    }

    async fn send(&mut self, wire: &[u8]) {
        self.stream.write_all(wire).await.unwrap();
    }

    /// A GET with `query`, KEEP_CONN set, sent whole.
    async fn request(&mut self, id: u16, query: &str) {
        let request_id = RequestId(id);
        let mut wire = BytesMut::new();
        let begin = Record {
            request_id,
            body: RecordBody::BeginRequest(BeginRequest {
                role: Role::Responder,
                keep_conn: true,
            }),
        };
        RecordEncoder.encode(begin, &mut wire).unwrap();
        let mut params = ParamsWriter::new(&mut wire, RecordType::Params, request_id);
        params.push(b"REQUEST_METHOD", b"GET");
        params.push(b"QUERY_STRING", query.as_bytes());
        params.finish();
        encode_stream_record(&mut wire, RecordType::Stdin, request_id, &[]);
        self.send(&wire).await;
    }

    async fn abort(&mut self, id: u16) {
        let mut wire = BytesMut::new();
        let abort = Record {
            request_id: RequestId(id),
            body: RecordBody::AbortRequest,
        };
        RecordEncoder.encode(abort, &mut wire).unwrap();
        self.send(&wire).await;
    }

    /// The next record; `None` once the peer closed.
    async fn record(&mut self) -> Option<Record> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(record) = RecordDecoder.decode(&mut self.buffer).unwrap() {
                    return Some(record);
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no record in time")
    }

    /// Reads until `count` requests have ended; returns them and the order they ended in.
    async fn collect(&mut self, count: usize) -> (HashMap<u16, Collected>, Vec<u16>) {
        let mut responses: HashMap<u16, Collected> = HashMap::new();
        let mut ended = Vec::new();
        while ended.len() < count {
            let record = self.record().await.expect("connection closed early");
            let id = record.request_id.0;
            let response = responses.entry(id).or_default();
            match record.body {
                RecordBody::Stdout(content) => response.stdout.extend_from_slice(&content),
                RecordBody::EndRequest(end) => {
                    response.end = Some(end);
                    ended.push(id);
                }
                _ => {}
            }
        }
        (responses, ended)
    }
}

fn completed(app_status: u32) -> Option<EndRequest> {
    Some(EndRequest {
        app_status,
        protocol_status: ProtocolStatus::RequestComplete,
    })
}

async fn multiplexing_backend(listen: Listen, server: ServerConfig) -> TestBackend {
    TestBackend::start(BackendOptions {
        listen,
        server,
        ..BackendOptions::default()
    })
    .await
}

fn multiplexing() -> ServerConfig {
    ServerConfig {
        mpxs_conns: true,
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn concurrent_requests_on_one_connection_are_served_and_seen_by_both_instruments() {
    for listen in [Listen::Unix, Listen::Tcp] {
        let backend = multiplexing_backend(listen, multiplexing()).await;
        let relay = CountingRelay::start(backend.address()).await;
        let mut client = MultiplexingClient::open(&relay.address()).await;
        for id in 1..=5 {
            client
                .request(id, &format!("token=t{id}&sleep_ms=200"))
                .await;
        }
        let (responses, _) = client.collect(5).await;
        for id in 1..=5 {
            let response = &responses[&id];
            assert_eq!(response.end, completed(0));
            assert!(
                response.text().contains(&format!("\r\nX-Token: t{id}\r\n"))
                    && response.text().ends_with(&format!("token: t{id}\n")),
                "request {id} got {}",
                response.text()
            );
        }
        assert_eq!(backend.max_concurrent_requests_on_one_connection(), 5);
        assert_eq!(backend.connections_accepted(), 1);
        assert_eq!(relay.requests_begun(), 5);
        assert_eq!(relay.max_concurrent_requests_on_one_connection(), 5);
        assert_eq!(relay.id_reused_while_active(), 0);
        assert_eq!(relay.abort_requests_seen(), 0);

        // Ids are free again once ended: reusing them now is no fault.
        client.request(1, "token=again").await;
        client.request(2, "token=again2").await;
        let (responses, _) = client.collect(2).await;
        assert!(responses[&1].text().ends_with("token: again\n"));
        assert_eq!(relay.id_reused_while_active(), 0);
        assert_eq!(relay.requests_begun(), 7);
    }
}

#[tokio::test]
async fn the_relay_counts_aborts_and_ids_reused_before_their_end_request() {
    let backend = multiplexing_backend(Listen::Tcp, multiplexing()).await;
    let relay = CountingRelay::start(backend.address()).await;
    let mut client = MultiplexingClient::open(&relay.address()).await;
    client.request(1, "sleep_ms=60000").await;
    client.request(2, "sleep_ms=60000").await;
    wait_until("both requests are in flight", || {
        relay.max_concurrent_requests_on_one_connection() == 2
    })
    .await;

    client.abort(1).await;
    let (responses, _) = client.collect(1).await;
    assert_eq!(
        responses[&1].end,
        completed(1),
        "the backend ends an aborted request"
    );
    assert_eq!(relay.abort_requests_seen(), 1);
    client.request(1, "token=after-abort").await;
    let (responses, _) = client.collect(1).await;
    assert!(responses[&1].text().ends_with("token: after-abort\n"));
    assert_eq!(
        relay.id_reused_while_active(),
        0,
        "id 1 was reused only after its END_REQUEST"
    );

    client.request(2, "token=too-early").await;
    wait_until("the early reuse is counted", || {
        relay.id_reused_while_active() == 1
    })
    .await;
    assert_eq!(relay.requests_begun(), 4);
    assert_eq!(relay.max_concurrent_requests_on_one_connection(), 2);
}

#[tokio::test]
async fn a_backend_can_claim_multiplexing_and_refuse_a_second_request_with_cant_mpx_conn() {
    let backend = multiplexing_backend(
        Listen::Unix,
        ServerConfig {
            mpxs_conns: false,
            announced_mpxs_conns: Some(true),
            ..ServerConfig::default()
        },
    )
    .await;
    let mut client = MultiplexingClient::open(&backend.address()).await;
    let mut query = BytesMut::new();
    encode_get_values(&mut query, &[FCGI_MPXS_CONNS]);
    client.send(&query).await;
    let answer = client.record().await.unwrap();
    let RecordBody::GetValuesResult(content) = answer.body else {
        panic!("expected GET_VALUES_RESULT, got {answer:?}");
    };
    assert_eq!(
        decode_pairs(&content).unwrap(),
        vec![(
            Bytes::from_static(b"FCGI_MPXS_CONNS"),
            Bytes::from_static(b"1")
        )]
    );

    client.request(1, "token=first&sleep_ms=300").await;
    client.request(2, "token=second").await;
    let (responses, ended) = client.collect(2).await;
    assert_eq!(ended, vec![2, 1]);
    assert_eq!(
        responses[&2].end,
        Some(EndRequest {
            app_status: 0,
            protocol_status: ProtocolStatus::CantMpxConn
        })
    );
    assert!(responses[&2].stdout.is_empty());
    assert_eq!(responses[&1].end, completed(0));
    assert!(responses[&1].text().ends_with("token: first\n"));
    assert_eq!(backend.max_concurrent_requests_on_one_connection(), 2);
}

#[tokio::test]
async fn the_relay_watches_php_fpm_over_tcp_and_unix() {
    for listen in [Listen::Unix, Listen::Tcp] {
        let Some(fpm) = PhpFpm::start(PhpFpmOptions {
            listen,
            ..PhpFpmOptions::default()
        })
        .await
        else {
            return;
        };
        let relay = CountingRelay::start(fpm.address()).await;
        let docroot = php_fixture_docroot();
        let hello = php_params(&docroot, "/hello.php", "");
        let mut connection = fastcgi::Connection::open(&relay.address()).await.unwrap();
        for _ in 0..2 {
            let reply = connection
                .request(&as_pairs(&hello), b"", true)
                .await
                .unwrap();
            assert_eq!(reply.body(), b"Hello, world!");
        }
        // php-fpm drops the connection on ABORT_REQUEST; the relay still saw it go by.
        let sleep = php_params(&docroot, "/sleep.php", "ms=5000");
        connection
            .write_raw(&fastcgi::encode_request(&as_pairs(&sleep), b"", true))
            .await
            .unwrap();
        connection
            .write_raw(&[1, 2, 0, 1, 0, 0, 0, 0])
            .await
            .unwrap();
        wait_until("the abort is seen", || relay.abort_requests_seen() == 1).await;
        assert_eq!(relay.requests_begun(), 3);
        assert_eq!(relay.max_concurrent_requests_on_one_connection(), 1);
        assert_eq!(relay.id_reused_while_active(), 0);
    }
}
