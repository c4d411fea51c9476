//! Sparkplug B: edge nodes (Ignition, Kura, Neuron, HiveMQ Edge, PLC gateways) publishing on
//! `spBv1.0/{group}/{NBIRTH|NDATA|NDEATH|DBIRTH|DDATA|DDEATH}/{node}[/{device}]` with protobuf
//! payloads ([`proto`], from Eclipse Tahu's `sparkplug_b.proto`). One decoder, for the MQTT
//! device listener and the bridges alike (`mqtt::decode_publish`), so a Sparkplug message
//! becomes the same events whichever way it arrives.
//!
//! # What becomes of a message
//! - Each metric set becomes reading events keyed by `group.node` (node metrics) or
//!   `group.node.device`, or by the id `[sparkplug] devices` maps `group/node[/device]` to.
//!   A message's current metrics are one event at the message's timestamp (the payload's: the
//!   metrics' own timestamps differ by the moment each was read, and a reading has one time);
//!   `is_historical` metrics keep their own timestamps, in events of their own grouped by
//!   timestamp, with the header `sparkplug-historical: true`. An event holds at most 64 values;
//!   a birth with more is several events. Names are the births'
//!   (`/` becomes `.`, any other character outside `A-Z a-z 0-9 _ . -` becomes `_`); units come
//!   from the metric's properties (`engUnit`, `engUnits`, `unit`, `units`) where present.
//! - Numbers (the integer types, read signed where the type is, Float, Double, DateTime in ms)
//!   and Booleans (0 or 1) are values. String, Text and UUID metrics ride along as headers
//!   `metric.{name}`; null ones are listed in `sparkplug-null`, and types a reading cannot hold
//!   (Bytes, File, DataSet, Template, arrays) in `sparkplug-skipped` as `name:Type`. A message
//!   with no number at all is a dead letter that says so, its payload kept.
//! - Births (NBIRTH, DBIRTH) are events of their metrics' values with `online = 1`; deaths
//!   (NDEATH, DDEATH) are state events `online = 0`, NDEATH's with the will's `bdSeq`. Every
//!   event carries `sparkplug-message` (its type) and `sparkplug-seq`.
//! - NCMD, DCMD and STATE are commands and host state, not data: refused as dead letters.
//!
//! # Births, aliases and sequence
//! A birth defines its metrics' names, types, aliases and units ([`state::Birth`]); data
//! messages name metrics by alias and are resolved through it. Each edge node's messages count
//! 0 to 255 and around, NBIRTH starting at its own seq. A seq that is not the next one (a lost
//! message), an alias no birth defined, or data from a node whose NBIRTH the gateway has not
//! seen (since it started, or since the node died) is counted (`sparkplug_seq_gap`,
//! `sparkplug_unknown_alias`, `sparkplug_no_birth` in `tributary_events_refused_total{transport
//! = "mqtt"}`) and flags the node: until its next NBIRTH, every event of its data is still
//! stored, with the header `sparkplug-stale` saying why, and a metric with an unknown alias is
//! stored under the name `alias_{n}`. Nothing is dropped; a consumer decides. An NDEATH whose
//! `bdSeq` is not the current session's (a will from an earlier connection arriving late) is
//! stored flagged `old-bdseq` and does not end the current session.
//!
//! Seqs are assigned by the gateway (as for mapped payloads): Sparkplug's own 0-255 count
//! cannot tell a resent message from a new one, so a QoS 1 message resent after a lost PUBACK is
//! stored twice, each with its own `event-id`; Sparkplug sends data at QoS 0, where that cannot
//! happen. The births are remembered in memory: after a restart of the gateway a node's data is
//! flagged `no-birth` until it is born again (Tributary does not yet ask for a rebirth with
//! `Node Control/Rebirth`).
//!
//! # Identity
//! An edge node authenticates like any MQTT device; the built-in ACL rule lets it publish under
//! `spBv1.0/+/+/{its id}/#`, its own edge node id in any group, and `[[auth.acl]]` may allow more.

pub mod config;
pub mod proto;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Mutex;

use prost::Message as _;

pub use self::config::{RawSparkplug, SparkplugConfig};
use self::proto::{datatype, Metric, Payload, Value};
use self::state::{Birth, Flag, Node, Nodes};
use crate::observe::stats::Stats;
use crate::route::mapping::AssignedSeqs;
use crate::route::Undecodable;
use crate::transport::Transport;
use tributary_protocol::event::MAX_VALUES_PER_READING;
use tributary_protocol::{Body, Event, Reading, SensorValue};

