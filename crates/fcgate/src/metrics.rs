//! The figures the gateway records as requests pass, for `/metrics` and the status page:
//! latency histograms, responses by status class, retries by reason (per server and in all). Recording is a few relaxed
//! atomic additions on fixed arrays (no map lookup, no lock, no allocation), so it is always on;
//! the admin listener (`admin.rs`) only reads.
//!
//! The histogram is written here rather than taken from prometheus-client because the status
//! page needs what Prometheus would compute from it (a p99 over the last second) from inside the
//! process, and prometheus-client's histograms cannot be read back. prometheus-client still
//! encodes it ([`LatencySnapshot::buckets`] gives the buckets it wants).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency buckets: 1-2-5 in every decade from 100 µs (a
/// reused connection on a local socket) to a minute (a long `queue_timeout`). Denser than
/// Prometheus' defaults because the status page reads a p99 from them: a quantile is only as
/// precise as the bucket it falls in.
pub const LATENCY_BOUNDS: [f64; 19] = [
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    10.0, 20.0, 30.0, 60.0,
];

/// Buckets: one per bound and one for everything above the last.
const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// A latency histogram with [`LATENCY_BOUNDS`].
#[derive(Debug, Default)]
pub struct Latencies {
    /// Per bucket (not cumulative), so one observation is one addition.
    counts: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Latencies {
    /// Counts one observation.
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts now. Taken bucket by bucket, so an observation racing the read may be
    /// counted in one and not the sum: Prometheus tolerates that, as it does for every client.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|bucket| self.counts[bucket].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment, or the difference between two moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySnapshot {
    counts: [u64; BUCKETS],
    sum_nanos: u64,
}

impl LatencySnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        // Precision is not the point of a sum of latencies: f64 holds 2^53 ns (104 days) exactly.
        #[allow(clippy::cast_precision_loss)]
        let nanos = self.sum_nanos as f64;
        nanos / 1e9
    }

    /// `(upper bound, observations in that bucket alone)`, the last bound `+Inf`: what
    /// prometheus-client's encoder takes (it accumulates them into Prometheus' `le` buckets).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts)
            .collect()
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|bucket| {
                self.counts[bucket].saturating_sub(earlier.counts[bucket])
            }),
            sum_nanos: self.sum_nanos.saturating_sub(earlier.sum_nanos),
        }
    }

    /// The `q` quantile in seconds, interpolated linearly inside its bucket as PromQL's
    /// `histogram_quantile` does (so the page and a Grafana panel agree); `None` without
    /// observations. Above the last bound it answers the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (bucket, &upper) in LATENCY_BOUNDS.iter().enumerate() {
            let in_bucket = self.counts[bucket];
            #[allow(clippy::cast_precision_loss)]
            if (below + in_bucket) as f64 >= rank && in_bucket > 0 {
                let lower = if bucket == 0 {
                    0.0
                } else {
                    LATENCY_BOUNDS[bucket - 1]
                };
                let into_bucket = (rank - below as f64) / in_bucket as f64;
                return Some(lower + (upper - lower) * into_bucket.clamp(0.0, 1.0));
            }
            below += in_bucket;
        }
        Some(LATENCY_BOUNDS[LATENCY_BOUNDS.len() - 1])
    }
}

/// Responses counted by the first digit of their status.
#[derive(Debug, Default)]
pub struct StatusClasses([AtomicU64; 5]);

impl StatusClasses {
    /// The classes' label values, in [`Self::counts`] order.
    pub const NAMES: [&'static str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

    /// Counts one response; statuses outside 100–599 (never sent) are ignored.
    pub fn record(&self, status: u16) {
        if let Some(counter) = usize::from(status / 100)
            .checked_sub(1)
            .and_then(|class| self.0.get(class))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts per class, in [`Self::NAMES`] order.
    pub fn counts(&self) -> [u64; 5] {
        std::array::from_fn(|class| self.0[class].load(Ordering::Relaxed))
    }

    /// All responses counted.
    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }
}

/// Why a request was sent to the backend again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// A connect failed: another server was tried.
    ConnectFailed,
    /// The only server refused connects (restarting, say): the same one again after a pause.
    BackendRestarting,
    /// FCGI_OVERLOADED: the request was not processed.
    Overloaded,
    /// FCGI_CANT_MPX_CONN: the request went again on a connection of its own.
    CannotMultiplex,
    /// The connection died before the backend answered (a recycled worker, usually).
    ConnectionLost,
}

