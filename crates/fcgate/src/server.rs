//! The HTTP front's listeners: one accept loop per `listen` entry, each connection handed to its
//! own task (`client_connection.rs` serves HTTP/1.1 with keep-alive and HTTP/2, with prior
//! knowledge on a plain port and by ALPN on a `tls` one), and a graceful shutdown: stop
//! accepting, let requests in flight finish within `shutdown_timeout`, then return.
//!
//! At most `max_client_connections` are open at once, so fcgate never runs out of file
//! descriptors. At the limit a newcomer takes the place of the longest-idle connection (no
//! request in flight: a parked keep-alive connection, an HTTP/2 connection without streams, a
//! connection that never sent anything), which is closed, as nginx reuses its keep-alive
//! connections (`fcgi::idle`); only when every connection is busy do newcomers wait in the
//! kernel's backlog. If descriptors run out anyway (spool files, backend connections, another
//! process), accepting pauses until a connection closes, or a second passes, with one log line
//! per pause rather than one every few milliseconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use fcgi::idle::IdleRegistry;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::acme::AcmeState;
use crate::client_connection::{ClientConnections, HttpFront, SocketEnds};
use crate::config::Config;
use crate::listen_spec::ListenSpec;
use crate::proxy::Gateway;
use crate::reload::{ReloadError, Reloaded};
use crate::tls::{ManagedCertificates, TlsSetup};
use crate::upstream::Upstream;

/// The longest pause of accepting after it failed (out of file descriptors).
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
/// How often a paused accept looks whether a connection has closed.
const ACCEPT_RETRY_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// A gateway serving on bound ports; tests start one on `127.0.0.1:0`.
pub struct RunningGateway {
    /// Where its first listener listened when it started (a reload may move it:
    /// [`Self::listen_addr`]).
    pub local_addr: SocketAddr,
    /// Where the admin listener (`/metrics`, `/status`) listens, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// The request handler and its pools (tests read the pool stats).
    pub gateway: Arc<Gateway>,
    /// How many client connections are open, and how many of those are parked.
    pub connections: Arc<ClientConnections>,
    /// Cancel to shut down gracefully.
    pub shutdown: CancellationToken,
    /// Finishes when the shutdown is complete.
    pub task: JoinHandle<()>,
    acceptor: Arc<Acceptor>,
}

impl RunningGateway {
    /// Shuts down gracefully and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Where the first listener is bound now.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listeners()
            .first()
            .map_or(self.local_addr, |listener| listener.local_addr)
    }

    /// Where the first `tls` listener is bound now, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.listeners()
            .iter()
            .find(|listener| listener.spec.tls)
            .map(|listener| listener.local_addr)
    }

    /// Every listener accepting now, in the configured order.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.acceptor.listeners()
    }

    /// Puts `config` in force without dropping anything (SIGHUP): see `reload.rs`.
    pub async fn reload(&self, config: Config) -> Result<Reloaded, ReloadError> {
        crate::reload::reload(self, config).await
    }

    pub(crate) fn acceptor(&self) -> &Arc<Acceptor> {
        &self.acceptor
    }
}

/// The listen backlog: connections the kernel completes before fcgate accepts them. mio's
/// default of 128 overflowed when 200 clients connected at once, and every client over it had
/// its SYN retransmitted a second later (a 1 s stall, measured in tests/interop.rs). nginx uses
/// 511; the kernel caps it at `net.core.somaxconn` (4096 on current kernels).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `address` with [`LISTEN_BACKLOG`] (and SO_REUSEADDR, so a restart does not wait out
/// TIME_WAIT).
pub(crate) fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A listener as configured and as bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundListener {
    /// The `listen` entry (its address as written: port 0 stays 0).
    pub spec: ListenSpec,
    /// The address it is bound to.
    pub local_addr: SocketAddr,
}

/// Everything bound and opened, nothing served yet: what a process started as root does
/// before it gives up root (`privileges.rs`), so no request is ever served as root.
pub struct BoundGateway {
    listeners: Vec<(ListenSpec, TcpListener)>,
    admin_listener: Option<TcpListener>,
    gateway: Arc<Gateway>,
}

impl BoundGateway {
    /// Binds `config.listen` (and `admin_listen`), loads the TLS certificates, opens the access
    /// log, builds the pools.
    pub async fn bind(config: Config) -> std::io::Result<BoundGateway> {
        BoundGateway::bind_with(config, Vec::new()).await
    }

