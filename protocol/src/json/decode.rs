//! The one decoder of JSON events: MQTT payloads on `devices/{device_id}/{kind}` ([`decode`])
//! and lines that name their device and kind ([`decode_line`]), in one pass over the bytes.
//!
//! A payload is one JSON event or an array of them, in the flat form of [`super::JsonEvent`],
//! where `device_id` and `kind` may be left out because the topic supplies them. Every field is
//! read straight into one struct: no intermediate `Value`, no second parse per event, no
//! buffering for a tagged or flattened enum. Refused: a payload naming another device or kind
//! than its topic, a reading without `values`, a position without `lat` and `lon`. What
//! [`super::JsonEvent`] writes, this reads back as the same event (a test holds them to it).

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use serde::Deserialize;
use serde_json::error::Category;

use crate::event::{Body, Event, FixQuality, Kind, Position, Reading, SensorValue};

/// One event as an MQTT device may send it.
#[derive(Deserialize)]
struct Incoming {
    #[serde(default)]
    device_id: Option<String>,
    seq: u64,
    time_ms: u64,
    #[serde(default)]
    session: Option<u64>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    values: Option<Vec<SensorValue>>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default)]
    alt_m: Option<f32>,
    #[serde(default)]
    speed_mps: Option<f32>,
    #[serde(default)]
    heading_deg: Option<f32>,
    #[serde(default)]
    hdop: Option<f32>,
    #[serde(default)]
    satellites: Option<u8>,
    #[serde(default)]
    fix: Option<FixQuality>,
}

/// The events of `payload`, published on `devices/{device_id}/{kind}`, each with its boot
/// session (0: none); or why not. Validation is the caller's ([`Event::validate`]).
pub fn decode(device_id: &str, kind: Kind, payload: &[u8]) -> Result<Vec<(Event, u64)>, String> {
    let array = payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let parsed = if array {
        serde_json::from_slice::<Vec<Incoming>>(payload)
    } else {
        serde_json::from_slice::<Incoming>(payload).map(|one| vec![one])
    };
    let items = parsed.map_err(|e| match e.classify() {
        Category::Data => format!("not a {kind} event: {e}"),
        Category::Syntax | Category::Eof | Category::Io => format!("payload is not JSON: {e}"),
    })?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            event(device_id, kind, item).map_err(|e| format!("event {index}: {e}"))
        })
        .collect()
}

/// One JSON event that names its device and kind itself, as the gateway writes events to Kafka
/// (and `tributary rules test` reads them back), with its boot session (0: none); or why not.
pub fn decode_line(line: &[u8]) -> Result<(Event, u64), String> {
    let item = serde_json::from_slice::<Incoming>(line).map_err(|e| match e.classify() {
        Category::Data => format!("not an event: {e}"),
        Category::Syntax | Category::Eof | Category::Io => format!("not JSON: {e}"),
    })?;
    let device_id = item
        .device_id
        .clone()
        .ok_or_else(|| "no device_id".to_owned())?;
    let kind = match item.kind.as_deref() {
        Some(name) => Kind::from_name(name)
            .ok_or_else(|| format!("kind {name:?} is not \"reading\" or \"position\""))?,
        None => return Err("no kind (\"reading\" or \"position\")".to_owned()),
    };
    event(&device_id, kind, item)
}

