//! What the spool says about its own work as it goes: each commit and sync, the rows it deleted
//! unforwarded, the sequence anomalies it stored, the rules' output, whether it is full.
//!
//! The spool calls an [`Observer`] and knows nothing of how the gateway counts, names metrics or
//! shows a status page: the gateway's `observe::stats` implements the trait. So the storage
//! layer can be read, tested and reused without the rest (a test passes `()`, which hears
//! nothing).
//!
//! Invariant: an observer only counts. It is called on the writer and syncer threads, inside
//! the commit path, so it must not block or call back into the spool.

use std::sync::Arc;

/// Why the spool deleted a row that was never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    /// Older than `spool.max_age_ms`.
    Expired,
    /// Kafka refused it for good (too large, a topic it may not write).
    Quarantined,
    /// Pushed out by `spool.when_full = "drop_oldest"`.
    Full,
}

/// A sequence anomaly the spool stored and marked rather than refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// A seq stored before came again with another time: the device reset its seq.
    SeqRegression,
    /// A seq far below the session's highest, beyond what the window remembers.
    PossibleDuplicate,
}

impl Anomaly {
    /// The reason it is counted and logged under.
    pub fn reason(self) -> &'static str {
        match self {
            Anomaly::SeqRegression => "seq_regression",
            Anomaly::PossibleDuplicate => "possible_duplicate",
        }
    }
}

/// Hears what the spool does; every method defaults to nothing.
pub trait Observer: Send + Sync + 'static {
    /// A group commit took `seconds` and stored `events` events.
    fn committed(&self, _seconds: f64, _events: usize) {}
    /// A sync of the WAL took `seconds`.
    fn synced(&self, _seconds: f64) {}
    /// `n` rows bound for `topic` were deleted unforwarded.
    fn discarded(&self, _topic: &str, _why: Discarded, _n: u64) {}
    /// An event of `device_id` was stored with a sequence anomaly.
    fn anomaly(&self, _device_id: &str, _anomaly: Anomaly) {}
    /// What the commit hook counted under `name` (a rule, today) in one commit: records it
    /// emitted, and events it saw too late to count.
    fn hook_output(&self, _name: &str, _emitted: u64, _late: u64) {}
    /// The spool became full (appends refused) or has room again.
    fn full(&self, _full: bool) {}
}

/// Hears nothing: for tools and tests that have no one to tell.
impl Observer for () {}

/// The observer the spool's threads share.
pub(super) type Shared = Arc<dyn Observer>;