    /// As [`Self::bind`], but serving on the sockets systemd passed (socket activation): each
    /// takes the place of the `listen` entry with its address (a lone socket, that of a lone
    /// entry); entries left over are bound as usual.
    pub async fn bind_with(
        config: Config,
        inherited: Vec<std::net::TcpListener>,
    ) -> std::io::Result<BoundGateway> {
        let listeners = bind_listeners(&config.listen, inherited)?;
        let admin_listener = match config.admin_listen {
            Some(address) => Some(TcpListener::bind(address).await.map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("binding the admin listener on {address}: {error}"),
                )
            })?),
            None => None,
        };
        // Before giving up root, as nginx does: key files are often readable by root only.
        let acme = config.acme.as_ref().map(AcmeState::load);
        let managed = acme
            .clone()
            .map(|acme| acme as Arc<dyn ManagedCertificates>);
        let tls =
            TlsSetup::load(&config.tls, managed.as_ref(), None).map_err(std::io::Error::other)?;
        let access_log = AccessLog::start(&config.access_log, config.access_log_format)?;
        let upstream = Upstream::start(&config.upstream)
            .await
            .map_err(std::io::Error::other)?;
        let mut groups = BTreeMap::new();
        for (name, group) in &config.upstream_groups {
            let started = Upstream::start(group)
                .await
                .map_err(|error| std::io::Error::other(format!("[upstreams.{name}]: {error}")))?;
            groups.insert(name.clone(), started);
        }
        Ok(BoundGateway {
            listeners,
            admin_listener,
            gateway: Gateway::new(config, upstream, groups, access_log, tls, acme),
        })
    }

    /// The gateway it will serve (its config and pools are built already).
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Starts accepting, in background tasks.
    pub fn serve(self) -> std::io::Result<RunningGateway> {
        let BoundGateway {
            listeners,
            admin_listener,
            gateway,
        } = self;
        let shutdown = CancellationToken::new();
        let connections = Arc::new(ClientConnections::default());
        let admin_addr = match admin_listener {
            Some(listener) => Some(
                crate::admin::start(
                    listener,
                    Arc::clone(&gateway),
                    Arc::clone(&connections),
                    shutdown.clone(),
                )?
                .local_addr,
            ),
            None => None,
        };
        let acceptor = Arc::new(Acceptor::new(
            Arc::clone(&gateway),
            Arc::clone(&connections),
            shutdown.clone(),
        ));
        let mut local_addr = None;
        let mut accepting = Vec::with_capacity(listeners.len());
        for (spec, listener) in listeners {
            let bound = listener.local_addr()?;
            local_addr.get_or_insert(bound);
            accepting.push(acceptor.start_accepting(spec, Arc::new(listener), bound));
        }
        acceptor.put_in_force(accepting);
        let local_addr = local_addr.ok_or_else(|| std::io::Error::other("no listener"))?;
        if let Some(acme) = gateway.acme() {
            crate::acme::start(Arc::clone(acme), shutdown.clone());
        }
        let task = tokio::spawn(Arc::clone(&acceptor).drain_after_shutdown());
        Ok(RunningGateway {
            local_addr,
            admin_addr,
            gateway,
            connections,
            shutdown,
            task,
            acceptor,
        })
    }
}

/// Binds every `listen` entry, or takes the socket systemd passed for it.
fn bind_listeners(
    specs: &[ListenSpec],
    inherited: Vec<std::net::TcpListener>,
) -> std::io::Result<Vec<(ListenSpec, TcpListener)>> {
    let mut passed = Vec::with_capacity(inherited.len());
    for listener in inherited {
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        passed.push((address, Some(listener)));
    }
    let lone = specs.len() == 1 && passed.len() == 1;
    let mut bound = Vec::with_capacity(specs.len());
    for spec in specs {
        let taken = passed
            .iter_mut()
            .find(|(address, listener)| listener.is_some() && (lone || *address == spec.address))
            .and_then(|(_, listener)| listener.take());
        let listener = match taken {
            Some(listener) => TcpListener::from_std(listener)?,
            None => bind(spec.address).map_err(|error| {
                std::io::Error::new(error.kind(), format!("binding {}: {error}", spec.address))
            })?,
        };
        bound.push((*spec, listener));
    }
    for (address, listener) in passed {
        if listener.is_some() {
            tracing::warn!(%address, "systemd passed a socket no `listen` entry names; it is not used");
        }
    }
    Ok(bound)
}

