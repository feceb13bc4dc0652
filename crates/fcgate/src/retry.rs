//! When a request is sent to a backend again, and where: the decision table of
//! docs/configuration.md ("Failures and retries") as a pure policy. [`Attempts`] is fed each
//! failure of one request with the time and a view of which servers are left, and answers
//! whether to try again (after what pause, for which reason) or give up, and whether the
//! failure counts against the server's health. `proxy.rs` carries the answer out; nothing here
//! sleeps, connects or reads a clock, so every row of the table is a unit test.

use std::time::{Duration, Instant};

use crate::metrics::RetryReason;

/// Tries for a request the backend refuses with FCGI_OVERLOADED (or FCGI_CANT_MPX_CONN):
/// bounded, so overload turns into a prompt 503.
pub const MAX_REFUSED_ANSWERS: u32 = 3;
/// The pause before the n-th retry after FCGI_OVERLOADED is n times this.
pub const OVERLOADED_BACKOFF: Duration = Duration::from_millis(20);
/// Pauses between connects to a backend that refuses them (restarting, say): doubling from
/// the first to this, within `connect_timeout` in all.
pub const REFUSED_BACKOFF: Duration = Duration::from_millis(25);
/// The longest of those pauses.
pub const MAX_REFUSED_BACKOFF: Duration = Duration::from_millis(400);

/// How one attempt failed before the application answered anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connect failed: refused, timed out, or the listen queue was full. Nothing reached
    /// the application.
    Connect {
        /// It timed out (a refused connect may be a restart; a timeout is not retried on the
        /// same server).
        timeout: bool,
    },
    /// END_REQUEST with FCGI_OVERLOADED before any output: not processed.
    Overloaded,
    /// END_REQUEST with FCGI_CANT_MPX_CONN: not processed; the pool stopped multiplexing.
    CannotMultiplex,
    /// The connection died before the backend sent anything: the application may or may not
    /// have read the request.
    ConnectionLost {
        /// The connection had served requests before (most likely closed while pooled).
        reused: bool,
        /// It was a shared connection the backend refused to multiplex on.
        multiplexing_refused: bool,
        /// Some of the request was written. When none was, the application never saw it and
        /// it goes again whatever its method (a worker that exits after its last request
        /// closed the connection the request was handed).
        sent: bool,
    },
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Try again or give up.
    pub next: Next,
    /// The failure counts against the server's health (passive health, `max_fails`).
    pub server_failed: bool,
}

/// Try again or give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the request again after `pause` (zero: at once), to the server
    /// [`Attempts::ruled_out`] leaves, on a fresh connection if
    /// [`Attempts::wants_fresh_connection`].
    Retry {
        /// Why, for the metrics.
        reason: RetryReason,
        /// How long to wait first.
        pause: Duration,
    },
    /// Answer the failure to the client.
    GiveUp,
}

/// What does not change between the attempts of one request.
#[derive(Debug, Clone, Copy)]
pub struct RetryRules {
    /// The request may be sent twice (its method is idempotent, or `retry_non_idempotent`).
    pub repeatable: bool,
    /// How long a refused connect is tried again when there is no other server.
    pub connect_timeout: Duration,
}

/// One request's attempts so far.
#[derive(Debug)]
pub struct Attempts {
    ruled_out: Vec<usize>,
    overloaded: u32,
    cannot_multiplex: u32,
    fresh_connection: bool,
    refused_since: Option<Instant>,
    refused_backoff: Duration,
}

impl Default for Attempts {
    fn default() -> Self {
        Attempts {
            ruled_out: Vec::new(),
            overloaded: 0,
            cannot_multiplex: 0,
            fresh_connection: false,
            refused_since: None,
            refused_backoff: REFUSED_BACKOFF,
        }
    }
}

impl Attempts {
    /// Servers not to send this request to again.
    pub fn ruled_out(&self) -> &[usize] {
        &self.ruled_out
    }

    /// The next attempt must not use a pooled connection.
    pub fn wants_fresh_connection(&self) -> bool {
        self.fresh_connection
    }

    /// FCGI_OVERLOADED answers so far.
    pub fn overloaded_answers(&self) -> u32 {
        self.overloaded
    }

    /// FCGI_CANT_MPX_CONN answers so far.
    pub fn cannot_multiplex_answers(&self) -> u32 {
        self.cannot_multiplex
    }

