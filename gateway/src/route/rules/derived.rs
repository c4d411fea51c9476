//! What a rule emits: a derived event and what it came from. Every kind's step returns these
//! (`kinds`, `window`, `threshold`, `geofence`); the rule set turns them into records.

use tributary_protocol::Event;

/// A derived event and what it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub event: Event,
    /// The source events' seqs: the first and how many (the last is `event.seq`).
    pub first_seq: u64,
    pub count: u64,
    /// Headers of this kind of output (a window's bounds, an alert's state).
    pub headers: Vec<(String, String)>,
    /// Told apart from other output of the same rule and source event by this, in its
    /// `event-id` (`@{tag}`): a hopping window's start.
    pub tag: Option<String>,
}
