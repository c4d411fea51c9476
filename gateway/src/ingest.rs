//! Ingest: accepting events from devices and handing them to the spool.
//!
//! [`Ingest`] is what every listener shares: it turns validated events into records (through
//! the [`Router`]), appends them together with any dead letters in one spool request, counts the
//! outcome, and returns one [`Appended`] per event. A listener acknowledges an event to its
//! device only after that call returned `Ok`, so an acknowledgement always means "committed".
//!
//! - [`tcp`]: the compact framed protocol; ACK after commit.
//! - [`mqtt`]: the embedded rumqttd broker, read through its in-process link.

pub mod mqtt;
pub mod tcp;

use tributary_protocol::Event;

use crate::record::Record;
use crate::route::{DeadLetter, Router};
use crate::spool::{Appended, Spool, SpoolError};
use crate::stats::Stats;

/// The path from a listener into the spool.
#[derive(Clone)]
pub struct Ingest {
    spool: Spool,
    router: Router,
    stats: Stats,
}

impl Ingest {
    pub fn new(spool: Spool, router: Router, stats: Stats) -> Self {
        Self {
            spool,
            router,
            stats,
        }
    }

    /// Stores valid `events` and `dead_letters` in one commit. Returns the outcome of each
    /// event, in order. Dead letters are logged here, with their reason.
    pub async fn submit(
        &self,
        events: Vec<Event>,
        dead_letters: Vec<DeadLetter>,
    ) -> Result<Vec<Appended>, SpoolError> {
        for letter in &dead_letters {
            tracing::warn!(
                message = "Refused input kept as a dead letter.",
                source = letter.source,
                origin = %letter.origin,
                device_id = letter.device_id.as_deref().unwrap_or("unknown"),
                reason = %letter.reason,
            );
        }
        let n_events = events.len();
        let records: Vec<Record> = events
            .into_iter()
            .map(|e| self.router.event(e))
            .chain(dead_letters.iter().map(|d| self.router.dead_letter(d)))
            .collect();
        let topics: Vec<String> = records.iter().map(|r| r.topic.clone()).collect();
        match self.spool.append(records).await {
            Ok(mut outcomes) => {
                self.stats
                    .record_appended(topics.iter().map(String::as_str), &outcomes);
                outcomes.truncate(n_events);
                Ok(outcomes)
            }
            Err(e) => {
                for topic in &topics {
                    self.stats.record_refused(topic, 1);
                }
                Err(e)
            }
        }
    }
}
