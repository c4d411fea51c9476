//! Counters, named in one place, and the end-of-run summary.
//!
//! Per topic: `received` (records that reached the spool's door), `spooled` (committed),
//! `duplicates` (retransmissions recognised and acknowledged again), `forwarded` (confirmed by
//! the sink). Dead letters are records on the dead-letter topic like any other.
//!
//! Refusals are counted per `(transport, reason)`: connections and publishes the gateway turned
//! away (authentication, ACL, TLS handshakes, over-limit connections, sequence regressions it
//! stored anyway). Reasons are short fixed labels (`auth_wrong_password`, `acl`, ...), never
//! device ids, so the set stays bounded.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::spool::Appended;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TopicCounters {
    pub received: u64,
    pub spooled: u64,
    pub duplicates: u64,
    pub forwarded: u64,
    /// Deleted unforwarded because the spool was full (policy `drop_oldest`).
    pub dropped: u64,
    /// Deleted unforwarded because they were older than `spool.max_age_ms`.
    pub expired: u64,
}

/// Shared counters; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    topics: Arc<Mutex<BTreeMap<String, TopicCounters>>>,
    refusals: Arc<Mutex<BTreeMap<(&'static str, &'static str), u64>>>,
}

impl Stats {
    fn with(&self, topic: &str, f: impl FnOnce(&mut TopicCounters)) {
        // A poisoned lock only means another thread panicked mid-update; counters stay usable.
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        match topics.get_mut(topic) {
            Some(c) => f(c),
            None => f(topics.entry(topic.to_owned()).or_default()),
        }
    }

    /// Counts the spool's verdict on records bound for `topics` (same order).
    pub fn record_appended<'a>(
        &self,
        topics: impl IntoIterator<Item = &'a str>,
        outcomes: &[Appended],
    ) {
        for (topic, outcome) in topics.into_iter().zip(outcomes) {
            self.with(topic, |c| {
                c.received += 1;
                match outcome {
                    Appended::Stored { .. } => c.spooled += 1,
                    Appended::Duplicate => c.duplicates += 1,
                }
            });
        }
    }

    /// Counts records that reached the spool but were not stored (the spool failed).
    pub fn record_refused(&self, topic: &str, n: u64) {
        self.with(topic, |c| c.received += n);
    }

    pub fn record_forwarded(&self, topic: &str, n: u64) {
        self.with(topic, |c| c.forwarded += n);
    }

    /// Counts rows the spool deleted unforwarded, by reason (`dropped_full` or `expired`).
    pub fn record_discarded(&self, topic: &str, reason: &str, n: u64) {
        self.with(topic, |c| {
            if reason == crate::spool::EXPIRED {
                c.expired += n;
            } else {
                c.dropped += n;
            }
        });
    }

    /// Counts one refusal on `transport` (`tcp`, `mqtt`, ...) for `reason`.
    pub fn record_refusal(&self, transport: &'static str, reason: &'static str) {
        let mut refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        *refusals.entry((transport, reason)).or_default() += 1;
    }

    /// Refusals so far for `transport` and `reason`.
    pub fn refusals(&self, transport: &str, reason: &str) -> u64 {
        let refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        refusals
            .iter()
            .filter(|((t, r), _)| *t == transport && *r == reason)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn snapshot(&self) -> Summary {
        Summary {
            refusals: self
                .refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(&(t, r), &n)| (format!("{t}/{r}"), n))
                .collect(),
            topics: self
                .topics
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Counters at one moment, printable as a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub topics: BTreeMap<String, TopicCounters>,
    /// `transport/reason` to count.
    pub refusals: BTreeMap<String, u64>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .topics
            .keys()
            .map(String::len)
            .chain(["topic".len(), "total".len()])
            .max()
            .unwrap_or(5);
        writeln!(
            f,
            "{:<width$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  {:>8}",
            "topic", "received", "spooled", "duplicates", "forwarded", "dropped", "expired"
        )?;
        let mut total = TopicCounters::default();
        for (topic, c) in &self.topics {
            writeln!(
                f,
                "{:<width$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  {:>8}",
                topic, c.received, c.spooled, c.duplicates, c.forwarded, c.dropped, c.expired
            )?;
            total.dropped += c.dropped;
            total.expired += c.expired;
            total.received += c.received;
            total.spooled += c.spooled;
            total.duplicates += c.duplicates;
            total.forwarded += c.forwarded;
        }
        write!(
            f,
            "{:<width$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  {:>8}",
            "total",
            total.received,
            total.spooled,
            total.duplicates,
            total.forwarded,
            total.dropped,
            total.expired
        )?;
        if !self.refusals.is_empty() {
            write!(f, "\nrefused:")?;
            for (what, n) in &self.refusals {
                write!(f, "\n  {what:<40} {n:>10}")?;
            }
        }
        Ok(())
    }
}
