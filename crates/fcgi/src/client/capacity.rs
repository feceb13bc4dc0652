//! The pool's effective connection cap: where its ceiling came from, and how it adapts.
//!
//! Pure state — no I/O, no clock; the pool feeds it events under its lock. The ceiling is the
//! operator's `max_conns` (or a figure they pointed at, such as php-fpm's `pm.max_children`),
//! else the backend's FCGI_MAX_CONNS, else a default. The effective cap drops below the ceiling
//! when the backend shows it serves fewer connections than the pool holds — a new connection left
//! unanswered in the listen backlog (saturation), FCGI_OVERLOADED, a full listen queue — and rises
//! again by one after a streak of successful requests made while others were waiting, the streak
//! doubling after every drop so a backend that keeps saturating is probed less and less often.

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

/// Successful requests under demand before the first raise; doubles after each reduction.
const INITIAL_RAISE_STREAK: u64 = 64;
const MAX_RAISE_STREAK: u64 = 16_384;

#[derive(Clone, Debug)]
pub(crate) struct Capacity {
    ceiling: usize,
    source: CapSource,
    cap: usize,
    reduced_by: Option<CapReduction>,
    streak: u64,
    raise_after: u64,
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
            raise_after: INITIAL_RAISE_STREAK,
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
    pub(crate) fn reduce(&mut self, serving: usize, reason: CapReduction) -> bool {
        let target = serving.clamp(1, self.ceiling);
        self.raise_after = (self.raise_after * 2).min(MAX_RAISE_STREAK);
        self.streak = 0;
        if target >= self.cap {
            return false;
        }
        self.cap = target;
        self.reduced_by = Some(reason);
        true
    }

    /// A request ended cleanly; `demand` says whether others were waiting for a connection.
    /// Returns true when the cap went up by one.
    pub(crate) fn record_success(&mut self, demand: bool) -> bool {
        if self.cap >= self.ceiling || !demand {
            return false;
        }
        self.streak += 1;
        if self.streak < self.raise_after {
            return false;
        }
        self.streak = 0;
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
    fn reduction_never_goes_below_one_and_rises_back_under_demand() {
        let mut capacity = Capacity::new(4, CapSource::Default);
        assert!(capacity.reduce(0, CapReduction::Saturation));
        assert_eq!(capacity.cap(), 1);
        assert_eq!(capacity.reduced_by(), Some(CapReduction::Saturation));
        // Without demand nothing is probed.
        for _ in 0..10_000 {
            assert!(!capacity.record_success(false));
        }
        let raises: usize = (0..1_000)
            .map(|_| capacity.record_success(true))
            .filter(|raised| *raised)
            .count();
        assert_eq!(capacity.cap(), 1 + raises);
        assert_eq!(raises, 3, "back at the ceiling, and no further");
        assert_eq!(capacity.reduced_by(), None);
    }

    #[test]
    fn each_reduction_makes_the_next_raise_slower() {
        let mut capacity = Capacity::new(4, CapSource::Default);
        let streak_to_raise =
            |capacity: &mut Capacity| (1..).find(|_| capacity.record_success(true)).unwrap_or(0);
        capacity.reduce(2, CapReduction::Overloaded);
        let first = streak_to_raise(&mut capacity);
        capacity.reduce(2, CapReduction::Overloaded);
        let second = streak_to_raise(&mut capacity);
        assert_eq!(second, first * 2);
    }

    #[test]
    fn a_reduction_to_the_current_cap_or_above_changes_nothing() {
        let mut capacity = Capacity::new(2, CapSource::Default);
        assert!(!capacity.reduce(5, CapReduction::ListenQueueFull));
        assert_eq!(capacity.cap(), 2);
        assert_eq!(capacity.reduced_by(), None);
    }
}
