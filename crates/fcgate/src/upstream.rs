//! The servers behind the gateway, which one gets the next request, and which are down.
//!
//! Each server has its own [`Pool`] (its own cap and queue). A request goes to the primary server
//! with the fewest requests outstanding (busy plus queued) relative to its weight, ties broken by
//! smooth weighted round-robin (nginx's), so weights hold at low load too; backups are used only
//! while every primary is down. A server is *down* for
//! `fail_timeout` after `max_fails` connect or protocol failures within `fail_timeout` (passive
//! health, like nginx), and is probed with FCGI_GET_VALUES every `health_interval` when there are
//! several servers (active health: a dead server is found before a user request hits it, and a
//! recovered one comes back by itself). When every candidate is down, the least recently failed
//! is tried anyway: refusing all traffic on stale evidence would be worse.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use fcgi::client::Pool;

use crate::config::{HealthConfig, UpstreamConfig};
use crate::metrics::ServerMetrics;

/// The longest a health probe may take, whatever the interval.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One server: its pool, its part in balancing, its health.
pub struct Server {
    pool: Pool,
    weight: u32,
    backup: bool,
    health: Mutex<Health>,
    /// Smooth weighted round-robin state (see [`Upstream::pick`]).
    current_weight: Mutex<i64>,
    /// Shared with the server of the next generation when a reload keeps the pool.
    metrics: Arc<ServerMetrics>,
}

#[derive(Default)]
struct Health {
    failures: u32,
    first_failure: Option<Instant>,
    down_until: Option<Instant>,
}

impl Server {
    /// The server's connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// What its requests looked like: queue wait, time to the app's head, status classes.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    /// True while the server is marked down.
    pub fn is_down(&self) -> bool {
        self.health()
            .down_until
            .is_some_and(|until| Instant::now() < until)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pools of every configured server, and the choice between them.
pub struct Upstream {
    servers: Vec<Server>,
    health: HealthConfig,
    /// Serialises the weighted round-robin among tied servers.
    tie_break: Mutex<()>,
}

impl Upstream {
    /// One pool per server, and the health prober when there are several. Must be called
    /// inside the tokio runtime.
    pub fn new(config: &UpstreamConfig) -> Arc<Upstream> {
        Upstream::reconfigured(None, config).0
    }

    /// The upstream of a reloaded `config`: a server whose address and pool settings are
    /// unchanged keeps its pool — its open connections, its queue, what it learnt about the
    /// backend — and its figures; any other gets a new pool. Also returns the pools of `previous`
    /// that are no longer used, for the caller to drain. Health starts afresh: a reload is an
    /// operator's word that the servers are worth trying.
    pub fn reconfigured(
        previous: Option<&Upstream>,
        config: &UpstreamConfig,
    ) -> (Arc<Upstream>, Vec<Pool>) {
        let mut unused: Vec<&Server> =
            previous.map_or_else(Vec::new, |previous| previous.servers.iter().collect());
        let servers = config
            .servers
            .iter()
            .enumerate()
            .map(|(index, server)| {
                let pool_config = config.pool_config_for(index);
                let kept = unused.iter().position(|old| {
                    old.pool.address() == &server.address && old.pool.config() == &pool_config
                });
                let (pool, metrics) = match kept {
                    Some(position) => {
                        let old = unused.swap_remove(position);
                        (old.pool.clone(), Arc::clone(&old.metrics))
                    }
                    None => (
                        Pool::new(server.address.clone(), pool_config),
                        Arc::new(ServerMetrics::default()),
                    ),
                };
                Server {
                    pool,
                    weight: server.weight,
                    backup: server.backup,
                    health: Mutex::new(Health::default()),
                    current_weight: Mutex::new(0),
                    metrics,
                }
            })
            .collect::<Vec<_>>();
        let unused = unused.into_iter().map(|old| old.pool.clone()).collect();
        let probe = servers.len() > 1 && !config.health.health_interval.is_zero();
        let upstream = Arc::new(Upstream {
            servers,
            health: config.health.clone(),
            tie_break: Mutex::new(()),
        });
        if probe {
            tokio::spawn(probe_servers(Arc::downgrade(&upstream)));
        }
        (upstream, unused)
    }

    /// The server for the next request, skipping the indices in `tried`; `None` when none is
    /// left.
    pub fn pick(&self, tried: &[usize]) -> Option<(usize, &Server)> {
        if let [only] = self.servers.as_slice() {
            return (!tried.contains(&0)).then_some((0, only));
        }
        let candidates = || {
            self.servers
                .iter()
                .enumerate()
                .filter(|(index, _)| !tried.contains(index))
        };
        let tier = |backup: bool| -> Vec<(usize, &Server)> {
            candidates()
                .filter(|(_, server)| server.backup == backup && !server.is_down())
                .collect()
        };
        let mut eligible = tier(false);
        if eligible.is_empty() {
            eligible = tier(true);
        }
        if eligible.is_empty() {
            // Everything is down: the one that failed longest ago is the best bet.
            return candidates().min_by_key(|(_, server)| server.health().down_until);
        }
        // Least outstanding relative to weight: a/wa < b/wb  <=>  a*wb < b*wa.
        let load: Vec<(usize, &Server, u64)> = eligible
            .into_iter()
            .map(|(index, server)| (index, server, server.pool.outstanding() as u64))
            .collect();
        let least = load
            .iter()
            .min_by(|a, b| (a.2 * u64::from(b.1.weight)).cmp(&(b.2 * u64::from(a.1.weight))))?;
        let tied = load.iter().filter(|candidate| {
            candidate.2 * u64::from(least.1.weight) == least.2 * u64::from(candidate.1.weight)
        });
        self.weighted_round_robin(tied.map(|(index, server, _)| (*index, *server)))
    }

    /// nginx's smooth weighted round-robin: every candidate gains its weight, the highest is
    /// chosen and loses the total. Over a run of ties, weights 3:1 give 3:1, interleaved.
    fn weighted_round_robin<'a>(
        &'a self,
        tied: impl Iterator<Item = (usize, &'a Server)>,
    ) -> Option<(usize, &'a Server)> {
        let _serialised = self
            .tie_break
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut total = 0;
        let mut best: Option<(usize, &Server, i64)> = None;
        for (index, server) in tied {
            let weight = i64::from(server.weight);
            total += weight;
            let mut current = server
                .current_weight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *current += weight;
            if best.is_none_or(|(_, _, highest)| *current > highest) {
                best = Some((index, server, *current));
            }
        }
        let (index, server, _) = best?;
        *server
            .current_weight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) -= total;
        Some((index, server))
    }

    /// How many servers there are.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// True when no server is configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Every server, for stats and shutdown.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// Every server's pool, for stats and shutdown.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.servers.iter().map(Server::pool)
    }