/// The namespace every Sparkplug B topic starts with.
pub const NAMESPACE: &str = "spBv1.0/";
/// The most bytes of a String metric kept in its header.
const MAX_STRING_HEADER: usize = 256;

/// An event a publish became, with the headers it carries beside the gateway's own.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub event: Event,
    pub session: u64,
    pub headers: Vec<(String, String)>,
}

/// The message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NBirth,
    NData,
    NDeath,
    DBirth,
    DData,
    DDeath,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::NBirth => "NBIRTH",
            Kind::NData => "NDATA",
            Kind::NDeath => "NDEATH",
            Kind::DBirth => "DBIRTH",
            Kind::DData => "DDATA",
            Kind::DDeath => "DDEATH",
        }
    }
}

/// A parsed topic.
struct Topic<'a> {
    group: &'a str,
    kind: Kind,
    node: &'a str,
    device: Option<&'a str>,
}

fn parse_topic(topic: &str) -> Result<Topic<'_>, String> {
    let rest = topic
        .strip_prefix(NAMESPACE)
        .ok_or_else(|| format!("{topic:?} is not under {NAMESPACE}"))?;
    let levels: Vec<&str> = rest.split('/').collect();
    if levels.first() == Some(&"STATE") {
        return Err("STATE is a host application's state, not data".into());
    }
    let kind = match levels.get(1).copied() {
        Some("NBIRTH") => Kind::NBirth,
        Some("NDATA") => Kind::NData,
        Some("NDEATH") => Kind::NDeath,
        Some("DBIRTH") => Kind::DBirth,
        Some("DDATA") => Kind::DData,
        Some("DDEATH") => Kind::DDeath,
        Some(c @ ("NCMD" | "DCMD")) => {
            return Err(format!("{c} is a command to an edge node, not data"))
        }
        other => {
            return Err(format!(
                "{:?} is not a Sparkplug B message type",
                other.unwrap_or("")
            ))
        }
    };
    let device_level = matches!(kind, Kind::DBirth | Kind::DData | Kind::DDeath);
    let want = if device_level { 4 } else { 3 };
    if levels.len() != want || levels.iter().any(|l| l.is_empty()) {
        return Err(format!(
            "a {} topic is {NAMESPACE}{{group}}/{}/{{edge node}}{}",
            kind.name(),
            kind.name(),
            if device_level { "/{device}" } else { "" }
        ));
    }
    Ok(Topic {
        group: levels[0],
        kind,
        node: levels[2],
        device: levels.get(3).copied(),
    })
}

/// The decoder and the edge nodes' state it keeps.
#[derive(Debug)]
pub struct Sparkplug {
    config: SparkplugConfig,
    nodes: Mutex<Nodes>,
    stats: Stats,
}

impl Sparkplug {
    pub fn new(config: SparkplugConfig, stats: Stats) -> Self {
        Self {
            config,
            nodes: Mutex::new(Nodes::default()),
            stats,
        }
    }

    /// Whether a topic is Sparkplug's.
    pub fn covers(topic: &str) -> bool {
        topic.starts_with(NAMESPACE)
    }

    /// The device id of a node's or device's events.
    fn device_id(&self, t: &Topic<'_>) -> Result<String, Undecodable> {
        let path = match t.device {
            Some(d) => format!("{}/{}/{d}", t.group, t.node),
            None => format!("{}/{}", t.group, t.node),
        };
        if let Some(id) = self.config.devices.get(&path) {
            return Ok(id.clone());
        }
        let id = path.replace('/', ".");
        tributary_protocol::validate_device_id(&id).map_err(|e| {
            Undecodable::unnamed(format!(
                "Sparkplug {path:?} makes no device id ({e}): map it in [sparkplug] devices"
            ))
        })?;
        Ok(id)
    }