    /// Decides after `failure` of an attempt on server `server` at `now`. `has_server` says
    /// whether any server is left when the given ones are ruled out (the upstream's pick).
    pub fn after(
        &mut self,
        failure: Failure,
        server: usize,
        now: Instant,
        rules: &RetryRules,
        has_server: impl Fn(&[usize]) -> bool,
    ) -> Verdict {
        match failure {
            Failure::Connect { timeout } => {
                self.ruled_out.push(server);
                if has_server(&self.ruled_out) {
                    return retry(RetryReason::ConnectFailed, Duration::ZERO, true);
                }
                // Nowhere else to go, and a refused connect may be a backend restarting: try
                // again with back-off for up to connect_timeout.
                let give_up_at = *self.refused_since.get_or_insert(now) + rules.connect_timeout;
                if timeout || now + self.refused_backoff > give_up_at {
                    return give_up(true);
                }
                let pause = self.refused_backoff;
                self.refused_backoff = (self.refused_backoff * 2).min(MAX_REFUSED_BACKOFF);
                self.ruled_out.clear();
                retry(RetryReason::BackendRestarting, pause, true)
            }
            Failure::Overloaded => {
                self.overloaded += 1;
                if self.overloaded >= MAX_REFUSED_ANSWERS {
                    return give_up(false);
                }
                retry(
                    RetryReason::Overloaded,
                    OVERLOADED_BACKOFF * self.overloaded,
                    false,
                )
            }
            Failure::CannotMultiplex => {
                self.cannot_multiplex += 1;
                if self.cannot_multiplex >= MAX_REFUSED_ANSWERS {
                    return give_up(false);
                }
                retry(RetryReason::CannotMultiplex, Duration::ZERO, false)
            }
            Failure::ConnectionLost {
                reused,
                multiplexing_refused,
                sent,
            } => {
                if sent && !rules.repeatable {
                    return give_up(false);
                }
                if (reused || multiplexing_refused) && !self.fresh_connection {
                    // Most likely closed by the backend while pooled (a recycled worker):
                    // once more, on a fresh connection to the same server.
                    self.fresh_connection = true;
                    return retry(RetryReason::ConnectionLost, Duration::ZERO, false);
                }
                // A fresh connection died: not this server again.
                self.ruled_out.push(server);
                if !has_server(&self.ruled_out) {
                    return give_up(true);
                }
                retry(RetryReason::ConnectionLost, Duration::ZERO, true)
            }
        }
    }
}

fn retry(reason: RetryReason, pause: Duration, server_failed: bool) -> Verdict {
    Verdict {
        next: Next::Retry { reason, pause },
        server_failed,
    }
}

