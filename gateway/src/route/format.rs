//! Value formats: how an event becomes a Kafka message value.
//!
//! - `json` (default): the flat JSON event of [`tributary_protocol::json`].
//! - `csv`: one RFC 4180 line, no header, always these 13 columns (so one Spark schema reads both
//!   kinds): `device_id,seq,time_ms,kind,values,lat,lon,alt_m,speed_mps,heading_deg,hdop,
//!   satellites,fix`. `values` is `name:value:unit` pairs joined by `|`, empty for positions;
//!   the position columns are empty for readings.
//! - `avro`: Avro binary of `config/event.avsc` (no container header). With `avro_schema_id`,
//!   the Confluent wire format: byte 0, the schema id as 4 bytes big-endian, then the datum.
//! - `postcard`: the event exactly as devices encode it (`protocol::Event`), for consumers that
//!   use the Rust protocol crate.

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use tributary_protocol::json::JsonOf;
use tributary_protocol::{Body, Event, FieldValue, PositionField};

/// The Avro schema of events, shipped as `config/event.avsc`.
pub const AVRO_SCHEMA: &str = include_str!("../../../config/event.avsc");

/// Bytes reserved for an event's JSON: a reading with a few values, or a position.
const JSON_CAPACITY: usize = 256;

/// A value format, as configured per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Avro { schema_id: Option<u32> },
    Postcard,
}

impl Format {
    /// The `content-type` header for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv",
            Format::Avro { schema_id: None } => "application/avro",
            Format::Avro { schema_id: Some(_) } => "application/vnd.confluent.avro",
            Format::Postcard => "application/x-postcard",
        }
    }
}

/// Encodes events; holds the parsed Avro schema.
#[derive(Debug, Clone)]
pub struct Encoder {
    schema: Schema,
}

/// Why an event could not be encoded (a bug or a broken schema file, never device input: the
/// event was validated).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("the Avro schema config/event.avsc is invalid: {0}")]
    Schema(String),
    #[error("encoding {format}: {reason}")]
    Encode {
        format: &'static str,
        reason: String,
    },
}

impl Encoder {
    pub fn new() -> Result<Self, FormatError> {
        let schema =
            Schema::parse_str(AVRO_SCHEMA).map_err(|e| FormatError::Schema(e.to_string()))?;
        Ok(Self { schema })
    }

    pub fn encode(&self, event: &Event, format: Format) -> Result<Vec<u8>, FormatError> {
        match format {
            Format::Json => {
                // Most events' JSON fits, so the buffer is not grown on the way.
                let mut out = Vec::with_capacity(JSON_CAPACITY);
                serde_json::to_writer(&mut out, &JsonOf(event)).map_err(|e| {
                    FormatError::Encode {
                        format: "json",
                        reason: e.to_string(),
                    }
                })?;
                Ok(out)
            }
            Format::Csv => csv_line(event),
            Format::Avro { schema_id } => {
                let datum =
                    apache_avro::to_avro_datum(&self.schema, avro_value(event)).map_err(|e| {
                        FormatError::Encode {
                            format: "avro",
                            reason: e.to_string(),
                        }
                    })?;
                Ok(match schema_id {
                    None => datum,
                    Some(id) => {
                        let mut out = Vec::with_capacity(5 + datum.len());
                        out.push(0);
                        out.extend_from_slice(&id.to_be_bytes());
                        out.extend_from_slice(&datum);
                        out
                    }
                })
            }
            Format::Postcard => postcard::to_allocvec(event).map_err(|e| FormatError::Encode {
                format: "postcard",
                reason: e.to_string(),
            }),
        }
    }
}

fn csv_line(event: &Event) -> Result<Vec<u8>, FormatError> {
    let mut fields: Vec<String> = vec![
        event.device_id.clone(),
        event.seq.to_string(),
        event.time_ms.to_string(),
        event.kind().as_str().to_owned(),
    ];
    match &event.body {
        Body::Reading(r) => {
            let values: Vec<String> = r
                .values
                .iter()
                .map(|v| format!("{}:{}:{}", v.name, v.value, v.unit))
                .collect();
            fields.push(values.join("|"));
            fields.extend(std::iter::repeat_n(String::new(), 8));
        }
        Body::Position(p) => {
            fields.push(String::new());
            fields.extend(
                PositionField::ALL
                    .iter()
                    .map(|f| f.get(p).map(|v| v.to_string()).unwrap_or_default()),
            );
            fields.push(p.fix.name().to_owned());
        }
    }
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let err = |e: &dyn std::fmt::Display| FormatError::Encode {
        format: "csv",
        reason: e.to_string(),
    };
    w.write_record(&fields).map_err(|e| err(&e))?;
    let mut line = w.into_inner().map_err(|e| err(&e))?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(line)
}

fn avro_value(event: &Event) -> Avro {
    let field = |f: PositionField, p: &tributary_protocol::Position| {
        let value = f.get(p).map(|v| match v {
            FieldValue::F64(v) => Avro::Double(v),
            FieldValue::F32(v) => Avro::Float(v),
            FieldValue::U8(v) => Avro::Int(i32::from(v)),
        });
        let value = match (f.required(), value) {
            (true, Some(v)) => v,
            (false, Some(v)) => Avro::Union(1, Box::new(v)),
            (_, None) => Avro::Union(0, Box::new(Avro::Null)),
        };
        (f.name().to_owned(), value)
    };
    let (kind, values, position) = match &event.body {
        Body::Reading(r) => (
            Avro::Enum(0, "reading".into()),
            r.values
                .iter()
                .map(|v| {
                    Avro::Record(vec![
                        ("name".into(), Avro::String(v.name.clone())),
                        ("value".into(), Avro::Double(v.value)),
                        ("unit".into(), Avro::String(v.unit.clone())),
                    ])
                })
                .collect(),
            Avro::Union(0, Box::new(Avro::Null)),
        ),
        Body::Position(p) => (
            Avro::Enum(1, "position".into()),
            Vec::new(),
            Avro::Union(
                1,
                Box::new(Avro::Record(
                    PositionField::ALL
                        .into_iter()
                        .map(|f| field(f, p))
                        .chain([("fix".into(), Avro::String(p.fix.name().into()))])
                        .collect(),
                )),
            ),
        ),
    };
    Avro::Record(vec![
        ("device_id".into(), Avro::String(event.device_id.clone())),
        ("seq".into(), Avro::Long(event.seq as i64)),
        (
            "time_ms".into(),
            Avro::TimestampMillis(event.time_ms as i64),
        ),
        ("kind".into(), kind),
        ("values".into(), Avro::Array(values)),
        ("position".into(), position),
    ])
}
