//! A request's event queue: the one channel from a connection's driver (the sender, kept in
//! the request's route in `state.rs`) to the request's reader (`events.rs`).
//!
//! Written here instead of using tokio's unbounded mpsc because one is made for every request
//! and it has exactly one sender and one receiver: tokio's, built for many senders, allocates a
//! 1.3 KiB block of slots besides its 0.5 KiB channel each time (bench/hotpath.sh, DHAT). This
//! one is a single allocation holding a mutex over a few inline slots (a response's head, body
//! and end usually fit), an overflow list for longer answers, the reader's waker, and whether
//! either end is gone, and beside the mutex the count of response bytes queued and not taken
//! yet, which both ends keep. Neither end holds the mutex for more than a push or a pop.
//! Unbounded like tokio's: the connection state bounds with that count what a reader may leave
//! unread (`max_request_buffer`).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Events held without the overflow list's allocation.
const INLINE: usize = 4;

/// A queue's two ends.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            inline: [const { None }; INLINE],
            head: 0,
            inline_len: 0,
            overflow: VecDeque::new(),
            receiver_waker: None,
            sender_gone: false,
            receiver_gone: false,
        }),
        unread: AtomicUsize::new(0),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// The sending end; dropping it lets the receiver drain what is queued and then see the end.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end; dropping it drops what is queued and makes later sends fail.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    /// Nothing queued yet; more may come.
    Empty,
    /// Nothing queued, and the sender is gone.
    Disconnected,
}

/// What both ends hold.
struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// Response bytes sent and not yet taken out by the reader: the sender adds, the receiver
    /// subtracts (the connection state reads it to pause or give up on a slow reader).
    unread: AtomicUsize,
}

/// FIFO order: the inline ring's items come before the overflow's, and the overflow is used only
/// while the ring is full.
struct Queue<T> {
    inline: [Option<T>; INLINE],
    head: usize,
    inline_len: usize,
    overflow: VecDeque<T>,
    receiver_waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl<T> Queue<T> {
    fn push(&mut self, item: T) {
        if self.inline_len < INLINE && self.overflow.is_empty() {
            self.inline[(self.head + self.inline_len) % INLINE] = Some(item);
            self.inline_len += 1;
        } else {
            self.overflow.push_back(item);
        }
    }

    fn pop(&mut self) -> Option<T> {
        if self.inline_len == 0 {
            return None;
        }
        let item = self.inline[self.head].take();
        self.head = (self.head + 1) % INLINE;
        self.inline_len -= 1;
        // Keeps the overflow behind the ring: its oldest item takes the slot just freed.
        if let Some(next) = self.overflow.pop_front() {
            self.inline[(self.head + self.inline_len) % INLINE] = Some(next);
            self.inline_len += 1;
        }
        item
    }

    /// Everything queued, to be dropped outside the lock.
    fn take_all(&mut self) -> (Vec<T>, VecDeque<T>) {
        let mut inline = Vec::with_capacity(self.inline_len);
        while self.inline_len > 0 {
            inline.extend(self.inline[self.head].take());
            self.head = (self.head + 1) % INLINE;
            self.inline_len -= 1;
        }
        (inline, std::mem::take(&mut self.overflow))
    }
}

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, Queue<T>> {
    // Nothing under the lock can panic halfway through an update that matters.
    shared.queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Sender<T> {
    /// The count of response bytes queued and not taken yet (see [`Shared::unread`]).
    pub(crate) fn unread(&self) -> &AtomicUsize {
        &self.shared.unread
    }

    /// Queues `item` and wakes the receiver; gives `item` back when the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut queue = lock(&self.shared);
            if queue.receiver_gone {
                return Err(item);
            }
            queue.push(item);
            queue.receiver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut queue = lock(&self.shared);
            queue.sender_gone = true;
            queue.receiver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The count of response bytes queued and not taken yet (see [`Shared::unread`]).
    pub(crate) fn unread(&self) -> &AtomicUsize {
        &self.shared.unread
    }

    /// The next item; `None` once the sender is gone and everything it sent has been taken.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut queue = lock(&self.shared);
        if let Some(item) = queue.pop() {
            return Poll::Ready(Some(item));
        }
        if queue.sender_gone {
            return Poll::Ready(None);
        }
        match &mut queue.receiver_waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next item if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut queue = lock(&self.shared);
        match queue.pop() {
            Some(item) => Ok(item),
            None if queue.sender_gone => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let queued = {
            let mut queue = lock(&self.shared);
            queue.receiver_gone = true;
            queue.receiver_waker = None;
            queue.take_all()
        };
        drop(queued);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        (counter, waker)
    }

    #[test]
    fn every_item_sent_is_received_once_in_order() {
        let (sender, mut receiver) = channel();
        let mut received = Vec::new();
        let mut next = 0;
        for batch in [1, 4, 5, 9, 2, 3, 12, 1] {
            for _ in 0..batch {
                sender.send(next).unwrap();
                next += 1;
            }
            // Take about half, so the ring wraps with the overflow in use.
            for _ in 0..(batch / 2 + 1) {
                if let Ok(item) = receiver.try_recv() {
                    received.push(item);
                }
            }
        }
        drop(sender);
        while let Ok(item) = receiver.try_recv() {
            received.push(item);
        }
        assert_eq!(received, (0..next).collect::<Vec<_>>());
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_send_and_by_the_senders_end() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let (sender, mut receiver) = channel();
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Pending);
        sender.send(7).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(7)));
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Pending);
        drop(sender);
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn what_was_sent_before_the_sender_went_is_still_received() {
        let (sender, mut receiver) = channel();
        sender.send(1).unwrap();
        sender.send(2).unwrap();
        drop(sender);
        assert_eq!(receiver.try_recv(), Ok(1));
        assert_eq!(receiver.try_recv(), Ok(2));
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn sending_to_a_dropped_receiver_gives_the_item_back_and_drops_what_was_queued() {
        let item = Arc::new(());
        let (sender, receiver) = channel();
        sender.send(Arc::clone(&item)).unwrap();
        assert_eq!(Arc::strong_count(&item), 2);
        drop(receiver);
        assert_eq!(
            Arc::strong_count(&item),
            1,
            "queued items dropped with the receiver"
        );
        let returned = sender.send(Arc::clone(&item)).unwrap_err();
        assert!(Arc::ptr_eq(&returned, &item));
    }

    #[tokio::test]
    async fn recv_waits_for_an_item_sent_from_another_task() {
        let (sender, mut receiver) = channel();
        let sending = tokio::spawn(async move {
            tokio::task::yield_now().await;
            sender.send("event").unwrap();
        });
        assert_eq!(receiver.recv().await, Some("event"));
        sending.await.unwrap();
        assert_eq!(receiver.recv().await, None);
    }
}
