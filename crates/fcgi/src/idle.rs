//! Which of a server's connections are idle, and since when: so that a server at its connection
//! limit can make room for a newcomer by closing its longest-idle connection, as nginx does with
//! its "reusable" keep-alive connections.
//!
//! Both servers in this workspace use it. The FastCGI application side (`server/`): pooling
//! clients (nginx `keepalive`, HAProxy, Apache `enablereuse`, fcgate) keep connections open
//! between requests, and counted against `max_conns` those idle connections left every other
//! client waiting in the listen backlog for as long as the pools kept theirs (HAProxy and Apache
//! held 15–25 s). And fcgate's HTTP front: a thousand idle HTTP/2 connections must not keep a
//! browser out. Closing an idle connection is something every client handles (php-fpm does it
//! whenever it recycles a worker; browsers when a server's keep-alive timeout passes).
//!
//! Each connection reports whether it has work in progress ([`Registration::set_idle`]: one
//! atomic store, the lock is taken only when connections come and go); the accept loop asks for
//! the longest-idle one ([`IdleRegistry::evict_longest_idle`]) and cancels its token. A
//! connection that took work since it was chosen decides for itself to stay open: the token is a
//! request, not an order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// `idle_since` of a connection with work in progress.
const BUSY: u64 = u64::MAX;

/// One connection as the registry sees it.
#[derive(Debug)]
struct Entry {
    /// Milliseconds after the registry's origin when it went idle; [`BUSY`] while it works.
    idle_since: AtomicU64,
    evict: CancellationToken,
}

/// Every open connection of one server, busy or idle.
#[derive(Debug)]
pub struct IdleRegistry {
    origin: Instant,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    next_id: AtomicU64,
    /// Someone waits in [`IdleRegistry::wait_for_idle`]: only then is a connection going idle
    /// worth a wake-up.
    waiting: AtomicBool,
    became_idle: Notify,
}

/// A connection's place in the registry; removes it when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<IdleRegistry>,
    id: u64,
    entry: Arc<Entry>,
}

impl IdleRegistry {
    /// An empty registry.
    pub fn new() -> Arc<IdleRegistry> {
        Arc::new(IdleRegistry {
            origin: Instant::now(),
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            became_idle: Notify::new(),
        })
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(BUSY - 1)
    }

