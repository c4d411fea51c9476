//! Naming rules several parts of the configuration share: event kinds, device id globs, Kafka
//! topic names and MQTT topic filters. Pure functions of their text; nothing of the gateway.

use super::{invalid, ConfigError};

/// The `kind` a route, rule or mapping selects: `"reading"`, `"position"`, or any when absent.
pub fn event_kind(kind: Option<&str>) -> Result<Option<tributary_protocol::Kind>, String> {
    match kind {
        None => Ok(None),
        Some(name) => tributary_protocol::Kind::from_name(name)
            .map(Some)
            .ok_or_else(|| format!("{name:?} is not \"reading\" or \"position\"")),
    }
}

/// Checks a device id glob (`A-Z a-z 0-9 _ . -`, with `*` and `?`).
pub fn device_glob(glob: &str) -> Result<(), String> {
    let ok = glob
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*' | b'?'));
    if glob.is_empty() || !ok {
        return Err(format!(
            "{glob:?} is not a device id glob (A-Z a-z 0-9 _ . - * ?)"
        ));
    }
    Ok(())
}

/// Whether `name` is a legal Kafka topic name (1 to 249 of `A-Z a-z 0-9 . _ -`, not `.` or `..`).
pub fn legal_topic(name: &str) -> bool {
    let legal = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    !name.is_empty() && name.len() <= 249 && legal && name != "." && name != ".."
}

/// The Kafka topic `key` names, or `default` when absent; refused unless [`legal_topic`].
pub fn topic(
    key: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let name = value.unwrap_or_else(|| default.to_owned());
    if !legal_topic(&name) {
        return Err(invalid(
            key,
            format!("{name:?} is not a legal Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)"),
        ));
    }
    Ok(name)
}

/// Whether `filter` is a valid MQTT topic filter (`+` for a whole level, `#` last).
pub fn valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && levels.iter().enumerate().all(|(i, l)| {
            (*l == "#" && i == levels.len() - 1) || *l == "+" || !l.contains(['+', '#'])
        })
}

/// A configured source's name (a file source, a Modbus link): present, 1 to 64 of
/// `A-Z a-z 0-9 _ . -`, and not one `taken` already. `what` says what it names ("file source")
/// and `why` what the name is for, in the message when it is missing.
pub fn source_name(
    name: Option<String>,
    what: &str,
    why: &str,
    taken: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let name = name.ok_or_else(|| format!("a {what} needs a name ({why})"))?;
    if tributary_protocol::validate_device_id(&name).is_err() {
        return Err(format!("{name:?} is not 1 to 64 of A-Z a-z 0-9 _ . -"));
    }
    if taken(&name) {
        return Err(format!("{name:?} names two {what}s"));
    }
    Ok(name)
}
