//! The pool's clock and its eyes on the backend: a task that feeds the state a tick (idle
//! connections past their timeouts) and, for a backend on this host, what its listen queue holds.

use std::sync::Weak;
use std::time::Duration;

use super::PoolInner;

/// How often the reaper looks, at most: often enough that a client waiting in a local
/// backend's listen queue gets a worker this pool keeps idle within a few tens of milliseconds.
const BACKLOG_LOOK_PERIOD: Duration = Duration::from_millis(250);
/// How often it looks while other clients were seen waiting there lately: each look lets a
/// few of this pool's connections go to them, and a request of this pool that reconnected
/// behind them gets its worker when they let theirs go at their next look — so the period
/// is the delay such a request sees. A look costs tens of microseconds.
const SHARING_LOOK_PERIOD: Duration = Duration::from_millis(10);

/// The reaper: every quarter of the shorter idle timeout (and of `BACKLOG_LOOK_PERIOD`; every
/// `SHARING_LOOK_PERIOD` while others wait for the backend's workers) it closes what expired,
/// then — when the pool holds connections of its own and the backend listens on this host —
/// looks at the backend's listen queue (`crate::backlog`) on a blocking thread. A backend that
/// is not local, or a look that fails (no netlink in a sandbox), stops the looking for good;
/// `worker_idle_timeout` still hands workers back then.
pub(super) async fn reap_idle_connections(pool: Weak<PoolInner>) {
    // A connection outstays its timeout by at most a period.
    let period = match pool.upgrade() {
        Some(inner) => {
            let config = &inner.config;
            (config
                .keepalive_timeout
                .min(config.worker_idle_timeout)
                .min(BACKLOG_LOOK_PERIOD)
                / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
        }
        None => return,
    };
    let mut look_at_backlog = true;
    let mut sharing = false;
    loop {
        let pause = if sharing && look_at_backlog {
            SHARING_LOOK_PERIOD.min(period)
        } else {
            period
        };
        tokio::time::sleep(pause).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let look = inner.update(|state, now, fx| {
            state.tick(now, fx);
            sharing = state.sharing_lately(now);
            state.wants_backlog_look()
        });
        if !(look && look_at_backlog) {
            continue;
        }
        let address = inner.address.clone();
        drop(inner);
        let seen = tokio::task::spawn_blocking(move || crate::backlog::waiting(&address)).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        match seen {
            Ok(Ok(Some(queued))) => {
                inner.update(|state, now, fx| state.backlog_seen(now, queued, fx));
            }
            Ok(Ok(None)) => look_at_backlog = false,
            Ok(Err(error)) => {
                tracing::debug!(backend = %inner.address, "the backend's listen queue cannot be read ({error}); idle connections go after worker_idle_timeout");
                look_at_backlog = false;
            }
            Err(_) => look_at_backlog = false,
        }
    }
}
