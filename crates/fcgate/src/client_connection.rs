//! One client connection, from accept to close: which HTTP version it speaks, serving it with
//! hyper, and *parking* HTTP/1.1 keep-alive connections while they are idle.
//!
//! hyper's HTTP/1.1 connection keeps an 8 KiB read buffer, an 8 KiB write buffer, the request
//! future's box and a cached header map for as long as it lives: about 30 KiB of heap per idle
//! keep-alive connection, 217 MB of RSS for 10,000 idle browsers. hyper has no setting to release them, so fcgate does it the way nginx
//! frees a keep-alive connection's buffers: once a connection has had no request in flight for
//! [`PARK_AFTER`], hyper is asked to finish gracefully, the socket is taken back together with
//! any bytes hyper had read ahead, hyper's state is dropped, and the task waits for the socket
//! to become readable holding no buffer at all. The next request starts a fresh hyper connection
//! on the same socket. A parked connection costs its task and its socket registration (about
//! 3 KiB). Connections that keep sending never park, so a busy client pays nothing for this.
//!
//! # Race windows
//!
//! - hyper must not have decided the connection's keep-alive fate differently from us. The
//!   graceful shutdown is only requested when no response is in flight: every response body
//!   fcgate returned has been dropped by hyper, which happens only after its head was encoded
//!   (so its `Connection` header is already on the wire). A connection hyper meant to close
//!   (`Connection: close`, HTTP/1.0) completes on its own in the same poll that flushes the
//!   last response, before we ever look at it.
//! - hyper flushes its write buffer before it shuts a finished connection down; the stream's
//!   shutdown is what parking turns into a no-op, so nothing hyper buffered is lost.
//! - A client may have pipelined part of its next request: hyper returns those bytes with the
//!   socket, and the next hyper connection reads them first.
//! - A hyper connection that has not yet received a request head is never parked: hyper only
//!   stops at a message boundary, and its header timer already bounds a client that trickles
//!   a head. So a client that pipelined half a head and stalled cannot cycle through parks
//!   (each would start a fresh timer); it gets hyper's timer once.
//! - An idle HTTP/2 connection (no stream in flight: right after the preface, after its last
//!   response, or holding only a HEADERS block that never ended) is closed the same
//!   `client_header_timeout` after it went idle, with a GOAWAY; a client that does not answer
//!   it loses the connection [`GOAWAY_GRACE`] later. hyper has no idle timeout for HTTP/2, so
//!   without this every idle h2 connection was held for ever. While streams are in flight,
//!   HTTP/2 PINGs every `client_header_timeout` find a peer that vanished.
//! - An idle keep-alive connection is closed `client_header_timeout` after it went idle, as
//!   before parking existed (hyper's header timer starts as soon as it waits for a head); the
//!   head that then arrives has `client_header_timeout` again, like nginx's `keepalive_timeout`
//!   followed by its `client_header_timeout`.
//! - A response whose app overran its `Content-Length` asks, through the request's
//!   [`CloseAfterResponse`], for the connection to end after it (`body.rs` says why). When that
//!   is known before its last declared byte is handed to hyper, nothing more is ever answered:
//!   hyper reads a pipelined request only after flushing that response, and the service then
//!   refuses it, which makes hyper close without answering. Excess seen later (in a record of
//!   its own, after the client had every declared byte) ends the connection as soon as it is
//!   seen: at once when idle or parked, else after the response hyper is writing.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::Either;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, HttpService, Service};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use fcgi::idle::Registration;

use crate::body::{CloseAfterResponse, ResponseBody};
use crate::cgi_params::ConnectionInfo;
use crate::config::Config;
use crate::listen_spec::ListenSpec;
use crate::proxy::Gateway;
use crate::tls::{TlsFacts, TlsSetup, ACME_TLS_ALPN};

