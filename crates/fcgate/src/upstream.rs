//! The servers behind the gateway, which one gets the next request, and which are down.
//!
//! Each server has its own [`Pool`] (its own cap and queue). A request goes to the primary server
//! with the fewest requests outstanding (busy plus queued) relative to its weight, ties broken by
//! smooth weighted round-robin (nginx's), so weights hold at low load too; backups are used only
//! while every primary is down (`upstream/server_set.rs`). A server is *down* for
//! `fail_timeout` after `max_fails` connect or protocol failures within `fail_timeout` (passive
//! health, like nginx), and is probed with FCGI_GET_VALUES every `health_interval` when there are
//! several servers (active health: a dead server is found before a user request hits it, and a
//! recovered one comes back by itself). When every candidate is down, the least recently failed
//! is tried anyway: refusing all traffic on stale evidence would be worse.
//!
//! A server written as a host name is one server per address it resolves to, and is resolved
//! again while the gateway runs (`upstream/discovery.rs`). The servers in force are a
//! [`ServerSet`] behind an [`ArcSwap`]: a request loads it once and keeps it for all its
//! attempts; a change swaps in a new set, keeping the [`Server`] (pool, health, figures) of
//! every address that stayed, and drains the pools of addresses that went, as a reload does.

pub mod discovery;
mod server_set;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use fcgi::client::Pool;
use fcgi::net::Address;
use tokio_util::sync::CancellationToken;

use crate::config::UpstreamConfig;
use crate::metrics::ServerMetrics;
pub use discovery::ResolveError;
use discovery::{host_name, Discovered};
pub use server_set::{Server, ServerSet};

/// The longest a health probe may take, whatever the interval.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a removed pool is looked at until its last request has ended.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// How long a pool dropped by re-resolution is watched after its `read_timeout` (a reload uses
/// `shutdown_timeout`; an upstream does not know it, and this is its default).
const DRAIN_PATIENCE: Duration = Duration::from_secs(10);

/// The servers of one configuration, and the task that keeps those found by name up to date.
pub struct Upstream {
    servers: ArcSwap<ServerSet>,
    config: Arc<UpstreamConfig>,
    /// Cancelled when a reload replaces this upstream or the gateway shuts down: ends its
    /// re-resolution and health probe tasks.
    retired: CancellationToken,
    /// Held while `servers` is swapped or the upstream retired, so a re-resolution never
    /// changes an upstream after a reload has taken its servers over.
    swap: Mutex<()>,
    rounds_ok: AtomicU64,
    rounds_failed: AtomicU64,
}

/// What a new server set takes over from the previous one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// A reload: pools (connections, queue, learnt cap) and figures of servers whose address
    /// and pool settings are unchanged; health and balancing start afresh, a reload being an
    /// operator's word that the servers are worth trying.
    Pool,
    /// A re-resolution under the same configuration: every server that stayed, whole.
    Server,
}

impl Upstream {
    /// Resolves the servers written as host names and builds one pool per server, the health
    /// prober when there may be several, the re-resolution task when there are names. Must be
    /// called inside the tokio runtime.
    pub async fn start(config: &UpstreamConfig) -> Result<Arc<Upstream>, ResolveError> {
        let discovered = discovery::discover(config, None).await?;
        Ok(Upstream::reconfigured(None, config, discovered).0)
    }

    /// A reload's first step, which may fail and changes nothing: resolves the host names of
    /// `config`; a name that does not resolve now keeps the addresses this upstream has for
    /// it.
    pub(crate) async fn discover_for_reload(
        &self,
        config: &UpstreamConfig,
    ) -> Result<Discovered, ResolveError> {
        discovery::discover(config, Some(&self.servers())).await
    }