/// Binds `config.listen` and starts serving in a background task.
pub async fn start(config: Config) -> std::io::Result<RunningGateway> {
    BoundGateway::bind(config).await?.serve()
}

/// A listener accepting, and the token that stops its accept loop.
#[derive(Clone)]
pub(crate) struct Listening {
    pub(crate) bound: BoundListener,
    /// Shared with its accept loop, so a reload that changes only the entry's flags restarts
    /// the loop on the same socket.
    pub(crate) listener: Arc<TcpListener>,
    stop: CancellationToken,
}

/// What every accept loop shares: the connection slots, the idle registry, the connection
/// tasks (drained at shutdown) and the front new connections get. A reload that moves a
/// listener starts the new accept loop before it stops the old one; all feed the same slots
/// and tasks, so nothing is counted twice or left behind.
pub(crate) struct Acceptor {
    gateway: Arc<Gateway>,
    connections: Arc<ClientConnections>,
    front: ArcSwap<HttpFront>,
    tasks: TaskTracker,
    slots: Arc<Semaphore>,
    /// Fixed at start: the semaphore is sized once (a reload that changes it is warned about).
    max_client_connections: usize,
    registry: Arc<IdleRegistry>,
    shutdown: CancellationToken,
    listening: Mutex<Vec<Listening>>,
}

