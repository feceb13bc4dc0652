//! One snapshot of the servers behind the upstream, and the choice between them: least
//! outstanding relative to weight, ties by smooth weighted round-robin, backups only while every
//! primary is down, passive health (`max_fails` within `fail_timeout`).
//!
//! A request takes the snapshot in force when it starts and keeps it for all its attempts, so the
//! indices its retries rule out mean the same servers whatever re-resolution swaps in meanwhile
//! (`upstream/discovery.rs`). A server that stays across a swap is the same [`Arc<Server>`] in both
//! snapshots: its health, balancing state and pool are shared, not copied.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use fcgi::client::Pool;

use crate::config::HealthConfig;
use crate::metrics::ServerMetrics;

/// One server: its pool, its part in balancing, its health.
pub struct Server {
    pub(super) pool: Pool,
    /// The pool's address as text, made once: the access log names it on every request.
    address_text: Arc<str>,
    /// The configured host name (`php.internal:9000`) this address was resolved from; `None`
    /// for a server written as a unix path or an IP address.
    pub(super) name: Option<Arc<str>>,
    /// Its entry in `upstream.servers`.
    pub(super) entry: usize,
    pub(super) weight: u32,
    pub(super) backup: bool,
    health: Mutex<Health>,
    /// Smooth weighted round-robin state (see [`ServerSet::pick`]).
    current_weight: Mutex<i64>,
    /// Shared with the server of the next generation when a reload keeps the pool.
    pub(super) metrics: Arc<ServerMetrics>,
}

#[derive(Default)]
struct Health {
    failures: u32,
    first_failure: Option<Instant>,
    down_until: Option<Instant>,
}

impl Server {
    pub(super) fn new(
        pool: Pool,
        name: Option<Arc<str>>,
        entry: usize,
        (weight, backup): (u32, bool),
        metrics: Arc<ServerMetrics>,
    ) -> Server {
        Server {
            address_text: pool.address().to_string().into(),
            pool,
            name,
            entry,
            weight,
            backup,
            health: Mutex::new(Health::default()),
            current_weight: Mutex::new(0),
            metrics,
        }
    }

    /// The server's connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The pool's address as text (`unix:/run/php/php-fpm.sock`, `10.0.0.7:9000`).
    pub fn address_text(&self) -> &Arc<str> {
        &self.address_text
    }

    /// The host name it was found under, as configured (`php.internal:9000`); `None` for a
    /// server written as a unix path or an IP address.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// How logs name it: the address, after the host name when it has one
    /// (`php.internal:9000 (10.0.0.7:9000)`).
    pub fn label(&self) -> String {
        match &self.name {
            // A name on loopback alone is connected to by name (`discovery::servers_for`).
            Some(name) if **name != *self.pool.address().to_string() => {
                format!("{name} ({})", self.pool.address())
            }
            _ => self.pool.address().to_string(),
        }
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

/// The servers in force at one moment: what a request balances over.
pub struct ServerSet {
    servers: Vec<Arc<Server>>,
    health: HealthConfig,
    /// Serialises the weighted round-robin among tied servers.
    tie_break: Mutex<()>,
}

impl std::ops::Deref for ServerSet {
    type Target = [Arc<Server>];
    fn deref(&self) -> &Self::Target {
        &self.servers
    }
}

impl ServerSet {
    pub(super) fn new(servers: Vec<Arc<Server>>, health: HealthConfig) -> ServerSet {
        ServerSet {
            servers,
            health,
            tie_break: Mutex::new(()),
        }
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
                .map(Arc::as_ref)
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
            tracing::info!(backend = %server.label(), "server is up again");
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
                    backend = %server.label(),
                    failures = health.failures,
                    "server marked down for {window:?}"
                );
            }
        }
    }
}
