//! Payload mappings: events from devices that do not speak Tributary's own formats.
//!
//! # Design
//! A mapping (`[[mappings]]` in the config) names an MQTT topic filter and says how a JSON
//! payload published there becomes an event: where the device id comes from (a template over
//! topic levels and payload fields), the kind, the event time (a field in epoch seconds, epoch
//! milliseconds or RFC 3339, or the receive time), the device's seq if it sends one, and which
//! paths become reading values (listed with name and unit, or every number in the payload) or
//! position fields. Shipped presets (`preset = "tasmota"`, `zigbee2mqtt`, `shelly`, `owntracks`;
//! `config/presets/`) are mappings written the same way, and any key next to `preset`
//! overrides the preset's.
//!
//! Topics under `devices/` are always Tributary's own format, whatever a mapping's filter
//! covers; a publish on another topic that no mapping names is a dead letter.
//! A publish that mappings name is parsed once, and every mapping whose filter matches and
//! whose `match` conditions hold makes one event of it (OwnTracks' preset makes a position and a
//! battery reading of one location). All or nothing: if one of them fails, the publish is a
//! dead letter whose reason names the mapping and the path that failed, and so is a publish
//! that no mapping's conditions accept.
//!
//! # Invariants
//! - Mapped events go through the same validation, routes, formats, dead letters, rules and
//!   spool as native ones; a mapping only decodes.
//! - A device can write only as itself: on an authenticated connection a mapped device id must
//!   be the connection's identity, unless the mapping says `identity = "mapped"` (a hub such as
//!   Zigbee2MQTT publishing for its devices; the ACL still decides who may publish on the topic).
//! - A device that sends no seq gets one from the gateway ([`AssignedSeqs`]): strictly
//!   increasing across every mapped event of this run, in a session that names this run of the
//!   gateway, so `event-id`s never repeat. The spool cannot recognise a resent publish as a
//!   duplicate then: a device that resends after a lost PUBACK is stored twice, with two
//!   `event-id`s. A mapping with `seq_path` gets the device's own seq and the usual
//!   de-duplication.

mod config;
mod path;
mod presets;
mod seqs;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value;
use tributary_protocol::{Body, Event, FixQuality, Position, PositionField, Reading, SensorValue};

use path::{as_number, describe, Path, Template};

use crate::route::Undecodable;

pub use config::{
    presets, validate, validate_inline, MappingError, RawField, RawMapping, RawValue,
};
pub use seqs::AssignedSeqs;

/// A validated mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub name: String,
    pub topic: String,
    device_id: Template,
    hub: bool,
    conditions: Vec<(Path, Value)>,
    time: Option<(Path, TimeFormat)>,
    seq: Option<Path>,
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeFormat {
    EpochS,
    EpochMs,
    Rfc3339,
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    path: Path,
    scale: f64,
}

impl Field {
    fn number(&self, payload: &Value) -> Result<f64, String> {
        Ok(self.path.number(payload)? * self.scale)
    }

    /// The number, where the payload has the path (and not `null`) at all.
    fn present(&self, payload: &Value) -> Result<Option<f64>, String> {
        match self.path.get(payload) {
            Some(v) if !v.is_null() => self.number(payload).map(Some),
            _ => Ok(None),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Listed(Vec<(Field, String, String)>),
    Numeric {
        root: Option<Path>,
        exclude: Vec<Path>,
        units: BTreeMap<String, String>,
        prefix: Option<Template>,
    },
    Position(Box<PositionPaths>),
}

/// Where each position field is read: `lat` and `lon` always (validated), the others where
/// configured.
#[derive(Debug, Clone, PartialEq)]
struct PositionPaths {
    fields: Vec<(PositionField, Field)>,
}

/// The validated mappings; what every connector decodes with.
#[derive(Debug, Default)]
pub struct Mappings {
    list: Vec<Mapping>,
}

impl Mappings {
    pub fn new(list: Vec<Mapping>) -> Self {
        Self { list }
    }

    /// Whether a mapping names `topic`.
    pub fn covers(&self, topic: &str) -> bool {
        self.list
            .iter()
            .any(|m| crate::route::filter_matches(&m.topic, topic))
    }

    /// The events of a publish on a topic some mapping names, each with its session, or why
    /// not. `connection` is the publishing connection's authenticated device id, if any;
    /// `received_ms` the receive time. The events are validated.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        connection: Option<&str>,
        received_ms: i64,
    ) -> Result<Vec<(Event, u64)>, Undecodable> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| Undecodable::unnamed(format!("payload is not JSON: {e}")))?;
        self.decode_value(topic, &value, connection, received_ms)
    }

    /// [`Mappings::decode`] of a payload already parsed (a CSV row made an object).
    pub fn decode_value(
        &self,
        topic: &str,
        value: &Value,
        connection: Option<&str>,
        received_ms: i64,
    ) -> Result<Vec<(Event, u64)>, Undecodable> {
        let mut events = Vec::new();
        let mut declined = Vec::new();
        for m in self
            .list
            .iter()
            .filter(|m| crate::route::filter_matches(&m.topic, topic))
        {
            if let Some(reason) = m.declines(value) {
                declined.push(format!("mapping {}: {reason}", m.name));
                continue;
            }
            events.push(m.event(topic, value, connection, received_ms)?);
        }
        if events.is_empty() {
            return Err(Undecodable::unnamed(declined.join("; ")));
        }
        Ok(events)
    }
}

impl Mapping {
    /// Why this mapping's `match` conditions do not hold for `payload`, if they do not.
    fn declines(&self, payload: &Value) -> Option<String> {
        self.conditions
            .iter()
            .find_map(|(path, want)| match path.get(payload) {
                Some(v) if v == want => None,
                Some(v) => Some(format!("`{path}` is {}, not {want}", describe(v))),
                None => Some(format!("`{path}` is missing (want {want})")),
            })
    }

