//! Slowing down repeated login failures from one address.
//!
//! After [`FREE_FAILURES`] failed logins from an IP address, each further attempt from it waits
//! before it is checked: 100 ms, doubling per failure, at most [`MAX_DELAY`]. Only
//! [`FORGET_AFTER`] without a failure clears the address: a success does not, or a guesser
//! holding one valid credential could reset the wait for all its other guesses (a device whose
//! password was verified recently skips the wait anyway). Waiting (rather than refusing outright)
//! keeps a misconfigured device behind the same NAT as good ones from locking them out, while a
//! password guesser gets a few attempts a minute. The table is bounded: past [`MAX_ADDRESSES`]
//! addresses, the oldest entries are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures that cost nothing.
pub const FREE_FAILURES: u32 = 3;
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// A quiet address is forgotten after this long.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// How long an attempt from `ip` waits before it is checked.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&ip) {
            Some(&(n, last)) if n > FREE_FAILURES && last.elapsed() < FORGET_AFTER => {
                let doublings = (n - FREE_FAILURES - 1).min(16);
                (Duration::from_millis(100) * (1 << doublings)).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&ip) {
            failures.retain(|_, (_, last)| last.elapsed() < FORGET_AFTER);
            if failures.len() >= MAX_ADDRESSES {
                failures.clear();
            }
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_the_free_failures_and_only_quiet_clears_them() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            t.failed(ip);
        }
        assert_eq!(t.delay(ip), Duration::ZERO);
        t.failed(ip);
        assert_eq!(t.delay(ip), Duration::from_millis(100));
        t.failed(ip);
        assert_eq!(t.delay(ip), Duration::from_millis(200));
        for _ in 0..20 {
            t.failed(ip);
        }
        assert_eq!(t.delay(ip), MAX_DELAY);
        assert_eq!(t.delay(other), Duration::ZERO);
        t.failures.lock().unwrap().get_mut(&ip).unwrap().1 -= FORGET_AFTER;
        assert_eq!(t.delay(ip), Duration::ZERO, "forgotten after a quiet spell");
    }
}
