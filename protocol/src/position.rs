//! A position's fields, defined once: their names (as JSON keys, CSV columns, Avro fields, rule
//! expressions and `[[rules]] fields` spell them), their units, and how each is read from a
//! [`Position`].
//!
//! Every part that lists a position's fields by name (the CSV and Avro formats, the rules'
//! expressions and units) iterates [`PositionField::ALL`] or looks a name up with
//! [`PositionField::from_name`]; the JSON form's field names are serde's, and a test holds them
//! to these. `fix` is not a number and is named by [`FixQuality::name`].

use core::fmt;

use crate::event::{FixQuality, Position};

/// One numeric field of a [`Position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PositionField {
    Lat,
    Lon,
    AltM,
    SpeedMps,
    HeadingDeg,
    Hdop,
    Satellites,
}

/// A field's value in the type the event carries it in, so it prints as the device sent it
/// (an `f32` altitude is not widened into a longer `f64` decimal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue {
    F64(f64),
    F32(f32),
    U8(u8),
}

impl FieldValue {
    pub fn as_f64(self) -> f64 {
        match self {
            FieldValue::F64(v) => v,
            FieldValue::F32(v) => f64::from(v),
            FieldValue::U8(v) => f64::from(v),
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::F64(v) => write!(f, "{v}"),
            FieldValue::F32(v) => write!(f, "{v}"),
            FieldValue::U8(v) => write!(f, "{v}"),
        }
    }
}

impl PositionField {
    /// Every field, in the order the CSV columns and the Avro record list them.
    pub const ALL: [PositionField; 7] = [
        PositionField::Lat,
        PositionField::Lon,
        PositionField::AltM,
        PositionField::SpeedMps,
        PositionField::HeadingDeg,
        PositionField::Hdop,
        PositionField::Satellites,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PositionField::Lat => "lat",
            PositionField::Lon => "lon",
            PositionField::AltM => "alt_m",
            PositionField::SpeedMps => "speed_mps",
            PositionField::HeadingDeg => "heading_deg",
            PositionField::Hdop => "hdop",
            PositionField::Satellites => "satellites",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The field's unit, in UCUM as SenML writes it (`deg`, `m`, `m/s`; `1` for a count or a
    /// ratio).
    pub fn unit(self) -> &'static str {
        match self {
            PositionField::Lat | PositionField::Lon | PositionField::HeadingDeg => "deg",
            PositionField::AltM => "m",
            PositionField::SpeedMps => "m/s",
            PositionField::Hdop | PositionField::Satellites => "1",
        }
    }

    /// Whether every position has it (`lat`, `lon`); the others are optional.
    pub fn required(self) -> bool {
        matches!(self, PositionField::Lat | PositionField::Lon)
    }

    /// Sets the field in `p` from a number, narrowed to the type the event carries it in (a
    /// satellite count is clamped to 0..=255).
    pub fn set(self, p: &mut Position, v: f64) {
        match self {
            PositionField::Lat => p.lat = v,
            PositionField::Lon => p.lon = v,
            PositionField::AltM => p.alt_m = Some(v as f32),
            PositionField::SpeedMps => p.speed_mps = Some(v as f32),
            PositionField::HeadingDeg => p.heading_deg = Some(v as f32),
            PositionField::Hdop => p.hdop = Some(v as f32),
            PositionField::Satellites => p.satellites = Some(v.clamp(0.0, 255.0) as u8),
        }
    }

    /// The field's value in `p`, if it has one.
    pub fn get(self, p: &Position) -> Option<FieldValue> {
        match self {
            PositionField::Lat => Some(FieldValue::F64(p.lat)),
            PositionField::Lon => Some(FieldValue::F64(p.lon)),
            PositionField::AltM => p.alt_m.map(FieldValue::F32),
            PositionField::SpeedMps => p.speed_mps.map(FieldValue::F32),
            PositionField::HeadingDeg => p.heading_deg.map(FieldValue::F32),
            PositionField::Hdop => p.hdop.map(FieldValue::F32),
            PositionField::Satellites => p.satellites.map(FieldValue::U8),
        }
    }
}

impl Position {
    /// A position at `lat`, `lon` with `fix` and none of the optional fields.
    pub fn at(lat: f64, lon: f64, fix: FixQuality) -> Self {
        Position {
            lat,
            lon,
            alt_m: None,
            speed_mps: None,
            heading_deg: None,
            hdop: None,
            satellites: None,
            fix,
        }
    }
}

impl FixQuality {
    /// The name JSON, CSV and Avro write (serde's `snake_case` of the variant).
    pub fn name(self) -> &'static str {
        match self {
            FixQuality::None => "none",
            FixQuality::Gps => "gps",
            FixQuality::Dgps => "dgps",
            FixQuality::RtkFixed => "rtk_fixed",
            FixQuality::RtkFloat => "rtk_float",
            FixQuality::Estimated => "estimated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PositionField;

    #[test]
    fn each_name_reads_back_as_its_field() {
        for f in PositionField::ALL {
            assert_eq!(PositionField::from_name(f.name()), Some(f));
        }
        assert_eq!(PositionField::from_name("fix"), None);
        assert_eq!(PositionField::from_name("speed"), None);
    }

    #[test]
    fn a_set_field_reads_back_in_the_type_the_event_carries() {
        use crate::{FixQuality, Position};
        let mut p = Position::at(0.0, 0.0, FixQuality::Gps);
        for (i, f) in PositionField::ALL.into_iter().enumerate() {
            f.set(&mut p, i as f64 + 0.5);
        }
        PositionField::Satellites.set(&mut p, 300.0);
        let got: alloc::vec::Vec<f64> = PositionField::ALL
            .iter()
            .filter_map(|f| f.get(&p).map(|v| v.as_f64()))
            .collect();
        assert_eq!(got, [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 255.0]);
    }

    /// The JSON form's keys (serde's) are these names, with these values.
    #[cfg(feature = "std")]
    #[test]
    fn the_json_form_spells_each_field_by_its_name() {
        use crate::{Body, Event, FixQuality, Position};
        let p = Position {
            lat: 52.5,
            lon: 13.4,
            alt_m: Some(34.5),
            speed_mps: Some(12.25),
            heading_deg: Some(90.0),
            hdop: Some(0.75),
            satellites: Some(9),
            fix: FixQuality::RtkFixed,
        };
        let event = Event {
            device_id: "v".into(),
            seq: 1,
            time_ms: 2,
            body: Body::Position(p.clone()),
        };
        let json = serde_json::to_value(crate::json::JsonEvent::from(event)).unwrap();
        for f in PositionField::ALL {
            let value = f.get(&p).map(|v| v.as_f64());
            assert_eq!(json[f.name()].as_f64(), value, "{}", f.name());
        }
        assert_eq!(json["fix"], p.fix.name());
    }
}