    /// Registers a connection; `evict` is cancelled when the accept loop wants it closed. It
    /// starts `idle` or busy: a FastCGI connection is busy until its first request ends (two
    /// clients connecting at once must not close each other's fresh connections), an HTTP
    /// connection idle until its first request arrives (a connection that sends nothing is
    /// what an idle-connection flood is made of).
    pub fn register(self: &Arc<Self>, evict: CancellationToken, idle: bool) -> Registration {
        let entry = Arc::new(Entry {
            idle_since: AtomicU64::new(if idle { self.now() } else { BUSY }),
            evict,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.entries().insert(id, Arc::clone(&entry));
        let registration = Registration {
            registry: Arc::clone(self),
            id,
            entry,
        };
        if idle {
            self.wake_waiter();
        }
        registration
    }

    fn any_idle(&self) -> bool {
        self.entries()
            .values()
            .any(|entry| entry.idle_since.load(Ordering::Acquire) != BUSY)
    }

    fn wake_waiter(&self) {
        if self.waiting.load(Ordering::Acquire) {
            self.became_idle.notify_waiters();
        }
    }

    /// Returns once some connection is idle (at once if one is). One waiter at a time: the
    /// accept loop.
    pub async fn wait_for_idle(&self) {
        /// Clears the flag however the wait ends: the accept loop drops this future when a
        /// slot frees first, and a flag left set would cost every request a wake-up.
        struct Waiting<'a>(&'a AtomicBool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        self.waiting.store(true, Ordering::Release);
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.became_idle.notified();
            tokio::pin!(notified);
            // Registered before looking, so a connection going idle in between is not missed.
            notified.as_mut().enable();
            if self.any_idle() {
                return;
            }
            notified.await;
        }
    }

    /// Asks the longest-idle connection to close; false when none is idle.
    pub fn evict_longest_idle(&self) -> bool {
        self.evict_idle_since(BUSY - 1)
    }

    /// Like [`IdleRegistry::evict_longest_idle`], but only a connection idle for at least
    /// `at_least`. A server out of file descriptors must not close a connection it has just
    /// accepted (an HTTP connection is idle until its first request is read) to accept the
    /// next: every newcomer in the backlog would be accepted and closed in turn.
    pub fn evict_idle_for(&self, at_least: Duration) -> bool {
        let at_least = u64::try_from(at_least.as_millis()).unwrap_or(u64::MAX);
        self.now()
            .checked_sub(at_least)
            .is_some_and(|latest| self.evict_idle_since(latest))
    }

    /// Asks the longest-idle connection idle since `latest` (milliseconds after the origin)
    /// or earlier to close.
    fn evict_idle_since(&self, latest: u64) -> bool {
        let entries = self.entries();
        let longest = entries
            .values()
            .filter(|entry| !entry.evict.is_cancelled())
            .map(|entry| (entry.idle_since.load(Ordering::Acquire), entry))
            .filter(|(since, _)| *since != BUSY && *since <= latest)
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, entry)) => {
                entry.evict.cancel();
                true
            }
            None => false,
        }
    }

    /// Connections registered now.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// True when no connection is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Registration {
    /// Records whether the connection has work in progress: one atomic store.
    pub fn set_idle(&self, idle: bool) {
        if idle {
            let now = self.registry.now();
            if self.entry.idle_since.swap(now, Ordering::AcqRel) == BUSY {
                self.registry.wake_waiter();
            }
        } else {
            self.entry.idle_since.store(BUSY, Ordering::Release);
        }
    }

    /// The token the accept loop cancels to ask this connection to close.
    pub fn evict_token(&self) -> &CancellationToken {
        &self.entry.evict
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.entries().remove(&self.id);
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_longest_idle_connection_is_the_one_asked_to_close() {
        let registry = IdleRegistry::new();
        let first = registry.register(CancellationToken::new(), false);
        let second = registry.register(CancellationToken::new(), false);
        let third = registry.register(CancellationToken::new(), false);
        // Busy connections are never chosen.
        assert!(!registry.evict_longest_idle());
        first.set_idle(true);
        std::thread::sleep(Duration::from_millis(2));
        second.set_idle(true);
        assert!(registry.evict_longest_idle());
        assert!(first.evict_token().is_cancelled());
        assert!(!second.evict_token().is_cancelled());
        // Already asked once: the next choice is another connection.
        assert!(registry.evict_longest_idle());
        assert!(second.evict_token().is_cancelled());
        assert!(!registry.evict_longest_idle());
        assert!(!third.evict_token().is_cancelled());
        drop(first);
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn a_connection_idle_for_less_than_asked_is_not_chosen() {
        let registry = IdleRegistry::new();
        let fresh = registry.register(CancellationToken::new(), true);
        assert!(!registry.evict_idle_for(Duration::from_secs(60)));
        assert!(!fresh.evict_token().is_cancelled());
        std::thread::sleep(Duration::from_millis(20));
        assert!(registry.evict_idle_for(Duration::from_millis(10)));
        assert!(fresh.evict_token().is_cancelled());
    }

    #[tokio::test]
    async fn waiting_for_an_idle_connection_ends_when_one_goes_idle() {
        let registry = IdleRegistry::new();
        let busy = registry.register(CancellationToken::new(), false);
        let waiter = tokio::spawn({
            let registry = Arc::clone(&registry);
            async move { registry.wait_for_idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        busy.set_idle(true);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
        // A wait given up (the accept loop got a slot first) leaves no wake-ups behind.
        let registry_b = IdleRegistry::new();
        let busy_b = registry_b.register(CancellationToken::new(), false);
        let given_up =
            tokio::time::timeout(Duration::from_millis(10), registry_b.wait_for_idle()).await;
        assert!(given_up.is_err());
        assert!(!registry_b.waiting.load(Ordering::Acquire));
        drop(busy_b);
        // A connection registered idle is found at once.
        let registry = IdleRegistry::new();
        let _idle = registry.register(CancellationToken::new(), true);
        tokio::time::timeout(Duration::from_secs(5), registry.wait_for_idle())
            .await
            .expect("at once");
    }
}
