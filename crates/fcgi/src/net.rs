//! Where a FastCGI peer lives and the byte stream to it.
//!
//! An [`Address`] is written `unix:/path/to.sock`, `host:port` or `[v6]:port`, the way operators
//! write it in nginx and php-fpm configs. [`Stream`] and [`Listener`] erase the difference
//! between unix and TCP sockets for both the client and the application side; protocol code never
//! sees which one it runs over.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpListener, TcpStream, UnixListener, UnixStream};

/// The address of a FastCGI peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A unix domain socket path.
    Unix(PathBuf),
    /// A TCP `host:port`; the host may be a name, an IPv4 address or a bracketed IPv6 address.
    Tcp(String),
}

/// Why an address string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    /// Nothing was given.
    #[error("empty address")]
    Empty,
    /// `unix:` with no path after it.
    #[error("unix socket address `{0}` has no path")]
    EmptyUnixPath(String),
    /// Not `host:port` with a numeric port.
    #[error("address `{0}` is not `unix:/path`, `host:port` or `[v6]:port`")]
    Malformed(String),
}

impl Address {
    /// Parses `unix:/path`, `host:port` or `[v6]:port`.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError::EmptyUnixPath(text.to_owned()));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let malformed = || AddressError::Malformed(text.to_owned());
        let (host, port) = text.rsplit_once(':').ok_or_else(malformed)?;
        port.parse::<u16>().map_err(|_| malformed())?;
        let host_ok = match host.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok()),
            None => !host.is_empty() && !host.contains(':'),
        };
        if !host_ok {
            return Err(malformed());
        }
        Ok(Address::Tcp(text.to_owned()))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(host_port) => f.write_str(host_port),
        }
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Address::parse(text)
    }
}

/// Opens a stream to `address`. TCP streams get `TCP_NODELAY`: FastCGI records are small and
/// written whole, so Nagle's algorithm only adds latency.
pub async fn connect(address: &Address) -> io::Result<Stream> {
    match address {
        Address::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        Address::Tcp(host_port) => {
            let stream = TcpStream::connect(host_port.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok(Stream::Tcp(stream))
        }
    }
}

/// A connected unix or TCP stream.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A unix domain socket connection.
    Unix(UnixStream),
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    /// Of a TCP connection.
    Tcp(tcp::OwnedReadHalf),
    /// Of a unix socket connection.
    Unix(unix::OwnedReadHalf),
}

impl ReadHalf {
    /// Acknowledges what was read at once instead of after the delayed-ACK timer (Linux
    /// TCP_QUICKACK; the kernel falls back to delaying, so it is asked again after every read).
    /// A backend with Nagle's algorithm on (php-fpm) holds the last, partial segment of a
    /// response until the previous one is acknowledged: without this, every response longer
    /// than a few segments waited out the 40 ms timer. Unix sockets have neither.
    pub fn acknowledge_now(&self) {
        if let ReadHalf::Tcp(half) = self {
            // Best effort: a socket that refuses only keeps the kernel's default behaviour.
            let _ = socket2::SockRef::from(half.as_ref()).set_tcp_quickack(true);
        }
    }
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf {
    /// Of a TCP connection.
    Tcp(tcp::OwnedWriteHalf),
    /// Of a unix socket connection.
    Unix(unix::OwnedWriteHalf),
}

impl Stream {
    /// Turns on TCP keepalive probes (SO_KEEPALIVE, with the system's timings), so a backend
    /// host that vanished without a FIN is noticed even on an idle pooled connection. Unix
    /// sockets need none: the kernel knows when the other end is gone.
    pub fn set_keepalive(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => socket2::SockRef::from(stream).set_keepalive(true),
            Stream::Unix(_) => Ok(()),
        }
    }

    /// Splits into halves that can be driven concurrently without a lock.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
            }
            Stream::Unix(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Unix(read), WriteHalf::Unix(write))
            }
        }
    }
}

