//! `[[mappings]]` as written, and their validation into [`Mapping`]s (presets expanded).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use tributary_protocol::{Body, Event, Kind, Reading, SensorValue};

use super::path::{Path, Template};
use super::{Field, Mapping, PositionPaths, Shape, TimeFormat};

/// `[[mappings]]` as written. Every key is optional where a preset supplies it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    /// Start from a shipped mapping; the other keys override it.
    pub preset: Option<String>,
    pub name: Option<String>,
    /// The MQTT topic filter this mapping decodes.
    pub topic: Option<String>,
    /// A template: `{topic.N}`, `{payload.PATH}` and literal text.
    pub device_id: Option<String>,
    /// `connection` (default): the device id must be the connection's; `mapped`: a hub's.
    pub identity: Option<String>,
    /// `reading` or `position`.
    pub kind: Option<String>,
    /// Payload fields that must have these values for this mapping to apply.
    #[serde(rename = "match")]
    pub conditions: Option<BTreeMap<String, Value>>,
    /// The event time's field; without it, the receive time.
    pub time_path: Option<String>,
    /// `epoch_s`, `epoch_ms` or `rfc3339`.
    pub time_format: Option<String>,
    /// The device's own seq; without it the gateway assigns one.
    pub seq_path: Option<String>,
    /// Reading values, listed.
    pub values: Option<Vec<RawValue>>,
    /// Reading values: every number (and boolean, as 1 or 0) under `numeric_root`.
    pub numeric: Option<bool>,
    pub numeric_root: Option<String>,
    /// What `numeric` leaves out: a path from `numeric_root` (`aenergy.minute_ts`), or a key
    /// without dots (`id`) wherever it is.
    pub exclude: Option<Vec<String>>,
    /// Units for `numeric` values, by the last key of their path.
    pub units: Option<BTreeMap<String, String>>,
    /// A template put before each `numeric` value's name.
    pub prefix: Option<String>,
    pub lat: Option<RawField>,
    pub lon: Option<RawField>,
    pub alt_m: Option<RawField>,
    pub speed_mps: Option<RawField>,
    pub heading_deg: Option<RawField>,
    pub hdop: Option<RawField>,
    pub satellites: Option<RawField>,
}

/// One listed reading value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValue {
    pub path: String,
    pub name: String,
    #[serde(default)]
    pub unit: String,
    pub scale: Option<f64>,
}

/// A number's path, alone or with a factor (`{ path = "vel", scale = 0.2777777777777778 }`: km/h to m/s, 1 / 3.6 to the last digit an f64 keeps).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawField {
    Path(String),
    Scaled { path: String, scale: f64 },
}

impl RawMapping {
    /// This mapping's keys over `base`'s.
    fn over(self, base: RawMapping) -> RawMapping {
        macro_rules! pick {
            ($($field:ident),*) => { RawMapping { $($field: self.$field.or(base.$field)),* } };
        }
        pick!(
            preset,
            name,
            topic,
            device_id,
            identity,
            kind,
            conditions,
            time_path,
            time_format,
            seq_path,
            values,
            numeric,
            numeric_root,
            exclude,
            units,
            prefix,
            lat,
            lon,
            alt_m,
            speed_mps,
            heading_deg,
            hdop,
            satellites
        )
    }
}

/// A mapping problem, naming the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct MappingError {
    pub key: String,
    pub problem: String,
}

/// Validates every `[[mappings]]` entry, expanding presets.
pub fn validate(raw: &[RawMapping]) -> Result<Vec<Mapping>, MappingError> {
    let mut out = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        let key = format!("mappings[{i}]");
        for m in expand(entry, &key)? {
            out.push(mapping(m, &key)?);
        }
    }
    Ok(out)
}

/// A mapping written inline in another section (a tailed file's `mapping`), where `topic` is
/// not needed: `{topic.N}` then means level N of what the caller passes as the topic. Of a
/// preset with several mappings, the first is taken.
pub fn validate_inline(raw: &RawMapping, key: &str) -> Result<Mapping, MappingError> {
    let mut m = expand(raw, key)?.into_iter().next().unwrap_or_default();
    m.topic.get_or_insert_with(|| "#".to_owned());
    mapping(m, key)
}

/// `entry` over each mapping of its preset, or alone without one.
fn expand(entry: &RawMapping, key: &str) -> Result<Vec<RawMapping>, MappingError> {
    let bases = match &entry.preset {
        None => vec![RawMapping::default()],
        Some(name) => super::presets::load(name).map_err(|problem| MappingError {
            key: format!("{key}.preset"),
            problem,
        })?,
    };
    Ok(bases.into_iter().map(|b| entry.clone().over(b)).collect())
}

/// Every shipped preset, validated: what the `mqtt_publish` fuzz target decodes with.
pub fn presets() -> Vec<Mapping> {
    let raw: Vec<RawMapping> = super::presets::PRESETS
        .iter()
        .map(|(name, _)| RawMapping {
            preset: Some((*name).to_owned()),
            ..RawMapping::default()
        })
        .collect();
    validate(&raw).unwrap_or_default()
}

