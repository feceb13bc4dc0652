//! The counting relay forwards bytes both ways, counts connections, and passes closes on.

use fcgi::net::{Address, Listener};
use fcgi_testkit::relay::CountingRelay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use fcgi_testkit::wait_until;

/// A backend that answers each connection with everything it read, once the client half-closes,
/// or closes at once when the first bytes are `close`.
async fn start_backend(address: Address) -> (Address, tokio::task::JoinHandle<()>) {
    let listener = Listener::bind(&address).await.unwrap();
    let address = listener.local_address().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buffer = [0u8; 1024];
                loop {
                    let read = stream.read(&mut buffer).await.unwrap_or(0);
                    if read == 0 {
                        break;
                    }
                    received.extend_from_slice(&buffer[..read]);
                    if received.starts_with(b"close") {
                        return;
                    }
                }
                let _ = stream.write_all(&received).await;
            });
        }
    });
    (address, task)
}

#[tokio::test]
async fn relays_both_ways_and_counts_connections_over_tcp_and_unix() {
    let directory = tempfile::tempdir().unwrap();
    for backend_address in [
        Address::Tcp("127.0.0.1:0".into()),
        Address::Unix(directory.path().join("backend.sock")),
    ] {
        let (backend, _task) = start_backend(backend_address).await;
        let relay = CountingRelay::start(backend.clone()).await;
        assert_eq!(
            matches!(relay.address(), Address::Unix(_)),
            matches!(backend, Address::Unix(_)),
            "the relay listens on the same kind of socket as the backend"
        );
        assert_ne!(relay.address(), backend);

        // A connection counts as open once the gateway side has sent something.
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(fcgi::net::connect(&relay.address()).await.unwrap());
        }
        wait_until("three connections are accepted", || {
            relay.connections_opened() == 3
        })
        .await;
        assert_eq!(relay.connections_open(), 0, "nothing sent yet");
        for client in &mut clients {
            client.write_all(b">").await.unwrap();
        }
        wait_until("three connections are open", || {
            relay.connections_open() == 3
        })
        .await;

        // Half-close: the backend answers after EOF, and the answer still comes back.
        let mut first = clients.remove(0);
        first.write_all(b"ping over the relay").await.unwrap();
        first.shutdown().await.unwrap();
        let mut answer = Vec::new();
        first.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b">ping over the relay");

        drop(clients.remove(0));
        wait_until("two connections are closed", || {
            relay.connections_open() == 1
        })
        .await;
        assert_eq!(relay.connections_opened(), 3);
        assert_eq!(relay.max_open(), 3);
    }
}

#[tokio::test]
async fn a_backend_close_reaches_the_client() {
    let (backend, _task) = start_backend(Address::Tcp("127.0.0.1:0".into())).await;
    let relay = CountingRelay::start(backend).await;
    let mut client = fcgi::net::connect(&relay.address()).await.unwrap();
    client.write_all(b"close").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.read_to_end(&mut rest),
    )
    .await
    .expect("the relay should close the client's side when the backend closes");
    assert_eq!(read.unwrap(), 0);
    wait_until("the relayed connection is gone", || {
        relay.connections_open() == 0
    })
    .await;
    assert_eq!(relay.max_open(), 1);
}

#[tokio::test]
async fn a_dead_backend_means_an_immediate_close() {
    let directory = tempfile::tempdir().unwrap();
    let relay = CountingRelay::start(Address::Unix(directory.path().join("nobody.sock"))).await;
    let mut client = fcgi::net::connect(&relay.address()).await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).await.unwrap_or(0), 0);
    assert_eq!(relay.connections_opened(), 1);
    wait_until("the failed connection is not counted as open", || {
        relay.connections_open() == 0
    })
    .await;
}
