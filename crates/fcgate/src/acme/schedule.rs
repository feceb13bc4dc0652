//! When to ask the ACME CA for a certificate: pure arithmetic on the certificate in force and
//! the failures so far, tested without a clock or a CA.
//!
//! A certificate is renewed once two thirds of its lifetime have passed (Let's Encrypt's
//! advice: 30 days before the end of a 90-day certificate, and proportionally for the short
//! certificates CAs are moving to). A missing certificate, or one that does not cover every
//! configured name, is asked for at once. A failed attempt is retried after a delay that
//! doubles from a minute to an hour, so a CA that is down or a challenge that cannot pass is
//! not hammered, while a certificate with days left is still renewed in time.

use std::time::{Duration, SystemTime};

/// The first retry after a failure.
pub(super) const FIRST_RETRY: Duration = Duration::from_secs(60);
/// The longest wait between two attempts after failures.
pub(super) const LONGEST_RETRY: Duration = Duration::from_secs(3600);

/// The validity of the certificate in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Its notBefore.
    pub not_before: SystemTime,
    /// Its notAfter.
    pub not_after: SystemTime,
}

impl Validity {
    /// When it is due for renewal: two thirds into its lifetime.
    pub fn renewal_due(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_after - lifetime / 3
    }
}

/// How long to wait before the next attempt: until renewal is due (zero when it is, or when
/// there is no usable certificate), and after `failures` failed attempts in a row no less
/// than the backoff.
pub(super) fn next_attempt_in(
    now: SystemTime,
    current: Option<Validity>,
    failures: u32,
) -> Duration {
    let due = current
        .map(|validity| {
            validity
                .renewal_due()
                .duration_since(now)
                .unwrap_or_default()
        })
        .unwrap_or_default();
    due.max(retry_delay(failures))
}

/// The wait after `failures` failed attempts in a row: none before the first failure, then a
/// minute, doubling, at most an hour.
pub(super) fn retry_delay(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        failures => {
            let doublings = (failures - 1).min(16);
            FIRST_RETRY
                .saturating_mul(1u32 << doublings)
                .min(LONGEST_RETRY)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn at(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + DAY * u32::try_from(days).unwrap_or(0)
    }

    fn ninety_days_from(start: u64) -> Validity {
        Validity {
            not_before: at(start),
            not_after: at(start + 90),
        }
    }

    #[test]
    fn a_ninety_day_certificate_is_renewed_thirty_days_before_it_ends() {
        let validity = ninety_days_from(100);
        assert_eq!(validity.renewal_due(), at(160));
        assert_eq!(next_attempt_in(at(100), Some(validity), 0), DAY * 60);
        assert_eq!(next_attempt_in(at(159), Some(validity), 0), DAY);
        assert_eq!(next_attempt_in(at(160), Some(validity), 0), Duration::ZERO);
        // Past due (the process was down): at once.
        assert_eq!(next_attempt_in(at(185), Some(validity), 0), Duration::ZERO);
    }

    #[test]
    fn a_short_lived_certificate_is_renewed_in_proportion() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let validity = Validity {
            not_before: start,
            not_after: start + Duration::from_secs(30),
        };
        assert_eq!(
            next_attempt_in(start, Some(validity), 0),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn no_certificate_is_asked_for_at_once() {
        assert_eq!(next_attempt_in(at(5), None, 0), Duration::ZERO);
    }

    #[test]
    fn failures_back_off_from_a_minute_to_an_hour() {
        assert_eq!(retry_delay(0), Duration::ZERO);
        assert_eq!(retry_delay(1), Duration::from_secs(60));
        assert_eq!(retry_delay(2), Duration::from_secs(120));
        assert_eq!(retry_delay(6), Duration::from_secs(1920));
        assert_eq!(retry_delay(7), LONGEST_RETRY);
        assert_eq!(retry_delay(u32::MAX), LONGEST_RETRY);
        // Due for renewal, but the last attempt failed: the backoff decides.
        let validity = ninety_days_from(0);
        assert_eq!(
            next_attempt_in(at(170), Some(validity), 2),
            Duration::from_secs(120)
        );
        // Not yet due: the schedule decides.
        assert_eq!(next_attempt_in(at(100 - 90), Some(validity), 1), DAY * 50);
    }
}
