//! The server-wide bound on requests in progress. FastCGI 1.0 §4.1 defines `FCGI_MAX_REQS` for
//! the whole application, not per connection, so every connection of one server draws on one
//! shared [`RequestBudget`]; each connection's state returns what it took as its requests end.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Requests in progress across every connection of one server, and how many may be.
#[derive(Debug)]
pub struct RequestBudget {
    limit: usize,
    in_progress: AtomicUsize,
}

impl RequestBudget {
    /// A budget of `limit` requests at once; 0 is treated as 1.
    pub fn new(limit: usize) -> RequestBudget {
        RequestBudget {
            limit: limit.max(1),
            in_progress: AtomicUsize::new(0),
        }
    }

    /// No server-wide bound: a connection served on its own.
    pub fn unlimited() -> RequestBudget {
        RequestBudget::new(usize::MAX)
    }

    /// The most requests that may be in progress at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests in progress now.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Acquire)
    }

    /// Counts one more request in progress, unless the budget is spent.
    pub(crate) fn try_take(&self) -> bool {
        self.in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_progress| {
                (in_progress < self.limit).then_some(in_progress + 1)
            })
            .is_ok()
    }

    /// `count` requests taken earlier have ended.
    pub(crate) fn give_back(&self, count: usize) {
        if count > 0 {
            self.in_progress.fetch_sub(count, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_and_again_after_a_give_back() {
        let budget = RequestBudget::new(2);
        assert!(budget.try_take());
        assert!(budget.try_take());
        assert!(!budget.try_take());
        assert_eq!(budget.in_progress(), 2);
        budget.give_back(1);
        assert!(budget.try_take());
        budget.give_back(2);
        assert_eq!(budget.in_progress(), 0);
        assert_eq!(RequestBudget::new(0).limit(), 1);
    }
}
