//! Reload without dropping anything (SIGHUP): a new, already validated configuration is put in
//! force while requests keep flowing.
//!
//! Everything that can fail comes first — binding a moved listen address, opening a new access
//! log — so a refused reload changes nothing. Then the new generation (config, pools, log) is
//! swapped in whole (`Gateway::replace`): requests that started before finish with the one they
//! started with, new requests get the new one. A server whose address and pool settings did not
//! change keeps its pool (open connections, queue, what was learnt about the backend) and its
//! figures; a removed or changed one drains: its idle connections close at once, busy ones
//! when their request ends. Host names are resolved again first (a name that fails keeps its
//! last addresses), and the old upstream's re-resolution task stops when the new one starts.
//! Listeners are matched by address: a kept one goes on accepting, one whose flags changed
//! gets a new accept loop on the same socket, a new address is bound before anything else
//! changes (a moved listener starts accepting before the old one stops), and connections
//! already accepted on a removed one go on. The TLS certificates are read again (a file that
//! fails refuses the reload; resumption keys are kept), and new handshakes use them. Settings sized once at start are reported as needing a
//! restart rather than half-applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::listen_spec::ListenSpec;
use crate::proxy::Generation;
use crate::server::{bind, Listening, RunningGateway};
use crate::tls::{ManagedCertificates, TlsError, TlsSetup};
use crate::upstream::{discovery, drain, ResolveError, Upstream};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Servers whose pool was kept, connections and all.
    pub kept_servers: usize,
    /// Servers with a new pool (added, or their pool settings changed).
    pub new_servers: usize,
    /// Pools no longer used, draining.
    pub drained_servers: usize,
    /// The first newly bound listener's address, if any (a listener moved or was added).
    pub moved_listener: Option<SocketAddr>,
    /// Listeners no longer configured, which stopped accepting.
    pub closed_listeners: usize,
    /// Changed settings that take effect only after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Why a reload was refused; the running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new listen address could not be bound.
    #[error("cannot bind the new listen address {address}: {error}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The new access log could not be opened.
    #[error("{0}")]
    AccessLog(std::io::Error),
    /// A certificate file is missing, unreadable, expired or does not match its key; the
    /// certificates in force keep serving.
    #[error("{0}")]
    Tls(TlsError),
    /// A new server's host name does not resolve.
    #[error("{0}")]
    Resolve(ResolveError),
}

/// Puts `config` in force in `running`.
pub(crate) async fn reload(
    running: &RunningGateway,
    config: Config,
) -> Result<Reloaded, ReloadError> {
    let current = running.gateway.current();
    let old = &current.config;
    // A name that fails now keeps the addresses the running upstream has for it.
    let discovered = current
        .upstream
        .discover_for_reload(&config.upstream)
        .await
        .map_err(ReloadError::Resolve)?;
    // The same for each group, by name; a new group is resolved as at start.
    let mut discovered_groups = BTreeMap::new();
    for (name, group) in &config.upstream_groups {
        let found = match current.groups.get(name) {
            Some(running) => running.discover_for_reload(group).await,
            None => discovery::discover(group, None).await,
        };
        discovered_groups.insert(name.clone(), found.map_err(ReloadError::Resolve)?);
    }
    let listeners = plan_listeners(&running.acceptor().listening(), &config.listen)?;
    let managed = running
        .gateway
        .acme()
        .map(|acme| Arc::clone(acme) as Arc<dyn ManagedCertificates>);
    let tls = TlsSetup::load(&config.tls, managed.as_ref(), current.tls.as_deref())
        .map_err(ReloadError::Tls)?;
    let access_log = if config.access_log == old.access_log
        && config.access_log_format == old.access_log_format
    {
        Arc::clone(&current.access_log)
    } else {
        Arc::new(
            AccessLog::start(&config.access_log, config.access_log_format)
                .map_err(ReloadError::AccessLog)?,
        )
    };
    let needs_restart = sized_at_start(old, &config, running.acceptor().max_client_connections());
    for setting in &needs_restart {
        tracing::warn!("reload: `{setting}` changed; it takes effect only after a restart");
    }
    let servers_before: usize = current.upstreams().map(|upstream| upstream.len()).sum();
    let (upstream, mut unused) =
        Upstream::reconfigured(Some(&current.upstream), &config.upstream, discovered);
    let mut groups = BTreeMap::new();
    for (name, found) in discovered_groups {
        let Some(group) = config.upstream_groups.get(&name) else {
            continue;
        };
        let (started, group_unused) =
            Upstream::reconfigured(current.groups.get(&name).map(AsRef::as_ref), group, found);
        unused.extend(group_unused);
        groups.insert(name, started);
    }
    // A group no longer configured: every pool drains.
    for (name, gone) in &current.groups {
        if !groups.contains_key(name) {
            unused.extend(gone.retire().iter().map(|server| server.pool().clone()));
        }
    }
    let servers_after: usize =
        upstream.len() + groups.values().map(|group| group.len()).sum::<usize>();
    let kept_servers = servers_before - unused.len();
    let new_servers = servers_after - kept_servers;
    let drain_within = config.shutdown_timeout;
    running.gateway.replace(Generation {
        config,
        upstream,
        groups,
        access_log,
        tls: tls.map(Arc::new),
    });
    // Connections accepted from now on get the new timeouts, limits and certificates.
    running.acceptor().refresh_front();
    let acceptor = running.acceptor();
    let before = acceptor.listening();
    let mut moved_listener = None;
    let listening: Vec<Listening> = listeners
        .into_iter()
        .map(|planned| match planned {
            Planned::Keep(listening) => listening,
            Planned::Restart(spec, listener, local_addr) => {
                acceptor.start_accepting(spec, listener, local_addr)
            }
            Planned::Bound(spec, listener, local_addr) => {
                moved_listener.get_or_insert(local_addr);
                acceptor.start_accepting(spec, Arc::new(listener), local_addr)
            }
        })
        .collect();
    let closed_listeners = before
        .iter()
        .filter(|old| {
            !listening
                .iter()
                .any(|new| Arc::ptr_eq(&new.listener, &old.listener))
        })
        .count();
    acceptor.put_in_force(listening);
    let drained_servers = unused.len();
    for pool in unused {
        tokio::spawn(drain(pool, drain_within, "removed by reload"));
    }
    Ok(Reloaded {
        kept_servers,
        new_servers,
        drained_servers,
        moved_listener,
        closed_listeners,
        needs_restart,
    })
}