fn give_up(server_failed: bool) -> Verdict {
    Verdict {
        next: Next::GiveUp,
        server_failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: RetryRules = RetryRules {
        repeatable: true,
        connect_timeout: Duration::from_secs(1),
    };

    /// Two servers, 0 and 1: a server is left unless both are ruled out.
    fn two_servers(ruled_out: &[usize]) -> bool {
        !(ruled_out.contains(&0) && ruled_out.contains(&1))
    }

    fn one_server(ruled_out: &[usize]) -> bool {
        !ruled_out.contains(&0)
    }

    fn retried(reason: RetryReason, pause_ms: u64, server_failed: bool) -> Verdict {
        retry(reason, Duration::from_millis(pause_ms), server_failed)
    }

    #[test]
    fn a_failed_connect_goes_to_another_server_and_counts_against_this_one() {
        let mut attempts = Attempts::default();
        let now = Instant::now();
        let failure = Failure::Connect { timeout: false };
        assert_eq!(
            attempts.after(failure, 0, now, &RULES, two_servers),
            retried(RetryReason::ConnectFailed, 0, true)
        );
        assert_eq!(attempts.ruled_out(), [0]);
        assert!(!attempts.wants_fresh_connection());
    }

    #[test]
    fn a_refused_connect_to_the_only_server_backs_off_until_connect_timeout() {
        let mut attempts = Attempts::default();
        let start = Instant::now();
        let refused = Failure::Connect { timeout: false };
        let mut now = start;
        let mut pauses = Vec::new();
        loop {
            let verdict = attempts.after(refused, 0, now, &RULES, one_server);
            assert!(verdict.server_failed);
            match verdict.next {
                Next::Retry { reason, pause } => {
                    assert_eq!(reason, RetryReason::BackendRestarting);
                    assert!(attempts.ruled_out().is_empty(), "the one server again");
                    pauses.push(pause.as_millis());
                    now += pause;
                }
                Next::GiveUp => break,
            }
        }
        assert_eq!(pauses, [25, 50, 100, 200, 400]);
        assert!(now.duration_since(start) <= RULES.connect_timeout);
    }

    #[test]
    fn a_connect_timeout_to_the_only_server_gives_up_at_once() {
        let mut attempts = Attempts::default();
        let verdict = attempts.after(
            Failure::Connect { timeout: true },
            0,
            Instant::now(),
            &RULES,
            one_server,
        );
        assert_eq!(verdict, give_up(true));
    }

    #[test]
    fn overloaded_is_tried_three_times_with_growing_pauses_and_blames_no_server() {
        let mut attempts = Attempts::default();
        let now = Instant::now();
        let mut verdicts = Vec::new();
        for _ in 0..3 {
            verdicts.push(attempts.after(Failure::Overloaded, 0, now, &RULES, one_server));
        }
        assert_eq!(
            verdicts,
            [
                retried(RetryReason::Overloaded, 20, false),
                retried(RetryReason::Overloaded, 40, false),
                give_up(false),
            ]
        );
        assert_eq!(attempts.overloaded_answers(), 3);
    }

    #[test]
    fn cannot_multiplex_is_tried_three_times_at_once() {
        let mut attempts = Attempts::default();
        let now = Instant::now();
        let first = attempts.after(Failure::CannotMultiplex, 0, now, &RULES, one_server);
        assert_eq!(first, retried(RetryReason::CannotMultiplex, 0, false));
        attempts.after(Failure::CannotMultiplex, 0, now, &RULES, one_server);
        let third = attempts.after(Failure::CannotMultiplex, 0, now, &RULES, one_server);
        assert_eq!(third, give_up(false));
        assert_eq!(attempts.cannot_multiplex_answers(), 3);
    }

    #[test]
    fn a_reused_connection_lost_is_retried_once_on_a_fresh_one_to_the_same_server() {
        let mut attempts = Attempts::default();
        let now = Instant::now();
        let lost = Failure::ConnectionLost {
            reused: true,
            multiplexing_refused: false,
            sent: true,
        };
        assert_eq!(
            attempts.after(lost, 0, now, &RULES, one_server),
            retried(RetryReason::ConnectionLost, 0, false)
        );
        assert!(attempts.wants_fresh_connection());
        assert!(attempts.ruled_out().is_empty());
        // The fresh connection dies too: this server is out, and there is no other.
        let fresh_lost = Failure::ConnectionLost {
            reused: false,
            multiplexing_refused: false,
            sent: true,
        };
        assert_eq!(
            attempts.after(fresh_lost, 0, now, &RULES, one_server),
            give_up(true)
        );
    }

    #[test]
    fn a_fresh_connection_lost_goes_to_another_server() {
        let mut attempts = Attempts::default();
        let lost = Failure::ConnectionLost {
            reused: false,
            multiplexing_refused: false,
            sent: true,
        };
        assert_eq!(
            attempts.after(lost, 0, Instant::now(), &RULES, two_servers),
            retried(RetryReason::ConnectionLost, 0, true)
        );
        assert_eq!(attempts.ruled_out(), [0]);
    }

    #[test]
    fn a_refused_multiplexed_connection_gets_one_fresh_try() {
        let mut attempts = Attempts::default();
        let refused = Failure::ConnectionLost {
            reused: false,
            multiplexing_refused: true,
            sent: true,
        };
        assert_eq!(
            attempts.after(refused, 0, Instant::now(), &RULES, one_server),
            retried(RetryReason::ConnectionLost, 0, false)
        );
        assert!(attempts.wants_fresh_connection());
    }

    #[test]
    fn a_request_that_may_not_be_repeated_is_never_sent_again_after_a_lost_connection() {
        let rules = RetryRules {
            repeatable: false,
            ..RULES
        };
        for reused in [true, false] {
            let mut attempts = Attempts::default();
            let lost = Failure::ConnectionLost {
                reused,
                multiplexing_refused: false,
                sent: true,
            };
            assert_eq!(
                attempts.after(lost, 0, Instant::now(), &rules, two_servers),
                give_up(false)
            );
        }
        // Nothing reached the application: a failed connect is retried whatever the method.
        let mut attempts = Attempts::default();
        let verdict = attempts.after(
            Failure::Connect { timeout: false },
            0,
            Instant::now(),
            &rules,
            two_servers,
        );
        assert_eq!(verdict, retried(RetryReason::ConnectFailed, 0, true));
    }

    #[test]
    fn a_request_that_may_not_be_repeated_goes_again_when_not_a_byte_of_it_was_sent() {
        let rules = RetryRules {
            repeatable: false,
            ..RULES
        };
        let mut attempts = Attempts::default();
        let unsent = Failure::ConnectionLost {
            reused: true,
            multiplexing_refused: false,
            sent: false,
        };
        assert_eq!(
            attempts.after(unsent, 0, Instant::now(), &rules, one_server),
            retried(RetryReason::ConnectionLost, 0, false)
        );
        assert!(attempts.wants_fresh_connection());
    }
}