/// How long an HTTP/1.1 connection must have had no request in flight before it is parked.
/// Long enough that a client sending request after request never pays for a new hyper
/// connection; short enough that a burst of new clients going idle never holds many hyper
/// states at once. Parking and the next request's new hyper connection cost about a
/// microsecond, nothing next to a 100 ms pause.
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// How long an idle HTTP/2 connection is kept after fcgate sent GOAWAY, for the client to answer
/// it; nothing is in flight on it, so a second is plenty.
pub const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// The HTTP/2 connection preface (RFC 9113, §3.4); a client that opens with it speaks HTTP/2
/// with prior knowledge.
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Counts of the client connections being served, for tests and operators.
#[derive(Debug, Default)]
pub struct ClientConnections {
    open: AtomicUsize,
    parked: AtomicUsize,
    http1: AtomicUsize,
    http2: AtomicUsize,
}

impl ClientConnections {
    /// Client connections accepted and not yet closed.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Open HTTP/1.1 connections parked between requests, holding no hyper state.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Open connections that started HTTP/1.1.
    pub fn http1(&self) -> usize {
        self.http1.load(Ordering::Relaxed)
    }

    /// Open connections that started HTTP/2 (prior knowledge).
    pub fn http2(&self) -> usize {
        self.http2.load(Ordering::Relaxed)
    }
}

/// Decrements one of [`ClientConnections`]' counters when dropped, whichever way a task ends.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Counted<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every client connection shares: the hyper builders and the handler. Each connection's
/// own token (a child of the shutdown token) says when it is to end.
pub struct HttpFront {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    header_timeout: Duration,
    send_timeout: Duration,
    /// The certificates of the generation this front was built from.
    tls: Option<Arc<TlsSetup>>,
    gateway: Arc<Gateway>,
    connections: Arc<ClientConnections>,
}

