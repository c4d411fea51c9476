//! Rules: stream processing at the edge, exactly once.
//!
//! # Design
//! A rule (`[[rules]]` in the config) selects device events by kind, device id glob and route
//! (the topic the raw event goes to), runs its logic ([`kinds`]: `filter`, `deadband`,
//! `downsample`) per device on event time, and emits derived events to its own topic, keyed by
//! device id, in any value format. A derived event has the shape of a device event (the JSON of
//! a reading or a position), and headers that say where it came from:
//! - `event-id`: `{source event-id}/{rule}`: the event that made the rule emit, and the rule;
//!   unique, so consumers drop repeats by it as they do for raw events;
//! - `rule`, `rule-version`; `source-seqs` (`{first}-{last}`) and `source-count`: the device
//!   events it stands for (a downsample's interval);
//! - `kind`, `content-type`, as for raw events.
//!
//! Rules run inside the spool writer's transaction, on the events of the group being committed,
//! in the order they are stored (per device, seq order). The raw rows, the derived rows and each
//! rule's new state for the device (`device_rule_state`) commit together or not at all. So after a
//! crash at any moment a rule has neither lost nor repeated a derived event: an uncommitted
//! group was never acknowledged, the device sends it again, and the rule runs on it again from
//! the state it had before. Retransmissions the spool recognises as duplicates are not run. Kafka
//! then gets each derived row as it gets raw rows: once, or again after a crash between its
//! delivery and the row's deletion, with the same `event-id`.
//!
//! # Invariants
//! - Raw events are forwarded as before, unless a selecting rule has `replace_raw = true` (for
//!   a deadband that should be all that crosses a metered link): then the device is
//!   acknowledged, the rule's output is stored, and the raw row is not.
//! - A rule's version is a hash of its definition. State stored under another version (the rule
//!   was changed) is dropped when the spool opens, and that is logged.
//! - Late events (older than what the rule processed for that device) are counted
//!   (`tributary_rule_late_total`) and left out of the derived stream, never dropped from the raw
//!   one.
//! - A rule added later sees the events stored from then on, not the backlog.
//!
//! `tributary rules test --config gateway.toml --input events.jsonl` runs the same code over a
//! file of events, offline.

pub mod derived;
pub mod expr;
pub mod geofence;
pub mod kinds;
pub mod offline;
pub mod sketch;
pub mod store;
pub mod threshold;
pub mod window;

use std::collections::HashMap;

use serde::Deserialize;
use tributary_protocol::{Event, Kind};

use crate::route::{self, headers, Encoder, Format, FormatError};
pub use derived::Derived;
pub use kinds::{Band, Logic, Mode, State};
use tributary_spool::record::{EventId, Record};

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// A hash of the definition: changes when the rule does.
    pub version: String,
    pub kind: Option<Kind>,
    /// Device id glob (`*`, `?`).
    pub device: Option<String>,
    /// The topic the raw event is routed to.
    pub route: Option<String>,
    /// An MQTT topic filter the event must have arrived on (`None`: any, TCP too).
    pub mqtt_topic: Option<String>,
    pub logic: Logic,
    pub topic: String,
    pub format: Format,
    pub replace_raw: bool,
}

impl Rule {
    /// Whether this rule runs on `event`, whose raw record goes to `route`.
    pub fn selects(&self, event: &Event, route: &str, mqtt_topic: Option<&str>) -> bool {
        self.kind.is_none_or(|k| k == event.kind())
            && self
                .device
                .as_deref()
                .is_none_or(|g| route::glob_matches(g, &event.device_id))
            && self.route.as_deref().is_none_or(|r| r == route)
            && self
                .mqtt_topic
                .as_deref()
                .is_none_or(|f| mqtt_topic.is_some_and(|t| route::filter_matches(f, t)))
    }
}