    /// The events of one Sparkplug publish, or why it has none.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<Vec<Decoded>, Undecodable> {
        let t = parse_topic(topic).map_err(Undecodable::unnamed)?;
        let device_id = self.device_id(&t)?;
        let fail = |reason: String| Undecodable::of(device_id.clone(), reason);
        let payload = Payload::decode(payload)
            .map_err(|e| fail(format!("not a Sparkplug B payload: {e}")))?;
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let mut spare = Node {
            flag: Some(Flag::NoBirth),
            ..Node::default()
        };
        let node = nodes.get(t.group, t.node).unwrap_or(&mut spare);
        let mut new_flags: Vec<Flag> = Vec::new();
        let mut stale: Option<&'static str> = None;
        let mut online: Option<f64> = None;
        match t.kind {
            Kind::NBirth => {
                node.next_seq = None;
                node.take_seq(payload.seq);
                node.birth = Some(Birth::of(&payload.metrics));
                node.devices.clear();
                node.bd_seq = bd_seq(&payload.metrics);
                node.flag = None;
                online = Some(1.0);
            }
            Kind::NDeath => {
                let will = bd_seq(&payload.metrics);
                if node.bd_seq.is_some() && will.is_some() && will != node.bd_seq {
                    stale = Some("old-bdseq");
                } else {
                    node.birth = None;
                    node.devices.clear();
                    node.next_seq = None;
                    node.bd_seq = None;
                    node.flag = Some(Flag::NoBirth);
                }
                online = Some(0.0);
            }
            Kind::NData | Kind::DBirth | Kind::DData | Kind::DDeath => {
                if !node.take_seq(payload.seq) && node.birth.is_some() {
                    new_flags.push(Flag::SeqGap);
                }
                match t.kind {
                    Kind::DBirth => {
                        if let Some(d) = t.device {
                            let remembered = node.device_born(d, Birth::of(&payload.metrics));
                            if let (false, Some(suppressed)) = (
                                remembered,
                                tributary_common::ratelog::allow("sparkplug_devices"),
                            ) {
                                tracing::warn!(message = "A Sparkplug edge node has more devices than are remembered; this one's data by alias is unresolved (flagged unknown-alias).", group = t.group, node = t.node, device = d, limit = state::MAX_DEVICES_PER_NODE, suppressed);
                            }
                        }
                        online = Some(1.0);
                    }
                    Kind::DDeath => online = Some(0.0),
                    _ => {}
                }
            }
        }
        let birth = match t.device {
            Some(d) => node.devices.get(d),
            None => node.birth.as_ref(),
        };
        let values = Values::of(&payload, birth, now_ms);
        if !values.unknown_aliases.is_empty() {
            new_flags.push(Flag::UnknownAlias);
        }
        if let (Kind::DDeath, Some(d)) = (t.kind, t.device) {
            node.devices.remove(d);
        }
        if node.birth.is_none() && !matches!(t.kind, Kind::NDeath) {
            new_flags.push(Flag::NoBirth);
        }
        for flag in &new_flags {
            node.flag.get_or_insert(*flag);
        }
        let flag = node.flag;
        drop(nodes);
        for flag in new_flags {
            self.stats
                .record_refusal(Transport::Mqtt, flag.counted(), Some(&device_id), None);
        }
        // A death is what it says whatever came before it; other messages carry the node's flag.
        let stale = match t.kind {
            Kind::NDeath => stale,
            _ => stale.or(flag.map(Flag::label)),
        };
        values.into_events(&device_id, t.kind, &payload, online, stale)
    }
}

/// The bdSeq a birth or death carries.
fn bd_seq(metrics: &[Metric]) -> Option<u64> {
    metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))
        .and_then(|m| match m.value {
            Some(Value::Long(v)) => Some(v),
            Some(Value::Int(v)) => Some(u64::from(v)),
            _ => None,
        })
}

/// A message's metrics, sorted into what events can carry.
struct Values {
    /// When the message was sent (the payload's timestamp, else when it arrived): the time of
    /// its current values.
    sent: i64,
    /// By (timestamp, historical): the numbers.
    numbers: BTreeMap<(i64, bool), Vec<SensorValue>>,
    strings: Vec<(String, String)>,
    nulls: Vec<String>,
    skipped: Vec<String>,
    unknown_aliases: Vec<u64>,
}

impl Values {
    fn of(payload: &Payload, birth: Option<&Birth>, now_ms: i64) -> Self {
        let sent = payload
            .timestamp
            .and_then(|t| i64::try_from(t).ok())
            .unwrap_or(now_ms);
        let mut out = Values {
            sent,
            numbers: BTreeMap::new(),
            strings: Vec::new(),
            nulls: Vec::new(),
            skipped: Vec::new(),
            unknown_aliases: Vec::new(),
        };
        for m in &payload.metrics {
            let defined = birth.and_then(|b| b.resolve(m));
            let name = match (defined, &m.name, m.alias) {
                (Some(d), _, _) => value_name(&d.name),
                (None, Some(n), _) => value_name(n),
                (None, None, Some(alias)) => {
                    out.unknown_aliases.push(alias);
                    format!("alias_{alias}")
                }
                (None, None, None) => continue,
            };
            let dt = m.datatype.or(defined.and_then(|d| d.datatype));
            let unit = defined
                .map(|d| d.unit.clone())
                .filter(|u| !u.is_empty())
                .or_else(|| state::unit_of(m))
                .unwrap_or_default();
            if m.is_null == Some(true) {
                out.nulls.push(name);
                continue;
            }
            match (number(dt, m.value.as_ref()), &m.value) {
                (Some(value), _) => {
                    // A message's current values are one reading, at the message's time; a
                    // historical value keeps its own.
                    let historical = m.is_historical == Some(true);
                    let at = match m.timestamp.and_then(|t| i64::try_from(t).ok()) {
                        Some(t) if historical => t,
                        _ => sent,
                    };
                    out.numbers
                        .entry((at, historical))
                        .or_default()
                        .push(SensorValue { name, value, unit });
                }
                (None, Some(Value::String(s))) => {
                    let mut s = s.clone();
                    if s.len() > MAX_STRING_HEADER {
                        let mut cut = MAX_STRING_HEADER;
                        while !s.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        s.truncate(cut);
                    }
                    out.strings.push((format!("metric.{name}"), s));
                }
                (None, _) => out
                    .skipped
                    .push(format!("{name}:{}", dt.map_or("Unknown", datatype::name))),
            }
        }
        out
    }

