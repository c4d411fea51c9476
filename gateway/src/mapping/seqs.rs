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

    pub fn new() -> Self {
        Self {
            session: (crate::record::now_ms().max(1)) as u64,
            last: AtomicU64::new(0),
        }
    }

    /// The next seq, with the session it belongs to.
    pub fn next(&self) -> (u64, u64) {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = now_us.max(prev.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (next, self.session),
                Err(actual) => prev = actual,
            }
        }
    }
}

impl Default for AssignedSeqs {
    fn default() -> Self {
        Self::new()
    }
}