/// What becomes of one `listen` entry on reload.
enum Planned {
    /// Same address and flags: the accept loop goes on.
    Keep(Listening),
    /// Same address, other flags (`tls`, `proxy_protocol`): a new loop on the same socket.
    Restart(ListenSpec, Arc<TcpListener>, SocketAddr),
    /// A new address, bound now.
    Bound(ListenSpec, TcpListener, SocketAddr),
}

/// Matches the new `listen` entries with the listeners in force (by address as configured or
/// as bound, for a configured port 0) and binds the rest, before anything changes: a bind that
/// fails refuses the reload.
fn plan_listeners(
    in_force: &[Listening],
    wanted: &[ListenSpec],
) -> Result<Vec<Planned>, ReloadError> {
    let mut taken = vec![false; in_force.len()];
    let mut planned = Vec::with_capacity(wanted.len());
    for spec in wanted {
        let same_address = |listening: &Listening| {
            listening.bound.spec.address == spec.address
                || listening.bound.local_addr == spec.address
        };
        // Exactly the same entry first, so two port-0 entries keep their own sockets.
        let found = (0..in_force.len())
            .find(|&index| !taken[index] && in_force[index].bound.spec == *spec)
            .or_else(|| {
                (0..in_force.len()).find(|&index| !taken[index] && same_address(&in_force[index]))
            });
        planned.push(match found {
            Some(index) => {
                taken[index] = true;
                let listening = &in_force[index];
                if listening.bound.spec.tls == spec.tls
                    && listening.bound.spec.proxy_protocol == spec.proxy_protocol
                {
                    Planned::Keep(listening.clone())
                } else {
                    Planned::Restart(
                        *spec,
                        Arc::clone(&listening.listener),
                        listening.bound.local_addr,
                    )
                }
            }
            None => {
                let listener = bind(spec.address).map_err(|error| ReloadError::Bind {
                    address: spec.address,
                    error,
                })?;
                let local_addr = listener.local_addr().map_err(|error| ReloadError::Bind {
                    address: spec.address,
                    error,
                })?;
                Planned::Bound(*spec, listener, local_addr)
            }
        });
    }
    Ok(planned)
}

/// The settings a reload cannot change in a running process, among those that changed.
fn sized_at_start(old: &Config, new: &Config, client_slots: usize) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.max_client_connections != client_slots {
        changed.push("max_client_connections");
    }
    if new.limits.max_request_body_buffer_total != old.limits.max_request_body_buffer_total {
        changed.push("max_request_body_buffer_total");
    }
    if new.admin_listen != old.admin_listen {
        changed.push("admin_listen");
    }
    if new.log_format != old.log_format {
        changed.push("log_format");
    }
    if new.workers != old.workers {
        changed.push("workers");
    }
    if new.run_as != old.run_as {
        changed.push("user/group");
    }
    if new.acme != old.acme {
        changed.push("acme");
    }
    changed
}
