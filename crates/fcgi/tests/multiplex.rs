//! The pool with multiplexing, over real unix sockets: many requests on few connections, each
//! answer matched to its request; a reader that falls behind losing only its own request; request
//! ids held until the backend's END_REQUEST; FCGI_CANT_MPX_CONN turning multiplexing off; and
//! random interleavings of many requests' records reassembled exactly.
//!
//! Two backends: the library's own application server (which multiplexes when configured to),
//! and a scripted one on raw sockets (`ScriptedBackend`) for what a well-behaved server never
//! does on its own, such as holding back END_REQUEST after an abort.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{send, start_echo_backend, wait_until};
use fcgi::client::{ClientError, Multiplexing, Pool, PoolConfig, ResponseEvent, ResponseStream};
use fcgi::net::{Address, Listener, Stream};
use fcgi::protocol::{
    decode_pairs, encode_stream_record, EndRequest, ProtocolStatus, Record, RecordBody,
    RecordDecoder, RecordEncoder, RecordType, RequestId,
};
use fcgi::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

fn multiplexing_server() -> ServerConfig {
    ServerConfig {
        mpxs_conns: true,
        max_conns: 16,
        max_reqs: 100_000,
        max_reqs_per_conn: 1000,
        ..ServerConfig::default()
    }
}

/// Idle connections stay for the whole test (`worker_idle_timeout`), so connection counts show
/// how requests were spread, not how a loaded machine spaced them.
fn pool_config(max_conns: usize, multiplex: Multiplexing) -> PoolConfig {
    PoolConfig {
        multiplex,
        max_reqs_per_conn: 1000,
        worker_idle_timeout: Duration::from_secs(60),
        ..PoolConfig::with_max_conns(max_conns)
    }
}