/// `[[rules]]` as written.
#[derive(Debug, Default, Deserialize, serde::Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    /// `filter`, `deadband`, `downsample`, `window`, `threshold` or `geofence`.
    #[serde(rename = "type")]
    pub kind_of_rule: Option<String>,
    pub kind: Option<String>,
    pub device: Option<String>,
    pub route: Option<String>,
    pub mqtt_topic: Option<String>,
    pub topic: Option<String>,
    pub format: Option<String>,
    pub avro_schema_id: Option<u32>,
    #[serde(default)]
    pub replace_raw: bool,
    /// filter: the condition.
    #[serde(rename = "where")]
    pub condition: Option<String>,
    /// deadband: the number watched.
    pub field: Option<String>,
    pub absolute: Option<f64>,
    pub relative: Option<f64>,
    pub heartbeat_ms: Option<u64>,
    /// downsample.
    pub interval_ms: Option<u64>,
    pub mode: Option<String>,
    /// window.
    pub size_ms: Option<u64>,
    pub hop_ms: Option<u64>,
    pub lateness_ms: Option<u64>,
    pub fields: Option<Vec<String>>,
    pub aggregates: Option<Vec<String>>,
    /// threshold.
    pub when: Option<String>,
    pub for_ms: Option<u64>,
    pub clear: Option<String>,
    pub clear_for_ms: Option<u64>,
    /// geofence.
    pub zones: Option<std::path::PathBuf>,
    pub dwell_ms: Option<u64>,
    pub max_hdop: Option<f64>,
}

/// Why a rule was refused: the key (`rules[i].field`) and the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub key: String,
    pub problem: String,
}

/// Validates `[[rules]]`.
pub fn validate(raw: &[RawRule]) -> Result<Vec<Rule>, RuleError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let bad = |field: &str, problem: String| RuleError {
            key: format!("rules[{i}].{field}"),
            problem,
        };
        let name = r.name.clone().unwrap_or_default();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(bad(
                "name",
                format!("{name:?} is not a rule name (1 to 64 of A-Z a-z 0-9 _ - .)"),
            ));
        }
        if rules.iter().any(|x| x.name == name) {
            return Err(bad("name", format!("{name:?} is used by an earlier rule")));
        }
        let kind = tributary_common::validate::names::event_kind(r.kind.as_deref())
            .map_err(|p| bad("kind", p))?;
        if let Some(glob) = &r.device {
            tributary_common::validate::names::device_glob(glob).map_err(|p| bad("device", p))?;
        }
        let topic = r.topic.clone().unwrap_or_default();
        if !tributary_common::validate::names::legal_topic(&topic) {
            return Err(bad(
                "topic",
                format!("{topic:?} is missing or not a legal Kafka topic name"),
            ));
        }
        let format = crate::route::config::value_format(r.format.as_deref(), r.avro_schema_id)
            .map_err(|(f, p)| bad(f, p))?;
        if let Some(filter) = r
            .mqtt_topic
            .as_deref()
            .filter(|f| !tributary_common::validate::names::valid_filter(f))
        {
            return Err(bad(
                "mqtt_topic",
                format!("{filter:?} is not an MQTT filter (+ for one level, # last)"),
            ));
        }
        let logic = logic(r).map_err(|(f, p)| bad(f, p))?;
        rules.push(Rule {
            version: version(r, &logic),
            name,
            kind,
            device: r.device.clone(),
            route: r.route.clone(),
            mqtt_topic: r.mqtt_topic.clone(),
            logic,
            topic,
            format,
            replace_raw: r.replace_raw,
        });
    }
    Ok(rules)
}

