//! Multiplexing: several requests in flight on one pooled connection (FastCGI 1.0 §3.3).
//!
//! Whether it is on is decided per backend by [`MultiplexState`] (pure: the configured
//! [`Multiplexing`] mode, the backend's FCGI_GET_VALUES answer, and what the backend did since),
//! and how far: `max_reqs_per_conn`, lowered to FCGI_MAX_REQS / FCGI_MAX_CONNS when the backend
//! announces them, and for a while after FCGI_OVERLOADED. While it is on, the pool keeps its
//! connections in a shared list instead of the idle stack (`pool/shared.rs`): a checkout takes a
//! request slot on the least-loaded connection that has one, opens a new connection only when
//! none has (the cap still counts connections), and otherwise waits in the same FIFO queue; a
//! request that ends hands its slot on that connection straight to the oldest waiter.
//!
//! Turning it off (FCGI_CANT_MPX_CONN, or a protocol error with several requests in flight)
//! is for good: connections with nothing in flight go back to the idle stack at once, the others
//! when their last request ends.

use std::time::{Duration, Instant};

use super::pool_config::Multiplexing;
use super::probe::BackendValues;

/// How long a lowered per-connection limit holds before it rises again by one, under demand.
const RAISE_HOLD: Duration = Duration::from_secs(1);

/// Whether this backend's connections are shared, and by how many requests each.
#[derive(Debug)]
pub(super) struct MultiplexState {
    mode: Multiplexing,
    enabled: bool,
    /// Turned off because the backend showed it does not multiplex; never on again.
    refused: bool,
    /// Requests per connection in force.
    per_connection: usize,
    /// The most `per_connection` may rise to: the setting, or the backend's figure.
    ceiling: usize,
    lowered_at: Option<Instant>,
}

impl MultiplexState {
    pub(super) fn new(mode: Multiplexing, keep_conn: bool, max_reqs_per_conn: usize) -> Self {
        // Without KEEP_CONN the backend closes after every request: nothing to share.
        let mode = if keep_conn { mode } else { Multiplexing::Off };
        let limit = max_reqs_per_conn.max(1);
        MultiplexState {
            mode,
            enabled: mode == Multiplexing::Force,
            refused: false,
            per_connection: limit,
            ceiling: limit,
            lowered_at: None,
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(super) fn per_connection(&self) -> usize {
        self.per_connection
    }

    /// Whether the backend must be asked FCGI_GET_VALUES for this mode to decide.
    pub(super) fn wants_backend_values(&self) -> bool {
        matches!(self.mode, Multiplexing::Auto | Multiplexing::On)
    }

    /// The backend answered FCGI_GET_VALUES; returns true when multiplexing was just turned on.
    pub(super) fn learned(&mut self, values: &BackendValues, configured_limit: usize) -> bool {
        if let Some(max_reqs) = values.max_reqs {
            let per_connection = max_reqs / values.max_conns.unwrap_or(1).max(1);
            self.ceiling = configured_limit.min(per_connection).max(1);
            self.per_connection = self.per_connection.min(self.ceiling);
        }
        let wanted = match self.mode {
            Multiplexing::Off => false,
            Multiplexing::Auto => values.mpxs_conns == Some(true),
            Multiplexing::On => values.mpxs_conns != Some(false),
            Multiplexing::Force => true,
        };
        let turned_on = wanted && !self.enabled && !self.refused;
        self.enabled = wanted && !self.refused;
        turned_on
    }

    /// Why multiplexing was turned on by a GET_VALUES answer that said `announced` about
    /// FCGI_MPXS_CONNS, for the log line: an empty answer (flup's) must not read as a yes.
    pub(super) fn reason(&self, announced: Option<bool>) -> &'static str {
        match (announced, self.mode) {
            (_, Multiplexing::Force) => "multiplex = force, whatever the backend says",
            (Some(true), _) => "the backend announces FCGI_MPXS_CONNS=1",
            (None, _) => "multiplex = on, and the backend announced nothing about FCGI_MPXS_CONNS",
            (Some(false), _) => "as configured",
        }
    }

    /// The backend did not answer FCGI_GET_VALUES: `on` multiplexes anyway, `auto` does not.
    pub(super) fn no_backend_values(&mut self) -> bool {
        let turned_on = self.mode == Multiplexing::On && !self.enabled && !self.refused;
        self.enabled |= turned_on;
        turned_on
    }

    /// The backend showed it does not multiplex; returns true when that changed anything.
    pub(super) fn refuse(&mut self) -> bool {
        let was = self.enabled;
        self.enabled = false;
        self.refused = true;
        was
    }

    /// FCGI_OVERLOADED on a connection carrying `in_flight` requests: it takes fewer.
    pub(super) fn overloaded(&mut self, in_flight: usize, now: Instant) -> bool {
        let limit = in_flight.saturating_sub(1).max(1);
        self.lowered_at = Some(now);
        if limit < self.per_connection {
            self.per_connection = limit;
            return true;
        }
        false
    }

    /// A request ended well; with others waiting, a lowered limit rises by one per hold.
    pub(super) fn record_success(&mut self, demand: bool, now: Instant) -> bool {
        let held = self
            .lowered_at
            .is_none_or(|at| now.duration_since(at) >= RAISE_HOLD);
        if !demand || !held || self.per_connection >= self.ceiling {
            return false;
        }
        self.per_connection += 1;
        self.lowered_at = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned_from(mode: Multiplexing, announced: Option<bool>) -> Option<&'static str> {
        let mut state = MultiplexState::new(mode, true, 8);
        let values = BackendValues {
            max_conns: None,
            max_reqs: None,
            mpxs_conns: announced,
        };
        state
            .learned(&values, 8)
            .then(|| state.reason(values.mpxs_conns))
    }

    #[test]
    fn the_log_says_why_multiplexing_was_turned_on() {
        assert_eq!(
            learned_from(Multiplexing::Auto, Some(true)),
            Some("the backend announces FCGI_MPXS_CONNS=1")
        );
        // flup answers GET_VALUES with an empty list: not a yes from the backend.
        assert_eq!(
            learned_from(Multiplexing::On, None),
            Some("multiplex = on, and the backend announced nothing about FCGI_MPXS_CONNS")
        );
        assert_eq!(learned_from(Multiplexing::Auto, None), None);
        assert_eq!(learned_from(Multiplexing::On, Some(false)), None);
    }
}
