//! Routing: from a validated [`Event`] (or a refused input) to a [`Record`] for one topic.
//!
//! Every Kafka message Tributary writes has: key = device id; value = the JSON event
//! ([`tributary_protocol::json`]); timestamp = event time; headers `event-id`
//! (`{device_id}:{seq}`, the de-duplication key for consumers), `kind` and `content-type`.
//! Dead letters go to the dead-letter topic with a JSON value that says what was refused and why.

use serde::Serialize;
use tributary_protocol::json::JsonEvent;
use tributary_protocol::{Event, Kind};

use crate::config::RoutesConfig;
use crate::record::{now_ms, EventId, Record};

/// Header names, in one place.
pub mod headers {
    pub const EVENT_ID: &str = "event-id";
    pub const KIND: &str = "kind";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const REASON: &str = "reason";
}

/// Maps events to topics.
#[derive(Debug, Clone)]
pub struct Router {
    routes: RoutesConfig,
}

/// Input that could not be accepted as an event, kept for inspection.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// `mqtt` or `tcp`.
    pub source: &'static str,
    /// The MQTT topic, or the TCP peer address.
    pub origin: String,
    pub device_id: Option<String>,
    pub reason: String,
    /// The payload as UTF-8 where it is, else absent (see `payload_hex`).
    pub payload: Option<String>,
    pub payload_hex: Option<String>,
    pub received_ms: i64,
}

impl DeadLetter {
    pub fn new(
        source: &'static str,
        origin: String,
        device_id: Option<String>,
        reason: String,
        payload: &[u8],
    ) -> Self {
        let (payload, payload_hex) = match std::str::from_utf8(payload) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (
                None,
                Some(payload.iter().map(|b| format!("{b:02x}")).collect()),
            ),
        };
        Self {
            source,
            origin,
            device_id,
            reason,
            payload,
            payload_hex,
            received_ms: now_ms(),
        }
    }
}

impl Router {
    pub fn new(routes: RoutesConfig) -> Self {
        Self { routes }
    }

    pub fn topic_for(&self, kind: Kind) -> &str {
        match kind {
            Kind::Reading => &self.routes.readings,
            Kind::Position => &self.routes.positions,
        }
    }

    pub fn dead_letter_topic(&self) -> &str {
        &self.routes.dead_letter
    }

    /// The record for a validated event.
    pub fn event(&self, event: Event) -> Record {
        let kind = event.kind();
        let id = EventId {
            device_id: event.device_id.clone(),
            seq: event.seq,
        };
        let timestamp_ms = i64::try_from(event.time_ms).unwrap_or(i64::MAX);
        let value = json_bytes(&JsonEvent::from(event));
        Record {
            topic: self.topic_for(kind).to_owned(),
            key: id.device_id.clone().into_bytes(),
            value,
            timestamp_ms,
            headers: vec![
                (headers::EVENT_ID.to_owned(), id.to_string()),
                (headers::KIND.to_owned(), kind.as_str().to_owned()),
                (
                    headers::CONTENT_TYPE.to_owned(),
                    "application/json".to_owned(),
                ),
            ],
            origin: Some(id),
        }
    }

    /// The record for a refused input.
    pub fn dead_letter(&self, letter: &DeadLetter) -> Record {
        Record {
            topic: self.routes.dead_letter.clone(),
            key: letter
                .device_id
                .clone()
                .unwrap_or_else(|| "unknown".to_owned())
                .into_bytes(),
            value: json_bytes(letter),
            timestamp_ms: letter.received_ms,
            headers: vec![
                (headers::REASON.to_owned(), letter.reason.clone()),
                (
                    headers::CONTENT_TYPE.to_owned(),
                    "application/json".to_owned(),
                ),
            ],
            origin: None,
        }
    }
}

/// Serialising these plain structs cannot fail (no maps with non-string keys, no foreign
/// `Serialize` impls); should it ever, the record says so instead of panicking.
fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"serialisation failed: {e}\"}}").into_bytes())
}
