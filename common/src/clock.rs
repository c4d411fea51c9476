//! The wall clock: milliseconds (and microseconds) since the Unix epoch, read by every part of
//! the gateway through [`now_ms`] and [`now_us`], never through `SystemTime` directly.
//!
//! # Design
//! One function so that time has one seam: a test may [`freeze`] the clock of its own thread
//! at a chosen instant and [`advance`] it, and everything the thread calls reads that time
//! (a session's `received_ms`, a spool row's age, a rule's window). Other threads, and every
//! thread of a production gateway, read the system clock: the override is per thread, so tests
//! running side by side never see each other's time.
//!
//! Durations (timeouts, backoffs, rates) use `std::time::Instant` or tokio's clock, which
//! `tokio::time::pause` already controls; this module is for instants that are stored or sent.
//!
//! # Invariants
//! - Never panics: a system clock before 1970 reads as 0.
//! - A frozen clock only moves by [`advance`]; dropping the [`Frozen`] guard thaws it.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// This thread's frozen time in microseconds, if a test froze it.
    static FROZEN_US: Cell<Option<i64>> = const { Cell::new(None) };
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    if let Some(us) = FROZEN_US.with(Cell::get) {
        return us;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    now_us().div_euclid(1000)
}

/// Freezes this thread's clock at `ms` (since the Unix epoch) until the guard drops.
#[must_use = "the clock thaws when the guard drops"]
pub fn freeze(ms: i64) -> Frozen {
    let before = FROZEN_US.with(|f| f.replace(Some(ms.saturating_mul(1000))));
    Frozen { before }
}

/// Moves this thread's frozen clock on by `ms`; does nothing when it is not frozen.
pub fn advance(ms: i64) {
    FROZEN_US.with(|f| f.set(f.get().map(|us| us.saturating_add(ms.saturating_mul(1000)))));
}

/// A frozen clock; dropping it restores what the thread read before.
#[derive(Debug)]
pub struct Frozen {
    before: Option<i64>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        FROZEN_US.with(|f| f.set(self.before));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_reads_what_it_was_set_to_and_moves_only_when_advanced() {
        let live = now_ms();
        {
            let _frozen = freeze(1_000);
            assert_eq!(now_ms(), 1_000);
            assert_eq!(now_us(), 1_000_000);
            advance(250);
            assert_eq!(now_ms(), 1_250);
            // Another thread reads the system clock.
            let other = std::thread::spawn(now_ms).join().unwrap_or(0);
            assert!(other >= live);
        }
        assert!(now_ms() >= live, "thawed when the guard dropped");
    }

    #[test]
    fn advancing_a_live_clock_changes_nothing() {
        advance(1_000_000);
        let now = now_ms();
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        assert!((system - now).abs() < 60_000);
    }
}
