//! Waiting for something to happen, with a bound.

use std::time::{Duration, Instant};

/// Generous bound for anything that should take milliseconds: a ready line,
/// an exit, a socket answering. Only a broken build ever waits this long.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until `condition` holds, checking every few milliseconds.
///
/// # Panics
///
/// If it does not hold within `timeout`, naming `what` was awaited.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut calls = 0;
        wait_until("the third call", EVENT_TIMEOUT, || {
            calls += 1;
            calls == 3
        });
        assert_eq!(calls, 3);
    }

    #[test]
    #[should_panic(expected = "timed out waiting for nothing")]
    fn panics_at_the_deadline() {
        wait_until("nothing", Duration::from_millis(20), || false);
    }
}
