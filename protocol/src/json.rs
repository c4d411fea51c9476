//! The JSON form of an event: MQTT payloads in, Kafka message values out.
//!
//! The shape is flat, so that Spark's `from_json` and plain Python read it without unwrapping:
//!
//! ```json
//! {"device_id":"env-1","seq":7,"time_ms":1700000000000,"kind":"reading",
//!  "values":[{"name":"temperature","value":21.5,"unit":"Cel"}]}
//! {"device_id":"truck-1","seq":9,"time_ms":1700000000000,"kind":"position",
//!  "lat":52.52,"lon":13.4,"alt_m":34.0,"speed_mps":12.5,"heading_deg":90.0,
//!  "hdop":0.9,"satellites":9,"fix":"gps"}
//! ```
//!
//! In MQTT payloads `device_id` and `kind` may be left out: the topic
//! `devices/{device_id}/{kind}` supplies them. [`JsonEvent`] and [`JsonOf`] write the form;
//! [`decode`] and [`decode_line`] (with `std`) are the one decoder that reads it.

use alloc::string::String;
use alloc::vec::Vec;

use serde::Serialize;

use crate::event::{Body, Event, FixQuality, Kind, Position, Reading, SensorValue};

#[cfg(feature = "std")]
mod decode;
#[cfg(feature = "std")]
pub use decode::{decode, decode_line};

/// An event as JSON, as written (read back by [`decode`] and [`decode_line`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub seq: u64,
    pub time_ms: u64,
    /// The device's boot session (see [`crate::message`]): MQTT devices that reset their seq
    /// at boot send it so the gateway can tell a reboot from a retransmission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    #[serde(flatten)]
    pub body: JsonBody,
}

/// The body, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JsonBody {
    Reading {
        values: Vec<SensorValue>,
    },
    Position {
        lat: f64,
        lon: f64,
        alt_m: Option<f32>,
        speed_mps: Option<f32>,
        heading_deg: Option<f32>,
        hdop: Option<f32>,
        satellites: Option<u8>,
        fix: FixQuality,
    },
}

impl JsonBody {
    pub fn kind(&self) -> Kind {
        match self {
            JsonBody::Reading { .. } => Kind::Reading,
            JsonBody::Position { .. } => Kind::Position,
        }
    }
}

impl From<JsonBody> for Body {
    fn from(body: JsonBody) -> Self {
        match body {
            JsonBody::Reading { values } => Body::Reading(Reading { values }),
            JsonBody::Position {
                lat,
                lon,
                alt_m,
                speed_mps,
                heading_deg,
                hdop,
                satellites,
                fix,
            } => Body::Position(Position {
                lat,
                lon,
                alt_m,
                speed_mps,
                heading_deg,
                hdop,
                satellites,
                fix,
            }),
        }
    }
}

impl From<Event> for JsonEvent {
    fn from(e: Event) -> Self {
        let body = match e.body {
            Body::Reading(r) => JsonBody::Reading { values: r.values },
            Body::Position(p) => JsonBody::Position {
                lat: p.lat,
                lon: p.lon,
                alt_m: p.alt_m,
                speed_mps: p.speed_mps,
                heading_deg: p.heading_deg,
                hdop: p.hdop,
                satellites: p.satellites,
                fix: p.fix,
            },
        };
        JsonEvent {
            device_id: Some(e.device_id),
            seq: e.seq,
            time_ms: e.time_ms,
            session: None,
            body,
        }
    }
}

/// An [`Event`] serialised exactly as [`JsonEvent::from`] would serialise it, without copying
/// it first: the gateway writes one of these for every event it routes as JSON, where copying
/// the event's device id and every value's name and unit, only to serialise and free them, was
/// about a quarter of what encoding cost in a profile. A test holds the two to the same bytes.
pub struct JsonOf<'a>(pub &'a Event);

impl Serialize for JsonOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        // `JsonEvent` flattens its body, which serialises it as a map in this order.
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("device_id", &e.device_id)?;
        map.serialize_entry("seq", &e.seq)?;
        map.serialize_entry("time_ms", &e.time_ms)?;
        map.serialize_entry("kind", e.kind().as_str())?;
        match &e.body {
            Body::Reading(r) => map.serialize_entry("values", &r.values)?,
            Body::Position(p) => {
                map.serialize_entry("lat", &p.lat)?;
                map.serialize_entry("lon", &p.lon)?;
                map.serialize_entry("alt_m", &p.alt_m)?;
                map.serialize_entry("speed_mps", &p.speed_mps)?;
                map.serialize_entry("heading_deg", &p.heading_deg)?;
                map.serialize_entry("hdop", &p.hdop)?;
                map.serialize_entry("satellites", &p.satellites)?;
                map.serialize_entry("fix", &p.fix)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::{position, reading};

    #[test]
    fn an_event_serialised_in_place_is_byte_for_byte_its_json_event() {
        let mut bare = position("truck-2", 5);
        if let Body::Position(p) = &mut bare.body {
            (p.alt_m, p.speed_mps, p.heading_deg, p.hdop, p.satellites) =
                (None, None, None, None, None);
            p.fix = FixQuality::RtkFloat;
        }
        let mut quoted = reading("env \"1\"", 7);
        if let Body::Reading(r) = &mut quoted.body {
            r.values.push(SensorValue {
                name: "ünïcode\n".into(),
                value: -1.5e-7,
                unit: "".into(),
            });
        }
        let empty = Event {
            body: Body::Reading(Reading { values: Vec::new() }),
            ..reading("env-3", 0)
        };
        for e in [
            reading("env-1", 3),
            position("truck-1", 4),
            bare,
            quoted,
            empty,
        ] {
            assert_eq!(
                serde_json::to_string(&JsonOf(&e)).unwrap(),
                serde_json::to_string(&JsonEvent::from(e.clone())).unwrap(),
            );
        }
    }

    #[test]
    #[cfg(feature = "std")]
    fn events_round_trip_through_json() {
        for e in [reading("env-1", 3), position("truck-1", 4)] {
            let text = serde_json::to_string(&JsonEvent::from(e.clone())).unwrap();
            let (back, _) = decode_line(text.as_bytes()).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn the_json_shape_is_flat_and_tagged_by_kind() {
        let v = serde_json::to_value(JsonEvent::from(reading("env-1", 3))).unwrap();
        assert_eq!(v["kind"], "reading");
        assert_eq!(v["device_id"], "env-1");
        assert_eq!(v["values"][0]["unit"], "Cel");
    }

    #[test]
    #[cfg(feature = "std")]
    fn a_minimal_mqtt_payload_takes_device_and_kind_from_the_topic() {
        let payload = r#"{"seq":1,"time_ms":5,"kind":"position","lat":1.0,"lon":2.0}"#;
        let (e, _) = decode("car-2", Kind::Position, payload.as_bytes()).unwrap()[0].clone();
        assert_eq!(e.device_id, "car-2");
        assert!(matches!(
            e.body,
            Body::Position(Position {
                fix: FixQuality::Gps,
                ..
            })
        ));
    }

    #[test]
    #[cfg(feature = "std")]
    fn a_payload_for_another_device_or_kind_is_refused() {
        let j = serde_json::to_vec(&JsonEvent::from(reading("a", 1))).unwrap();
        assert!(decode("b", Kind::Reading, &j)
            .unwrap_err()
            .contains("device_id"));
        assert!(decode("a", Kind::Position, &j)
            .unwrap_err()
            .contains("kind"));
    }
}