/// Reads a response to its END_REQUEST: the body after the header block, and the status.
async fn read_all(mut events: ResponseStream) -> Result<(Vec<u8>, ProtocolStatus), ClientError> {
    let mut stdout = Vec::new();
    loop {
        match events.next_event().await? {
            ResponseEvent::Stdout(data) => stdout.extend_from_slice(&data),
            ResponseEvent::Stderr(_) => {}
            ResponseEvent::End(end) => {
                let body = match stdout.windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(at) => stdout.split_off(at + 4),
                    None => stdout,
                };
                return Ok((body, end.protocol_status));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_share_two_connections_and_get_their_own_answers() {
    let backend = start_echo_backend(multiplexing_server()).await;
    // `auto`: the backend's FCGI_GET_VALUES answer (FCGI_MPXS_CONNS=1) turns it on.
    let pool = Pool::new(backend.address.clone(), pool_config(2, Multiplexing::Auto));
    wait_until("the backend's FCGI_MPXS_CONNS=1 is learned", || {
        pool.stats().multiplexing
    })
    .await;
    let accepted_before = backend.counts.accepted.load(Ordering::SeqCst);

    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..1000 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let token = format!("token-{index}");
            let events = send(&pool, &[("TOKEN", &token), ("SLEEP_MS", "20")]).await?;
            let (body, status) = read_all(events).await?;
            Ok::<_, ClientError>((token, String::from_utf8(body).unwrap(), status))
        });
    }
    while let Some(result) = tasks.join_next().await {
        let (token, body, status) = result.unwrap().unwrap();
        assert_eq!(status, ProtocolStatus::RequestComplete);
        assert_eq!(body, token, "an answer reached the wrong request");
    }
    let opened = backend.counts.accepted.load(Ordering::SeqCst) - accepted_before;
    assert!(opened <= 2, "{opened} connections opened for a cap of 2");
    assert!(backend.counts.max_open.load(Ordering::SeqCst) <= 2);
    let most_at_once = backend.counts.max_in_flight.load(Ordering::SeqCst);
    assert!(
        most_at_once > 2,
        "at most {most_at_once} requests ran at once on 2 connections: nothing was multiplexed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_requests_go_to_the_least_loaded_connection_before_a_new_one_opens() {
    let backend = start_echo_backend(multiplexing_server()).await;
    let pool = Pool::new(backend.address.clone(), pool_config(4, Multiplexing::Force));
    // Ten requests one after another, each still in flight while the next is sent.
    let mut streams = Vec::new();
    for index in 0..10 {
        let token = index.to_string();
        streams.push(
            send(&pool, &[("TOKEN", &token), ("SLEEP_MS", "200")])
                .await
                .unwrap(),
        );
    }
    assert_eq!(pool.stats().multiplexed_in_flight, 10);
    assert_eq!(pool.stats().open, 1);
    for (index, events) in streams.into_iter().enumerate() {
        let (body, _) = read_all(events).await.unwrap();
        assert_eq!(body, index.to_string().as_bytes());
    }
    assert_eq!(backend.counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_loses_only_its_own_request() {
    let backend = start_echo_backend(multiplexing_server()).await;
    let pool = Pool::new(
        backend.address.clone(),
        PoolConfig {
            max_request_buffer: 1 << 20,
            ..pool_config(1, Multiplexing::Force)
        },
    );
    // A GiB nobody reads, on the only connection: far more than the backend can write before
    // the abort reaches it (with 20 MiB it sometimes finished first, and nothing was cancelled).
    let mut stalled = send(&pool, &[("BYTES", "1073741824")]).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..200 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let token = format!("t{index}");
            let (body, _) = read_all(send(&pool, &[("TOKEN", &token)]).await?).await?;
            assert_eq!(body, token.as_bytes());
            Ok::<_, ClientError>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    // The backend takes turns between responses, so the others can be done before the stalled
    // response passed the bound: wait for its handler to end, cancelled by the abort the
    // driver sends once the unread bytes pass it.
    wait_until("the stalled request's handler ends", || {
        backend.counts.in_flight.load(Ordering::SeqCst) == 0
    })
    .await;
    // Now the stalled reader looks: whatever was buffered, then the abort.
    let mut buffered = 0;
    let failure = loop {
        match stalled.next_event().await {
            Ok(ResponseEvent::Stdout(data)) => buffered += data.len(),
            Ok(other) => {
                panic!("expected the request to be aborted, got {other:?} after {buffered} bytes")
            }
            Err(error) => break error,
        }
    };
    assert!(failure.is_response_buffer_exceeded(), "{failure}");
    wait_until("the backend cancels the aborted handler", || {
        backend.counts.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(backend.counts.accepted.load(Ordering::SeqCst), 1);
    // The connection still serves.
    let (body, _) = read_all(send(&pool, &[("TOKEN", "after")]).await.unwrap())
        .await
        .unwrap();
    assert_eq!(body, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_alone_on_its_connection_pauses_the_socket_instead_of_losing_its_request() {
    let backend = start_echo_backend(multiplexing_server()).await;
    let pool = Pool::new(
        backend.address.clone(),
        PoolConfig {
            max_request_buffer: 1 << 20,
            ..pool_config(1, Multiplexing::Off)
        },
    );
    let events = send(&pool, &[("BYTES", "20971520")]).await.unwrap();
    // Far more than the bound would have arrived by now if the connection were read on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (body, status) = read_all(events).await.unwrap();
    assert_eq!(status, ProtocolStatus::RequestComplete);
    assert_eq!(body.len(), 20 << 20);
    assert_eq!(backend.counts.cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cant_mpx_conn_turns_multiplexing_off_for_good() {
    // A server that does not multiplex, with the pool told to anyway.
    let backend = start_echo_backend(ServerConfig {
        mpxs_conns: false,
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::new(backend.address.clone(), pool_config(4, Multiplexing::Force));
    assert!(pool.stats().multiplexing);
    let first = send(&pool, &[("TOKEN", "first"), ("SLEEP_MS", "200")])
        .await
        .unwrap();
    let second = send(&pool, &[("TOKEN", "second")]).await.unwrap();
    let (_, status) = read_all(second).await.unwrap();
    assert_eq!(status, ProtocolStatus::CantMpxConn);
    assert!(!pool.stats().multiplexing);
    let (body, status) = read_all(first).await.unwrap();
    assert_eq!(
        (body.as_slice(), status),
        (&b"first"[..], ProtocolStatus::RequestComplete)
    );

    // From now on one request per connection: concurrent requests all succeed.
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..20 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let token = format!("t{index}");
            let events = send(&pool, &[("TOKEN", &token), ("SLEEP_MS", "10")]).await?;
            let (body, status) = read_all(events).await?;
            assert_eq!(status, ProtocolStatus::RequestComplete);
            assert_eq!(body, token.as_bytes());
            Ok::<_, ClientError>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert!(backend.counts.max_open.load(Ordering::SeqCst) <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_never_shares_a_connection_with_a_backend_that_says_no() {
    let backend = start_echo_backend(ServerConfig {
        mpxs_conns: false,
        ..ServerConfig::default()
    })
    .await;
    let pool = Pool::new(backend.address.clone(), pool_config(2, Multiplexing::On));
    wait_until("the backend's FCGI_GET_VALUES answer is in", || {
        pool.stats().backend_values.is_some()
    })
    .await;
    assert!(!pool.stats().multiplexing);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..50 {
        let pool = pool.clone();
        tasks.spawn(async move {
            let token = format!("t{index}");
            let events = send(&pool, &[("TOKEN", &token), ("SLEEP_MS", "5")]).await?;
            read_all(events).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        let (_, status) = result.unwrap().unwrap();
        // A second request on a connection would have been refused with CANT_MPX_CONN.
        assert_eq!(status, ProtocolStatus::RequestComplete);
    }
    assert_eq!(backend.counts.max_in_flight.load(Ordering::SeqCst), 2);
}

// ---- A scripted backend on raw sockets ----

/// One connection's worth of records from the client, decoded.
struct ScriptedConnection {
    stream: Stream,
    buffer: BytesMut,
    /// PARAMS read so far, per request still sending them.
    params: HashMap<RequestId, BytesMut>,
    /// FCGI_ABORT_REQUEST records `read_request` passed over.
    aborts: Vec<RequestId>,
}

impl ScriptedConnection {
    async fn next_record(&mut self) -> Option<Record> {
        next_record(&mut self.stream, &mut self.buffer).await
    }

    async fn send(&mut self, records: &[Record]) {
        let mut out = BytesMut::new();
        for record in records {
            RecordEncoder.encode(record.clone(), &mut out).unwrap();
        }
        self.stream.write_all(&out).await.unwrap();
    }

    /// Reads up to the end of some request's PARAMS; returns its id and TOKEN param.
    async fn read_request(&mut self) -> Option<(RequestId, String)> {
        let params = &mut self.params;
        loop {
            let record = next_record(&mut self.stream, &mut self.buffer).await?;
            match record.body {
                RecordBody::BeginRequest(_) => {
                    params.insert(record.request_id, BytesMut::new());
                }
                RecordBody::Params(content) if !content.is_empty() => {
                    params
                        .get_mut(&record.request_id)
                        .unwrap()
                        .extend_from_slice(&content);
                }
                RecordBody::Params(_) => {
                    let encoded = params.remove(&record.request_id).unwrap();
                    let pairs = decode_pairs(&encoded).unwrap();
                    let token = pairs
                        .iter()
                        .find(|(name, _)| &name[..] == b"TOKEN")
                        .map(|(_, value)| String::from_utf8(value.to_vec()).unwrap())
                        .unwrap_or_default();
                    return Some((record.request_id, token));
                }
                RecordBody::AbortRequest => self.aborts.push(record.request_id),
                _ => {}
            }
        }
    }
}

async fn next_record(stream: &mut Stream, buffer: &mut BytesMut) -> Option<Record> {
    loop {
        if let Some(record) = RecordDecoder.decode(buffer).unwrap() {
            return Some(record);
        }
        if stream.read_buf(buffer).await.unwrap() == 0 {
            return None;
        }
    }
}

fn end_request(request_id: RequestId) -> Record {
    Record {
        request_id,
        body: RecordBody::EndRequest(EndRequest {
            app_status: 0,
            protocol_status: ProtocolStatus::RequestComplete,
        }),
    }
}

fn stdout(request_id: RequestId, data: &[u8]) -> Record {
    Record {
        request_id,
        body: RecordBody::Stdout(Bytes::copy_from_slice(data)),
    }
}

async fn scripted_backend() -> (Address, Listener, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let address = Address::Unix(dir.path().join("scripted.sock"));
    let listener = Listener::bind(&address).await.unwrap();
    (address, listener, dir)
}

async fn accept(listener: &Listener) -> ScriptedConnection {
    let (stream, _) = listener.accept().await.unwrap();
    ScriptedConnection {
        stream,
        buffer: BytesMut::new(),
        params: HashMap::new(),
        aborts: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_requests_id_is_not_reused_before_its_end_request() {
    let (address, listener, _dir) = scripted_backend().await;
    let pool = Pool::new(address, pool_config(1, Multiplexing::Force));
    let client = tokio::spawn({
        let pool = pool.clone();
        async move {
            // The first request is given up before any answer: an abort goes out.
            let abandoned = send(&pool, &[("TOKEN", "abandoned")]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(abandoned);
            // Then more requests while the backend still holds the aborted one.
            let mut answers = Vec::new();
            for index in 0..5 {
                let token = format!("t{index}");
                let events = send(&pool, &[("TOKEN", &token)]).await.unwrap();
                answers.push((token, events));
            }
            for (token, events) in answers {
                let (body, _) = read_all(events).await.unwrap();
                assert_eq!(body, token.as_bytes());
            }
        }
    });

    let mut connection = accept(&listener).await;
    let (aborted_id, token) = connection.read_request().await.unwrap();
    assert_eq!(token, "abandoned");
    // Wait for the abort, then for the five later requests, before answering the abort.
    let mut later = Vec::new();
    let mut saw_abort = false;
    while later.len() < 5 || !saw_abort {
        let record = connection.next_record().await.unwrap();
        match record.body {
            RecordBody::AbortRequest => {
                assert_eq!(record.request_id, aborted_id);
                saw_abort = true;
            }
            RecordBody::BeginRequest(_) => {
                assert_ne!(
                    record.request_id, aborted_id,
                    "the aborted request's id was reused before its END_REQUEST"
                );
                later.push(record.request_id);
            }
            _ => {}
        }
    }
    connection.send(&[end_request(aborted_id)]).await;
    // The later requests' params were read above only as far as BEGIN: answer by id; each
    // echoes its token, which the scripted side learns from the id order.
    let mut records = Vec::new();
    for (index, id) in later.iter().enumerate() {
        records.push(stdout(*id, format!("\r\n\r\nt{index}").as_bytes()));
        records.push(end_request(*id));
    }
    connection.send(&records).await;
    client.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_for_a_request_that_already_ended_is_never_sent() {
    let (address, listener, _dir) = scripted_backend().await;
    let pool = Pool::new(address, pool_config(1, Multiplexing::Force));
    let ended = send(&pool, &[("TOKEN", "ended")]).await.unwrap();
    let mut connection = accept(&listener).await;
    let (first_id, _) = connection.read_request().await.unwrap();
    connection
        .send(&[stdout(first_id, b"\r\n\r\nended"), end_request(first_id)])
        .await;
    // Time for END_REQUEST to be routed; unread, the stream is then given up after its end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(ended);
    // The next request reuses the id; the backend must see its BEGIN and no abort at all.
    let next = tokio::spawn({
        let pool = pool.clone();
        async move { read_all(send(&pool, &[("TOKEN", "next")]).await.unwrap()).await }
    });
    let (next_id, token) = connection.read_request().await.unwrap();
    assert_eq!((next_id, token.as_str()), (first_id, "next"));
    connection
        .send(&[stdout(next_id, b"\r\n\r\nnext"), end_request(next_id)])
        .await;
    let (body, _) = next.await.unwrap().unwrap();
    assert_eq!(body, b"next");
    drop(pool);
    assert_eq!(connection.aborts, []);
    while let Some(record) = connection.next_record().await {
        assert!(
            !matches!(record.body, RecordBody::AbortRequest),
            "an abort went out for request {:?} after its END_REQUEST",
            record.request_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_with_two_requests_in_flight_turns_multiplexing_off() {
    let (address, listener, _dir) = scripted_backend().await;
    let pool = Pool::new(address, pool_config(2, Multiplexing::Force));
    let first = send(&pool, &[("TOKEN", "first")]).await.unwrap();
    let second = send(&pool, &[("TOKEN", "second")]).await.unwrap();
    let mut connection = accept(&listener).await;
    connection.read_request().await.unwrap();
    connection.read_request().await.unwrap();
    // What a backend that does not multiplex may do with a second request: break the protocol
    // (here a record of FastCGI version 0).
    connection
        .stream
        .write_all(&[0, 6, 0, 1, 0, 0, 0, 0])
        .await
        .unwrap();
    for events in [first, second] {
        let error = read_all(events).await.unwrap_err();
        assert!(error.is_multiplexing_refused(), "{error}");
        assert!(
            error.is_connection_lost(),
            "{error}: must be retried like a lost connection"
        );
    }
    assert!(!pool.stats().multiplexing);
    // From now on one request per connection.
    let third = send(&pool, &[("TOKEN", "third")]).await.unwrap();
    let fourth = send(&pool, &[("TOKEN", "fourth")]).await.unwrap();
    let mut first_connection = accept(&listener).await;
    let mut second_connection = accept(&listener).await;
    for connection in [&mut first_connection, &mut second_connection] {
        let (id, token) = connection.read_request().await.unwrap();
        let body = format!("\r\n\r\n{token}");
        connection
            .send(&[stdout(id, body.as_bytes()), end_request(id)])
            .await;
    }
    assert_eq!(read_all(third).await.unwrap().0, b"third");
    assert_eq!(read_all(fourth).await.unwrap().0, b"fourth");
}

/// A schedule for the interleaving test: per request, its output cut into record-sized pieces,
/// and the order in which the pieces of all requests go out.
#[derive(Debug, Clone)]
struct Interleaving {
    /// Per request: lengths of its STDOUT records.
    pieces: Vec<Vec<usize>>,
    /// Which request sends its next piece, in order; each index appears as often as it has
    /// pieces, followed by its END_REQUEST.
    order: Vec<usize>,
    /// Write the bytes in chunks of these sizes (cycled): records straddle reads.
    write_sizes: Vec<usize>,
}

fn interleavings() -> impl proptest::strategy::Strategy<Value = Interleaving> {
    use proptest::prelude::*;
    (
        proptest::collection::vec(proptest::collection::vec(1usize..9000, 0..6), 1..12),
        proptest::collection::vec(1usize..5000, 1..8),
        any::<u64>(),
    )
        .prop_map(|(pieces, write_sizes, seed)| {
            // A deterministic shuffle of every request's piece slots (+1 for END_REQUEST).
            let mut order: Vec<usize> = pieces
                .iter()
                .enumerate()
                .flat_map(|(index, p)| std::iter::repeat_n(index, p.len() + 1))
                .collect();
            let mut state = seed | 1;
            for i in (1..order.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(i, (state % (i as u64 + 1)) as usize);
            }
            Interleaving {
                pieces,
                order,
                write_sizes,
            }
        })
}

/// The byte at `offset` of request `index`'s output: distinct per request and position.
fn output_byte(index: usize, offset: usize) -> u8 {
    (index * 31 + offset * 7 % 251) as u8
}

async fn run_interleaving(case: Interleaving) {
    let (address, listener, _dir) = scripted_backend().await;
    let pool = Pool::new(address, pool_config(1, Multiplexing::Force));
    let requests = case.pieces.len();
    let mut streams = Vec::new();
    for index in 0..requests {
        streams.push(send(&pool, &[("TOKEN", &index.to_string())]).await.unwrap());
    }
    let mut connection = accept(&listener).await;
    let mut ids = vec![RequestId(0); requests];
    for _ in 0..requests {
        let (id, token) = connection.read_request().await.unwrap();
        ids[token.parse::<usize>().unwrap()] = id;
    }
    // Every request's expected output: a header block, then its pieces.
    let mut expected: Vec<Vec<u8>> = vec![Vec::new(); requests];
    let mut wire = BytesMut::new();
    let mut next_piece = vec![0usize; requests];
    let mut written = vec![0usize; requests];
    for id in &ids {
        encode_stream_record(&mut wire, RecordType::Stdout, *id, b"\r\n\r\n");
    }
    for &index in &case.order {
        let piece = next_piece[index];
        next_piece[index] += 1;
        match case.pieces[index].get(piece) {
            Some(&length) => {
                let data: Vec<u8> = (written[index]..written[index] + length)
                    .map(|offset| output_byte(index, offset))
                    .collect();
                written[index] += length;
                encode_stream_record(&mut wire, RecordType::Stdout, ids[index], &data);
                expected[index].extend_from_slice(&data);
            }
            None => RecordEncoder
                .encode(end_request(ids[index]), &mut wire)
                .unwrap(),
        }
    }
    let writer = tokio::spawn(async move {
        let mut sizes = case.write_sizes.iter().cycle();
        let mut wire = &wire[..];
        while !wire.is_empty() {
            let take = (*sizes.next().unwrap()).min(wire.len());
            connection.stream.write_all(&wire[..take]).await.unwrap();
            wire = &wire[take..];
        }
        connection
    });
    let readers: Vec<_> = streams
        .into_iter()
        .map(|events| tokio::spawn(read_all(events)))
        .collect();
    for (index, reader) in readers.into_iter().enumerate() {
        let (body, status) = reader.await.unwrap().unwrap();
        assert_eq!(status, ProtocolStatus::RequestComplete);
        assert!(
            body == expected[index],
            "request {index}'s stream was not reassembled exactly"
        );
    }
    drop(writer.await.unwrap());
}

#[test]
fn random_interleavings_of_many_requests_reassemble_every_stream_exactly() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 48,
        ..proptest::test_runner::Config::default()
    });
    runner
        .run(&interleavings(), |case| {
            runtime.block_on(run_interleaving(case));
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn first_probe_returns_once_the_backend_has_said_what_it_takes() {
    let backend = start_echo_backend(ServerConfig::default()).await;
    let pool = Pool::new(backend.address.clone(), pool_config(2, Multiplexing::On));
    tokio::time::timeout(Duration::from_secs(5), pool.first_probe())
        .await
        .expect("the probe ends");
    assert!(pool.stats().backend_values.is_some());
    // A pool whose backend never answers is done probing too, within the probe's timeout.
    let dir = tempfile::tempdir().unwrap();
    let nowhere = Address::Unix(dir.path().join("nobody.sock"));
    let silent = Pool::new(nowhere, pool_config(2, Multiplexing::On));
    tokio::time::timeout(Duration::from_secs(5), silent.first_probe())
        .await
        .expect("a failed probe ends too");
    assert!(silent.stats().backend_values.is_none());
}