fn logic(r: &RawRule) -> Result<Logic, (&'static str, String)> {
    match r.kind_of_rule.as_deref() {
        Some("filter") => {
            only(r, &["where"])?;
            let text = r
                .condition
                .as_deref()
                .ok_or(("where", "a filter needs a condition".to_owned()))?;
            let condition =
                expr::Condition::parse(text).map_err(|e| ("where", format!("{text:?}: {e}")))?;
            Ok(Logic::Filter { condition })
        }
        Some("deadband") => {
            only(r, &["field", "absolute", "relative", "heartbeat_ms"])?;
            let text = r
                .field
                .as_deref()
                .ok_or(("field", "a deadband needs the number it watches".to_owned()))?;
            let field =
                expr::Number::parse(text).map_err(|e| ("field", format!("{text:?}: {e}")))?;
            let band = match (r.absolute, r.relative) {
                (Some(a), None) if a.is_finite() && a >= 0.0 => Band::Absolute(a),
                (None, Some(f)) if f.is_finite() && f >= 0.0 => Band::Relative(f),
                (Some(_), Some(_)) => {
                    return Err(("relative", "give absolute or relative, not both".into()))
                }
                (None, None) => {
                    return Err(("absolute", "a deadband needs absolute or relative".into()))
                }
                (Some(_), None) => return Err(("absolute", "must be a number ≥ 0".into())),
                (None, Some(_)) => return Err(("relative", "must be a number ≥ 0".into())),
            };
            if r.heartbeat_ms == Some(0) {
                return Err(("heartbeat_ms", "must be more than 0 (or left out)".into()));
            }
            Ok(Logic::Deadband {
                field,
                band,
                heartbeat_ms: r.heartbeat_ms,
            })
        }
        Some("downsample") => {
            only(r, &["interval_ms", "mode"])?;
            let interval_ms = match r.interval_ms {
                Some(ms) if ms > 0 => ms,
                _ => return Err(("interval_ms", "a downsample needs interval_ms > 0".into())),
            };
            let mode = match r.mode.as_deref().unwrap_or("last") {
                "first" => Mode::First,
                "last" => Mode::Last,
                "mean" => Mode::Mean,
                other => {
                    return Err((
                        "mode",
                        format!("{other:?} is not \"first\", \"last\" or \"mean\""),
                    ))
                }
            };
            Ok(Logic::Downsample { interval_ms, mode })
        }
        Some("window") => window_spec(r).map(Logic::Window),
        Some("threshold") => threshold_spec(r).map(Logic::Threshold),
        Some("geofence") => geofence_spec(r).map(Logic::Geofence),
        Some(other) => Err(("type", format!("{other:?} is not {TYPES}"))),
        None => Err(("type", format!("missing: {TYPES}"))),
    }
}

const TYPES: &str =
    "\"filter\", \"deadband\", \"downsample\", \"window\", \"threshold\" or \"geofence\"";