type Bad = (&'static str, String);

/// Validates one mapping; an error names `{key}.{field}`, and `key` is its name if it has none.
fn mapping(m: RawMapping, key: &str) -> Result<Mapping, MappingError> {
    checked(m, key).map_err(|(k, problem)| MappingError {
        key: format!("{key}.{k}"),
        problem,
    })
}

fn checked(m: RawMapping, key: &str) -> Result<Mapping, Bad> {
    let name = m.name.unwrap_or_else(|| key.to_owned());
    let topic = m
        .topic
        .ok_or(("topic", "a mapping needs an MQTT topic filter".to_owned()))?;
    if !tributary_common::validate::names::valid_filter(&topic) {
        return Err((
            "topic",
            format!("{topic:?} is not an MQTT filter (+ for one level, # last)"),
        ));
    }
    if tributary_protocol::topic::in_namespace(&topic) {
        return Err((
            "topic",
            format!("{topic:?}: devices/... carries Tributary's own format"),
        ));
    }
    let device_id =
        Template::parse(m.device_id.as_deref().unwrap_or("")).map_err(|e| ("device_id", e))?;
    let hub = match m.identity.as_deref().unwrap_or("connection") {
        "connection" => false,
        "mapped" => true,
        other => {
            return Err((
                "identity",
                format!("{other:?} is not \"connection\" or \"mapped\""),
            ))
        }
    };
    let path = |k: &'static str, p: &str| Path::parse(p).map_err(|e| (k, e));
    let conditions = m
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|(p, v)| Ok((path("match", &p)?, v)))
        .collect::<Result<Vec<_>, Bad>>()?;
    let format = match m.time_format.as_deref() {
        None if m.time_path.is_some() => {
            return Err((
                "time_format",
                "needs epoch_s, epoch_ms or rfc3339 with time_path".into(),
            ))
        }
        None => TimeFormat::EpochMs,
        Some("epoch_s") => TimeFormat::EpochS,
        Some("epoch_ms") => TimeFormat::EpochMs,
        Some("rfc3339") => TimeFormat::Rfc3339,
        Some(other) => {
            return Err((
                "time_format",
                format!("{other:?} is not epoch_s, epoch_ms or rfc3339"),
            ))
        }
    };
    let time = match &m.time_path {
        Some(p) => Some((path("time_path", p)?, format)),
        None => None,
    };
    let seq = m
        .seq_path
        .as_deref()
        .map(|p| path("seq_path", p))
        .transpose()?;
    let field = |k: &'static str, f: Option<RawField>| -> Result<Option<Field>, Bad> {
        f.map(|f| {
            let (p, scale) = match f {
                RawField::Path(p) => (p, 1.0),
                RawField::Scaled { path, scale } => (path, scale),
            };
            if !scale.is_finite() {
                return Err((k, "scale must be a finite number".to_owned()));
            }
            Ok(Field {
                path: path(k, &p)?,
                scale,
            })
        })
        .transpose()
    };
    let kind = tributary_common::validate::names::event_kind(m.kind.as_deref())
        .map_err(|e| ("kind", e))?
        .ok_or((
            "kind",
            "a mapping needs `kind`: \"reading\" or \"position\"".to_owned(),
        ))?;
    let shape = match kind {
        Kind::Position => {
            use tributary_protocol::PositionField as P;
            let raw = [
                (P::Lat, m.lat),
                (P::Lon, m.lon),
                (P::AltM, m.alt_m),
                (P::SpeedMps, m.speed_mps),
                (P::HeadingDeg, m.heading_deg),
                (P::Hdop, m.hdop),
                (P::Satellites, m.satellites),
            ];
            let mut fields = Vec::new();
            for (f, raw) in raw {
                match field(f.name(), raw)? {
                    Some(path) => fields.push((f, path)),
                    None if f.required() => {
                        let need = "a position mapping needs lat and lon paths".to_owned();
                        return Err((f.name(), need));
                    }
                    None => {}
                }
            }
            Shape::Position(Box::new(PositionPaths { fields }))
        }
        Kind::Reading => match (m.values, m.numeric.unwrap_or(false)) {
            (Some(_), true) => {
                return Err((
                    "values",
                    "give `values` or `numeric = true`, not both".into(),
                ))
            }
            (None, false) => {
                return Err((
                    "values",
                    "a reading mapping needs `values` or `numeric = true`".into(),
                ))
            }
            (Some(list), false) => Shape::Listed(
                list.into_iter()
                    .map(|v| {
                        let f = field(
                            "values",
                            Some(RawField::Scaled {
                                path: v.path,
                                scale: v.scale.unwrap_or(1.0),
                            }),
                        )?
                        .ok_or(("values", String::new()))?;
                        let probe = SensorValue {
                            name: v.name.clone(),
                            value: 0.0,
                            unit: v.unit.clone(),
                        };
                        let event = Event {
                            device_id: "x".into(),
                            seq: 0,
                            time_ms: 0,
                            body: Body::Reading(Reading {
                                values: vec![probe],
                            }),
                        };
                        event
                            .validate()
                            .map_err(|e| ("values", format!("{:?}: {e}", v.name)))?;
                        Ok((f, v.name, v.unit))
                    })
                    .collect::<Result<_, Bad>>()?,
            ),
            (None, true) => Shape::Numeric {
                root: m
                    .numeric_root
                    .as_deref()
                    .map(|p| path("numeric_root", p))
                    .transpose()?,
                exclude: m
                    .exclude
                    .unwrap_or_default()
                    .iter()
                    .map(|p| path("exclude", p))
                    .collect::<Result<_, _>>()?,
                units: m.units.unwrap_or_default(),
                prefix: m
                    .prefix
                    .as_deref()
                    .map(|p| Template::parse(p).map_err(|e| ("prefix", e)))
                    .transpose()?,
            },
        },
    };
    Ok(Mapping {
        name,
        topic,
        device_id,
        hub,
        conditions,
        time,
        seq,
        shape,
    })
}
