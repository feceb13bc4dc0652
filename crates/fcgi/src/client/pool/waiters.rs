//! The waiting side of the queue: the channel each queued checkout is granted through, and the
//! guard that makes giving up (timeout, client gone) return whatever was granted, exactly once.
//!
//! The pool state (`state/`) keeps the queue's order and decides every grant; here only the
//! delivery. A waiter leaves in one of two ways, told apart under the pool's lock: still queued
//! — it is taken out and nothing was granted; or already granted — the grant is in its channel
//! (or on its way, sent under the same lock), and the guard takes it out and gives it back.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::effects::{Grant, WaiterId};
use crate::client::connection::Connection;

/// What the guard needs from the pool when its waiter gives up.
pub(super) trait Queue: Send + Sync {
    /// The waiter leaves; true when it was still queued (nothing was granted to it).
    fn leave(&self, waiter: WaiterId, timed_out: bool) -> bool;
    /// A grant that reached a waiter who had given up comes back.
    fn give_back(&self, grant: Grant<Connection>);
}

/// The channels of the queued checkouts, oldest first (as the state's queue).
#[derive(Default)]
pub(super) struct Senders {
    queued: VecDeque<(WaiterId, oneshot::Sender<Grant<Connection>>)>,
}

impl Senders {
    pub(super) fn add(&mut self, waiter: WaiterId) -> oneshot::Receiver<Grant<Connection>> {
        let (sender, receiver) = oneshot::channel();
        self.queued.push_back((waiter, sender));
        receiver
    }

    pub(super) fn remove(&mut self, waiter: WaiterId) {
        if let Some(position) = self.position(waiter) {
            self.queued.remove(position);
        }
    }

    /// Delivers `grant`; hands it back when the waiter is gone.
    pub(super) fn send(
        &mut self,
        waiter: WaiterId,
        grant: Grant<Connection>,
    ) -> Result<(), Grant<Connection>> {
        let Some(position) = self.position(waiter) else {
            return Err(grant);
        };
        match self.queued.remove(position) {
            Some((_, sender)) => sender.send(grant),
            None => Err(grant),
        }
    }

    fn position(&self, waiter: WaiterId) -> Option<usize> {
        // Grants go to the oldest waiter: nearly always the first.
        self.queued.iter().position(|(id, _)| *id == waiter)
    }
}

/// A queued checkout. Dropping it leaves the queue, or gives back what it was granted.
pub(super) struct WaitGuard {
    pub(super) queue: Arc<dyn Queue>,
    pub(super) waiter: WaiterId,
    pub(super) receiver: oneshot::Receiver<Grant<Connection>>,
    pub(super) settled: bool,
    pub(super) timed_out: bool,
}

impl WaitGuard {
    /// The grant, or `None` when `deadline` passed first.
    pub(super) async fn wait(
        mut self,
        deadline: tokio::time::Instant,
    ) -> Option<Grant<Connection>> {
        match tokio::time::timeout_at(deadline, &mut self.receiver).await {
            Ok(Ok(grant)) => {
                self.settled = true;
                Some(grant)
            }
            // The sender lives in the pool until granted, and granting sends; a closed channel
            // cannot happen, but if it did, waiting longer would not help.
            Ok(Err(_)) | Err(_) => {
                self.timed_out = true;
                None
            }
        }
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.settled || self.queue.leave(self.waiter, self.timed_out) {
            return;
        }
        // Granted: under the pool's lock the grant was sent before `leave` could run.
        if let Ok(grant) = self.receiver.try_recv() {
            self.queue.give_back(grant);
        }
    }
}
