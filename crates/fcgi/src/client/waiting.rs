//! Waiting for a connection: a queued checkout and what it is granted, and the guards that make
//! giving up (timeout, client gone, cancelled connect) return every slot exactly once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::connection::Connection;
use super::error::ClientError;
use super::pool::PoolShared;

pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) grant: oneshot::Sender<Grant>,
}

/// What a waiter is handed: a connection, a request slot on a shared one, or the right to open
/// one.
pub(super) enum Grant {
    Connection(Connection),
    /// The slot is already counted in the connection's `in_flight`.
    Request(Connection),
    OpenSlot,
}

/// A queued checkout. Dropping it leaves the queue, or returns what it was granted.
pub(super) struct WaitGuard {
    pub(super) shared: Arc<PoolShared>,
    pub(super) id: u64,
    pub(super) receiver: oneshot::Receiver<Grant>,
    pub(super) settled: bool,
}

impl WaitGuard {
    pub(super) async fn wait(
        mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Grant, ClientError> {
        match tokio::time::timeout_at(deadline, &mut self.receiver).await {
            Ok(Ok(grant)) => {
                self.settled = true;
                Ok(grant)
            }
            // The sender lives in the queue until granted, and granting sends; a closed
            // channel cannot happen, but if it did, waiting longer would not help.
            Ok(Err(_)) | Err(_) => {
                self.shared.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(ClientError::QueueTimeout {
                    address: self.shared.address.clone(),
                    timeout: self.shared.config.queue_timeout,
                })
            }
        }
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        {
            let mut state = self.shared.lock();
            if let Some(position) = state.waiters.iter().position(|w| w.id == self.id) {
                state.waiters.remove(position);
                return;
            }
        }
        if let Ok(grant) = self.receiver.try_recv() {
            self.shared.give_back(grant);
        }
    }
}

/// A slot taken for a connect in progress; freed unless the connect succeeds.
pub(super) struct SlotGuard {
    pub(super) shared: Option<Arc<PoolShared>>,
}

impl SlotGuard {
    pub(super) fn keep(mut self) {
        self.shared = None;
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.free_slot(&mut shared.lock());
        }
    }
}
