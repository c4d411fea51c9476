//! `[commands]`: commands from a Kafka topic to devices, off unless `topic` is set.

use std::time::Duration;

use serde::Deserialize;

use tributary_common::validate::names::{legal_topic, topic};
use tributary_common::validate::{invalid, timeout_ms, ConfigError};

/// `[commands]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandsConfig {
    /// The topic commands are read from (key: device id; value: JSON, see [`super::consume`]).
    pub topic: String,
    /// The topic outcomes are written to (key: device id).
    pub responses_topic: String,
    /// How long a command without an expiry of its own waits for its device.
    pub default_ttl: Duration,
    /// The most commands one device may have queued; past it a command is refused.
    pub max_queued_per_device: usize,
    /// The largest command value (bytes) taken from Kafka; larger ones are refused.
    pub max_bytes: usize,
    /// The consumer group the read offsets are also committed to (for lag monitoring; the
    /// gateway resumes from the offsets saved in its spool).
    pub group_id: String,
    /// A command with a `tributary-gateway` header naming another gateway is skipped; `None`:
    /// no such filter (the topic is this gateway's own).
    pub gateway_id: Option<String>,
    /// Whether a new connection of a device gets again the commands it acknowledged but did not
    /// answer (the default), or only those never acknowledged.
    pub redeliver: Redeliver,
    /// Refuse commands for devices the gateway cannot name (`unknown_devices = "refuse"`).
    pub refuse_unknown: bool,
}

/// `commands.redeliver`: what a device's new connection is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeliver {
    /// Every queued command until the device answers it (or it expires): an answer lost with
    /// a connection is given again, and a device drops the repeated command by its id.
    UntilAnswered,
    /// Only commands the device never acknowledged (devices that never answer).
    UntilDelivered,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommands {
    pub topic: Option<String>,
    pub responses_topic: Option<String>,
    pub default_ttl_ms: Option<u64>,
    pub max_queued_per_device: Option<usize>,
    pub max_bytes: Option<usize>,
    pub group_id: Option<String>,
    pub redeliver: Option<String>,
    pub unknown_devices: Option<String>,
}

/// The defaults, as `config/gateway.toml` documents them.
pub const DEFAULT_RESPONSES_TOPIC: &str = "tributary.command-responses";
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_QUEUED: usize = 100;
pub const DEFAULT_MAX_BYTES: usize = 4096;
/// The largest `max_bytes`: a command is one MQTT publish or TCP frame to a small device.
pub const MAX_BYTES_LIMIT: usize = 65_536;

/// `[commands]`: `None` unless `topic` is set. `gateway_id` is `kafka.gateway_id`, when set.
pub fn validate(
    raw: RawCommands,
    gateway_id: Option<&str>,
) -> Result<Option<CommandsConfig>, ConfigError> {
    let Some(name) = raw.topic.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let commands = topic("commands.topic", Some(name), "")?;
    if let Some(id) = gateway_id.filter(|id| id.len() > 200 || !legal_topic(id)) {
        return Err(invalid(
            "kafka.gateway_id",
            format!("{id:?}: use 1 to 200 of A-Z a-z 0-9 . _ - (not . or ..)"),
        ));
    }
    let responses = topic(
        "commands.responses_topic",
        raw.responses_topic,
        DEFAULT_RESPONSES_TOPIC,
    )?;
    if responses == commands {
        return Err(invalid(
            "commands.responses_topic",
            "must differ from commands.topic: the gateway would read its own outcomes as commands",
        ));
    }
    let max_queued = raw.max_queued_per_device.unwrap_or(DEFAULT_MAX_QUEUED);
    if !(1..=100_000).contains(&max_queued) {
        return Err(invalid(
            "commands.max_queued_per_device",
            "must be from 1 to 100000",
        ));
    }
    let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if !(64..=MAX_BYTES_LIMIT).contains(&max_bytes) {
        return Err(invalid(
            "commands.max_bytes",
            format!("must be from 64 to {MAX_BYTES_LIMIT}"),
        ));
    }
    let group_id = match raw.group_id {
        Some(g) if g.is_empty() => return Err(invalid("commands.group_id", "must not be empty")),
        Some(g) => g,
        None => format!("tributary-commands-{}", gateway_id.unwrap_or("gateway")),
    };
    let redeliver = match raw.redeliver.as_deref().unwrap_or("until-answered") {
        "until-answered" => Redeliver::UntilAnswered,
        "until-delivered" => Redeliver::UntilDelivered,
        other => {
            return Err(invalid(
                "commands.redeliver",
                format!("{other:?} is not \"until-answered\" or \"until-delivered\""),
            ))
        }
    };
    let refuse_unknown = match raw.unknown_devices.as_deref().unwrap_or("queue") {
        "queue" => false,
        "refuse" => true,
        other => {
            return Err(invalid(
                "commands.unknown_devices",
                format!("{other:?} is not \"queue\" or \"refuse\""),
            ))
        }
    };
    Ok(Some(CommandsConfig {
        topic: commands,
        responses_topic: responses,
        default_ttl: timeout_ms("commands.default_ttl_ms", raw.default_ttl_ms, DEFAULT_TTL)?,
        max_queued_per_device: max_queued,
        max_bytes,
        group_id,
        gateway_id: gateway_id.map(str::to_owned),
        redeliver,
        refuse_unknown,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(topic: &str) -> RawCommands {
        RawCommands {
            topic: Some(topic.into()),
            ..Default::default()
        }
    }

    #[test]
    fn off_without_a_topic_and_defaults_with_one() {
        assert_eq!(validate(RawCommands::default(), None).unwrap(), None);
        let c = validate(raw("site-a.commands"), Some("depot-7"))
            .unwrap()
            .unwrap();
        assert_eq!(c.responses_topic, DEFAULT_RESPONSES_TOPIC);
        assert_eq!(c.group_id, "tributary-commands-depot-7");
        assert_eq!(c.default_ttl, DEFAULT_TTL);
        assert_eq!(c.gateway_id.as_deref(), Some("depot-7"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = |r: RawCommands| match validate(r, None) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(key(raw("no spaces")), "commands.topic");
        let same = RawCommands {
            responses_topic: Some("c".into()),
            ..raw("c")
        };
        assert_eq!(key(same), "commands.responses_topic");
        let huge = RawCommands {
            max_bytes: Some(1 << 20),
            ..raw("c")
        };
        assert_eq!(key(huge), "commands.max_bytes");
        let none = RawCommands {
            max_queued_per_device: Some(0),
            ..raw("c")
        };
        assert_eq!(key(none), "commands.max_queued_per_device");
        let odd = RawCommands {
            unknown_devices: Some("ignore".into()),
            ..raw("c")
        };
        assert_eq!(key(odd), "commands.unknown_devices");
        let odd = RawCommands {
            redeliver: Some("always".into()),
            ..raw("c")
        };
        assert_eq!(key(odd), "commands.redeliver");
    }
}
