//! One HTTP connection to the server under test, on hyper's `client::conn` so the test decides
//! exactly which connection carries which request (no hidden pool).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{CONNECTION, HOST};
use http::{HeaderValue, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::Response;

/// A keep-alive HTTP/1.1 connection (reopened when the server closed it) or an HTTP/2
/// prior-knowledge connection.
pub struct HttpClient {
    addr: SocketAddr,
    version: Version,
    /// HTTPS: the client configuration and the server name asked for.
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    sender: Option<Sender>,
    connections_opened: u64,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
        }
    }

    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::Http1(sender) => sender.ready().await,
            Sender::Http2(sender) => sender.ready().await,
        }
    }

    /// Sends `request`; on failure, gives the request back if it never reached the wire.
    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, (hyper::Error, Option<Request<Full<Bytes>>>)>
    {
        let result = match self {
            Sender::Http1(sender) => sender.try_send_request(request).await,
            Sender::Http2(sender) => sender.try_send_request(request).await,
        };
        result.map_err(|mut error| {
            let unsent = error.take_message();
            (error.into_error(), unsent)
        })
    }
}

impl HttpClient {
    /// An HTTP/1.1 client for `addr`. Connects now; a failure shows up at the first send.
    pub async fn http1(addr: SocketAddr) -> HttpClient {
        Self::new(addr, Version::HTTP_11).await
    }

    /// An HTTP/2 (prior knowledge, cleartext) client for `addr`.
    pub async fn http2(addr: SocketAddr) -> HttpClient {
        Self::new(addr, Version::HTTP_2).await
    }

    /// An HTTPS client for `addr` asking for `server_name`; the HTTP version is the one ALPN
    /// settles on (HTTP/1.1 when `config` offers none). Connects now: a failed handshake is an
    /// error here.
    pub async fn https(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<HttpClient> {
        let mut client = HttpClient {
            addr,
            version: Version::HTTP_11,
            tls: Some((config, server_name.to_owned())),
            sender: None,
            connections_opened: 0,
        };
        client.sender = Some(client.connect().await?);
        Ok(client)
    }

    /// The HTTP version in use (for HTTPS, the one ALPN chose).
    pub fn version(&self) -> Version {
        self.version
    }

    async fn new(addr: SocketAddr, version: Version) -> HttpClient {
        let mut client = HttpClient {
            addr,
            version,
            tls: None,
            sender: None,
            connections_opened: 0,
        };
        client.sender = client.connect().await.ok();
        client
    }

    /// How many TCP connections this client has opened (reconnects included).
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened
    }

    /// `GET path_and_query` with an empty body.
    pub async fn get(&mut self, path_and_query: &str) -> anyhow::Result<Response> {
        let request = Request::get(path_and_query)
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("building GET {path_and_query}"))?;
        self.send(request).await
    }

    /// Sends `request` and reads the whole response. A `Host` header (HTTP/1.1) or authority
    /// (HTTP/2) naming the server is added when the request has none.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<Response> {
        let mut request = self.normalize(request)?;
        // A keep-alive connection the server closed while idle is only noticed when used;
        // reconnect once for a request that never reached the wire.
        for attempt in 0..2 {
            let mut sender = match self.sender.take() {
                Some(sender) if !sender.is_closed() => sender,
                _ => self.connect().await?,
            };
            if sender.ready().await.is_err() {
                sender = self.connect().await?;
            }
            match sender.send(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = body.collect().await.context("reading the response body")?;
                    let closing = parts
                        .headers
                        .get(CONNECTION)
                        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
                    if !closing {
                        self.sender = Some(sender);
                    }
                    return Ok(Response {
                        status: parts.status,
                        headers: parts.headers,
                        body: body.to_bytes(),
                    });
                }
                Err((_, Some(unsent))) if attempt == 0 => request = unsent,
                Err((error, _)) => {
                    return Err(anyhow::Error::new(error).context(format!("HTTP to {}", self.addr)))
                }
            }
        }
        anyhow::bail!(
            "HTTP to {}: the connection closed twice before sending",
            self.addr
        )
    }

    fn normalize(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Request<Full<Bytes>>> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str())
            .to_owned();
        if self.version == Version::HTTP_2 {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            let authority = match parts.headers.remove(HOST) {
                Some(host) => host.to_str().context("Host header")?.to_owned(),
                None => parts
                    .uri
                    .authority()
                    .map_or_else(|| self.addr.to_string(), |authority| authority.to_string()),
            };
            parts.uri = Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
                .context("request URI")?;
        } else {
            if !parts.headers.contains_key(HOST) {
                let host = parts
                    .uri
                    .authority()
                    .map_or_else(|| self.addr.to_string(), |authority| authority.to_string());
                parts
                    .headers
                    .insert(HOST, HeaderValue::from_str(&host).context("Host header")?);
            }
            parts.uri = path_and_query.parse().context("request URI")?;
        }
        parts.version = self.version;
        Ok(Request::from_parts(parts, body))
    }

    async fn connect(&mut self) -> anyhow::Result<Sender> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        self.connections_opened += 1;
        match &self.tls {
            None => Self::handshake(self.version, TokioIo::new(stream)).await,
            Some((config, server_name)) => {
                let name = rustls_pki_types::ServerName::try_from(server_name.clone())
                    .with_context(|| format!("server name {server_name}"))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, stream)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.addr))?;
                self.version = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Version::HTTP_2,
                    _ => Version::HTTP_11,
                };
                Self::handshake(self.version, TokioIo::new(stream)).await
            }
        }
    }

    async fn handshake<T>(version: Version, io: TokioIo<T>) -> anyhow::Result<Sender>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if version == Version::HTTP_2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake")?;
            tokio::spawn(connection);
            Ok(Sender::Http2(sender))
        } else {
            let (sender, connection) = http1::handshake(io).await.context("HTTP/1.1 handshake")?;
            tokio::spawn(connection);
            Ok(Sender::Http1(sender))
        }
    }
}
