//! How connections and requests end: aborts, refusals, crashes, limits and shutdown.

use super::*;

#[tokio::test]
async fn without_keep_conn_the_server_closes_after_end_request() {
    let server = start_tcp(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client.request(1, false, &[], b"").await;
    assert_eq!(client.response(1).await.end, completed(0));
    client.expect_closed().await;
}

#[tokio::test]
async fn close_after_requests_closes_after_the_last_one() {
    let config = ServerConfig {
        close_after_requests: Some(2),
        ..ServerConfig::default()
    };
    let server = start_tcp(config).await;
    let mut client = RawClient::connect(&server.address).await;
    client.request(1, true, &[], b"").await;
    assert_eq!(client.response(1).await.end, completed(0));
    client.request(1, true, &[], b"").await;
    assert_eq!(client.response(1).await.end, completed(0));
    client.expect_closed().await;
}

#[tokio::test]
async fn abort_stops_the_handler_and_keeps_the_connection() {
    let mut server = start_unix(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client.request(4, true, &[("MODE", "hang")], b"").await;
    client.expect_started(4).await;
    client.send(4, RecordBody::AbortRequest).await;
    let response = client.response(4).await;
    assert!(
        !response.stdout_ended,
        "an aborted request's stdout is not ended normally"
    );
    assert_eq!(response.end, completed(1));
    let dropped = tokio::time::timeout(PATIENCE, server.hang_dropped.recv())
        .await
        .unwrap();
    assert_eq!(
        dropped,
        Some(RequestId(4)),
        "the aborted handler was cancelled"
    );

    client.request(4, true, &[("NAME", "again")], b"").await;
    let again = client.response(4).await;
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        "id=4 role=Responder name=again stdin="
    );
}

#[tokio::test]
async fn abort_before_the_handler_starts_ends_the_request() {
    let server = start_tcp(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client.begin(2, false).await;
    client.send(2, RecordBody::AbortRequest).await;
    assert_eq!(client.response(2).await.end, completed(1));
    client.expect_closed().await;
}

#[tokio::test]
async fn a_second_request_while_one_runs_gets_cant_mpx_conn() {
    let server = start_tcp(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client.request(1, true, &[("MODE", "hang")], b"").await;
    client.expect_started(1).await;
    client.begin(2, true).await;
    assert_eq!(
        client.response(2).await.end,
        refused(ProtocolStatus::CantMpxConn)
    );
    client.send(1, RecordBody::AbortRequest).await;
    assert_eq!(client.response(1).await.end, completed(1));
}

#[tokio::test]
async fn multiplexed_connections_run_requests_concurrently() {
    let config = ServerConfig {
        mpxs_conns: true,
        ..ServerConfig::default()
    };
    let server = start_tcp(config).await;
    let mut client = RawClient::connect(&server.address).await;
    client.request(1, true, &[("MODE", "hang")], b"").await;
    client.expect_started(1).await;
    client.request(2, true, &[("NAME", "second")], b"").await;
    let second = client.response(2).await;
    assert_eq!(
        String::from_utf8(second.stdout).unwrap(),
        "id=2 role=Responder name=second stdin="
    );
    client.send(1, RecordBody::AbortRequest).await;
    assert_eq!(client.response(1).await.end, completed(1));
}

#[tokio::test]
async fn a_crashing_handler_drops_the_connection_without_end_request() {
    let server = start_tcp(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client.request(1, true, &[("MODE", "crash")], b"").await;
    let output = client.read_record().await.unwrap();
    assert_eq!(
        output.body,
        RecordBody::Stdout(Bytes::from_static(b"partial"))
    );
    client.expect_closed().await;
}

#[tokio::test]
async fn oversized_params_or_stdin_drop_the_connection() {
    let config = ServerConfig {
        max_params_bytes: 100,
        max_stdin_bytes: 10,
        ..ServerConfig::default()
    };
    let server = start_tcp(config).await;
    let mut params_client = RawClient::connect(&server.address).await;
    params_client
        .request(1, true, &[("NAME", &"x".repeat(200))], b"")
        .await;
    params_client.expect_closed().await;

    let mut stdin_client = RawClient::connect(&server.address).await;
    stdin_client.request(1, true, &[], &[b's'; 11]).await;
    stdin_client.expect_closed().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_ends_serve() {
    let server = start_unix(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client.request(1, true, &[], b"").await;
    assert_eq!(client.response(1).await.end, completed(0));
    server.shutdown.cancel();
    client.expect_closed().await;
    let result = tokio::time::timeout(PATIENCE, server.task).await.unwrap();
    assert!(result.unwrap().is_ok());
}

#[tokio::test]
async fn serve_connection_works_on_its_own() {
    let directory = temp_directory();
    let address = Address::Unix(directory.0.join("single.sock"));
    let listener = Listener::bind(&address).await.unwrap();
    let (hang_tx, _hang_rx) = mpsc::unbounded_channel();
    let app = Arc::new(TestApp {
        hang_dropped: hang_tx,
    });
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        serve_connection(stream, app, Arc::new(ServerConfig::default())).await
    });
    let mut client = RawClient::connect(&address).await;
    client.request(1, false, &[("NAME", "solo")], b"").await;
    assert_eq!(client.response(1).await.end, completed(0));
    client.expect_closed().await;
    assert!(server.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_panicking_handler_drops_the_connection() {
    let server = start_tcp(ServerConfig::default()).await;
    let mut client = RawClient::connect(&server.address).await;
    client.request(1, true, &[("MODE", "panic")], b"").await;
    client.expect_closed().await;
    let mut next = RawClient::connect(&server.address).await;
    next.request(1, true, &[], b"").await;
    assert_eq!(
        next.response(1).await.end,
        completed(0),
        "the server survives"
    );
}