fn event(device_id: &str, kind: Kind, item: Incoming) -> Result<(Event, u64), String> {
    if let Some(payload) = item.device_id.as_deref().filter(|p| *p != device_id) {
        return Err(format!(
            "payload device_id {payload:?} differs from the topic's {device_id:?}"
        ));
    }
    if let Some(payload) = item.kind.as_deref().filter(|p| *p != kind.as_str()) {
        return Err(format!(
            "payload kind {payload} differs from the topic's {kind}"
        ));
    }
    let body = match kind {
        Kind::Reading => Body::Reading(Reading {
            values: item
                .values
                .ok_or_else(|| format!("not a {kind} event: missing field `values`"))?,
        }),
        Kind::Position => {
            let (Some(lat), Some(lon)) = (item.lat, item.lon) else {
                return Err(format!("not a {kind} event: it needs `lat` and `lon`"));
            };
            Body::Position(Position {
                lat,
                lon,
                alt_m: item.alt_m,
                speed_mps: item.speed_mps,
                heading_deg: item.heading_deg,
                hdop: item.hdop,
                satellites: item.satellites,
                fix: item.fix.unwrap_or(FixQuality::Gps),
            })
        }
    };
    let event = Event {
        device_id: device_id.to_owned(),
        seq: item.seq,
        time_ms: item.time_ms,
        body,
    };
    Ok((event, item.session.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::JsonEvent;

    /// Every field a payload may carry is read, and what [`JsonEvent`] writes of the event is
    /// read back as the same event.
    #[test]
    fn it_reads_every_field_and_reads_back_what_the_json_event_form_writes() {
        let payloads: [(&str, Kind, u64); 4] = [
            (
                r#"{"seq":1,"time_ms":5,"values":[{"name":"t","value":1.5,"unit":"Cel"}]}"#,
                Kind::Reading,
                0,
            ),
            (
                r#"{"device_id":"d-1","kind":"reading","seq":2,"time_ms":6,"session":9,"values":[]}"#,
                Kind::Reading,
                9,
            ),
            (
                r#"{"seq":3,"time_ms":7,"lat":52.5,"lon":13.4}"#,
                Kind::Position,
                0,
            ),
            (
                r#"{"seq":4,"time_ms":8,"kind":"position","lat":1,"lon":2,"alt_m":3,"speed_mps":4,"heading_deg":5,"hdop":0.9,"satellites":7,"fix":"rtk_fixed"}"#,
                Kind::Position,
                0,
            ),
        ];
        for (payload, kind, session) in payloads {
            let ours = decode("d-1", kind, payload.as_bytes()).expect(payload);
            assert_eq!(ours.len(), 1);
            let (event, got_session) = ours[0].clone();
            assert_eq!(got_session, session, "{payload}");
            assert_eq!(event.kind(), kind);
            let written = serde_json::to_vec(&JsonEvent::from(event.clone())).expect("json");
            let (back, _) = decode_line(&written).expect(payload);
            assert_eq!(back, event, "{payload}");
        }
        let (full, _) = decode("d-1", Kind::Position, payloads[3].0.as_bytes()).unwrap()[0].clone();
        let Body::Position(p) = full.body else {
            panic!("a position");
        };
        assert_eq!(
            (
                p.alt_m,
                p.speed_mps,
                p.heading_deg,
                p.hdop,
                p.satellites,
                p.fix
            ),
            (
                Some(3.0),
                Some(4.0),
                Some(5.0),
                Some(0.9),
                Some(7),
                FixQuality::RtkFixed
            )
        );
    }

    #[test]
    fn refusals_say_what_was_wrong() {
        let cases: [(&str, Kind, &str); 5] = [
            ("{not json", Kind::Reading, "not JSON"),
            (r#"{"seq":1}"#, Kind::Reading, "missing field `time_ms`"),
            (
                r#"{"seq":1,"time_ms":2}"#,
                Kind::Reading,
                "missing field `values`",
            ),
            (
                r#"[{"seq":1,"time_ms":2,"lat":1}]"#,
                Kind::Position,
                "event 0: not a position event",
            ),
            (
                r#"{"kind":"position","seq":1,"time_ms":2,"lat":1,"lon":2}"#,
                Kind::Reading,
                "differs from the topic",
            ),
        ];
        for (payload, kind, expected) in cases {
            let reason = decode("d-1", kind, payload.as_bytes()).unwrap_err();
            assert!(reason.contains(expected), "{payload}: {reason}");
        }
        for (line, expected) in [
            (
                r#"{"seq":1,"time_ms":2,"kind":"reading","values":[]}"#,
                "no device_id",
            ),
            (
                r#"{"device_id":"a","seq":1,"time_ms":2,"values":[]}"#,
                "no kind",
            ),
            (
                r#"{"device_id":"a","kind":"x","seq":1,"time_ms":2}"#,
                "is not",
            ),
        ] {
            let reason = decode_line(line.as_bytes()).unwrap_err();
            assert!(reason.contains(expected), "{line}: {reason}");
        }
    }
}
