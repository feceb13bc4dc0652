//! What a client sees for one request: params, streams, roles and management records.

use super::*;

#[tokio::test]
async fn keep_conn_serves_several_requests_on_one_unix_connection() {
    let server = start_unix(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    for id in [1u16, 2, 1] {
        client
            .request(id, true, &[("NAME", "kept"), ("STATUS", "7")], b"body")
            .await;
        let response = client.response(id).await;
        let expected = format!("id={id} role=Responder name=kept stdin=body");
        assert_eq!(String::from_utf8(response.stdout).unwrap(), expected);
        assert!(response.stdout_ended);
        assert!(
            !response.stderr_ended,
            "no STDERR terminator when nothing was written to it"
        );
        assert_eq!(response.end, completed(7));
    }
}

#[tokio::test]
async fn get_values_answers_only_the_names_asked_for() {
    let config = ServerConfig {
        max_conns: 12,
        max_reqs: 34,
        max_reqs_per_conn: 5,
        mpxs_conns: true,
        ..ServerConfig::default()
    };
    let server = start_tcp(config).await;
    let mut client = RawClient::connect(&server.address).await;
    let mut wire = BytesMut::new();
    encode_get_values(
        &mut wire,
        &[FCGI_MAX_CONNS, "FCGI_UNHEARD_OF", FCGI_MPXS_CONNS],
    );
    client.send_bytes(&wire).await;
    let record = client.read_record().await.unwrap();
    assert_eq!(record.request_id, RequestId::MANAGEMENT);
    let RecordBody::GetValuesResult(content) = record.body else {
        panic!("expected GET_VALUES_RESULT, got {record:?}");
    };
    let pairs = decode_pairs(&content).unwrap();
    let expected = vec![
        (
            Bytes::from_static(b"FCGI_MAX_CONNS"),
            Bytes::from_static(b"12"),
        ),
        (
            Bytes::from_static(b"FCGI_MPXS_CONNS"),
            Bytes::from_static(b"1"),
        ),
    ];
    assert_eq!(pairs, expected);

    let mut reqs_only = BytesMut::new();
    encode_get_values(&mut reqs_only, &[FCGI_MAX_REQS]);
    client.send_bytes(&reqs_only).await;
    let RecordBody::GetValuesResult(content) = client.read_record().await.unwrap().body else {
        panic!("expected GET_VALUES_RESULT");
    };
    assert_eq!(
        decode_pairs(&content).unwrap(),
        vec![(
            Bytes::from_static(b"FCGI_MAX_REQS"),
            Bytes::from_static(b"34")
        )]
    );
}

#[tokio::test]
async fn unknown_management_records_get_unknown_type_and_the_connection_goes_on() {
    let server = start_unix(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    let unknown = RecordBody::Unknown {
        record_type: 42,
        content: Bytes::from_static(b"?"),
    };
    client.send(0, unknown).await;
    assert_eq!(
        client.read_record().await,
        Some(Record {
            request_id: RequestId::MANAGEMENT,
            body: RecordBody::UnknownType(UnknownType { record_type: 42 }),
        })
    );
    client.request(1, true, &[("NAME", "after")], b"").await;
    assert_eq!(client.response(1).await.end, completed(0));
}

#[tokio::test]
async fn params_split_across_records_mid_pair_are_reassembled() {
    let server = start_tcp(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client.begin(3, true).await;
    let mut pairs = BytesMut::new();
    crate::protocol::encode_pair(&mut pairs, b"NAME", &[b'n'; 300]);
    crate::protocol::encode_pair(&mut pairs, b"STATUS", b"5");
    for piece in pairs.chunks(7) {
        client
            .send(3, RecordBody::Params(Bytes::copy_from_slice(piece)))
            .await;
    }
    client.send(3, RecordBody::Params(Bytes::new())).await;
    client
        .send(3, RecordBody::Stdin(Bytes::from_static(b"a")))
        .await;
    client
        .send(3, RecordBody::Stdin(Bytes::from_static(b"bc")))
        .await;
    client.send(3, RecordBody::Stdin(Bytes::new())).await;
    let response = client.response(3).await;
    let expected = format!("id=3 role=Responder name={} stdin=abc", "n".repeat(300));
    assert_eq!(String::from_utf8(response.stdout).unwrap(), expected);
    assert_eq!(response.end, completed(5));
}

#[tokio::test]
async fn large_stdout_arrives_whole_in_records_php_fpm_would_accept() {
    let server = start_unix(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    let size = 3 * MAX_RECORD_CONTENT + 12_345;
    client
        .request(
            1,
            true,
            &[("MODE", "big"), ("SIZE", &size.to_string())],
            b"",
        )
        .await;
    let response = client.response(1).await;
    let expected = big_body(size);
    assert_eq!(response.stdout.len(), size);
    assert!(response.stdout == expected, "stdout content differs");
    assert!(response.stdout_ended);
    assert_eq!(response.end, completed(0));
}

#[tokio::test]
async fn stderr_is_ended_when_used_and_ordered_with_stdout() {
    let server = start_tcp(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client.request(1, true, &[("MODE", "stderr")], b"").await;
    let mut kinds = Vec::new();
    loop {
        let record = client.read_record().await.unwrap();
        let done = matches!(record.body, RecordBody::EndRequest(_));
        kinds.push(record.body);
        if done {
            break;
        }
    }
    let expected = vec![
        RecordBody::Stdout(Bytes::from_static(b"out-1 ")),
        RecordBody::Stderr(Bytes::from_static(b"warning")),
        RecordBody::Stdout(Bytes::from_static(b"out-2")),
        RecordBody::Stdout(Bytes::new()),
        RecordBody::Stderr(Bytes::new()),
        RecordBody::EndRequest(EndRequest {
            app_status: 0,
            protocol_status: ProtocolStatus::RequestComplete,
        }),
    ];
    assert_eq!(kinds, expected);
}

#[tokio::test]
async fn unknown_roles_are_refused_and_filter_is_not_played() {
    let server = start_tcp(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    for (id, role) in [(1u16, Role::Other(9)), (2, Role::Filter)] {
        let begin = BeginRequest {
            role,
            keep_conn: true,
        };
        client.send(id, RecordBody::BeginRequest(begin)).await;
        assert_eq!(
            client.response(id).await.end,
            refused(ProtocolStatus::UnknownRole)
        );
    }
}

#[tokio::test]
async fn authorizers_run_without_stdin() {
    let server = start_tcp(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    let begin = BeginRequest {
        role: Role::Authorizer,
        keep_conn: true,
    };
    client.send(5, RecordBody::BeginRequest(begin)).await;
    client.send(5, RecordBody::Params(Bytes::new())).await;
    let response = client.response(5).await;
    assert_eq!(
        String::from_utf8(response.stdout).unwrap(),
        "id=5 role=Authorizer name=- stdin="
    );
}

#[tokio::test]
async fn records_for_inactive_requests_are_ignored() {
    let server = start_unix(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client
        .send(9, RecordBody::Stdin(Bytes::from_static(b"stray")))
        .await;
    client.send(9, RecordBody::Params(Bytes::new())).await;
    client.send(9, RecordBody::AbortRequest).await;
    client
        .send(9, RecordBody::Data(Bytes::from_static(b"x")))
        .await;
    client.request(1, true, &[], b"").await;
    assert_eq!(client.response(1).await.end, completed(0));
}
