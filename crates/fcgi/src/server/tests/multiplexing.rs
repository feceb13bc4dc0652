//! Several requests on one connection: the per-connection and server-wide bounds, and output
//! of concurrent handlers interleaved so a large response does not hold back a small one.

use super::*;

fn multiplexing(max_reqs: u32, max_reqs_per_conn: u32) -> ServerConfig {
    ServerConfig {
        mpxs_conns: true,
        max_reqs,
        max_reqs_per_conn,
        ..ServerConfig::default()
    }
}

/// A request the server refused unprocessed: no output, END_REQUEST with OVERLOADED.
async fn expect_overloaded(client: &mut RawClient, request_id: u16) {
    client
        .request(request_id, true, &[("NAME", "refused")], b"")
        .await;
    let response = client.response(request_id).await;
    assert!(response.stdout.is_empty(), "the handler never ran");
    assert_eq!(response.end, refused(ProtocolStatus::Overloaded));
}

#[tokio::test]
async fn requests_beyond_the_per_connection_bound_are_overloaded() {
    let server = start_tcp(multiplexing(100, 2)).await;
    let mut client = RawClient::connect(&server.address).await;
    for id in [1, 2] {
        client.request(id, true, &[("MODE", "hang")], b"").await;
        client.expect_started(id).await;
    }
    expect_overloaded(&mut client, 3).await;

    let mut other = RawClient::connect(&server.address).await;
    other.request(1, true, &[("NAME", "elsewhere")], b"").await;
    assert_eq!(
        other.response(1).await.end,
        completed(0),
        "the bound is per connection"
    );

    client.send(2, RecordBody::AbortRequest).await;
    assert_eq!(client.response(2).await.end, completed(1));
    client.request(3, true, &[("NAME", "now")], b"").await;
    let now = client.response(3).await;
    assert_eq!(
        String::from_utf8(now.stdout).unwrap(),
        "id=3 role=Responder name=now stdin="
    );
}

#[tokio::test]
async fn requests_beyond_the_server_wide_bound_are_overloaded_on_any_connection() {
    let server = start_unix(multiplexing(3, 2)).await;
    let mut first = RawClient::connect(&server.address).await;
    let mut second = RawClient::connect(&server.address).await;
    for id in [1, 2] {
        first.request(id, true, &[("MODE", "hang")], b"").await;
        first.expect_started(id).await;
    }
    second.request(7, true, &[("MODE", "hang")], b"").await;
    second.expect_started(7).await;
    expect_overloaded(&mut second, 8).await;
    let mut third = RawClient::connect(&server.address).await;
    expect_overloaded(&mut third, 1).await;

    first.send(1, RecordBody::AbortRequest).await;
    assert_eq!(first.response(1).await.end, completed(1));
    third.request(1, true, &[("NAME", "room")], b"").await;
    assert_eq!(third.response(1).await.end, completed(0));

    drop(first);
    third.request(2, true, &[("NAME", "more room")], b"").await;
    assert_eq!(
        third.response(2).await.end,
        completed(0),
        "a closed connection gives its requests' share back"
    );
}

#[tokio::test]
async fn a_small_response_is_not_held_back_by_a_large_one_on_the_same_connection() {
    const LARGE: usize = 20 << 20;
    let server = start_tcp(multiplexing(100, 10)).await;
    let mut client = RawClient::connect(&server.address).await;
    // The whole body in one write: the writer must still cut it into records that take turns.
    let size = LARGE.to_string();
    let large_params = [("MODE", "big"), ("SIZE", &size), ("PIECE", &size)];
    client.request(1, true, &large_params, b"").await;
    let mut large = Vec::with_capacity(LARGE);
    let first = client.read_record().await.unwrap();
    assert_eq!(first.request_id, RequestId(1));
    let RecordBody::Stdout(content) = first.body else {
        panic!("expected stdout of the large response, got {first:?}");
    };
    large.extend_from_slice(&content);

    client.request(2, true, &[("NAME", "small")], b"").await;
    let mut small = Vec::new();
    let mut large_bytes_before_small_ended = None;
    let mut ends = Vec::new();
    while ends.len() < 2 {
        let record = client.read_record().await.expect("connection closed");
        let id = record.request_id.0;
        match (id, record.body) {
            (1, RecordBody::Stdout(content)) => large.extend_from_slice(&content),
            (2, RecordBody::Stdout(content)) => small.extend_from_slice(&content),
            (_, RecordBody::EndRequest(end)) => {
                assert_eq!(Some(end), completed(0));
                if id == 2 {
                    large_bytes_before_small_ended = Some(large.len());
                }
                ends.push(id);
            }
            (id, body) => panic!("unexpected record for {id}: {body:?}"),
        }
    }
    assert_eq!(
        ends,
        vec![2, 1],
        "the small response must end before the large one ({} of {LARGE} large bytes \
         arrived before it)",
        large.len()
    );
    assert_eq!(
        String::from_utf8(small).unwrap(),
        "id=2 role=Responder name=small stdin="
    );
    assert_eq!(large.len(), LARGE);
    assert!(large == big_body(LARGE), "the large response is intact");
    let before = large_bytes_before_small_ended.unwrap();
    assert!(before < LARGE, "{before} large bytes came first");
}
