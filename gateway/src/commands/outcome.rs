//! The outcome records: what became of a command, on the responses topic, keyed by device id.
//!
//! The value is JSON (`responses_topic`'s documented schema):
//! `{"command_id", "device_id", "name", "outcome", "at_ms", "queued_ms", "delivered_ms",
//! "expires_ms", "result", "reason"}`, absent fields omitted. `outcome` is one of
//! `delivered`, `answered`, `expired`, `refused`. `result` is the device's answer, inlined
//! when it is JSON, else a string. The headers repeat `command-id` and `outcome`, so a
//! consumer can route without parsing. The record's timestamp is `at_ms`.

use serde::Serialize;
use tributary_spool::commands::Queued;
use tributary_spool::Record;

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Delivered,
    Answered,
    Expired,
    Refused,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Delivered => "delivered",
            Kind::Answered => "answered",
            Kind::Expired => "expired",
            Kind::Refused => "refused",
        }
    }
}

/// One outcome, before it is a record.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub command_id: String,
    pub device_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub outcome: Kind,
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Outcome {
    /// An outcome of a command that is not (or not yet) queued.
    pub fn new(device: &str, command_id: &str, name: &str, kind: Kind, at_ms: i64) -> Self {
        Self {
            command_id: command_id.to_owned(),
            device_id: device.to_owned(),
            name: name.to_owned(),
            outcome: kind,
            at_ms,
            queued_ms: None,
            delivered_ms: None,
            expires_ms: None,
            result: None,
            reason: None,
        }
    }

    /// An outcome of a queued command, with its times.
    pub fn of(command: &Queued, kind: Kind, at_ms: i64) -> Self {
        Self {
            queued_ms: Some(command.received_ms),
            delivered_ms: command.delivered_ms,
            expires_ms: Some(command.expires_ms),
            ..Self::new(
                &command.device,
                &command.command_id,
                &command.name,
                kind,
                at_ms,
            )
        }
    }

    pub fn delivered_at(mut self, at_ms: i64) -> Self {
        self.delivered_ms = Some(at_ms);
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The device's answer: inlined when it is JSON, else kept as text (lossy UTF-8).
    pub fn result(mut self, payload: &[u8]) -> Self {
        self.result = Some(serde_json::from_slice(payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
        }));
        self
    }

    pub fn record(&self, topic: &str) -> Record {
        Record {
            topic: topic.to_owned(),
            key: self.device_id.as_bytes().to_vec(),
            value: serde_json::to_vec(self).unwrap_or_default(),
            timestamp_ms: self.at_ms,
            headers: vec![
                ("command-id".to_owned(), self.command_id.clone()),
                ("outcome".to_owned(), self.outcome.name().to_owned()),
            ],
            origin: None,
            event: None,
            mqtt_topic: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_inlined_when_json_and_kept_as_text_otherwise() {
        let json = Outcome::new("d", "c1", "get_state", Kind::Answered, 5)
            .result(br#"{"interval_ms":500}"#)
            .record("r");
        let v: serde_json::Value = serde_json::from_slice(&json.value).unwrap();
        assert_eq!(v["result"]["interval_ms"], 500);
        assert_eq!(v["outcome"], "answered");
        assert_eq!(json.key, b"d");
        assert_eq!(json.timestamp_ms, 5);
        let text = Outcome::new("d", "c1", "", Kind::Answered, 5)
            .result(b"DOUT1:1")
            .record("r");
        let v: serde_json::Value = serde_json::from_slice(&text.value).unwrap();
        assert_eq!(v["result"], "DOUT1:1");
        assert!(v.get("name").is_none());
        assert!(text
            .headers
            .contains(&("outcome".into(), "answered".into())));
    }
}
