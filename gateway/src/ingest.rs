//! Ingest: accepting events from devices and handing them to the spool.
//!
//! [`Ingest`] is what every listener shares: it turns validated events into records (through
//! the [`Router`]), appends them together with any dead letters in one spool request, counts the
//! outcome, and returns one [`Appended`] per event. A listener acknowledges an event to its
//! device only after that call returned `Ok`, so an acknowledgement always means "committed".
//!
//! - [`conn`]: the connection layer both protocols share: accept, connection cap, TLS.
//! - [`tcp`]: the compact framed protocol; ACK after commit.
//! - [`mqtt`]: Tributary's own MQTT 3.1.1 listener; PUBACK/PUBREC after commit.
//! - [`listen`]: listeners bind with a backlog sized for a fleet reconnecting at once.
//!
//! Every listener authenticates its devices and checks their publishes through the shared
//! [`Authority`] before anything reaches [`Ingest::submit`].

pub mod bridge;
pub mod conn;
pub mod files;
pub mod listen;
#[cfg(any(test, feature = "fuzz"))]
pub(crate) mod local;
pub mod modbus;
pub mod mqtt;
pub mod sparkplug;
pub mod tcp;
pub mod teltonika;

use std::sync::Arc;

use tributary_protocol::Event;

use crate::identity::Authority;
use crate::observe::stats::Stats;
use crate::route::mapping::{Mapping, Mappings};
use crate::route::{DeadLetter, Router};
use tributary_spool::record::Record;
use tributary_spool::{Appended, SourceState, Spool, SpoolError};

/// A validated event, the device's boot session (0: none) and the MQTT topic it arrived on
/// (`None` for TCP), for routing.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub event: Event,
    pub session: u64,
    pub mqtt_topic: Option<String>,
    /// Kafka headers the event carries beside the gateway's own (MQTT 5 user properties).
    pub headers: Vec<(String, String)>,
    /// The identity that wrote it, when that is not the event's device ([`Inbound::writer_of`]).
    pub writer: Option<String>,
}

impl Inbound {
    /// The writer to record for an event of `device` that `identity` sent: `None` when they
    /// are the same (or the connection has no identity of its own).
    pub fn writer_of(device: &str, identity: Option<&str>) -> Option<String> {
        identity.filter(|i| *i != device).map(str::to_owned)
    }
}

impl From<Event> for Inbound {
    fn from(event: Event) -> Self {
        Self {
            event,
            session: 0,
            mqtt_topic: None,
            headers: Vec::new(),
            writer: None,
        }
    }
}

/// The path from a listener into the spool, and what every listener shares.
#[derive(Clone)]
pub struct Ingest {
    pub(crate) spool: Spool,
    router: Arc<Router>,
    pub(crate) stats: Stats,
    pub(crate) authority: Arc<Authority>,
    pub(crate) mappings: Arc<Mappings>,
    /// Commands to deliver to devices that subscribe for them; `None` without `[commands]`.
    pub(crate) commands: Option<Arc<crate::commands::Commands>>,
    /// The Sparkplug B decoder and its edge nodes' state; `None` without `[sparkplug]`.
    pub(crate) sparkplug: Option<Arc<sparkplug::Sparkplug>>,
}

impl Ingest {
    pub fn new(spool: Spool, router: Router, stats: Stats, authority: Arc<Authority>) -> Self {
        Self {
            spool,
            router: Arc::new(router),
            stats,
            authority,
            mappings: Arc::new(Mappings::default()),
            commands: None,
            sparkplug: None,
        }
    }

    /// Delivers commands to the devices of its sessions ([`crate::commands`]).
    pub fn with_commands(mut self, commands: Option<Arc<crate::commands::Commands>>) -> Self {
        self.commands = commands;
        self
    }

    /// Decodes Sparkplug B publishes (`spBv1.0/...`) where `config` is set.
    pub fn with_sparkplug(mut self, config: Option<sparkplug::SparkplugConfig>) -> Self {
        self.sparkplug = config.map(|c| Arc::new(sparkplug::Sparkplug::new(c, self.stats.clone())));
        self
    }

