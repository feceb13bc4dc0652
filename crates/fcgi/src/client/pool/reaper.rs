//! The pool's clock and its eyes on the backend: a task that feeds the state a tick (idle
//! connections past their timeouts) and what the backend's listen queue holds — read on this
//! host, or from php-fpm's status page for a backend on another.

use std::sync::{Arc, Weak};
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

/// Status pages in a row that gave no listen queue before the reaper stops asking: a wrong
/// path or a backend that is not php-fpm, not a busy moment.
const STATUS_FAILURES_TO_GIVE_UP: u32 = 5;

/// How the reaper sees other clients waiting for the backend's workers.
enum Eyes {
    /// The listen queue of a socket on this host (`crate::backlog`).
    ListenQueue,
    /// php-fpm's status page at this path, for a backend on another host (`fpm_status.rs`),
    /// and how many looks in a row it gave nothing.
    StatusPage(String, u32),
    Blind,
}

/// The reaper: every quarter of the shorter idle timeout (and of `BACKLOG_LOOK_PERIOD`; every
/// `SHARING_LOOK_PERIOD` while others wait for the backend's workers) it closes what expired,
/// then — when the pool holds connections of its own — looks at the backend's listen queue: on
/// a blocking thread when the backend listens on this host, else through php-fpm's status page
/// when `php_fpm_status_path` is set. With neither (or a look that fails: no netlink in a
/// sandbox, no status page), it stops looking for good; `worker_idle_timeout` still hands
/// workers back then.
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
    let mut eyes = Eyes::ListenQueue;
    let mut sharing = false;
    loop {
        let looking = !matches!(eyes, Eyes::Blind);
        // php-fpm's status page is asked as often: its master refreshes the `listen queue` figure
        // only once a second, but looks every 10 ms hand over more of the connections it
        // counts, which shared three instances 32/36/32% against 25/26/24% (and a p99 of 0.1-0.3
        // against 0.8-1 s) asking every 250 ms, in bench/scale-out.sh.
        let pause = if sharing && looking {
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
        if !(look && looking) {
            continue;
        }
        let seen = match &mut eyes {
            Eyes::ListenQueue => {
                let address = inner.address.clone();
                drop(inner);
                let seen =
                    tokio::task::spawn_blocking(move || crate::backlog::waiting(&address)).await;
                let Some(inner) = pool.upgrade() else {
                    return;
                };
                match seen {
                    Ok(Ok(Some(queued))) => Some((inner, queued)),
                    Ok(Ok(None)) => {
                        // Not on this host: php-fpm's status page, if there is one.
                        eyes = match &inner.config.php_fpm_status_path {
                            Some(path) => Eyes::StatusPage(path.clone(), 0),
                            None => Eyes::Blind,
                        };
                        None
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(backend = %inner.address, "the backend's listen queue cannot be read ({error}); idle connections go after worker_idle_timeout");
                        eyes = Eyes::Blind;
                        None
                    }
                    Err(_) => {
                        eyes = Eyes::Blind;
                        None
                    }
                }
            }
            Eyes::StatusPage(path, failures) => {
                let handle = super::Pool {
                    inner: Arc::clone(&inner),
                };
                drop(inner);
                let queued = super::fpm_status::listen_queue(&handle, path).await;
                drop(handle);
                let Some(inner) = pool.upgrade() else {
                    return;
                };
                match queued {
                    Some(queued) => {
                        *failures = 0;
                        Some((inner, queued))
                    }
                    None if *failures + 1 >= STATUS_FAILURES_TO_GIVE_UP => {
                        tracing::warn!(backend = %inner.address, status_path = %path, "php-fpm's status page gave no listen queue {STATUS_FAILURES_TO_GIVE_UP} times in a row: is pm.status_path set to it? Not asked again; idle connections go after worker_idle_timeout");
                        eyes = Eyes::Blind;
                        None
                    }
                    None => {
                        *failures += 1;
                        None
                    }
                }
            }
            Eyes::Blind => None,
        };
        if let Some((inner, queued)) = seen {
            inner.update(|state, now, fx| state.backlog_seen(now, queued, fx));
        }
    }
}
