//! Which of a server's connections are idle, and how long: so that a server at `max_conns` can
//! make room for a newcomer by closing its longest-idle connection.
//!
//! Pooling clients (nginx `keepalive`, HAProxy, Apache `enablereuse`, fcgate) keep connections
//! open between requests. Counted against `max_conns`, those idle connections would leave every
//! new connection, from another client or another instance, waiting in the listen backlog for as
//! long as the pools keep theirs (HAProxy and Apache held 15–25 s). Closing an idle connection is
//! something every pool already handles (php-fpm does it whenever a worker is recycled), so at
//! the limit the server closes the longest-idle one and serves the newcomer instead.
//!
//! Each connection's task reports whether it has requests in progress ([`IdleRegistry::set_idle`]);
//! the accept loop asks for the longest-idle one and cancels its [`CancellationToken`]; the
//! connection closes only if it is still idle when it sees the request (a request that arrived in
//! between wins, and the accept loop waits for a slot instead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A connection's entry: idle since when, and how to ask it to close.
struct Entry {
    idle_since: Option<Instant>,
    evict: CancellationToken,
}

/// Every open connection of one server, busy or idle.
#[derive(Default)]
pub(crate) struct IdleRegistry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: Mutex<u64>,
    /// Woken whenever a connection becomes idle.
    became_idle: Notify,
}

/// A connection's place in the registry; removes it when dropped.
pub(crate) struct Registration {
    registry: Arc<IdleRegistry>,
    id: u64,
    /// Cancelled when the accept loop wants this connection closed.
    pub(crate) evict: CancellationToken,
}

impl IdleRegistry {
    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection as busy: until it has been through a request (or a
    /// management query) it is never closed for a newcomer, or two clients connecting at once
    /// would close each other's fresh connections before their first request.
    pub(crate) fn register(self: &Arc<Self>) -> Registration {
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(PoisonError::into_inner);
            *next += 1;
            *next
        };
        let evict = CancellationToken::new();
        self.entries().insert(
            id,
            Entry {
                idle_since: None,
                evict: evict.clone(),
            },
        );
        Registration {
            registry: Arc::clone(self),
            id,
            evict,
        }
    }

    /// Whether some connection is idle now.
    fn any_idle(&self) -> bool {
        self.entries()
            .values()
            .any(|entry| entry.idle_since.is_some())
    }

    /// Returns once some connection is idle (at once if one is).
    pub(crate) async fn wait_for_idle(&self) {
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
    pub(crate) fn evict_longest_idle(&self) -> bool {
        let entries = self.entries();
        let longest = entries
            .values()
            .filter_map(|entry| entry.idle_since.map(|since| (since, &entry.evict)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, evict)) => {
                evict.cancel();
                true
            }
            None => false,
        }
    }
}

impl Registration {
    /// Records whether the connection has no request in progress.
    pub(crate) fn set_idle(&self, idle: bool) {
        let mut entries = self.registry.entries();
        let Some(entry) = entries.get_mut(&self.id) else {
            return;
        };
        match (idle, entry.idle_since) {
            (true, None) => {
                entry.idle_since = Some(Instant::now());
                drop(entries);
                self.registry.became_idle.notify_waiters();
            }
            (false, Some(_)) => entry.idle_since = None,
            _ => {}
        }
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
        let registry = Arc::new(IdleRegistry::default());
        let first = registry.register();
        let second = registry.register();
        let third = registry.register();
        // Fresh connections are never chosen.
        assert!(!registry.evict_longest_idle());
        first.set_idle(true);
        std::thread::sleep(Duration::from_millis(2));
        second.set_idle(true);
        assert!(registry.evict_longest_idle());
        assert!(first.evict.is_cancelled());
        assert!(!second.evict.is_cancelled());
        drop(first);
        // A busy connection is never chosen.
        second.set_idle(false);
        assert!(!registry.evict_longest_idle());
        assert!(!third.evict.is_cancelled());
        // Idle again: chosen.
        second.set_idle(true);
        assert!(registry.evict_longest_idle());
        assert!(second.evict.is_cancelled());
    }

    #[tokio::test]
    async fn waiting_for_an_idle_connection_ends_when_one_goes_idle() {
        let registry = Arc::new(IdleRegistry::default());
        let busy = registry.register();
        busy.set_idle(false);
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
    }
}
