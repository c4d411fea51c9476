//! Rate-limited warnings: a device sending garbage every 10 ms must not flood the log.
//!
//! [`allow`] says whether a warning under a key may be logged now: at most one per key per
//! [`PERIOD`]; the ones held back are counted and reported with the next one that is logged
//! (`suppressed = N`). Keys are fixed labels (a refusal reason), so the table stays small.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// At most one warning per key in this period.
pub const PERIOD: Duration = Duration::from_secs(10);

fn table() -> &'static Mutex<HashMap<&'static str, (Instant, u64)>> {
    static TABLE: OnceLock<Mutex<HashMap<&'static str, (Instant, u64)>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

/// `Some(suppressed)` if a warning under `key` may be logged now, with the number held back
/// since the last one; `None` if it should be held back (and is counted).
pub fn allow(key: &'static str) -> Option<u64> {
    let mut table = table().lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    match table.get_mut(key) {
        Some((last, held)) if now.duration_since(*last) < PERIOD => {
            *held += 1;
            None
        }
        Some((last, held)) => {
            *last = now;
            Some(std::mem::take(held))
        }
        None => {
            table.insert(key, (now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_second_warning_within_the_period_is_held_back_and_counted() {
        assert_eq!(super::allow("ratelog-test"), Some(0));
        assert_eq!(super::allow("ratelog-test"), None);
        assert_eq!(super::allow("ratelog-test"), None);
    }
}
