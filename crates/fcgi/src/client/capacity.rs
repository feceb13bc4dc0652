//! The pool's effective connection cap: where its ceiling came from, and how it adapts.
//!
//! Pure state — no I/O, no clock; the pool feeds it events under its lock. The ceiling is the
//! operator's `max_conns` (or a figure they pointed at, such as php-fpm's `pm.max_children`),
//! else the backend's FCGI_MAX_CONNS, else a default. The effective cap drops below the ceiling
//! when the backend shows it serves fewer connections than the pool holds — a new connection left
//! unanswered in the listen backlog (saturation), FCGI_OVERLOADED, a full listen queue — and rises
//! again by one after a hold period, if requests keep succeeding while others wait. A raise is
//! a probe: if the cap comes down again before the next raise, the probe failed and the hold
//! doubles (1 s up to 5 min), so a backend at its true limit is probed less and less often; a
//! probe that holds halves it again.

use std::time::{Duration, Instant};

/// Where the pool's ceiling came from; logged and shown in the pool's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapSource {
    /// Set by the operator; the text says where (`max_conns`, a php-fpm pool file).
    Configured(String),
    /// Announced by the backend as FCGI_MAX_CONNS.
    GetValues,
    /// Nothing configured or learned: [`super::PoolConfig::DEFAULT_MAX_CONNS`].
    Default,
}

impl std::fmt::Display for CapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapSource::Configured(origin) => f.write_str(origin),
            CapSource::GetValues => f.write_str("FCGI_MAX_CONNS from the backend"),
            CapSource::Default => f.write_str("the default"),
        }
    }
}

/// Why the effective cap is below the ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapReduction {
    /// A new connection got no answer while others were served: the backend has fewer
    /// workers than the pool had connections.
    Saturation,
    /// The backend answered FCGI_OVERLOADED.
    Overloaded,
    /// A connect failed because the backend's listen queue was full.
    ListenQueueFull,
}

impl CapReduction {
    /// A stable name for logs, metrics and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            CapReduction::Saturation => "saturation",
            CapReduction::Overloaded => "overloaded",
            CapReduction::ListenQueueFull => "listen_queue_full",
        }
    }
}

/// Successful requests under demand, since the last change, before a raise is considered.
const RAISE_STREAK: u64 = 64;
/// How long the cap stays down after a reduction before a raise is tried; doubles after each
/// failed probe, halves after one that held. In time, not requests: a fast backend must not be
/// probed (and one request left in its backlog) many times a second.
const INITIAL_HOLD: Duration = Duration::from_secs(1);
const MAX_HOLD: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub(crate) struct Capacity {
    ceiling: usize,
    source: CapSource,
    cap: usize,
    reduced_by: Option<CapReduction>,
    streak: u64,
    hold: Duration,
    raise_not_before: Option<Instant>,
    /// The last change was a raise that has not yet held for a whole hold period.
    probing: bool,
}

impl Capacity {
    pub(crate) fn new(ceiling: usize, source: CapSource) -> Capacity {
        let ceiling = ceiling.max(1);
        Capacity {
            ceiling,
            source,
            cap: ceiling,
            reduced_by: None,
            streak: 0,
            hold: INITIAL_HOLD,
            raise_not_before: None,
            probing: false,
        }
    }