impl RetryReason {
    /// Every reason, in label order.
    pub const ALL: [RetryReason; 5] = [
        RetryReason::ConnectFailed,
        RetryReason::BackendRestarting,
        RetryReason::Overloaded,
        RetryReason::CannotMultiplex,
        RetryReason::ConnectionLost,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::ConnectFailed => "connect_failed",
            RetryReason::BackendRestarting => "backend_restarting",
            RetryReason::Overloaded => "overloaded",
            RetryReason::CannotMultiplex => "cannot_multiplex",
            RetryReason::ConnectionLost => "connection_lost",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Retries counted by reason.
#[derive(Debug, Default)]
pub struct RetryCounts([AtomicU64; RetryReason::ALL.len()]);

impl RetryCounts {
    /// Counts one retry.
    pub fn count(&self, reason: RetryReason) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Retries for `reason` so far.
    pub fn get(&self, reason: RetryReason) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }

    /// Retries for every reason so far.
    pub fn total(&self) -> u64 {
        RetryReason::ALL
            .iter()
            .map(|&reason| self.get(reason))
            .sum()
    }
}

/// What one backend server's requests looked like; kept with the server, so a reload that
/// keeps the server keeps its figures.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// From asking the pool for a connection to having one.
    pub queue_wait: Latencies,
    /// From sending the request to the end of the app's header block (time to first byte).
    pub response_header: Latencies,
    /// The app's answers by status class (fcgate's own error answers are not the app's).
    pub responses: StatusClasses,
    /// Requests sent again after an attempt on this server failed, by reason: the server that
    /// refused or dropped them, not the one that answered in the end.
    pub retries: RetryCounts,
}

/// The gateway-wide figures.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// Every response sent to a client, whoever produced it.
    pub requests: StatusClasses,
    /// From the request head to the end of the response body.
    pub request_duration: Latencies,
    /// Every retry, whichever server it left; the status page's figure, which (unlike the
    /// per-server counts) a server leaving the upstream does not take with it.
    retries: RetryCounts,
}

impl GatewayMetrics {
    /// Counts one retry.
    pub fn count_retry(&self, reason: RetryReason) {
        self.retries.count(reason);
    }

    /// Retries for `reason` so far.
    pub fn retries(&self, reason: RetryReason) -> u64 {
        self.retries.get(reason)
    }

    /// Retries for every reason so far.
    pub fn total_retries(&self) -> u64 {
        self.retries.total()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn millis(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let latencies = Latencies::default();
        latencies.observe(millis(1)); // exactly 0.001: the 1 ms bucket
        latencies.observe(millis(4)); // 5 ms bucket
        latencies.observe(Duration::from_secs(120)); // above every bound
        let snapshot = latencies.snapshot();
        let buckets = snapshot.buckets();
        assert_eq!(buckets.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!(buckets[2], (0.0005, 0));
        assert_eq!(buckets[3], (0.001, 1));
        assert_eq!(buckets[5], (0.005, 1));
        assert_eq!(buckets[LATENCY_BOUNDS.len() - 1], (60.0, 0));
        assert_eq!(*buckets.last().unwrap(), (f64::INFINITY, 1));
        assert_eq!(snapshot.count(), 3);
        assert!((snapshot.sum_seconds() - 120.005).abs() < 1e-9);
    }

    #[test]
    fn the_quantile_interpolates_inside_its_bucket_as_promql_does() {
        let latencies = Latencies::default();
        for _ in 0..100 {
            latencies.observe(millis(7)); // the (5 ms, 10 ms] bucket
        }
        let snapshot = latencies.snapshot();
        let p50 = snapshot.quantile(0.5).unwrap();
        assert!((p50 - 0.0075).abs() < 1e-9, "{p50}");
        let p99 = snapshot.quantile(0.99).unwrap();
        assert!((p99 - 0.00995).abs() < 1e-9, "{p99}");
        assert_eq!(LatencySnapshot::default().quantile(0.99), None);
    }

    #[test]
    fn a_quantile_over_an_interval_sees_only_that_interval() {
        let latencies = Latencies::default();
        for _ in 0..1000 {
            latencies.observe(Duration::from_secs(20));
        }
        let before = latencies.snapshot();
        for _ in 0..10 {
            latencies.observe(Duration::from_micros(100));
        }
        let recent = latencies.snapshot().since(&before);
        assert_eq!(recent.count(), 10);
        assert!(recent.quantile(0.99).unwrap() <= 0.0001);
        // Over all time: rank 505 of 1010 falls 495 into the 1000 in (10 s, 20 s].
        let p50 = latencies.snapshot().quantile(0.5).unwrap();
        assert!((p50 - (10.0 + 10.0 * 0.495)).abs() < 1e-9, "{p50}");
    }

    #[test]
    fn statuses_are_counted_by_class_and_nonsense_is_ignored() {
        let classes = StatusClasses::default();
        for status in [100, 200, 204, 302, 404, 502, 503, 0, 99, 600, 999] {
            classes.record(status);
        }
        assert_eq!(classes.counts(), [1, 2, 1, 1, 2]);
        assert_eq!(classes.total(), 7);
    }

    #[test]
    fn retries_are_counted_per_reason() {
        let metrics = GatewayMetrics::default();
        metrics.count_retry(RetryReason::Overloaded);
        metrics.count_retry(RetryReason::Overloaded);
        metrics.count_retry(RetryReason::ConnectionLost);
        assert_eq!(metrics.retries(RetryReason::Overloaded), 2);
        assert_eq!(metrics.retries(RetryReason::ConnectFailed), 0);
        assert_eq!(metrics.total_retries(), 3);
        let labels: Vec<_> = RetryReason::ALL
            .iter()
            .map(|reason| reason.label())
            .collect();
        assert_eq!(labels.len(), 5);
        assert!(RetryReason::ALL
            .iter()
            .enumerate()
            .all(|(index, reason)| reason.index() == index));
    }
}
