//! Event generators: plausible readings and positions, deterministic for a device and seq.

use tributary_protocol::{Body, Event, FixQuality, Position, Reading, SensorValue};

/// The n-th event of `device_id`: even devices report readings, odd ones positions, unless
/// `kind` forces one.
pub fn event(
    device_index: usize,
    device_id: &str,
    seq: u64,
    time_ms: u64,
    positions: bool,
) -> Event {
    let t = seq as f64;
    let phase = device_index as f64 * 0.37;
    let body = if positions {
        let angle = t / 200.0 + phase;
        Body::Position(Position {
            lat: 52.52 + 0.01 * angle.sin(),
            lon: 13.405 + 0.015 * angle.cos(),
            alt_m: Some(34.0),
            speed_mps: Some((12.0 + 3.0 * (t / 20.0).sin()) as f32),
            heading_deg: Some(((angle.to_degrees() + 90.0).rem_euclid(360.0)) as f32),
            hdop: Some(0.9),
            satellites: Some(9),
            fix: FixQuality::Gps,
        })
    } else {
        Body::Reading(Reading {
            values: vec![
                SensorValue {
                    name: "temperature".into(),
                    value: 20.0 + 2.0 * (t / 50.0 + phase).sin(),
                    unit: "Cel".into(),
                },
                SensorValue {
                    name: "humidity".into(),
                    value: 45.0 + 5.0 * (t / 70.0 + phase).cos(),
                    unit: "%".into(),
                },
            ],
        })
    };
    Event {
        device_id: device_id.to_owned(),
        seq,
        time_ms,
        body,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
