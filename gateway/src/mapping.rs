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
//! A publish on a topic that no mapping names goes the native way (`devices/{id}/{kind}`).
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

mod path;
mod presets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::Value;
use tributary_protocol::{Body, Event, FixQuality, Kind, Position, Reading, SensorValue};

use path::{as_number, describe, Path, Template};

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

/// A number's path, alone or with a factor (`{ path = "vel", scale = 0.2778 }`: km/h to m/s).
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

    fn optional(field: &Option<Field>, payload: &Value) -> Result<Option<f64>, String> {
        match field {
            Some(f) if f.path.get(payload).is_some_and(|v| !v.is_null()) => {
                f.number(payload).map(Some)
            }
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

#[derive(Debug, Clone, PartialEq)]
struct PositionPaths {
    lat: Field,
    lon: Field,
    alt_m: Option<Field>,
    speed_mps: Option<Field>,
    heading_deg: Option<Field>,
    hdop: Option<Field>,
    satellites: Option<Field>,
}

/// Validates every `[[mappings]]` entry, expanding presets.
pub fn validate(raw: &[RawMapping]) -> Result<Vec<Mapping>, MappingError> {
    let mut out = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        let key = |k: &str| format!("mappings[{i}].{k}");
        let bases = match &entry.preset {
            None => vec![RawMapping::default()],
            Some(name) => presets::load(name).map_err(|problem| MappingError {
                key: key("preset"),
                problem,
            })?,
        };
        for base in bases {
            let m = entry.clone().over(base);
            out.push(mapping(m, i).map_err(|(k, problem)| MappingError {
                key: key(k),
                problem,
            })?);
        }
    }
    Ok(out)
}

/// A mapping written inline in another section (a tailed file's `mapping`), where `topic` is
/// not needed: `{topic.N}` then means level N of what the caller passes as the topic.
pub fn validate_inline(raw: &RawMapping, key: &str) -> Result<Mapping, MappingError> {
    let mut m = raw.clone();
    if let Some(name) = &m.preset {
        let base = presets::load(name)
            .map_err(|problem| MappingError {
                key: format!("{key}.preset"),
                problem,
            })?
            .into_iter()
            .next()
            .unwrap_or_default();
        m = m.over(base);
    }
    m.topic.get_or_insert_with(|| "#".to_owned());
    m.name.get_or_insert_with(|| key.to_owned());
    mapping(m, 0).map_err(|(k, problem)| MappingError {
        key: format!("{key}.{k}"),
        problem,
    })
}

/// Every shipped preset, validated: what the `mqtt_publish` fuzz target decodes with.
pub fn presets() -> Vec<Mapping> {
    let raw: Vec<RawMapping> = presets::PRESETS
        .iter()
        .map(|(name, _)| RawMapping {
            preset: Some((*name).to_owned()),
            ..RawMapping::default()
        })
        .collect();
    validate(&raw).unwrap_or_default()
}

type Bad = (&'static str, String);

fn mapping(m: RawMapping, index: usize) -> Result<Mapping, Bad> {
    let name = m.name.unwrap_or_else(|| format!("mappings[{index}]"));
    let topic = m
        .topic
        .ok_or(("topic", "a mapping needs an MQTT topic filter".to_owned()))?;
    if !crate::route::valid_filter(&topic) {
        return Err((
            "topic",
            format!("{topic:?} is not an MQTT filter (+ for one level, # last)"),
        ));
    }
    if topic.split('/').next() == Some("devices") {
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
    let kind = crate::config::event_kind(m.kind.as_deref())
        .map_err(|e| ("kind", e))?
        .ok_or((
            "kind",
            "a mapping needs `kind`: \"reading\" or \"position\"".to_owned(),
        ))?;
    let shape = match kind {
        Kind::Position => {
            let need = |k: &'static str, f: Option<Field>| {
                f.ok_or((k, "a position mapping needs lat and lon paths".to_owned()))
            };
            Shape::Position(Box::new(PositionPaths {
                lat: need("lat", field("lat", m.lat)?)?,
                lon: need("lon", field("lon", m.lon)?)?,
                alt_m: field("alt_m", m.alt_m)?,
                speed_mps: field("speed_mps", m.speed_mps)?,
                heading_deg: field("heading_deg", m.heading_deg)?,
                hdop: field("hdop", m.hdop)?,
                satellites: field("satellites", m.satellites)?,
            }))
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

/// Seqs for devices that send none: strictly increasing over every mapped event of this run of
/// the gateway (the time in microseconds, or one more than the last), in a session that names
/// this run (its start in milliseconds), so an `event-id` is never issued twice.
#[derive(Debug)]
pub struct AssignedSeqs {
    session: u64,
    last: AtomicU64,
}

impl AssignedSeqs {
    /// The one the whole process shares: every connector's assigned seqs come from it, so two
    /// connectors can never hand the same device the same seq in the same session.
    pub fn global() -> &'static AssignedSeqs {
        static GLOBAL: std::sync::OnceLock<AssignedSeqs> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(AssignedSeqs::new)
    }

    pub fn new() -> Self {
        Self {
            session: (crate::record::now_ms().max(1)) as u64,
            last: AtomicU64::new(0),
        }
    }

    /// The next seq, with the session it belongs to.
    pub fn next(&self) -> (u64, u64) {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = now_us.max(prev.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (next, self.session),
                Err(actual) => prev = actual,
            }
        }
    }
}

impl Default for AssignedSeqs {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a mapped publish is refused: the device id, where known, and the reason.
pub type Refused = (Option<String>, String);

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
    ) -> Result<Vec<(Event, u64)>, Refused> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| (None, format!("payload is not JSON: {e}")))?;
        self.decode_value(topic, &value, connection, received_ms)
    }

    /// [`Mappings::decode`] of a payload already parsed (a CSV row made an object).
    pub fn decode_value(
        &self,
        topic: &str,
        value: &Value,
        connection: Option<&str>,
        received_ms: i64,
    ) -> Result<Vec<(Event, u64)>, Refused> {
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
            return Err((None, declined.join("; ")));
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
    ) -> Result<(Event, u64), Refused> {
        let name = &self.name;
        let device_id = self
            .device_id
            .render(topic, payload)
            .map_err(|e| (None, format!("mapping {name}: device id: {e}")))?;
        let fail = |reason: String| (Some(device_id.clone()), format!("mapping {name}: {reason}"));
        if let Err(e) = tributary_protocol::validate_device_id(&device_id) {
            return Err((
                None,
                format!("mapping {name}: device id {device_id:?}: {e}"),
            ));
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
                let PositionPaths {
                    lat,
                    lon,
                    alt_m,
                    speed_mps,
                    heading_deg,
                    hdop,
                    satellites,
                } = paths.as_ref();
                Body::Position(Position {
                    lat: lat.number(payload)?,
                    lon: lon.number(payload)?,
                    alt_m: Field::optional(alt_m, payload)?.map(|v| v as f32),
                    speed_mps: Field::optional(speed_mps, payload)?.map(|v| v as f32),
                    heading_deg: Field::optional(heading_deg, payload)?.map(|v| v as f32),
                    hdop: Field::optional(hdop, payload)?.map(|v| v as f32),
                    satellites: Field::optional(satellites, payload)?
                        .map(|v| v.clamp(0.0, 255.0) as u8),
                    fix: FixQuality::Gps,
                })
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
