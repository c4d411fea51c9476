//! `[routes]`: which Kafka topic, key and value format each event goes to. The topics for
//! readings, positions and dead letters, and `[[routes.rule]]` entries tried in order; and the
//! value format, which rules name the same way.

use serde::Deserialize;

use super::{Format, Rule};
use tributary_common::validate::names::{device_glob, event_kind, topic, valid_filter};
use tributary_common::validate::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutes {
    pub readings: Option<String>,
    pub positions: Option<String>,
    pub dead_letter: Option<String>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub kind: Option<String>,
    pub device: Option<String>,
    pub mqtt_topic: Option<String>,
    pub topic: Option<String>,
    pub key: Option<String>,
    pub format: Option<String>,
    pub avro_schema_id: Option<u32>,
    pub partitions: Option<i32>,
    pub replication: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct RoutesConfig {
    pub readings: String,
    pub positions: String,
    pub dead_letter: String,
    /// Tried in order; the first match wins.
    pub rules: Vec<Rule>,
}

/// Validates `[routes]`.
pub fn routes(raw: RawRoutes) -> Result<RoutesConfig, ConfigError> {
    Ok(RoutesConfig {
        readings: topic("routes.readings", raw.readings, "telemetry.readings")?,
        positions: topic("routes.positions", raw.positions, "telemetry.positions")?,
        dead_letter: topic(
            "routes.dead_letter",
            raw.dead_letter,
            "telemetry.dead-letter",
        )?,
        rules: raw
            .rule
            .into_iter()
            .enumerate()
            .map(|(i, r)| rule(i, r))
            .collect::<Result<_, _>>()?,
    })
}

/// Validates one `[[routes.rule]]`; errors name it as `routes.rule[i].key`.
fn rule(index: usize, raw: RawRule) -> Result<Rule, ConfigError> {
    let bad = |field: &str, problem: String| ConfigError::Rule {
        key: format!("routes.rule[{index}].{field}"),
        problem,
    };
    let kind = event_kind(raw.kind.as_deref()).map_err(|p| bad("kind", p))?;
    if let Some(glob) = &raw.device {
        device_glob(glob).map_err(|p| bad("device", p))?;
    }
    if let Some(filter) = &raw.mqtt_topic {
        if !valid_filter(filter) {
            return Err(bad(
                "mqtt_topic",
                format!("{filter:?} is not an MQTT filter (+ for one level, # last)"),
            ));
        }
    }
    let topic_name = topic("routes.rule.topic", raw.topic.clone(), "").map_err(|_| {
        bad(
            "topic",
            format!(
                "{:?} is missing or not a legal Kafka topic name",
                raw.topic.unwrap_or_default()
            ),
        )
    })?;
    let key = raw.key.unwrap_or_else(|| "{device_id}".to_owned());
    let rest = key.replace("{device_id}", "").replace("{kind}", "");
    if key.is_empty() || rest.contains('{') || rest.contains('}') {
        return Err(bad(
            "key",
            format!("{key:?}: the template knows {{device_id}} and {{kind}}"),
        ));
    }
    let format = value_format(raw.format.as_deref(), raw.avro_schema_id)
        .map_err(|(field, problem)| bad(field, problem))?;
    for (field, value) in [
        ("partitions", raw.partitions),
        ("replication", raw.replication),
    ] {
        if value.is_some_and(|v| v < 1) {
            return Err(bad(field, "must be at least 1".into()));
        }
    }
    Ok(Rule {
        kind,
        device: raw.device,
        mqtt_topic: raw.mqtt_topic,
        topic: topic_name,
        key,
        format,
        partitions: raw.partitions,
        replication: raw.replication,
    })
}

/// A value format as `format` and `avro_schema_id` name it (routes and rules); `Err` names the
/// field at fault and the problem.
pub fn value_format(
    format: Option<&str>,
    avro_schema_id: Option<u32>,
) -> Result<Format, (&'static str, String)> {
    match (format.unwrap_or("json"), avro_schema_id) {
        ("json", None) => Ok(Format::Json),
        ("csv", None) => Ok(Format::Csv),
        ("postcard", None) => Ok(Format::Postcard),
        ("avro", schema_id) => Ok(Format::Avro { schema_id }),
        (_, Some(_)) => Err(("avro_schema_id", "only goes with format = \"avro\"".into())),
        (other, None) => Err((
            "format",
            format!("{other:?} is not json, csv, avro or postcard"),
        )),
    }
}
