//! The pool's effective connection cap: where its ceiling came from, and how it adapts.
//!
//! Pure state — no I/O, no clock; the pool feeds it events under its lock. The ceiling is the
//! operator's `max_conns` (or a figure they pointed at, such as php-fpm's `pm.max_children`),
//! else the backend's FCGI_MAX_CONNS, else a default. The effective cap drops below the ceiling
//! when the backend shows it serves fewer connections than the pool holds — a new connection left
//! unanswered in the listen backlog (saturation), FCGI_OVERLOADED, a full listen queue — and rises
//! again by one after a streak of successful requests made while others were waiting. A raise
//! is a probe: if the cap comes down again before the next raise, the probe failed and the
//! streak needed for the next one doubles, so a backend at its true limit is probed less and
//! less often; a probe that holds halves it again.

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

/// Successful requests under demand before a raise; doubles after a failed probe.
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
    /// The last change was a raise that has not yet held for a full streak.
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
            raise_after: INITIAL_RAISE_STREAK,
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
    pub(crate) fn reduce(&mut self, serving: usize, reason: CapReduction) -> bool {
        let target = serving.clamp(1, self.ceiling);
        if self.probing {
            self.raise_after = (self.raise_after * 2).min(MAX_RAISE_STREAK);
            self.probing = false;
        }
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
        if self.probing {
            // The previous raise held for a whole streak.
            self.raise_after = (self.raise_after / 2).max(INITIAL_RAISE_STREAK);
        }
        self.probing = true;
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

    fn streak_to_raise(capacity: &mut Capacity) -> u64 {
        (1..).find(|_| capacity.record_success(true)).unwrap_or(0)
    }

    #[test]
    fn a_failed_probe_doubles_the_streak_and_a_held_one_halves_it() {
        let mut capacity = Capacity::new(8, CapSource::Default);
        capacity.reduce(2, CapReduction::Saturation);
        let first = streak_to_raise(&mut capacity); // 2 -> 3: a probe
        capacity.reduce(2, CapReduction::Saturation); // it failed
        let after_failure = streak_to_raise(&mut capacity); // 2 -> 3 again, slower
        assert_eq!(after_failure, first * 2);
        // 3 holds for that whole streak: 3 -> 4, and the probe after it is quick again.
        assert_eq!(streak_to_raise(&mut capacity), first * 2);
        assert_eq!(streak_to_raise(&mut capacity), first);
    }

    #[test]
    fn repeated_reductions_without_a_probe_do_not_slow_recovery() {
        let mut capacity = Capacity::new(4, CapSource::Default);
        for _ in 0..100 {
            capacity.reduce(1, CapReduction::Overloaded);
        }
        assert_eq!(streak_to_raise(&mut capacity), INITIAL_RAISE_STREAK);
    }

    #[test]
    fn a_reduction_to_the_current_cap_or_above_changes_nothing() {
        let mut capacity = Capacity::new(2, CapSource::Default);
        assert!(!capacity.reduce(5, CapReduction::ListenQueueFull));
        assert_eq!(capacity.cap(), 2);
        assert_eq!(capacity.reduced_by(), None);
    }
}
