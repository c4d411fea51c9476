//! `[sparkplug]`: Sparkplug B on the MQTT device listener and the bridges, and which device id
//! an edge node or device gets when `group.node[.device]` is not the one wanted (or not a legal
//! one).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use tributary_common::validate::ConfigError;

/// `[sparkplug]`, validated; `None` when off (the default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparkplugConfig {
    /// `group/node` or `group/node/device` to the device id its events carry.
    pub devices: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSparkplug {
    pub enabled: Option<bool>,
    pub devices: Option<BTreeMap<String, String>>,
}

/// `[sparkplug]`.
pub fn validate(raw: RawSparkplug) -> Result<Option<SparkplugConfig>, ConfigError> {
    let devices = raw.devices.unwrap_or_default();
    if !raw.enabled.unwrap_or(false) {
        if !devices.is_empty() {
            return Err(ConfigError::Rule {
                key: "sparkplug.enabled".into(),
                problem: "sparkplug.devices is set but Sparkplug is off: set enabled = true".into(),
            });
        }
        return Ok(None);
    }
    let mut out = HashMap::new();
    for (from, to) in devices {
        let bad = |problem: String| ConfigError::Rule {
            key: format!("sparkplug.devices.{from:?}"),
            problem,
        };
        let levels = from.split('/').count();
        if !(2..=3).contains(&levels)
            || from
                .split('/')
                .any(|l| l.is_empty() || l.contains(['+', '#']))
        {
            return Err(bad(
                "name an edge node as \"group/node\" or a device as \"group/node/device\"".into(),
            ));
        }
        if tributary_protocol::validate_device_id(&to).is_err() {
            return Err(bad(format!(
                "{to:?} is not a device id: 1 to 64 of A-Z a-z 0-9 _ . -"
            )));
        }
        out.insert(from, to);
    }
    Ok(Some(SparkplugConfig { devices: out }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_mapped_ids_are_checked() {
        assert_eq!(validate(RawSparkplug::default()).unwrap(), None);
        let raw = |from: &str, to: &str| RawSparkplug {
            enabled: Some(true),
            devices: Some([(from.to_owned(), to.to_owned())].into()),
        };
        let ok = validate(raw("Plant 1/Line 3/Press 7", "press-7"))
            .unwrap()
            .unwrap();
        assert_eq!(ok.devices["Plant 1/Line 3/Press 7"], "press-7");
        for (from, to) in [
            ("Plant1", "x"),
            ("a/b/c/d", "x"),
            ("a/+/c", "x"),
            ("a/b", "bad id"),
        ] {
            let error = validate(raw(from, to)).unwrap_err();
            assert!(
                matches!(&error, ConfigError::Rule { key, .. } if key.starts_with("sparkplug.devices.")),
                "{error:?}"
            );
        }
    }
}
