//! The `rule_state` fuzz target: a device's row of `device_rule_state` as the spool reads it
//! back from disk.

use std::sync::OnceLock;

use tributary_protocol::{Body, Event, FixQuality, Position, Reading, SensorValue};

use crate::route::rules::store::row;
use crate::route::rules::{kinds, RuleSet};

/// One rule of each kind, a window with a percentile among them.
fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let zones = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/depots.geojson");
        let text = format!(
            r#"
[[rules]]
name = "f"
type = "filter"
where = "values.t > 1"
topic = "f"
[[rules]]
name = "d"
type = "deadband"
field = "values.t"
relative = 0.1
heartbeat_ms = 60000
topic = "d"
[[rules]]
name = "m"
type = "downsample"
interval_ms = 10000
mode = "mean"
topic = "m"
[[rules]]
name = "w"
type = "window"
size_ms = 60000
hop_ms = 20000
lateness_ms = 5000
fields = ["values.t", "speed_mps"]
aggregates = ["count", "min", "max", "mean", "sum", "last", "p50", "p99.9"]
topic = "w"
[[rules]]
name = "t"
type = "threshold"
when = "values.t > 20"
for_ms = 1000
topic = "t"
[[rules]]
name = "g"
type = "geofence"
zones = {zones:?}
dwell_ms = 1000
max_hdop = 2.0
topic = "g"
"#
        );
        crate::config::Config::parse(&text, std::path::Path::new("fuzz.toml"))
            .map(|c| c.rules)
            .unwrap_or_default()
    })
}

/// A reading and a position, late and early, for each rule to step on.
fn events() -> [Event; 3] {
    let reading = |time_ms| Event {
        device_id: "d".into(),
        seq: 7,
        time_ms,
        body: Body::Reading(Reading {
            values: vec![SensorValue {
                name: "t".into(),
                value: 21.5,
                unit: "Cel".into(),
            }],
        }),
    };
    let position = Event {
        body: Body::Position(Position {
            lat: 52.52,
            lon: 13.40,
            alt_m: None,
            speed_mps: Some(3.0),
            heading_deg: None,
            hdop: Some(0.9),
            satellites: Some(8),
            fix: FixQuality::Gps,
        }),
        ..reading(1_700_000_030_000)
    };
    [reading(1_700_000_000_000), position, reading(5)]
}

/// The row decodes in whichever format it claims, or is refused. What decodes encodes to bytes
/// that decode and encode to the same bytes again; and every rule steps on every decoded state
/// with a reading and a position, early and late, without panicking.
pub fn rule_state(data: &[u8]) {
    let Ok(entries) = row::decode(data) else {
        return;
    };
    let encode = |entries: &[row::Entry]| {
        let refs: Vec<(&str, &str, &kinds::State)> = entries
            .iter()
            .map(|(r, v, s)| (r.as_str(), v.as_str(), s))
            .collect();
        let mut bytes = Vec::new();
        row::encode(&refs, &mut bytes).expect("a decoded row encodes");
        bytes
    };
    let bytes = encode(&entries);
    let again = row::decode(&bytes).expect("what the spool writes, it reads");
    assert_eq!(encode(&again), bytes, "unchanged by a round trip");
    for (_, _, state) in &entries {
        for rule in rules().rules() {
            let mut state = state.clone();
            for event in &events() {
                let _ = kinds::step(&rule.logic, &mut state, event);
            }
        }
    }
}
