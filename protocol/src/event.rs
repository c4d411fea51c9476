//! The event model: what a device reports.
//!
//! An [`Event`] is identified by `(device_id, seq)`: `seq` is assigned by the device, strictly
//! increasing per device, and never reused (firmware persists it or seeds it from the clock).
//! Its [`Body`] is a [`Reading`] (named sensor values with units) or a [`Position`] (a GNSS fix).
//! [`Event::validate`] is the one place that says what a well-formed event is; every ingest path
//! calls it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::device_id::{validate_device_id, DeviceIdError};

/// Most values one reading may carry.
pub const MAX_VALUES_PER_READING: usize = 64;
/// Longest sensor value name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest unit, in bytes.
pub const MAX_UNIT_LEN: usize = 16;
/// Characters a unit may not contain: the separators of the CSV format's packed `values` column
/// (`name:value:unit` pairs joined by `|`), the CSV delimiter and quote, and the backslash.
/// Control characters are refused too. Everything else (`%RH`, `m/s`, `°C`, `µg/m3`) is fine.
pub const UNIT_FORBIDDEN: &[char] = &[',', '|', ':', '"', '\\'];

/// One event from one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The device that produced it; the Kafka key.
    pub device_id: String,
    /// Per-device sequence number, assigned by the device, strictly increasing.
    pub seq: u64,
    /// When it happened, in milliseconds since the Unix epoch (device clock).
    pub time_ms: u64,
    /// What happened.
    pub body: Body,
}

/// The two kinds of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Reading(Reading),
    Position(Position),
}

/// One or more sensor values sampled together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub values: Vec<SensorValue>,
}

/// A named value with its unit (UCUM-style codes such as `Cel`, `%`, `hPa`, `ppm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorValue {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// A GNSS fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Degrees, -90 to 90.
    pub lat: f64,
    /// Degrees, -180 to 180.
    pub lon: f64,
    /// Metres above mean sea level.
    pub alt_m: Option<f32>,
    /// Metres per second over ground.
    pub speed_mps: Option<f32>,
    /// Degrees clockwise from true north, 0 to 360.
    pub heading_deg: Option<f32>,
    /// Horizontal dilution of precision.
    pub hdop: Option<f32>,
    /// Satellites used in the fix.
    pub satellites: Option<u8>,
    pub fix: FixQuality,
}

/// GNSS fix quality, as NMEA GGA reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixQuality {
    None,
    Gps,
    Dgps,
    RtkFixed,
    RtkFloat,
    Estimated,
}

/// The kind of an event, as named in Kafka headers, JSON values and routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Reading,
    Position,
}