/// The keys each type of rule takes beyond the common ones; any other that is set is refused.
fn only(r: &RawRule, keys: &[&str]) -> Result<(), (&'static str, String)> {
    let set: [(&'static str, bool); 19] = [
        ("where", r.condition.is_some()),
        ("field", r.field.is_some()),
        ("absolute", r.absolute.is_some()),
        ("relative", r.relative.is_some()),
        ("heartbeat_ms", r.heartbeat_ms.is_some()),
        ("interval_ms", r.interval_ms.is_some()),
        ("mode", r.mode.is_some()),
        ("size_ms", r.size_ms.is_some()),
        ("hop_ms", r.hop_ms.is_some()),
        ("lateness_ms", r.lateness_ms.is_some()),
        ("fields", r.fields.is_some()),
        ("aggregates", r.aggregates.is_some()),
        ("when", r.when.is_some()),
        ("for_ms", r.for_ms.is_some()),
        ("clear", r.clear.is_some()),
        ("clear_for_ms", r.clear_for_ms.is_some()),
        ("zones", r.zones.is_some()),
        ("dwell_ms", r.dwell_ms.is_some()),
        ("max_hdop", r.max_hdop.is_some()),
    ];
    match set.iter().find(|(k, on)| *on && !keys.contains(k)) {
        Some((k, _)) => Err((k, "does not apply to a rule of this type".to_owned())),
        None => Ok(()),
    }
}

fn window_spec(r: &RawRule) -> Result<window::Spec, (&'static str, String)> {
    only(
        r,
        &["size_ms", "hop_ms", "lateness_ms", "fields", "aggregates"],
    )?;
    let size_ms = match r.size_ms {
        Some(ms) if ms > 0 => ms,
        _ => return Err(("size_ms", "a window needs size_ms > 0".into())),
    };
    let hop_ms = r.hop_ms.unwrap_or(size_ms);
    if hop_ms == 0 || hop_ms > size_ms {
        return Err((
            "hop_ms",
            format!("must be more than 0 and at most size_ms ({size_ms})"),
        ));
    }
    if size_ms / hop_ms > 100 {
        return Err((
            "hop_ms",
            "at most 100 windows may overlap (size_ms / hop_ms)".into(),
        ));
    }
    let names = r.fields.as_deref().unwrap_or_default();
    if names.is_empty() {
        return Err((
            "fields",
            "a window needs at least one field, such as \"values.temperature\"".into(),
        ));
    }
    let mut fields = Vec::new();
    for text in names {
        let number = expr::Number::parse(text).map_err(|e| ("fields", format!("{text:?}: {e}")))?;
        let name = text.strip_prefix("values.").unwrap_or(text).to_owned();
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err((
                "fields",
                format!(
                    "{text:?}: name a field (values.<name>, speed_mps, ...), not an expression"
                ),
            ));
        }
        let unit = match name.as_str() {
            "seq" => "1",
            "time_ms" => "ms",
            other => tributary_protocol::PositionField::from_name(other).map_or("", |f| f.unit()),
        };
        fields.push((name, number, unit.to_owned()));
    }
    let aggregates = match &r.aggregates {
        None => window::Aggregate::DEFAULT.to_vec(),
        Some(list) => list
            .iter()
            .map(|a| {
                window::Aggregate::parse(a).ok_or((
                    "aggregates",
                    format!(
                        "{a:?} is not count, min, max, mean, sum, last or a percentile \
                         (p50, p95, p99.9: above 0, at most 100)"
                    ),
                ))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(window::Spec {
        size_ms,
        hop_ms,
        lateness_ms: r.lateness_ms.unwrap_or(0),
        fields,
        aggregates,
    })
}

fn threshold_spec(r: &RawRule) -> Result<threshold::Spec, (&'static str, String)> {
    only(r, &["when", "for_ms", "clear", "clear_for_ms"])?;
    let condition = |key: &'static str, text: &str| {
        expr::Condition::parse(text).map_err(|e| (key, format!("{text:?}: {e}")))
    };
    let when = condition(
        "when",
        r.when.as_deref().ok_or((
            "when",
            "a threshold needs the condition that raises it".to_owned(),
        ))?,
    )?;
    let clear = r
        .clear
        .as_deref()
        .map(|c| condition("clear", c))
        .transpose()?;
    Ok(threshold::Spec {
        when,
        for_ms: r.for_ms.unwrap_or(0),
        clear,
        clear_for_ms: r.clear_for_ms.unwrap_or(0),
    })
}

fn geofence_spec(r: &RawRule) -> Result<geofence::Spec, (&'static str, String)> {
    only(r, &["zones", "dwell_ms", "max_hdop"])?;
    let path = r.zones.as_deref().ok_or((
        "zones",
        "a geofence needs a GeoJSON file of zones".to_owned(),
    ))?;
    let zones = geofence::load(path).map_err(|e| ("zones", e))?;
    if r.max_hdop.is_some_and(|h| !(h.is_finite() && h > 0.0)) {
        return Err(("max_hdop", "must be a number above 0".into()));
    }
    Ok(geofence::Spec {
        zones: std::sync::Arc::new(zones),
        dwell_ms: r.dwell_ms,
        max_hdop: r.max_hdop,
    })
}

/// A stable hash of a rule's definition (FNV-1a over its fields as JSON, and the zones a
/// geofence read from its file), as 16 hex digits.
fn version(r: &RawRule, logic: &Logic) -> String {
    let mut text = serde_json::to_string(r).unwrap_or_default();
    if let Logic::Geofence(spec) = logic {
        text.push_str(&format!("{:?}", spec.zones));
    }
    format!("{:016x}", crate::hash::fnv1a(text.as_bytes()))
}

/// The configured rules and what they need to write their output.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// `None` without rules (building one parses the Avro schema).
    encoder: Option<std::sync::Arc<Encoder>>,
}

/// What the rules made of one stored event.
#[derive(Debug, Default)]
pub struct Output {
    /// Derived records, in rule order, with the index of the rule that emitted each.
    pub records: Vec<(usize, Record)>,
    /// A selecting rule replaces the raw event.
    pub replace_raw: bool,
    /// Rules that found the event late.
    pub late: Vec<usize>,
}

/// Where [`RuleSet::run`] finds each rule's state for a device, to update in place: the spool's
/// pending group over its committed states, or `tributary rules test`'s map.
pub trait States {
    fn state(&mut self, rule: usize, device: &str) -> &mut State;
}

impl States for HashMap<(usize, String), State> {
    fn state(&mut self, rule: usize, device: &str) -> &mut State {
        self.entry((rule, device.to_owned())).or_default()
    }
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Result<Self, FormatError> {
        let encoder = if rules.is_empty() {
            None
        } else {
            Some(std::sync::Arc::new(Encoder::new()?))
        };
        Ok(Self { rules, encoder })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs every rule that selects `event` (stored as `source`, its raw record routed to
    /// `route`), updating each rule's state for the device in `states`.
    pub fn run(
        &self,
        source: &EventId,
        event: &Event,
        (route, mqtt_topic): (&str, Option<&str>),
        states: &mut impl States,
    ) -> Output {
        let mut out = Output::default();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.selects(event, route, mqtt_topic) {
                continue;
            }
            out.replace_raw |= rule.replace_raw;
            let mut none = State::default();
            let state = if rule.logic.has_state() {
                states.state(i, &event.device_id)
            } else {
                &mut none
            };
            let (derived, late) = kinds::step(&rule.logic, state, event);
            if late {
                out.late.push(i);
            }
            for d in &derived {
                out.records.push((i, self.record(rule, source, d)));
            }
        }
        out
    }

    /// The record for a derived event.
    fn record(&self, rule: &Rule, source: &EventId, d: &Derived) -> Record {
        let encoded = match &self.encoder {
            Some(encoder) => encoder
                .encode(&d.event, rule.format)
                .map_err(|e| e.to_string()),
            None => Err("no encoder".to_owned()),
        };
        // Encoding a validated event fails only with a broken schema file, which start-up
        // already refused; should it ever, the record says so instead of panicking.
        let value = encoded.unwrap_or_else(|e| {
            format!("{{\"error\":\"encoding the derived event failed: {e}\"}}").into_bytes()
        });
        let trigger = EventId {
            device_id: source.device_id.clone(),
            session: source.session,
            seq: d.event.seq,
            writer: None,
        };
        let tag = d
            .tag
            .as_deref()
            .map(|t| format!("@{t}"))
            .unwrap_or_default();
        let mut headers = vec![
            (
                headers::EVENT_ID.to_owned(),
                format!("{trigger}/{}{tag}", rule.name),
            ),
            (headers::KIND.to_owned(), d.event.kind().as_str().to_owned()),
            (
                headers::CONTENT_TYPE.to_owned(),
                rule.format.content_type().to_owned(),
            ),
            ("rule".to_owned(), rule.name.clone()),
            ("rule-version".to_owned(), rule.version.clone()),
            (
                "source-seqs".to_owned(),
                format!("{}-{}", d.first_seq, d.event.seq),
            ),
            ("source-count".to_owned(), d.count.to_string()),
        ];
        headers.extend(d.headers.iter().cloned());
        Record {
            topic: rule.topic.clone(),
            key: d.event.device_id.clone().into_bytes(),
            value,
            timestamp_ms: i64::try_from(d.event.time_ms).unwrap_or(i64::MAX),
            headers,
            origin: None,
            event: None,
            mqtt_topic: None,
        }
    }
}

/// A reading for tests: `values` are `(name, value)` pairs in °C.
#[cfg(test)]
pub(crate) fn test_reading(device: &str, seq: u64, time_ms: u64, values: &[(&str, f64)]) -> Event {
    Event {
        device_id: device.into(),
        seq,
        time_ms,
        body: tributary_protocol::Body::Reading(tributary_protocol::Reading {
            values: values
                .iter()
                .map(|(n, v)| tributary_protocol::SensorValue {
                    name: (*n).into(),
                    value: *v,
                    unit: "Cel".into(),
                })
                .collect(),
        }),
    }
}

/// A derived reading's value by name, for tests (NaN when it has none).
#[cfg(test)]
pub(crate) fn test_value(d: &Derived, name: &str) -> f64 {
    match &d.event.body {
        tributary_protocol::Body::Reading(r) => r
            .values
            .iter()
            .find(|v| v.name == name)
            .map_or(f64::NAN, |v| v.value),
        tributary_protocol::Body::Position(_) => f64::NAN,
    }
}

#[cfg(test)]
mod tests;