impl HttpFront {
    /// The front for `gateway`, configured from the config in force: connections accepted
    /// after a reload get a front built from the new one.
    pub fn new(gateway: Arc<Gateway>, connections: Arc<ClientConnections>) -> HttpFront {
        let generation = gateway.current();
        let config: &Config = &generation.config;
        let header_timeout = config.limits.client_header_timeout;
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        // hyper's 16 KiB default would refuse heads `max_request_head` allows; HPACK counts 32
        // bytes more per field, so twice the limit lets `request_guard` answer the 431 itself.
        let header_list = config.limits.head.max_request_head.saturating_mul(2);
        let limits = &config.limits.http2;
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(header_list).unwrap_or(u32::MAX))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .initial_stream_window_size(limits.stream_window)
            .initial_connection_window_size(limits.connection_window)
            .keep_alive_interval(Some(header_timeout));
        HttpFront {
            http1,
            http2,
            header_timeout,
            send_timeout: config.limits.send_timeout,
            tls: generation.tls.clone(),
            gateway,
            connections,
        }
    }

    /// Serves one accepted connection until it closes, shutdown has drained it, or the accept
    /// loop asked it to make room while it was idle (`registration`'s token, a child of the
    /// shutdown token: both end the connection the same way). `sockets` are the connection's
    /// two ends; on a `tls` listener the handshake comes first.
    pub async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        sockets: SocketEnds,
        listener: ListenSpec,
        registration: Registration,
    ) {
        let _open = Counted::new(&self.connections.open);
        let client = sockets.peer;
        let activity = Arc::new(Activity::new(registration));
        let deadline = Instant::now() + self.header_timeout;
        // Built in a plain function so that nothing of `Opened` stays in this task's future
        // beside the connection future it moves into: a parked connection costs this future.
        let connection = match self
            .open(stream, sockets, listener, deadline, &activity)
            .await
        {
            Ok(Some(opened)) => self.connection(opened, activity),
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%client, "client connection failed before its first request: {error}");
                return;
            }
        };
        let result = connection.await;
        if let Err(error) = result {
            log_connection_error(client, &error);
            if let Some(status) = status_hyper_answered(&error) {
                self.gateway.count_refused_by_hyper(client, status);
            }
        }
    }

    /// The opened connection's hyper side: the service every request goes through, served as
    /// HTTP/2 or HTTP/1.1 until the connection ends.
    fn connection(
        &self,
        opened: Opened,
        activity: Arc<Activity>,
    ) -> impl Future<Output = hyper::Result<()>> + '_ {
        let Opened {
            socket,
            info,
            protocol,
            read_ahead,
        } = opened;
        // HTTP/2 streams end cleanly at a declared length; only HTTP/1.x connections end early.
        let http1 = matches!(protocol, Protocol::Http1);
        let service = {
            let gateway = Arc::clone(&self.gateway);
            let info = Arc::new(info);
            let activity = Arc::clone(&activity);
            service_fn(move |request: Request<Incoming>| {
                let gateway = Arc::clone(&gateway);
                let info = Arc::clone(&info);
                let in_flight = InFlight::start(&activity);
                let ending = http1.then(|| activity.close.clone());
                async move {
                    if ending
                        .as_ref()
                        .is_some_and(CloseAfterResponse::is_requested)
                    {
                        return Err(ConnectionEnding);
                    }
                    let response = gateway.handle(request, &info, ending.as_ref()).await;
                    Ok(response.map(|body| TrackedBody {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        match protocol {
            Protocol::Http2 => Either::Left(async move {
                let _http2 = Counted::new(&self.connections.http2);
                self.serve_http2(socket, read_ahead, service, activity)
                    .await
            }),
            Protocol::Http1 => Either::Right(async move {
                let _http1 = Counted::new(&self.connections.http1);
                self.serve_http1(socket, read_ahead, service, activity)
                    .await
            }),
        }
    }

    /// Everything before the first request: the TLS handshake on a `tls` listener (ALPN then
    /// says which HTTP), the preface sniff on a plain one. `None` when the client sent nothing
    /// in time, closed, or shutdown began.
    async fn open(
        &self,
        stream: TcpStream,
        sockets: SocketEnds,
        listener: ListenSpec,
        deadline: Instant,
        activity: &Activity,
    ) -> io::Result<Option<Opened>> {
        let mut stream = stream;
        let (sockets, after_header) = if listener.proxy_protocol {
            match self
                .read_proxy_header(&mut stream, sockets, deadline, activity)
                .await
            {
                Some(read) => read,
                None => return Ok(None),
            }
        } else {
            (sockets, Bytes::new())
        };
        let info = ConnectionInfo::new(sockets.peer, sockets.local, sockets.client_tls);
        if !listener.tls {
            let Some((protocol, read_ahead)) = self
                .read_preface(&stream, after_header, deadline, activity)
                .await?
            else {
                return Ok(None);
            };
            return Ok(Some(Opened {
                socket: ClientSocket::Plain(stream),
                info,
                protocol,
                read_ahead,
            }));
        }
        // Boxed: the handshake's state (rustls' connection, the timer) would otherwise be part of
        // every connection task's future, plain ones and parked ones included.
        let stream = Prefixed {
            prefix: after_header,
            stream,
        };
        Box::pin(self.handshake(stream, info, deadline, activity)).await
    }

    /// The PROXY protocol header a load balancer sends first on a `proxy_protocol` listener:
    /// the connection's ends as the client sees them, and any bytes read past the header. A
    /// connection without a valid header within the deadline is closed (`None`) with one line
    /// in the log: either the balancer is not configured to send it, or the listener is
    /// reachable by something that is not the balancer.
    async fn read_proxy_header(
        &self,
        stream: &mut TcpStream,
        sockets: SocketEnds,
        deadline: Instant,
        activity: &Activity,
    ) -> Option<(SocketEnds, Bytes)> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let read = tokio::select! {
            biased;
            _ = activity.closing().cancelled() => return None,
            read = crate::proxy_protocol::read_header(stream, timeout) => read,
        };
        match read {
            Ok((header, after_header)) => {
                let (peer, local) = header.addresses(sockets.peer, sockets.local);
                let client_tls = header.client_tls();
                Some((
                    SocketEnds {
                        peer,
                        local,
                        client_tls,
                    },
                    after_header,
                ))
            }
            Err(error) => {
                tracing::warn!(peer = %sockets.peer, "closing a connection on a proxy_protocol listener: {error}");
                None
            }
        }
    }

    /// The TLS handshake, bounded by `deadline`; ALPN then says which HTTP.
    async fn handshake(
        &self,
        stream: Prefixed,
        info: ConnectionInfo,
        deadline: Instant,
        activity: &Activity,
    ) -> io::Result<Option<Opened>> {
        let Some(tls) = &self.tls else {
            // Validation requires certificates for a `tls` listener; a reload that removed
            // them stops the listener too. Nothing to present meanwhile.
            return Err(io::Error::other("no TLS certificate configured"));
        };
        let handshake = tls.acceptor().accept(stream);
        let stream = tokio::select! {
            biased;
            _ = activity.closing().cancelled() => return Ok(None),
            done = tokio::time::timeout_at(deadline, handshake) => match done {
                Ok(stream) => stream.map_err(|error| {
                    io::Error::new(error.kind(), format!("TLS handshake failed: {error}"))
                })?,
                Err(_elapsed) => return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake not done within client_header_timeout",
                )),
            },
        };
        let (_, session) = stream.get_ref();
        // RFC 9113 §3.2: over TLS, HTTP/2 is chosen with ALPN, never by sniffing.
        let protocol = match session.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            // An ACME validator: the handshake was all it wanted (RFC 8737 §3).
            Some(ACME_TLS_ALPN) => return Ok(None),
            _ => Protocol::Http1,
        };
        let info = info.with_tls(TlsFacts::of(session));
        Ok(Some(Opened {
            socket: ClientSocket::Tls(Box::new(stream)),
            info,
            protocol,
            read_ahead: Bytes::new(),
        }))
    }

    /// Reads until the first bytes tell HTTP/2's preface from an HTTP/1.1 request line, holding
    /// no buffer while the client is silent. `None` when the client sent nothing in time, closed,
    /// or shutdown began.
    async fn read_preface(
        &self,
        stream: &TcpStream,
        already_read: Bytes,
        deadline: Instant,
        activity: &Activity,
    ) -> io::Result<Option<(Protocol, Bytes)>> {
        // Bytes that followed a PROXY header decide it when they are enough.
        let known = already_read.len().min(HTTP2_PREFACE.len());
        if already_read[..known] != HTTP2_PREFACE[..known] {
            return Ok(Some((Protocol::Http1, already_read)));
        }
        if known == HTTP2_PREFACE.len() {
            return Ok(Some((Protocol::Http2, already_read)));
        }
        let mut preface = [0u8; HTTP2_PREFACE.len()];
        preface[..known].copy_from_slice(&already_read);
        let mut filled = known;
        loop {
            if !wait_readable(stream, deadline, activity.closing()).await? {
                return Ok(None);
            }
            match stream.try_read(&mut preface[filled..]) {
                Ok(0) => return Ok(None),
                Ok(read) => filled += read,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
            let protocol = if preface[..filled] != HTTP2_PREFACE[..filled] {
                Protocol::Http1
            } else if filled == HTTP2_PREFACE.len() {
                Protocol::Http2
            } else {
                continue;
            };
            return Ok(Some((protocol, Bytes::copy_from_slice(&preface[..filled]))));
        }
    }

    async fn serve_http2<S>(
        &self,
        stream: ClientSocket,
        read_ahead: Bytes,
        service: S,
        activity: Arc<Activity>,
    ) -> hyper::Result<()>
    where
        S: Service<Request<Incoming>, Response = hyper::Response<TrackedBody>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = TokioIo::new(ClientStream::new(
            stream,
            read_ahead,
            Arc::clone(&activity),
            self.send_timeout,
        ));
        let mut connection = pin!(self.http2.serve_connection(io, BoxedCalls(service)));
        let idle_timeout = self.header_timeout;
        let mut idle_check = pin!(tokio::time::sleep(idle_timeout));
        let grace = loop {
            tokio::select! {
                result = connection.as_mut() => return result,
                // Shutdown lets streams in flight finish (`shutdown_timeout` bounds that). An
                // idle connection asked to make room, or idle at shutdown, has none: the GOAWAY
                // goes out and the connection is dropped, its slot free at once.
                _ = activity.closing().cancelled() => {
                    break activity.idle_since().map(|_| Duration::ZERO);
                }
                () = idle_check.as_mut() => match activity.idle_since() {
                    Some(since) if since.elapsed() >= idle_timeout => {
                        tracing::debug!("HTTP/2 connection idle for {idle_timeout:?}; closing it");
                        break Some(GOAWAY_GRACE);
                    }
                    Some(since) => idle_check.as_mut().reset(since + idle_timeout),
                    None => idle_check.as_mut().reset(Instant::now() + idle_timeout),
                },
            }
        };
        // GOAWAY, and a PING whose answer lets hyper finish cleanly; a client that never
        // answers is dropped when the grace is over (a zero grace still polls the connection
        // once, which writes the GOAWAY).
        connection.as_mut().graceful_shutdown();
        match grace {
            None => connection.await,
            Some(grace) => tokio::time::timeout(grace, connection)
                .await
                .unwrap_or(Ok(())),
        }
    }

    /// Serves HTTP/1.1 requests on `stream`, parking it whenever it idles (see the module doc).
    async fn serve_http1<S>(
        &self,
        mut stream: ClientSocket,
        mut read_ahead: Bytes,
        mut service: S,
        activity: Arc<Activity>,
    ) -> hyper::Result<()>
    where
        S: HttpService<Incoming, ResBody = TrackedBody> + Unpin,
    {
        loop {
            activity.parking.store(false, Ordering::Relaxed);
            let io = TokioIo::new(ClientStream::new(
                stream,
                read_ahead,
                Arc::clone(&activity),
                self.send_timeout,
            ));
            let mut connection = self.http1.serve_connection(io, service);
            let idle_since = match self.drive_http1(&mut connection, &activity).await? {
                Http1End::Closed => return Ok(()),
                Http1End::Parked { idle_since } => idle_since,
            };
            let parts = connection.into_parts();
            service = parts.service;
            let (socket, unread) = parts.io.into_inner().into_parts();
            stream = socket;
            read_ahead = join(&unread, &parts.read_buf);
            // Now, not at the end of the loop body: it holds hyper's read buffer.
            drop(parts.read_buf);
            if read_ahead.is_empty() {
                let _parked = Counted::new(&self.connections.parked);
                let keepalive_deadline = idle_since + self.header_timeout;
                match stream
                    .wait_for_data(keepalive_deadline, activity.close.token())
                    .await
                {
                    Ok(Some(first_bytes)) => read_ahead = first_bytes,
                    Ok(None) => return Ok(()),
                    Err(error) => {
                        tracing::debug!("parked client connection failed: {error}");
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Polls one hyper HTTP/1.1 connection until it ends by itself or, after serving a request and
    /// then idling for [`PARK_AFTER`], is asked to finish so the socket can be parked. Shutdown
    /// asks it to finish for good.
    async fn drive_http1<S>(
        &self,
        connection: &mut http1::Connection<TokioIo<ClientStream>, S>,
        activity: &Activity,
    ) -> hyper::Result<Http1End>
    where
        S: HttpService<Incoming, ResBody = TrackedBody> + Unpin,
    {
        let requests_before = activity.requests_started.load(Ordering::Relaxed);
        // Shutdown, room made for a newcomer, or a response that overran its Content-Length.
        let mut shutdown = pin!(activity.close.requested());
        let mut park_timer = pin!(tokio::time::sleep(PARK_AFTER));
        // The request count when the connection last went idle, and when that was.
        let mut idle_after_request = requests_before;
        let mut idle_since = Instant::now();
        let mut finishing = Finishing::No;
        poll_fn(|cx| loop {
            if let Poll::Ready(result) = Pin::new(&mut *connection).poll(cx) {
                return Poll::Ready(result.map(|()| match finishing {
                    Finishing::ToPark { idle_since } => Http1End::Parked { idle_since },
                    Finishing::No | Finishing::ForShutdown => Http1End::Closed,
                }));
            }
            if finishing != Finishing::No {
                return Poll::Pending;
            }
            if shutdown.as_mut().poll(cx).is_ready() {
                finishing = Finishing::ForShutdown;
                Pin::new(&mut *connection).graceful_shutdown();
                continue;
            }
            if activity.in_flight.load(Ordering::Relaxed) > 0 {
                return Poll::Pending;
            }
            let started = activity.requests_started.load(Ordering::Relaxed);
            if started == requests_before {
                // No request yet on this hyper connection: it is reading a head (hyper's
                // header timer bounds that), and hyper would not stop before the head is in.
                return Poll::Pending;
            }
            if idle_after_request != started {
                // Idle again after a request. Moving a registered timer later is a single
                // atomic update in tokio, cheap enough to do after every request.
                idle_after_request = started;
                idle_since = Instant::now();
                park_timer.as_mut().reset(idle_since + PARK_AFTER);
            }
            if park_timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            finishing = Finishing::ToPark { idle_since };
            activity.parking.store(true, Ordering::Relaxed);
            Pin::new(&mut *connection).graceful_shutdown();
        })
        .await
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Finishing {
    No,
    ToPark { idle_since: Instant },
    ForShutdown,
}

/// A service whose calls return their future boxed. hyper spawns each HTTP/2 stream as a task
/// holding the service's future inline, so tokio would copy the whole request future (3.7 KiB) into
/// the task and its output over it; boxed, the future is written once and the task is small.
/// HTTP/1.1 keeps the future inline: its dispatcher holds it without a task of its own.
struct BoxedCalls<S>(S);

impl<S, R> Service<R> for BoxedCalls<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<S::Future>>;

    fn call(&self, request: R) -> Self::Future {
        Box::pin(self.0.call(request))
    }
}

enum Http1End {
    /// hyper finished and shut the stream down: the client closed, asked to close, or shutdown.
    Closed,
    /// hyper finished at our request; the stream is open and idle since `idle_since`.
    Parked { idle_since: Instant },
}

enum Protocol {
    Http1,
    Http2,
}

/// The two ends of an accepted TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketEnds {
    /// The client's address (or the proxy's, before its PROXY header).
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// A PROXY v2 header said the client spoke TLS to the proxy.
    pub client_tls: bool,
}

/// A connection ready for its first request.
struct Opened {
    socket: ClientSocket,
    info: ConnectionInfo,
    protocol: Protocol,
    /// Bytes read while telling the protocol, which hyper must read first.
    read_ahead: Bytes,
}

/// The client's socket, with TLS or without.
enum ClientSocket {
    Plain(TcpStream),
    // Boxed: rustls' connection state is over a kilobyte, and most connections are plain.
    Tls(Box<tokio_rustls::server::TlsStream<Prefixed>>),
}

impl ClientSocket {
    /// Waits, holding no buffer, until the client sends something, and returns what was read to
    /// find out (always nothing on a plain socket, whose readiness is enough; a TLS socket must
    /// decrypt a record to know whether it holds data or only a close or a ticket). `None` when
    /// the client closed, `deadline` passed or `closing` was cancelled first.
    async fn wait_for_data(
        &mut self,
        deadline: Instant,
        closing: &CancellationToken,
    ) -> io::Result<Option<Bytes>> {
        match self {
            ClientSocket::Plain(stream) => Ok(wait_readable(stream, deadline, closing)
                .await?
                .then(Bytes::new)),
            // Boxed, like the handshake: plain connections' parked tasks stay small.
            ClientSocket::Tls(stream) => Box::pin(first_bytes(stream, deadline, closing)).await,
        }
    }
}

/// Reads the first few plaintext bytes of a parked TLS connection; the rest stays decrypted in
/// rustls until hyper asks for it.
async fn first_bytes(
    stream: &mut tokio_rustls::server::TlsStream<Prefixed>,
    deadline: Instant,
    closing: &CancellationToken,
) -> io::Result<Option<Bytes>> {
    use tokio::io::AsyncReadExt;
    let mut first = [0u8; 16];
    tokio::select! {
        biased;
        _ = closing.cancelled() => Ok(None),
        read = tokio::time::timeout_at(deadline, stream.read(&mut first)) => match read {
            Ok(Ok(0)) | Err(_) => Ok(None),
            Ok(Ok(read)) => Ok(Some(Bytes::copy_from_slice(&first[..read]))),
            Ok(Err(error)) => Err(error),
        },
    }
}

/// Moves what `buf` has room for from `read_ahead` into it; `false` when there was nothing to
/// move and the read must go to the socket.
fn read_from(read_ahead: &mut Bytes, buf: &mut ReadBuf<'_>) -> bool {
    if read_ahead.is_empty() {
        return false;
    }
    let take = read_ahead.len().min(buf.remaining());
    buf.put_slice(&read_ahead[..take]);
    read_ahead.advance(take);
    true
}

/// A TCP stream whose first bytes were already read: what followed a PROXY header in the same
/// segment, which belongs to the TLS handshake.
struct Prefixed {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if read_from(&mut this.prefix, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ClientSocket::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientSocket::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ClientSocket::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientSocket::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            ClientSocket::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientSocket::Plain(stream) => stream.is_write_vectored(),
            ClientSocket::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ClientSocket::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ClientSocket::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `first` then `second` in a buffer of their own: what hyper read ahead is a slice of its
/// 8 KiB read buffer, which would otherwise stay allocated for as long as the connection is
/// parked. Usually both are empty.
fn join(first: &[u8], second: &[u8]) -> Bytes {
    if first.is_empty() && second.is_empty() {
        return Bytes::new();
    }
    let mut joined = BytesMut::with_capacity(first.len() + second.len());
    joined.extend_from_slice(first);
    joined.extend_from_slice(second);
    joined.freeze()
}

/// What the connection task needs to know about the requests hyper is serving: shared with the
/// service (which counts requests in and out) and the stream (which must not shut down a socket
/// that is being parked). Everything happens on the connection's own task, inside hyper's poll.
struct Activity {
    requests_started: AtomicU64,
    in_flight: AtomicUsize,
    parking: AtomicBool,
    /// When the connection started: the origin of `idle_since_ms`.
    opened: Instant,
    /// Milliseconds after `opened` when the last request in flight ended (0: none yet).
    idle_since_ms: AtomicU64,
    /// The connection's place among all client connections, for the accept loop to find idle
    /// ones when `max_client_connections` is reached.
    registration: Registration,
    /// Requested when an HTTP/1.x connection is to end after its response in progress; a child
    /// of `registration`'s token, so shutdown and eviction request it too.
    close: CloseAfterResponse,
}

impl Activity {
    fn new(registration: Registration) -> Activity {
        Activity {
            close: CloseAfterResponse::child_of(registration.evict_token()),
            requests_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            parking: AtomicBool::new(false),
            opened: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
            registration,
        }
    }

    /// Cancelled when the connection is to end: shutdown, or room needed for a newcomer.
    fn closing(&self) -> &CancellationToken {
        self.registration.evict_token()
    }

    /// When the connection last went idle; `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let millis = self.idle_since_ms.load(Ordering::Acquire);
        Some(self.opened + Duration::from_millis(millis))
    }
}

/// One request from the moment hyper hands it over until hyper drops its response body, which is
/// after the response head was encoded.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.requests_started.fetch_add(1, Ordering::Relaxed);
        if activity.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            activity.registration.set_idle(false);
        }
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        // Stamped before the count drops, so an idle check never sees zero with an old stamp.
        let millis = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.store(millis, Ordering::Release);
        // Two HTTP/2 streams on different threads may race here; the worst case is a busy
        // connection marked idle, which asked to make room finishes its streams first (GOAWAY).
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.registration.set_idle(true);
        }
    }
}

/// Why a request on an HTTP/1.x connection that is ending gets no answer: the service's
/// error, on which hyper closes the connection without writing anything.
#[derive(Debug, thiserror::Error)]
#[error("the connection ends after a response that overran its Content-Length (or shutdown)")]
struct ConnectionEnding;

/// A response body that keeps its request counted as in flight until hyper drops it.
struct TrackedBody {
    body: ResponseBody,
    /// Held for its `Drop`.
    _in_flight: InFlight,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client socket as hyper sees it: bytes read ahead (the protocol sniff, or what a previous
/// hyper connection had buffered) come first, shutdown does nothing while parking, and a write
/// that cannot make progress for `send_timeout` fails (nginx's `send_timeout`): a client that
/// stops reading loses its connection, and the response spool it held is freed with it.
struct ClientStream {
    stream: ClientSocket,
    read_ahead: Bytes,
    activity: Arc<Activity>,
    send_timeout: Duration,
    /// Armed while a write waits for the client to read.
    write_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ClientStream {
    fn new(
        stream: ClientSocket,
        read_ahead: Bytes,
        activity: Arc<Activity>,
        send_timeout: Duration,
    ) -> ClientStream {
        ClientStream {
            stream,
            read_ahead,
            activity,
            send_timeout,
            write_deadline: None,
        }
    }

    /// Passes a write's outcome on; a write still pending `send_timeout` after the last one
    /// that made progress becomes an error.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if written.is_ready() {
            self.write_deadline = None;
            return written;
        }
        let send_timeout = self.send_timeout;
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send_timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.write_deadline = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {send_timeout:?} (send_timeout)"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The socket and whatever read-ahead hyper never asked for.
    fn into_parts(self) -> (ClientSocket, Bytes) {
        (self.stream, self.read_ahead)
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if read_from(&mut this.read_ahead, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.bounded(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.bounded(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// Waits until `stream` is readable (data, end of stream or an error to report). `false`
/// when `deadline` passed or `closing` was cancelled first.
async fn wait_readable(
    stream: &TcpStream,
    deadline: Instant,
    closing: &CancellationToken,
) -> io::Result<bool> {
    tokio::select! {
        biased;
        _ = closing.cancelled() => Ok(false),
        readable = tokio::time::timeout_at(deadline, stream.readable()) => match readable {
            Ok(result) => result.map(|()| true),
            Err(_elapsed) => Ok(false),
        },
    }
}

/// hyper answers malformed requests itself (400, 431 for oversized heads) and closes; that is
/// worth a line an operator can find. Clients that simply hang up are not.
/// The status hyper answered on its own for a request it could not parse (hyper's
/// `on_error`): 414 for a target over its own limit, 431 for a head over its buffer, 400 for
/// the rest. `None` when hyper sent nothing (a timeout, the client went away).
fn status_hyper_answered(error: &hyper::Error) -> Option<u16> {
    if error.is_parse_too_large() {
        // hyper has one predicate for both; its message tells them apart ("URI too long").
        let uri = error.to_string().contains("URI too long");
        Some(if uri { 414 } else { 431 })
    } else if error.is_parse() {
        Some(400)
    } else {
        None
    }
}

fn log_connection_error(client: SocketAddr, error: &hyper::Error) {
    if error.is_parse() || error.is_parse_too_large() {
        tracing::info!(%client, "rejected a malformed request: {error}");
    } else if error.is_timeout() {
        tracing::info!(%client, "client too slow sending request headers: {error}");
    } else {
        tracing::debug!(%client, "client connection ended: {error}");
    }
}