    /// A request to server `index` went through: it is healthy.
    pub fn record_success(&self, index: usize) {
        let Some(server) = self.servers.get(index) else {
            return;
        };
        let mut health = server.health();
        if health.failures == 0 && health.down_until.is_none() {
            return;
        }
        if health.down_until.take().is_some() {
            tracing::info!(backend = %server.pool.address(), "server is up again");
        }
        health.failures = 0;
        health.first_failure = None;
    }

    /// Server `index` failed to connect or broke the protocol.
    pub fn record_failure(&self, index: usize) {
        let Some(server) = self.servers.get(index) else {
            return;
        };
        let now = Instant::now();
        let window = self.health.fail_timeout;
        let mut health = server.health();
        if health
            .first_failure
            .is_none_or(|first| now.duration_since(first) > window)
        {
            health.first_failure = Some(now);
            health.failures = 0;
        }
        health.failures += 1;
        if health.failures >= self.health.max_fails {
            let was_down = health.down_until.is_some_and(|until| now < until);
            health.down_until = Some(now + window);
            if !was_down && self.servers.len() > 1 {
                tracing::warn!(
                    backend = %server.pool.address(),
                    failures = health.failures,
                    "server marked down for {window:?}"
                );
            }
        }
    }
}

/// Active health: every `health_interval`, a GET_VALUES round trip to each server on a management
/// connection — no application request. A server with no free slot is busy serving, hence up.
async fn probe_servers(upstream: Weak<Upstream>) {
    let interval = match upstream.upgrade() {
        Some(upstream) => upstream.health.health_interval,
        None => return,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        for index in 0..upstream.servers.len() {
            let server = &upstream.servers[index];
            let timeout = interval.min(PROBE_TIMEOUT);
            match server.pool.probe(timeout).await {
                Some(Ok(_)) => upstream.record_success(index),
                Some(Err(error)) => {
                    tracing::debug!(backend = %server.pool.address(), "health probe failed: {error}");
                    upstream.record_failure(index);
                }
                None => {}
            }
        }
    }
}