    /// The upstream of a reloaded `config` with the addresses `discovered`: a server whose
    /// address and pool settings are unchanged keeps its pool — its open connections, its
    /// queue, what it learnt about the backend — and its figures; any other gets a new pool.
    /// Retires `previous` (its re-resolution stops) and returns its pools no longer used, for
    /// the caller to drain.
    pub(crate) fn reconfigured(
        previous: Option<&Upstream>,
        config: &UpstreamConfig,
        discovered: Discovered,
    ) -> (Arc<Upstream>, Vec<Pool>) {
        let previous_servers = previous.map(Upstream::retire);
        let previous_servers = previous_servers.as_deref().map_or(&[][..], |set| &set[..]);
        let (servers, unused) =
            assemble(previous_servers, config, &discovered.endpoints, Reuse::Pool);
        let may_be_several = config.servers.len() > 1 || discovered.resolver.is_some();
        let probe = may_be_several && !config.health.health_interval.is_zero();
        let upstream = Arc::new(Upstream {
            servers: ArcSwap::from_pointee(ServerSet::new(servers, config.health.clone())),
            config: Arc::new(config.clone()),
            retired: CancellationToken::new(),
            swap: Mutex::new(()),
            rounds_ok: AtomicU64::new(0),
            rounds_failed: AtomicU64::new(0),
        });
        if probe {
            tokio::spawn(probe_servers(Arc::downgrade(&upstream)));
        }
        if let Some(resolver) = discovered.resolver {
            tokio::spawn(discovery::rediscover(
                Arc::downgrade(&upstream),
                resolver,
                discovered.next_round,
            ));
        }
        (upstream, unused)
    }

    /// The servers in force: one atomic load and an `Arc` clone. A request keeps what it got
    /// for all its attempts.
    pub fn servers(&self) -> Arc<ServerSet> {
        self.servers.load_full()
    }

    /// Every server's pool, for stats and shutdown.
    pub fn pools(&self) -> std::vec::IntoIter<Pool> {
        let pools: Vec<Pool> = self.servers().iter().map(|s| s.pool().clone()).collect();
        pools.into_iter()
    }

    /// How many servers there are now.
    pub fn len(&self) -> usize {
        self.servers.load().len()
    }

    /// True when there is no server.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-resolution rounds so far: `(every name resolved, some name failed)`.
    pub fn resolution_rounds(&self) -> (u64, u64) {
        (
            self.rounds_ok.load(Ordering::Relaxed),
            self.rounds_failed.load(Ordering::Relaxed),
        )
    }

    /// Stops this upstream's tasks for good (a reload replaced it, or shutdown) and returns
    /// its last servers; no re-resolution changes them after this.
    pub fn retire(&self) -> Arc<ServerSet> {
        let _swapping = self.swap.lock().unwrap_or_else(PoisonError::into_inner);
        self.retired.cancel();
        self.servers()
    }

