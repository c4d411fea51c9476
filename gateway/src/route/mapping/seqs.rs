//! Seqs for devices that send none.

use std::sync::atomic::{AtomicU64, Ordering};

/// Seqs for devices that send none: strictly increasing over every mapped event of this run of
/// the gateway (the time in microseconds, or one more than the last), in a session that names
/// this run (its start in milliseconds), so an `event-id` is never issued twice.
#[derive(Debug)]
pub struct AssignedSeqs {
    session: u64,
    last: AtomicU64,
}

impl AssignedSeqs {
    /// The one the whole process shares: every connector's assigned seqs come from it, so two
    /// connectors can never hand the same device the same seq in the same session.
    pub fn global() -> &'static AssignedSeqs {
        static GLOBAL: std::sync::OnceLock<AssignedSeqs> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(AssignedSeqs::new)
    }

    /// A fresh one; outside tests, [`AssignedSeqs::global`] is the one to use.
    pub(super) fn new() -> Self {
        Self {
            session: (tributary_common::clock::now_ms().max(1)) as u64,
            last: AtomicU64::new(0),
        }
    }

    /// The next seq, with the session it belongs to.
    pub fn next(&self) -> (u64, u64) {
        let now_us = tributary_common::clock::now_us().max(0) as u64;
        let after = |prev: u64| now_us.max(prev.saturating_add(1));
        // The closure always returns `Some`, so this is always `Ok(previous)`.
        let prev = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |prev| {
                Some(after(prev))
            })
            .unwrap_or_else(|prev| prev);
        (after(prev), self.session)
    }
}
