//! Bytes in, bytes out: for requests no well-behaved client would send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READ_FOR_AT_MOST: Duration = Duration::from_secs(5);

/// Connects to `addr`, writes `bytes`, and returns everything the server sends until it closes
/// the connection or 5 s pass. A server that closes (or resets) early still yields what it sent.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|error| panic!("raw_exchange: cannot connect to {addr}: {error}"));
    // A server may answer and close before reading everything; what it sent still counts.
    let _ = stream.write_all(bytes).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(READ_FOR_AT_MOST, async {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    received
}
