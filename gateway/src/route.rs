//! Routing: from a validated [`Event`] (or a refused input) to a [`Record`] for one topic.
//!
//! Rules (`[[routes.rule]]`) are tried in order and the first match wins. A rule may match on the
//! event's kind, its device id (a glob with `*` and `?`) and the MQTT topic it arrived on (an
//! MQTT filter with `+` and `#`; TCP input never matches one), and says the topic, the key
//! template (default `{device_id}`) and the value format ([`format`]). An event no rule matches
//! goes to the default topic of its kind (`routes.readings`, `routes.positions`) as JSON.
//!
//! Every message has: timestamp = event time; headers `event-id` (`{device_id}:{seq}`, the
//! de-duplication key for consumers), `kind` and `content-type`. Dead letters go to the
//! dead-letter topic with a JSON value that says what was refused and why.
//!
//! The route wing also holds what else decides what events become: [`mapping`] (payloads of
//! other shapes into events) and [`rules`] (edge rules, whose state commits with the events).

pub mod config;
pub mod format;
pub mod mapping;
pub mod rules;

#[cfg(test)]
mod tests;

use serde::Serialize;
use tributary_protocol::{Event, Kind};

pub use config::{RawRoutes, RoutesConfig};
pub use format::{Encoder, Format, FormatError};
use tributary_common::clock::now_ms;
use tributary_spool::record::{EventId, Record};

/// Header names, in one place.
pub mod headers {
    pub const EVENT_ID: &str = "event-id";
    pub const KIND: &str = "kind";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const REASON: &str = "reason";
}

/// One routing rule, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub kind: Option<Kind>,
    /// Device id glob: `*` any run, `?` one character.
    pub device: Option<String>,
    /// MQTT topic filter: `+` one level, `#` the rest.
    pub mqtt_topic: Option<String>,
    pub topic: String,
    /// Key template with `{device_id}` and `{kind}`.
    pub key: String,
    pub format: Format,
    /// For `kafka.auto_create`: this topic's partitions and replication factor, when they
    /// differ from `kafka.topic_partitions` and `kafka.topic_replication`.
    pub partitions: Option<i32>,
    pub replication: Option<i32>,
}

impl Rule {
    fn matches(&self, event: &Event, mqtt_topic: Option<&str>) -> bool {
        self.kind.is_none_or(|k| k == event.kind())
            && self
                .device
                .as_deref()
                .is_none_or(|g| glob_matches(g, &event.device_id))
            && self
                .mqtt_topic
                .as_deref()
                .is_none_or(|f| mqtt_topic.is_some_and(|t| filter_matches(f, t)))
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else itself.
pub fn glob_matches(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ti));
                gi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                gi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    gi = sg + 1;
                    ti = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

/// MQTT topic filter matching: `+` one level, `#` (last) any number of levels.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        match (f, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(l)) if f == l => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// Most bytes of a refused payload kept in its dead letter.
pub const DEAD_LETTER_BYTES: usize = 1024;

/// Maps events to topics.
#[derive(Debug, Clone)]
pub struct Router {
    routes: RoutesConfig,
    encoder: Encoder,
    /// Keep each event on its record for the spool's rules; off without rules, so the hot path
    /// pays nothing for them.
    keep_events: bool,
}

/// Why input could not become events: the device it named, where that is known, and what was
/// wrong. What becomes a [`DeadLetter`]'s `device_id` and `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    pub device_id: Option<String>,
    pub reason: String,
}

impl Undecodable {
    /// Input of `device_id` refused for `reason`.
    pub fn of(device_id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            device_id: Some(device_id.into()),
            reason: reason.into(),
        }
    }

    /// Input refused for `reason` before any device could be named.
    pub fn unnamed(reason: impl Into<String>) -> Self {
        Self {
            device_id: None,
            reason: reason.into(),
        }
    }
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
    /// The payload's whole length, when more than [`DEAD_LETTER_BYTES`] of it arrived and only
    /// that prefix is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<usize>,
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
        // A bounded prefix: a device cannot make the spool keep more of what it refused.
        let payload_bytes = (payload.len() > DEAD_LETTER_BYTES).then_some(payload.len());
        let payload = &payload[..payload.len().min(DEAD_LETTER_BYTES)];
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
            payload_bytes,
            received_ms: now_ms(),
        }
    }
}

impl Router {
    pub fn new(routes: RoutesConfig) -> Result<Self, FormatError> {
        Ok(Self {
            routes,
            encoder: Encoder::new()?,
            keep_events: false,
        })
    }

    /// Keeps each routed event on its record (`Record::event`), for the spool's rules.
    pub fn keeping_events(mut self, keep: bool) -> Self {
        self.keep_events = keep;
        self
    }

    fn topic_for(&self, kind: Kind) -> &str {
        match kind {
            Kind::Reading => &self.routes.readings,
            Kind::Position => &self.routes.positions,
        }
    }

    /// The record for a validated event that arrived on `mqtt_topic` (`None` for TCP).
    /// `Err` only if the event cannot be encoded in its route's format; the caller keeps it as
    /// a dead letter.
    pub fn event(
        &self,
        event: Event,
        session: u64,
        mqtt_topic: Option<&str>,
    ) -> Result<Record, FormatError> {
        let kind = event.kind();
        let rule = self
            .routes
            .rules
            .iter()
            .find(|r| r.matches(&event, mqtt_topic));
        let (topic, format) = match rule {
            Some(r) => (r.topic.as_str(), r.format),
            None => (self.topic_for(kind), Format::Json),
        };
        let key = match rule {
            Some(r) if r.key != "{device_id}" => r
                .key
                .replace("{device_id}", &event.device_id)
                .replace("{kind}", kind.as_str()),
            _ => event.device_id.clone(),
        };
        let value = self.encoder.encode(&event, format)?;
        let (timestamp_ms, seq) = (i64::try_from(event.time_ms).unwrap_or(i64::MAX), event.seq);
        let (device_id, event) = if self.keep_events {
            (event.device_id.clone(), Some(std::sync::Arc::new(event)))
        } else {
            (event.device_id, None)
        };
        let id = EventId {
            device_id,
            session,
            seq,
            writer: None,
        };
        let mut headers = vec![
            (headers::EVENT_ID.to_owned(), id.to_string()),
            (headers::KIND.to_owned(), kind.as_str().to_owned()),
            (
                headers::CONTENT_TYPE.to_owned(),
                format.content_type().to_owned(),
            ),
        ];
        if let Format::Avro {
            schema_id: Some(schema),
        } = format
        {
            headers.push(("schema-id".to_owned(), schema.to_string()));
        }
        Ok(Record {
            topic: topic.to_owned(),
            key: key.into_bytes(),
            value,
            timestamp_ms,
            headers,
            origin: Some(id),
            mqtt_topic: mqtt_topic
                .filter(|_| event.is_some())
                .map(std::sync::Arc::from),
            event,
        })
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
            event: None,
            mqtt_topic: None,
        }
    }
}

/// Serialising these plain structs cannot fail (no maps with non-string keys, no foreign
/// `Serialize` impls); should it ever, the record says so instead of panicking.
fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"serialisation failed: {e}\"}}").into_bytes())
}