    fn into_events(
        mut self,
        device_id: &str,
        kind: Kind,
        payload: &Payload,
        online: Option<f64>,
        stale: Option<&str>,
    ) -> Result<Vec<Decoded>, Undecodable> {
        if let Some(online) = online {
            let values = self.numbers.entry((self.sent, false)).or_default();
            values.insert(
                0,
                SensorValue {
                    name: "online".into(),
                    value: online,
                    unit: String::new(),
                },
            );
        }
        if self.numbers.is_empty() {
            return Err(Undecodable::of(
                device_id,
                format!(
                    "{} with no numeric metric (strings: {}, null: {}, not storable: {}): a reading carries numbers",
                    kind.name(),
                    self.strings.len(),
                    self.nulls.len(),
                    self.skipped.len()
                ),
            ));
        }
        let mut extra: Vec<(String, String)> = std::mem::take(&mut self.strings);
        if !self.nulls.is_empty() {
            extra.push(("sparkplug-null".into(), self.nulls.join(",")));
        }
        if !self.skipped.is_empty() {
            extra.push(("sparkplug-skipped".into(), self.skipped.join(",")));
        }
        let mut base = vec![("sparkplug-message".to_owned(), kind.name().to_owned())];
        if let Some(seq) = payload.seq {
            base.push(("sparkplug-seq".into(), seq.to_string()));
        }
        if let Some(why) = stale {
            base.push(("sparkplug-stale".into(), why.to_owned()));
        }
        let mut out = Vec::new();
        for ((at, historical), values) in self.numbers {
            for chunk in values.chunks(MAX_VALUES_PER_READING) {
                let (seq, session) = AssignedSeqs::global().next();
                let mut headers = base.clone();
                if historical {
                    headers.push(("sparkplug-historical".into(), "true".into()));
                }
                if out.is_empty() {
                    headers.append(&mut extra);
                }
                let event = Event {
                    device_id: device_id.to_owned(),
                    seq,
                    time_ms: u64::try_from(at).unwrap_or(0),
                    body: Body::Reading(Reading {
                        values: chunk.to_vec(),
                    }),
                };
                event
                    .validate()
                    .map_err(|e| Undecodable::of(device_id, format!("{}: {e}", kind.name())))?;
                out.push(Decoded {
                    event,
                    session,
                    headers,
                });
            }
        }
        Ok(out)
    }
}

/// A metric's name as a value name: `/` becomes `.`, other characters a value name cannot hold
/// become `_`.
fn value_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' => '.',
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') => c,
            _ => '_',
        })
        .collect()
}

/// A metric's value as a number, if its type is one.
fn number(dt: Option<u32>, value: Option<&Value>) -> Option<f64> {
    use datatype::*;
    let value = value?;
    Some(match (dt, value) {
        (Some(INT8), Value::Int(v)) => f64::from(*v as u8 as i8),
        (Some(INT16), Value::Int(v)) => f64::from(*v as u16 as i16),
        (Some(INT32), Value::Int(v)) => f64::from(*v as i32),
        (Some(INT64), Value::Long(v)) => *v as i64 as f64,
        (Some(UINT8 | UINT16 | UINT32), Value::Int(v)) => f64::from(*v),
        (Some(UINT64 | DATETIME), Value::Long(v)) => *v as f64,
        (Some(FLOAT) | None, Value::Float(v)) => f64::from(*v),
        (Some(DOUBLE) | None, Value::Double(v)) => *v,
        (Some(BOOLEAN) | None, Value::Boolean(v)) => f64::from(u8::from(*v)),
        // No type from the message or a birth: the value's own wire type says what it is.
        (None, Value::Int(v)) => f64::from(*v),
        (None, Value::Long(v)) => *v as f64,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