    fn count_round(&self, ok: bool) {
        let counter = if ok {
            &self.rounds_ok
        } else {
            &self.rounds_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts the addresses of a re-resolution in force: new addresses get servers, vanished
    /// ones drain as on reload, the others stay as they are. Nothing happens when nothing
    /// changed, or once retired.
    fn apply(&self, endpoints: &[Vec<Address>]) {
        let _swapping = self.swap.lock().unwrap_or_else(PoisonError::into_inner);
        if self.retired.is_cancelled() {
            return;
        }
        let current = self.servers();
        let (servers, unused) = assemble(&current, &self.config, endpoints, Reuse::Server);
        let unchanged = servers.len() == current.len()
            && servers
                .iter()
                .zip(current.iter())
                .all(|(new, old)| Arc::ptr_eq(new, old));
        if unchanged {
            return;
        }
        let added = servers
            .iter()
            .filter(|new| !current.iter().any(|old| Arc::ptr_eq(new, old)))
            .count();
        let now: Vec<String> = servers.iter().map(|server| server.label()).collect();
        tracing::info!(
            added,
            removed = unused.len(),
            "upstream servers changed with DNS: {}",
            now.join(", ")
        );
        self.servers.store(Arc::new(ServerSet::new(
            servers,
            self.config.health.clone(),
        )));
        for pool in unused {
            tokio::spawn(drain(pool, DRAIN_PATIENCE, "no longer resolved"));
        }
    }
}

/// The servers of `config` at `endpoints` (per entry, its addresses), taking over what `reuse`
/// allows from `previous`; also the pools of `previous` no longer used. An address that two
/// entries share gets one server, the first entry's: two would double its connection cap.
fn assemble(
    previous: &[Arc<Server>],
    config: &UpstreamConfig,
    endpoints: &[Vec<Address>],
    reuse: Reuse,
) -> (Vec<Arc<Server>>, Vec<Pool>) {
    let mut unused: Vec<&Arc<Server>> = previous.iter().collect();
    let mut servers: Vec<Arc<Server>> = Vec::new();
    for (entry, (configured, addresses)) in config.servers.iter().zip(endpoints).enumerate() {
        let pool_config = config.pool_config_for(entry);
        let name: Option<Arc<str>> =
            host_name(&configured.address).map(|_| Arc::from(configured.address.to_string()));
        for address in addresses {
            if servers
                .iter()
                .any(|server| server.pool.address() == address)
            {
                tracing::debug!(%address, server = %configured.address, "already a server");
                continue;
            }
            let kept = unused.iter().position(|old| {
                old.pool.address() == address
                    && match reuse {
                        Reuse::Server => old.entry == entry,
                        Reuse::Pool => old.pool.config() == &pool_config,
                    }
            });
            let server = match (kept.map(|position| unused.swap_remove(position)), reuse) {
                (Some(old), Reuse::Server) => Arc::clone(old),
                (Some(old), Reuse::Pool) => Arc::new(Server::new(
                    old.pool.clone(),
                    name.clone(),
                    entry,
                    (configured.weight, configured.backup),
                    Arc::clone(&old.metrics),
                )),
                (None, _) => Arc::new(Server::new(
                    Pool::new(address.clone(), pool_config.clone()),
                    name.clone(),
                    entry,
                    (configured.weight, configured.backup),
                    Arc::new(ServerMetrics::default()),
                )),
            };
            servers.push(server);
        }
    }
    let unused = unused.into_iter().map(|old| old.pool.clone()).collect();
    (servers, unused)
}

/// Closes a pool no longer in use: idle connections now, busy ones as their requests end (the
/// pool's read timeouts bound how long that is), then gives up after `patience` more. No
/// request in flight on it fails.
pub(crate) async fn drain(pool: Pool, patience: Duration, why: &'static str) {
    let address = pool.address().to_string();
    pool.close_idle();
    let mut waited = Duration::ZERO;
    let limit = pool.config().read_timeout + patience;
    while pool.outstanding() > 0 && waited < limit {
        tokio::time::sleep(DRAIN_POLL).await;
        waited += DRAIN_POLL;
        pool.close_idle();
    }
    pool.close_idle();
    tracing::info!(backend = %address, "server {why}; its pool is drained");
}

/// Active health: every `health_interval`, a GET_VALUES round trip to each server on a management
/// connection — no application request. A server with no free slot is busy serving, hence up.
/// Each round probes the servers in force then, however many there are.
async fn probe_servers(upstream: Weak<Upstream>) {
    let (interval, retired) = match upstream.upgrade() {
        Some(upstream) => (
            upstream.config.health.health_interval,
            upstream.retired.clone(),
        ),
        None => return,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = retired.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(servers) = upstream.upgrade().map(|upstream| upstream.servers()) else {
            return;
        };
        if servers.len() < 2 {
            continue;
        }
        for index in 0..servers.len() {
            let server = &servers[index];
            let timeout = interval.min(PROBE_TIMEOUT);
            match server.pool().probe(timeout).await {
                Some(Ok(_)) => servers.record_success(index),
                Some(Err(error)) => {
                    tracing::debug!(backend = %server.label(), "health probe failed: {error}");
                    servers.record_failure(index);
                }
                None => {}
            }
        }
    }
}