    /// The cap in force now.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    pub(crate) fn ceiling(&self) -> usize {
        self.ceiling
    }

    pub(crate) fn source(&self) -> &CapSource {
        &self.source
    }

    pub(crate) fn reduced_by(&self) -> Option<CapReduction> {
        self.reduced_by
    }

    /// The backend announced FCGI_MAX_CONNS. It replaces only the default: explicit settings
    /// win. Returns true when the ceiling changed.
    pub(crate) fn learned(&mut self, max_conns: usize) -> bool {
        if self.source != CapSource::Default || max_conns == 0 {
            return false;
        }
        self.source = CapSource::GetValues;
        self.ceiling = max_conns;
        self.cap = self.cap.min(max_conns).max(1);
        if self.reduced_by.is_none() {
            self.cap = max_conns;
        }
        true
    }

    /// The backend demonstrably serves at most `serving` connections. Returns true when the
    /// cap went down.
    pub(crate) fn reduce(&mut self, serving: usize, reason: CapReduction, now: Instant) -> bool {
        let target = serving.clamp(1, self.ceiling);
        if self.probing {
            self.hold = (self.hold * 2).min(MAX_HOLD);
            self.probing = false;
        }
        self.streak = 0;
        self.raise_not_before = Some(now + self.hold);
        if target >= self.cap {
            return false;
        }
        self.cap = target;
        self.reduced_by = Some(reason);
        true
    }

    /// A request ended cleanly; `demand` says whether others were waiting for a connection.
    /// Returns true when the cap went up by one.
    pub(crate) fn record_success(&mut self, demand: bool, now: Instant) -> bool {
        if self.cap >= self.ceiling || !demand {
            return false;
        }
        self.streak += 1;
        if self.streak < RAISE_STREAK || self.raise_not_before.is_some_and(|at| now < at) {
            return false;
        }
        self.streak = 0;
        if self.probing {
            // The previous raise held for a whole hold period.
            self.hold = (self.hold / 2).max(INITIAL_HOLD);
        }
        self.probing = true;
        self.raise_not_before = Some(now + self.hold);
        self.cap += 1;
        if self.cap >= self.ceiling {
            self.reduced_by = None;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    /// Successes under demand at instant `now` until a raise; the count, or None.
    fn raise_at(capacity: &mut Capacity, now: Instant) -> Option<u64> {
        (1..=RAISE_STREAK * 2).find(|_| capacity.record_success(true, now))
    }

    #[test]
    fn a_learned_value_replaces_only_the_default() {
        let mut capacity = Capacity::new(4, CapSource::Default);
        assert!(capacity.learned(3));
        assert_eq!(
            (capacity.cap(), capacity.source()),
            (3, &CapSource::GetValues)
        );

        let mut configured = Capacity::new(8, CapSource::Configured("max_conns".into()));
        assert!(!configured.learned(3));
        assert_eq!(configured.cap(), 8);
    }

    #[test]
    fn reduction_never_goes_below_one_and_rises_back_under_demand_after_the_hold() {
        let start = Instant::now();
        let mut capacity = Capacity::new(4, CapSource::Default);
        assert!(capacity.reduce(0, CapReduction::Saturation, start));
        assert_eq!(capacity.cap(), 1);
        assert_eq!(capacity.reduced_by(), Some(CapReduction::Saturation));
        // Not within the hold, however many requests succeed, and never without demand.
        assert_eq!(raise_at(&mut capacity, start), None);
        for _ in 0..1_000 {
            assert!(!capacity.record_success(false, at(start, 10)));
        }
        // Each held probe lets the next come after the (halving, floored) hold.
        assert_eq!(raise_at(&mut capacity, at(start, 1)), Some(1));
        assert_eq!(raise_at(&mut capacity, at(start, 2)), Some(RAISE_STREAK));
        assert_eq!(raise_at(&mut capacity, at(start, 3)), Some(RAISE_STREAK));
        assert_eq!(capacity.cap(), 4);
        assert_eq!(capacity.reduced_by(), None);
        assert_eq!(
            raise_at(&mut capacity, at(start, 100)),
            None,
            "no further than the ceiling"
        );
    }

    #[test]
    fn each_failed_probe_doubles_the_hold_and_a_held_one_halves_it() {
        let start = Instant::now();
        let mut capacity = Capacity::new(8, CapSource::Default);
        capacity.reduce(2, CapReduction::Saturation, start);
        assert!(raise_at(&mut capacity, at(start, 1)).is_some()); // probe 2 -> 3 after 1 s
        capacity.reduce(2, CapReduction::Saturation, at(start, 1)); // it failed: hold 2 s
        assert_eq!(raise_at(&mut capacity, at(start, 2)), None);
        assert!(raise_at(&mut capacity, at(start, 3)).is_some()); // probe again after 2 s
        capacity.reduce(2, CapReduction::Saturation, at(start, 3)); // failed again: hold 4 s
        assert_eq!(raise_at(&mut capacity, at(start, 6)), None);
        assert!(raise_at(&mut capacity, at(start, 7)).is_some()); // 2 -> 3, and it holds:
        assert!(raise_at(&mut capacity, at(start, 11)).is_some()); // 3 -> 4 after 4 s, hold now 2 s
        assert!(raise_at(&mut capacity, at(start, 13)).is_some()); // 4 -> 5 after 2 s
    }

    #[test]
    fn a_reduction_to_the_current_cap_or_above_changes_nothing() {
        let mut capacity = Capacity::new(2, CapSource::Default);
        assert!(!capacity.reduce(5, CapReduction::ListenQueueFull, Instant::now()));
        assert_eq!(capacity.cap(), 2);
        assert_eq!(capacity.reduced_by(), None);
    }
}
