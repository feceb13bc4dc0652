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
//! A moved listener starts accepting before the old one stops, and connections already
//! accepted on the old one go on. Settings sized once at start are reported as needing a
//! restart rather than half-applied.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::proxy::Generation;
use crate::server::{bind, RunningGateway};
use crate::upstream::{drain, ResolveError, Upstream};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Servers whose pool was kept, connections and all.
    pub kept_servers: usize,
    /// Servers with a new pool (added, or their pool settings changed).
    pub new_servers: usize,
    /// Pools no longer used, draining.
    pub drained_servers: usize,
    /// The new listen address, if it moved.
    pub moved_listener: Option<SocketAddr>,
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
    // The same address as configured, or the one bound for it (a configured port 0).
    let same_listener = config.listen == old.listen || config.listen == running.listen_addr();
    let moved_listener = match same_listener {
        true => None,
        false => Some(bind(config.listen).map_err(|error| ReloadError::Bind {
            address: config.listen,
            error,
        })?),
    };
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
    let (upstream, unused) =
        Upstream::reconfigured(Some(&current.upstream), &config.upstream, discovered);
    let kept_servers = current.upstream.len() - unused.len();
    let new_servers = upstream.len() - kept_servers;
    let drain_within = config.shutdown_timeout;
    running.gateway.replace(Generation {
        config,
        upstream,
        access_log,
    });
    // Connections accepted from now on get the new timeouts and limits.
    running.acceptor().refresh_front();
    let moved_listener = match moved_listener {
        Some(listener) => {
            let local_addr = listener.local_addr().map_err(|error| ReloadError::Bind {
                address: running.listen_addr(),
                error,
            })?;
            running.acceptor().listen_on(listener, local_addr);
            Some(local_addr)
        }
        None => None,
    };
    let drained_servers = unused.len();
    for pool in unused {
        tokio::spawn(drain(pool, drain_within, "removed by reload"));
    }
    Ok(Reloaded {
        kept_servers,
        new_servers,
        drained_servers,
        moved_listener,
        needs_restart,
    })
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
    if new.run_as != old.run_as {
        changed.push("user/group");
    }
    changed
}