    fn event(
        &self,
        topic: &str,
        payload: &Value,
        connection: Option<&str>,
        received_ms: i64,
    ) -> Result<(Event, u64), Undecodable> {
        let name = &self.name;
        let device_id = self
            .device_id
            .render(topic, payload)
            .map_err(|e| Undecodable::unnamed(format!("mapping {name}: device id: {e}")))?;
        let fail = |reason: String| {
            Undecodable::of(device_id.clone(), format!("mapping {name}: {reason}"))
        };
        if let Err(e) = tributary_protocol::validate_device_id(&device_id) {
            return Err(Undecodable::unnamed(format!(
                "mapping {name}: device id {device_id:?}: {e}"
            )));
        }
        if let Some(me) = connection.filter(|me| !self.hub && *me != device_id) {
            return Err(fail(format!(
                "device id {device_id:?} is not the connection's {me:?} (identity = \"mapped\" lets a hub write for its devices)"
            )));
        }
        let time_ms = match &self.time {
            None => received_ms.max(0) as u64,
            Some((path, format)) => event_time(path, *format, payload).map_err(fail)?,
        };
        let (seq, session) = match &self.seq {
            None => AssignedSeqs::global().next(),
            Some(path) => match path.get(payload).and_then(Value::as_u64) {
                Some(seq) => (seq, 0),
                None => {
                    return Err(fail(format!(
                        "path `{path}` is {}, not a seq (a whole number)",
                        path.get(payload).map_or("missing".into(), describe)
                    )))
                }
            },
        };
        let body = self.body(topic, payload).map_err(fail)?;
        let event = Event {
            device_id: device_id.clone(),
            seq,
            time_ms,
            body,
        };
        event.validate().map_err(|e| fail(e.to_string()))?;
        Ok((event, session))
    }

    fn body(&self, topic: &str, payload: &Value) -> Result<Body, String> {
        Ok(match &self.shape {
            Shape::Listed(list) => Body::Reading(Reading {
                values: list
                    .iter()
                    .map(|(field, name, unit)| {
                        Ok(SensorValue {
                            name: name.clone(),
                            value: field.number(payload)?,
                            unit: unit.clone(),
                        })
                    })
                    .collect::<Result<_, String>>()?,
            }),
            Shape::Numeric {
                root,
                exclude,
                units,
                prefix,
            } => {
                let start = match root {
                    Some(r) => r.get(payload).ok_or(format!("path `{r}` is missing"))?,
                    None => payload,
                };
                let prefix = match prefix {
                    Some(t) => t.render(topic, payload)?,
                    None => String::new(),
                };
                let mut skip: Vec<&str> = exclude.iter().map(Path::as_str).collect();
                skip.extend(self.time.iter().map(|(p, _)| p.as_str()));
                skip.extend(self.seq.iter().map(Path::as_str));
                let mut values = Vec::new();
                numbers(start, "", &skip, &mut |path, leaf, value| {
                    values.push(SensorValue {
                        name: value_name(&prefix, path),
                        value,
                        unit: units.get(leaf).cloned().unwrap_or_default(),
                    })
                });
                if values.is_empty() {
                    return Err("no numbers in the payload".into());
                }
                Body::Reading(Reading { values })
            }
            Shape::Position(paths) => {
                let mut position = Position::at(0.0, 0.0, FixQuality::Gps);
                for (f, path) in &paths.fields {
                    let value = if f.required() {
                        Some(path.number(payload)?)
                    } else {
                        path.present(payload)?
                    };
                    if let Some(v) = value {
                        f.set(&mut position, v);
                    }
                }
                Body::Position(position)
            }
        })
    }
}

/// Calls `found(path, last key, number)` for every number and boolean under `node`, in key
/// order, except at the `skip` paths and keys. Arrays and strings are not values.
fn numbers(node: &Value, path: &str, skip: &[&str], found: &mut impl FnMut(&str, &str, f64)) {
    let Value::Object(map) = node else { return };
    for (key, child) in map {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if skip.iter().any(|s| *s == here || *s == key) {
            continue;
        }
        match as_number(child) {
            Some(n) => found(&here, key, n),
            None => numbers(child, &here, skip, found),
        }
    }
}

/// A value name from a payload path: characters a name may not have become `_`
/// (Shelly's `switch:0` is `switch_0`).
fn value_name(prefix: &str, path: &str) -> String {
    let joined = if prefix.is_empty() {
        path.to_owned()
    } else {
        format!("{prefix}.{path}")
    };
    joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The event time at `path`, in milliseconds since the Unix epoch.
fn event_time(path: &Path, format: TimeFormat, payload: &Value) -> Result<u64, String> {
    let ms = match format {
        TimeFormat::EpochS => path.number(payload)? * 1000.0,
        TimeFormat::EpochMs => path.number(payload)?,
        TimeFormat::Rfc3339 => {
            let text = match path.get(payload) {
                Some(Value::String(s)) => s,
                Some(v) => {
                    return Err(format!(
                        "path `{path}` is {}, not an RFC 3339 time",
                        describe(v)
                    ))
                }
                None => return Err(format!("path `{path}` is missing")),
            };
            let t =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| format!("path `{path}`: {text:?} is not an RFC 3339 time: {e}"))?;
            (t.unix_timestamp_nanos() / 1_000_000) as f64
        }
    };
    if !(0.0..=u64::MAX as f64).contains(&ms) || !ms.is_finite() {
        return Err(format!("path `{path}`: {ms} ms is not a time after 1970"));
    }
    Ok(ms.round() as u64)
}
