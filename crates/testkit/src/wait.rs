//! Waiting in a test for an effect that has no event to await: a counter in another task or
//! process reaching a value. Polled, and bounded, so a broken invariant fails the test with what
//! was awaited instead of hanging it.

use std::time::Duration;

/// How often the condition is looked at: short next to the effects awaited (a connection
/// closing, a queue filling).
const POLL_EVERY: Duration = Duration::from_millis(5);

/// How long before the test fails: far beyond any effect on a loaded 2-core machine.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// Returns once `condition` holds, polling it every few milliseconds; panics naming `what` if it
/// does not within ten seconds. Tokio's clock, so a test with paused time waits in virtual time.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GIVE_UP_AFTER;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within {GIVE_UP_AFTER:?}: {what}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}
