//! [`Record`]: what ingest hands to the spool and the spool hands to a sink.
//!
//! A record is already in its final form (topic, key, value, timestamp, headers), so the spool
//! stores exactly what will be sent and a restart resends the same bytes. `origin` carries the
//! event's identity for de-duplication; dead letters have none.

/// The identity of a device event: `(device_id, session, seq)`, also the `event-id` header:
/// `{device_id}:{seq}` without a session (0), `{device_id}:{session in hex}:{seq}` with one.
/// Device ids never contain `:`, so the header splits unambiguously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId {
    pub device_id: String,
    /// The device's boot session; 0 for devices that send none.
    pub session: u64,
    pub seq: u64,
    /// The identity that wrote the event when that is not the device itself (an ACL rule, a
    /// mapping with `identity = "mapped"`, the bridge, a tailed file): its de-duplication state
    /// is kept apart ([`crate::seqs`]). Not part of the `event-id`, never stored.
    pub writer: Option<String>,
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.session {
            0 => write!(f, "{}:{}", self.device_id, self.seq),
            s => write!(f, "{}:{s:x}:{}", self.device_id, self.seq),
        }
    }
}

/// One message bound for one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The Kafka timestamp (CreateTime): the event's time, in ms since the Unix epoch.
    pub timestamp_ms: i64,
    pub headers: Vec<(String, String)>,
    /// `Some` for device events (de-duplicated by it), `None` for dead letters.
    pub origin: Option<EventId>,
    /// The decoded device event, for what runs in the spool's commit (the gateway's rules, as its
    /// commit hook); `None` for dead letters, derived events and rows read back from the spool.
    pub event: Option<std::sync::Arc<tributary_protocol::Event>>,
    /// The MQTT topic the event arrived on, for rules that select by it; like `event`, only
    /// while rules are configured, and `None` for TCP.
    pub mqtt_topic: Option<std::sync::Arc<str>>,
}

impl Record {
    /// Bytes this record occupies, roughly: key, value and headers.
    pub fn size(&self) -> usize {
        self.key.len()
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

impl Record {
    /// The record as one JSON object: `{"topic", "key", "timestamp_ms", "headers": {..},
    /// "value"}`, with a JSON value inlined (anything else as a string). The file sink's line
    /// format, and what `tributary spool inspect` and `export` print.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        let value = serde_json::from_slice::<Value>(&self.value)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.value).into_owned()));
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "topic": self.topic,
            "key": String::from_utf8_lossy(&self.key),
            "timestamp_ms": self.timestamp_ms,
            "headers": headers,
            "value": value,
        })
    }
}
