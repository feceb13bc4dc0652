//! The servers behind the gateway and which one gets the next request.
//!
//! Each server has its own [`Pool`] (its own cap and queue); a request goes to the server with
//! the fewest requests outstanding (busy plus queued), ties broken round-robin so equal servers
//! share the load. Weights, backups and health checks build on this choice later.

use std::sync::atomic::{AtomicUsize, Ordering};

use fcgi::client::Pool;

use crate::config::UpstreamConfig;

/// The pools of every configured server.
pub struct Upstream {
    pools: Vec<Pool>,
    next: AtomicUsize,
}

impl Upstream {
    /// One pool per server. Must be called inside the tokio runtime (pools start a reaper).
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let pools = config
            .servers
            .iter()
            .enumerate()
            .map(|(index, address)| Pool::new(address.clone(), config.pool_config_for(index)))
            .collect();
        Upstream {
            pools,
            next: AtomicUsize::new(0),
        }
    }

    /// The server to send the next request to; `None` when none is configured.
    pub fn pick(&self) -> Option<&Pool> {
        match self.pools.len() {
            0 => None,
            1 => self.pools.first(),
            count => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
                (0..count)
                    .map(|offset| &self.pools[(start + offset) % count])
                    .min_by_key(|pool| pool.outstanding())
            }
        }
    }

    /// Every server's pool, for stats and shutdown.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }
}