impl Kind {
    /// The name in the `kind` header and the JSON `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Reading => "reading",
            Kind::Position => "position",
        }
    }

    /// The kind named `name` ([`Kind::as_str`]'s inverse).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "reading" => Some(Kind::Reading),
            "position" => Some(Kind::Position),
            _ => None,
        }
    }

    /// The last segment of the MQTT topic `devices/{id}/{segment}`.
    pub fn mqtt_segment(self) -> &'static str {
        match self {
            Kind::Reading => "readings",
            Kind::Position => "position",
        }
    }

    /// The kind whose MQTT segment is `segment`.
    pub fn from_mqtt_segment(segment: &str) -> Option<Self> {
        match segment {
            "readings" => Some(Kind::Reading),
            "position" => Some(Kind::Position),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum EventError {
    DeviceId(DeviceIdError),
    /// A reading with no values.
    NoValues,
    TooManyValues {
        count: usize,
    },
    /// Value `index` has an empty, too long or badly formed name.
    BadName {
        index: usize,
    },
    /// Value `index` has a unit longer than [`MAX_UNIT_LEN`] or with a character of
    /// [`UNIT_FORBIDDEN`] or a control character.
    BadUnit {
        index: usize,
    },
    /// Value `index` is NaN or infinite.
    NotFinite {
        index: usize,
    },
    /// Latitude or longitude out of range or not finite.
    BadCoordinates {
        lat: f64,
        lon: f64,
    },
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeviceId(e) => write!(f, "{e}"),
            Self::NoValues => write!(f, "reading has no values"),
            Self::TooManyValues { count } => write!(
                f,
                "reading has {count} values, the limit is {MAX_VALUES_PER_READING}"
            ),
            Self::BadName { index } => write!(
                f,
                "value {index} has a bad name: 1 to {MAX_NAME_LEN} bytes of A-Z a-z 0-9 _ . -"
            ),
            Self::BadUnit { index } => write!(
                f,
                "value {index} has a bad unit: at most {MAX_UNIT_LEN} bytes, without control characters or any of , | : \" \\"
            ),
            Self::NotFinite { index } => write!(f, "value {index} is not a finite number"),
            Self::BadCoordinates { lat, lon } => write!(
                f,
                "position {lat},{lon} is outside -90..90 latitude / -180..180 longitude"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EventError {}

impl Event {
    /// The kind of this event's body.
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Reading(_) => Kind::Reading,
            Body::Position(_) => Kind::Position,
        }
    }

    /// Checks everything the gateway relies on: the device id, value names, finiteness, ranges.
    pub fn validate(&self) -> Result<(), EventError> {
        validate_device_id(&self.device_id).map_err(EventError::DeviceId)?;
        match &self.body {
            Body::Reading(r) => r.validate(),
            Body::Position(p) => p.validate(),
        }
    }
}

impl Reading {
    fn validate(&self) -> Result<(), EventError> {
        if self.values.is_empty() {
            return Err(EventError::NoValues);
        }
        if self.values.len() > MAX_VALUES_PER_READING {
            return Err(EventError::TooManyValues {
                count: self.values.len(),
            });
        }
        for (index, v) in self.values.iter().enumerate() {
            // Names share the device id's alphabet, with a different length limit.
            if v.name.len() > MAX_NAME_LEN || validate_device_id(&v.name).is_err() {
                return Err(EventError::BadName { index });
            }
            let bad_char = |c: char| c.is_control() || UNIT_FORBIDDEN.contains(&c);
            if v.unit.len() > MAX_UNIT_LEN || v.unit.contains(bad_char) {
                return Err(EventError::BadUnit { index });
            }
            if !v.value.is_finite() {
                return Err(EventError::NotFinite { index });
            }
        }
        Ok(())
    }
}

impl Position {
    fn validate(&self) -> Result<(), EventError> {
        let ok = self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon);
        if ok {
            Ok(())
        } else {
            Err(EventError::BadCoordinates {
                lat: self.lat,
                lon: self.lon,
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    pub fn reading(device: &str, seq: u64) -> Event {
        Event {
            device_id: device.to_string(),
            seq,
            time_ms: 1_700_000_000_000 + seq,
            body: Body::Reading(Reading {
                values: vec![SensorValue {
                    name: "temperature".to_string(),
                    value: 21.5,
                    unit: "Cel".to_string(),
                }],
            }),
        }
    }

    pub fn position(device: &str, seq: u64) -> Event {
        Event {
            device_id: device.to_string(),
            seq,
            time_ms: 1_700_000_000_000 + seq,
            body: Body::Position(Position {
                lat: 52.52,
                lon: 13.405,
                alt_m: Some(34.0),
                speed_mps: Some(12.5),
                heading_deg: Some(90.0),
                hdop: Some(0.9),
                satellites: Some(9),
                fix: FixQuality::Gps,
            }),
        }
    }

    #[test]
    fn well_formed_events_validate() {
        assert_eq!(reading("d1", 1).validate(), Ok(()));
        assert_eq!(position("d1", 1).validate(), Ok(()));
    }

    #[test]
    fn each_invalid_event_class_is_named() {
        let mut e = reading("bad id", 1);
        assert!(matches!(e.validate(), Err(EventError::DeviceId(_))));
        e = reading("d", 1);
        if let Body::Reading(r) = &mut e.body {
            r.values[0].value = f64::NAN;
        }
        assert_eq!(e.validate(), Err(EventError::NotFinite { index: 0 }));
        if let Body::Reading(r) = &mut e.body {
            r.values.clear();
        }
        assert_eq!(e.validate(), Err(EventError::NoValues));
        let mut p = position("d", 1);
        if let Body::Position(pos) = &mut p.body {
            pos.lat = 91.0;
        }
        assert!(matches!(
            p.validate(),
            Err(EventError::BadCoordinates { .. })
        ));
    }

    #[test]
    fn units_cannot_break_the_csv_values_column() {
        let with_unit = |unit: &str| {
            let mut e = reading("d", 1);
            if let Body::Reading(r) = &mut e.body {
                r.values[0].unit = unit.into();
            }
            e.validate()
        };
        for good in ["Cel", "%RH", "m/s", "°C", "µg/m3", "km/h", ""] {
            assert_eq!(with_unit(good), Ok(()), "{good}");
        }
        for bad in [
            "a,b|c:d\"e",
            "a|b",
            "a:b",
            "a,b",
            "a\"b",
            "a\\b",
            "a\nb",
            "a\tb",
        ] {
            assert_eq!(
                with_unit(bad),
                Err(EventError::BadUnit { index: 0 }),
                "{bad:?}"
            );
        }
    }
}