    /// Decodes publishes on the topics `mappings` name ([`crate::route::mapping`]).
    pub fn with_mappings(mut self, mappings: Vec<Mapping>) -> Self {
        self.mappings = Arc::new(Mappings::new(mappings));
        self
    }

    /// Stores valid `events` and `dead_letters` in one commit. Returns one outcome per stored
    /// record (events first, in order). Dead letters are logged here, with their reason.
    /// `transport` (`tcp`, `mqtt`) labels the received and acknowledged counts.
    pub async fn submit(
        &self,
        transport: crate::transport::Transport,
        events: Vec<Inbound>,
        dead_letters: Vec<DeadLetter>,
    ) -> Result<Vec<Appended>, SpoolError> {
        self.submit_from(transport, events, Vec::new(), dead_letters, Vec::new())
            .await
    }

    /// [`Ingest::submit`] for a source that tracks how far it has read (a tailed file):
    /// `records` are ready-made (a text line for its topic) and stored after the events, and
    /// `sources` (how far each source has read) commit in the same transaction. Outcomes are
    /// the events' only.
    pub async fn submit_from(
        &self,
        transport: crate::transport::Transport,
        events: Vec<Inbound>,
        ready: Vec<Record>,
        mut dead_letters: Vec<DeadLetter>,
        sources: Vec<SourceState>,
    ) -> Result<Vec<Appended>, SpoolError> {
        let arrived = (events.len() + ready.len() + dead_letters.len()) as u64;
        self.stats.activity.events(
            transport,
            events.iter().map(|i| &i.event),
            tributary_common::clock::now_ms(),
        );
        let mut records: Vec<Record> = Vec::with_capacity(events.len() + dead_letters.len());
        for inbound in events {
            let device_id = inbound.event.device_id.clone();
            match self.router.event(
                inbound.event,
                inbound.session,
                inbound.mqtt_topic.as_deref(),
            ) {
                Ok(mut record) => {
                    if let Some(origin) = record.origin.as_mut() {
                        origin.writer = inbound.writer;
                    }
                    record.headers.extend(inbound.headers);
                    records.push(record)
                }
                Err(error) => dead_letters.push(DeadLetter::new(
                    "route",
                    inbound.mqtt_topic.unwrap_or_default(),
                    Some(device_id),
                    error.to_string(),
                    &[],
                )),
            }
        }
        let n_events = records.len();
        let n_stored = n_events + ready.len();
        records.extend(ready);
        self.stats
            .instruments
            .dead_letters
            .get_or_create(&crate::observe::stats::TransportLabel {
                transport: transport.as_str(),
            })
            .inc_by(dead_letters.len() as u64);
        for letter in &dead_letters {
            // A device sending garbage every 10 ms must not flood the log: one line per
            // transport every 10 s, with the number held back. Each one is counted and stored.
            let key = match transport {
                crate::transport::Transport::Tcp => "dead_letter_tcp",
                crate::transport::Transport::Mqtt => "dead_letter_mqtt",
                _ => "dead_letter",
            };
            if let Some(suppressed) = tributary_common::ratelog::allow(key) {
                tracing::warn!(
                    message = "Refused input kept as a dead letter.",
                    source = letter.source,
                    origin = %letter.origin,
                    device_id = letter.device_id.as_deref().unwrap_or("unknown"),
                    reason = %letter.reason,
                    suppressed,
                );
            }
        }
        records.extend(dead_letters.iter().map(|d| self.router.dead_letter(d)));
        let topics: Vec<String> = records.iter().map(|r| r.topic.clone()).collect();
        let appended = if sources.is_empty() {
            self.spool.append(records).await
        } else {
            self.spool.append_from(records, sources).await
        };
        match appended {
            Ok(mut outcomes) => {
                self.stats.record_appended(
                    topics.iter().map(String::as_str),
                    outcomes.iter().map(|o| !matches!(o, Appended::Duplicate)),
                );
                outcomes.truncate(n_stored);
                self.stats
                    .record_transport(transport, arrived, outcomes.len() as u64);
                outcomes.truncate(n_events);
                Ok(outcomes)
            }
            Err(e) => {
                self.stats.record_transport(transport, arrived, 0);
                for topic in &topics {
                    self.stats.record_refused(topic, 1);
                }
                Err(e)
            }
        }
    }
}