/// Forwards the tokio I/O traits to whichever variant is inside; every inner type is `Unpin`.
macro_rules! forward_io {
    ($type:ident, read) => {
        impl AsyncRead for $type {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::Tcp(inner) => Pin::new(inner).poll_read(cx, buf),
                    $type::Unix(inner) => Pin::new(inner).poll_read(cx, buf),
                }
            }
        }
    };
    ($type:ident, write) => {
        impl AsyncWrite for $type {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $type::Tcp(inner) => Pin::new(inner).poll_write(cx, buf),
                    $type::Unix(inner) => Pin::new(inner).poll_write(cx, buf),
                }
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $type::Tcp(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
                    $type::Unix(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
                }
            }
            fn is_write_vectored(&self) -> bool {
                true
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::Tcp(inner) => Pin::new(inner).poll_flush(cx),
                    $type::Unix(inner) => Pin::new(inner).poll_flush(cx),
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $type::Tcp(inner) => Pin::new(inner).poll_shutdown(cx),
                    $type::Unix(inner) => Pin::new(inner).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_io!(Stream, read);
forward_io!(Stream, write);
forward_io!(ReadHalf, read);
forward_io!(WriteHalf, write);

/// A listening unix or TCP socket, for the application side and test backends.
#[derive(Debug)]
pub enum Listener {
    /// Listening on TCP.
    Tcp(TcpListener),
    /// Listening on a unix socket path.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `address`. A unix socket file left behind by a previous run is removed first,
    /// as php-fpm does; TCP listeners get `SO_REUSEADDR` so a restart does not wait out TIME_WAIT.
    pub async fn bind(address: &Address) -> io::Result<Listener> {
        match address {
            Address::Unix(path) => {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
                Ok(Listener::Unix(UnixListener::bind(path)?, path.clone()))
            }
            Address::Tcp(host_port) => {
                let mut last_error = None;
                for socket_addr in tokio::net::lookup_host(host_port.as_str()).await? {
                    match bind_tcp(socket_addr) {
                        Ok(listener) => return Ok(Listener::Tcp(listener)),
                        Err(error) => last_error = Some(error),
                    }
                }
                Err(last_error.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        "address resolved to nothing",
                    )
                }))
            }
        }
    }

    /// Accepts one connection; returns the stream and a printable peer name.
    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok((Stream::Tcp(stream), peer.to_string()))
            }
            Listener::Unix(listener, path) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), format!("unix:{}", path.display())))
            }
        }
    }

    /// The address actually bound (with the real port when port 0 was asked for).
    pub fn local_address(&self) -> io::Result<Address> {
        match self {
            Listener::Tcp(listener) => Ok(Address::Tcp(listener.local_addr()?.to_string())),
            Listener::Unix(_, path) => Ok(Address::Unix(path.clone())),
        }
    }
}

fn bind_tcp(socket_addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(socket_addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&socket_addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_address_forms() {
        assert_eq!(
            Address::parse("unix:/run/php/fpm.sock"),
            Ok(Address::Unix(PathBuf::from("/run/php/fpm.sock")))
        );
        assert_eq!(
            Address::parse("127.0.0.1:9000"),
            Ok(Address::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!(
            Address::parse("php:9000"),
            Ok(Address::Tcp("php:9000".into()))
        );
        assert_eq!(
            Address::parse("[::1]:9000"),
            Ok(Address::Tcp("[::1]:9000".into()))
        );
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "unix:",
            "9000",
            "host:",
            "host:port",
            "::1:9000",
            "[::1:9000",
            "[x]:1",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[tokio::test]
    async fn acknowledge_now_asks_tcp_for_an_immediate_ack_and_leaves_unix_sockets_alone() {
        let listener = Listener::bind(&Address::Tcp("127.0.0.1:0".into()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_address().unwrap_or_else(|e| panic!("{e}"));
        let stream = connect(&address).await.unwrap_or_else(|e| panic!("{e}"));
        let (read, _write) = stream.into_split();
        let ReadHalf::Tcp(half) = &read else {
            panic!("a TCP address gave a unix stream")
        };
        let socket = socket2::SockRef::from(half.as_ref());
        socket
            .set_tcp_quickack(false)
            .unwrap_or_else(|e| panic!("{e}"));
        read.acknowledge_now();
        assert!(socket.tcp_quickack().unwrap_or(false));

        let (unix, _) = tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        let (read, _write) = Stream::Unix(unix).into_split();
        read.acknowledge_now();
    }

    #[tokio::test]
    async fn keepalive_is_switched_on_for_tcp_and_a_no_op_for_unix_sockets() {
        let listener = Listener::bind(&Address::Tcp("127.0.0.1:0".into()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_address().unwrap_or_else(|e| panic!("{e}"));
        let stream = connect(&address).await.unwrap_or_else(|e| panic!("{e}"));
        let Stream::Tcp(tcp) = &stream else {
            panic!("a TCP address gave a unix stream")
        };
        assert!(!socket2::SockRef::from(tcp).keepalive().unwrap_or(true));
        stream.set_keepalive().unwrap_or_else(|e| panic!("{e}"));
        assert!(socket2::SockRef::from(tcp).keepalive().unwrap_or(false));

        let (unix, _) = tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        assert!(Stream::Unix(unix).set_keepalive().is_ok());
    }

    #[test]
    fn display_round_trips() {
        for text in ["unix:/tmp/a.sock", "127.0.0.1:9000", "[::1]:9000"] {
            let address = Address::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(address.to_string(), text);
        }
    }
}
