//! Commands from the gateway to a device, and the device's answer: the contract both sides
//! read (the gateway writes commands and reads answers with this module; the simulator and the
//! node agent do the reverse).
//!
//! - A command is JSON: `{"id", "name", "args", "expires_ms"}`. `id` is its author's, unique
//!   per device: a device that sees an id again (a redelivery after a lost acknowledgement)
//!   answers again without acting again.
//! - MQTT: the gateway publishes it at QoS 1 on `devices/{id}/commands/{name}` to a device
//!   that subscribed to its own `devices/{id}/commands/#` (or a narrower filter). The device
//!   answers by publishing to `devices/{id}/results/{command id}`; MQTT 5 commands carry that
//!   topic as their Response Topic, and the command id as Correlation Data.
//! - An answer's payload is the device's result, JSON or text, kept as it is.

use serde::{Deserialize, Serialize};
/// An answer's fields are JSON: devices build them with this, without a JSON crate of their own.
pub use serde_json::{json, Value};

/// A command as a device receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
    /// When the command stops being worth doing (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

impl Command {
    /// The command from an MQTT payload or TCP frame; `None` if it is not one.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The commands every Tributary device understands (the simulator's and the node agent's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `set_interval {"interval_ms": N}`: report every N ms from now on.
    SetInterval(u64),
    /// `get_state`: answer with what the device is doing.
    GetState,
}

/// The shortest and longest `set_interval` a device takes.
pub const MIN_INTERVAL_MS: u64 = 100;
pub const MAX_INTERVAL_MS: u64 = 86_400_000;

impl Command {
    /// What the command asks, or why the device cannot do it (its answer then says so).
    pub fn request(&self) -> Result<Request, String> {
        match self.name.as_str() {
            "set_interval" => match self.args.get("interval_ms").and_then(|v| v.as_u64()) {
                Some(ms) if (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) => {
                    Ok(Request::SetInterval(ms))
                }
                _ => Err(format!(
                    "set_interval needs \"interval_ms\" from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}"
                )),
            },
            "get_state" => Ok(Request::GetState),
            other => Err(format!("unknown command {other:?}")),
        }
    }
}

/// A device's answer: `{"ok": true, ...fields}`, or `{"ok": false, "error": why}`.
pub fn answer(result: Result<serde_json::Value, String>) -> Vec<u8> {
    let value = match result {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.insert("ok".into(), true.into());
            serde_json::Value::Object(fields)
        }
        Ok(other) => serde_json::json!({"ok": true, "result": other}),
        Err(error) => serde_json::json!({"ok": false, "error": error}),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The longest command id and name: each is one MQTT topic level.
pub const MAX_ID_LEN: usize = 128;
pub const MAX_NAME_LEN: usize = 64;

/// Whether `id` can be a command id: 1 to [`MAX_ID_LEN`] printable ASCII characters, none of
/// `/ + #` (it is a topic level).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'+' | b'#'))
}

/// Whether `name` can be a command name: 1 to [`MAX_NAME_LEN`] of `A-Z a-z 0-9 _ - .`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The topic a command for `device` is published on.
pub fn command_topic(device: &str, name: &str) -> String {
    format!("devices/{device}/commands/{name}")
}

/// The filter a device subscribes to for all its commands.
pub fn command_filter(device: &str) -> String {
    format!("devices/{device}/commands/#")
}

/// The topic a device answers command `id` on.
pub fn result_topic(device: &str, id: &str) -> String {
    format!("devices/{device}/results/{id}")
}

/// The device and command id of an answer's topic; `None` if the topic is not one.
pub fn parse_result_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("devices/")?;
    let (device, rest) = rest.split_once('/')?;
    let id = rest.strip_prefix("results/")?;
    (!device.is_empty() && valid_id(id)).then_some((device, id))
}

/// The device whose commands an MQTT subscription filter asks for, if it asks for nothing but
/// one device's commands: `devices/{id}/commands/#`, `.../commands/+`, `.../commands/{name}`,
/// `devices/{id}/commands`, or `devices/{id}/#` (which takes them with everything else of the
/// device, of which only commands are ever published here).
pub fn subscribed_device(filter: &str) -> Option<&str> {
    let rest = filter.strip_prefix("devices/")?;
    let (device, rest) = rest.split_once('/')?;
    if device.is_empty() || device.contains(['+', '#']) {
        return None;
    }
    let ok = match rest {
        "#" | "commands" | "commands/#" | "commands/+" => true,
        _ => rest.strip_prefix("commands/").is_some_and(valid_name),
    };
    ok.then_some(device)
}

/// Whether a command named `name` for `device` matches the subscription `filter`.
pub fn matches(filter: &str, device: &str, name: &str) -> bool {
    let Some(rest) = filter
        .strip_prefix("devices/")
        .and_then(|r| r.strip_prefix(device))
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    match rest {
        "#" | "commands/#" | "commands/+" => true,
        _ => rest.strip_prefix("commands/") == Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_filters_name_one_device() {
        assert_eq!(
            parse_result_topic(&result_topic("d-1", "c-9")),
            Some(("d-1", "c-9"))
        );
        assert_eq!(parse_result_topic("devices/d-1/reading"), None);
        assert_eq!(parse_result_topic("devices/d-1/results/a/b"), None);
        assert_eq!(subscribed_device(&command_filter("d-1")), Some("d-1"));
        assert_eq!(
            subscribed_device("devices/d-1/commands/reboot"),
            Some("d-1")
        );
        assert_eq!(subscribed_device("devices/+/commands/#"), None);
        assert_eq!(subscribed_device("devices/d-1/reading"), None);
        assert_eq!(subscribed_device("#"), None);
        assert!(matches("devices/d-1/commands/#", "d-1", "reboot"));
        assert!(matches("devices/d-1/commands/reboot", "d-1", "reboot"));
        assert!(!matches(
            "devices/d-1/commands/reboot",
            "d-1",
            "set_interval"
        ));
        assert!(!matches("devices/d-10/commands/#", "d-1", "reboot"));
        assert!(!matches("devices/d-1/commands", "d-1", "reboot"));
    }

    #[test]
    fn a_command_reads_back_as_written() {
        let c = Command {
            id: "c1".into(),
            name: "set_interval".into(),
            args: serde_json::json!({"interval_ms": 500}),
            expires_ms: Some(7),
        };
        assert_eq!(Command::parse(&c.to_bytes()), Some(c));
        assert!(valid_id("c-1:x"));
        assert!(!valid_id("a/b"));
        assert!(!valid_name("set interval"));
    }
}