impl Acceptor {
    fn new(
        gateway: Arc<Gateway>,
        connections: Arc<ClientConnections>,
        shutdown: CancellationToken,
    ) -> Acceptor {
        let max_client_connections = gateway.current().config.max_client_connections;
        Acceptor {
            front: ArcSwap::from_pointee(HttpFront::new(
                Arc::clone(&gateway),
                Arc::clone(&connections),
            )),
            gateway,
            connections,
            tasks: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(max_client_connections)),
            max_client_connections,
            registry: IdleRegistry::new(),
            shutdown,
            listening: Mutex::new(Vec::new()),
        }
    }

    /// The listeners accepting now.
    pub(crate) fn listening(&self) -> Vec<Listening> {
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The listeners accepting now, as configured and bound.
    pub(crate) fn listeners(&self) -> Vec<BoundListener> {
        self.listening()
            .into_iter()
            .map(|listening| listening.bound)
            .collect()
    }

    /// The largest number of client connections, as sized at start.
    pub(crate) fn max_client_connections(&self) -> usize {
        self.max_client_connections
    }

    /// Connections accepted from now on are served with the config in force now.
    pub(crate) fn refresh_front(&self) {
        self.front.store(Arc::new(HttpFront::new(
            Arc::clone(&self.gateway),
            Arc::clone(&self.connections),
        )));
    }

    /// Starts an accept loop for `spec` on `listener`; it runs until its token is cancelled
    /// ([`Self::put_in_force`] does that for the loops it replaces) or shutdown.
    pub(crate) fn start_accepting(
        self: &Arc<Self>,
        spec: ListenSpec,
        listener: Arc<TcpListener>,
        local_addr: SocketAddr,
    ) -> Listening {
        let stop = self.shutdown.child_token();
        let listening = Listening {
            bound: BoundListener { spec, local_addr },
            listener: Arc::clone(&listener),
            stop: stop.clone(),
        };
        tokio::spawn(Arc::clone(self).accept(listener, spec, stop));
        listening
    }

    /// Makes `listeners` the ones in force and stops every accept loop not among them (their
    /// connections go on). Also tells the gateway where HTTPS is, for redirects.
    pub(crate) fn put_in_force(&self, listeners: Vec<Listening>) {
        if let Some(https) = listeners.iter().find(|listening| listening.bound.spec.tls) {
            self.gateway.set_https_port(https.bound.local_addr.port());
        }
        let mut in_force = self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for old in in_force.iter() {
            let kept = listeners.iter().any(|listening| {
                Arc::ptr_eq(&listening.listener, &old.listener)
                    && listening.bound.spec == old.bound.spec
            });
            if !kept {
                old.stop.cancel();
            }
        }
        *in_force = listeners;
    }

    /// Waits for the shutdown, then for connections to finish within `shutdown_timeout`.
    async fn drain_after_shutdown(self: Arc<Self>) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        let generation = self.gateway.current();
        let timeout = generation.config.shutdown_timeout;
        tracing::info!("shutting down: waiting up to {timeout:?} for requests in flight");
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown_timeout passed with requests still in flight; closing them");
        }
        for upstream in generation.upstreams() {
            upstream.retire();
            for pool in upstream.pools() {
                pool.close_idle();
            }
        }
    }

    /// Accepts on `listener` until `stop` (a reload moved or changed the listener, or shutdown).
    async fn accept(
        self: Arc<Self>,
        listener: Arc<TcpListener>,
        spec: ListenSpec,
        stop: CancellationToken,
    ) {
        let mut at_limit_logged = false;
        loop {
            let mut slot = Arc::clone(&self.slots).try_acquire_owned().ok();
            if slot.is_none() {
                if !at_limit_logged {
                    tracing::warn!(
                        limit = self.max_client_connections,
                        "max_client_connections reached: idle connections make room for new ones"
                    );
                    at_limit_logged = true;
                }
                // A free slot, or an idle connection that can make room for a newcomer.
                tokio::select! {
                    acquired = Arc::clone(&self.slots).acquire_owned() => match acquired {
                        Ok(acquired) => slot = Some(acquired),
                        Err(_closed) => break,
                    },
                    () = self.registry.wait_for_idle() => {}
                    _ = stop.cancelled() => break,
                }
            }
            let (stream, remote_addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors or similar: free one if a connection has been
                        // idle for a pause's length, and wait for a connection to close (or a
                        // second) instead of spinning and logging every few milliseconds. Not
                        // one idle for less: that is a connection just accepted whose first
                        // request is not read yet, and closing it to accept the next would
                        // accept and close every newcomer in the backlog in turn.
                        tracing::error!("accept failed: {error}; pausing accept until a connection closes");
                        drop(slot);
                        self.registry.evict_idle_for(ACCEPT_PAUSE);
                        let wait_for_close = async {
                            let available = self.slots.available_permits();
                            while self.slots.available_permits() <= available {
                                tokio::time::sleep(ACCEPT_RETRY_POLL).await;
                            }
                        };
                        tokio::select! {
                            () = wait_for_close => {}
                            () = tokio::time::sleep(ACCEPT_PAUSE) => {}
                            _ = stop.cancelled() => break,
                        }
                        continue;
                    }
                },
                _ = stop.cancelled() => break,
            };
            let slot = match slot {
                Some(slot) => slot,
                None => match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        // The longest-idle connection closes at once and leaves its slot to the
                        // newcomer; if it took a request meanwhile, the newcomer waits for the
                        // next slot.
                        self.registry.evict_longest_idle();
                        tokio::select! {
                            acquired = Arc::clone(&self.slots).acquire_owned() => match acquired {
                                Ok(acquired) => acquired,
                                Err(_closed) => break,
                            },
                            _ = stop.cancelled() => break,
                        }
                    }
                },
            };
            if self.slots.available_permits() > 0 {
                at_limit_logged = false;
            }
            let Ok(local_addr) = stream.local_addr() else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let sockets = SocketEnds {
                peer: remote_addr,
                local: local_addr,
                client_tls: false,
            };
            // Idle until its first request arrives: connections that never send one are what an
            // idle-connection flood is made of.
            let registration = self.registry.register(self.shutdown.child_token(), true);
            let front = self.front.load_full();
            self.tasks.spawn(async move {
                front.serve(stream, sockets, spec, registration).await;
                drop(slot);
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Fills the accept queue without accepting: with mio's backlog of 128, the kernel drops
    /// the 130th SYN and that connect does not complete.
    #[tokio::test]
    async fn the_listen_backlog_holds_more_than_mios_128() {
        // The kernel caps every backlog at somaxconn (4096 since Linux 5.4, 128 before).
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        if somaxconn < 300 {
            eprintln!("net.core.somaxconn is {somaxconn}: no larger backlog to show here");
            return;
        }
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        let mut waiting = Vec::new();
        for _ in 0..300 {
            let connect = tokio::net::TcpStream::connect(address);
            // A connection beyond the backlog would not complete (its SYN is dropped).
            let stream = tokio::time::timeout(std::time::Duration::from_millis(500), connect)
                .await
                .expect("completed by the kernel without being accepted")
                .unwrap();
            waiting.push(stream);
        }
        assert_eq!(waiting.len(), 300);
    }
}
