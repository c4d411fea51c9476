use prost::Message as _;

use super::proto::{Metric, Payload, PropertyScalar, PropertySet, PropertyValue, Value};
use super::*;

fn metric(name: Option<&str>, alias: Option<u64>, dt: u32, value: Value) -> Metric {
    Metric {
        name: name.map(str::to_owned),
        alias,
        datatype: Some(dt),
        value: Some(value),
        ..Metric::default()
    }
}

fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(1_700_000_000_000),
        metrics,
        seq,
        ..Payload::default()
    }
    .encode_to_vec()
}

fn decoder() -> Sparkplug {
    Sparkplug::new(SparkplugConfig::default(), Stats::default())
}

fn values(d: &Decoded) -> Vec<(String, f64, String)> {
    match &d.event.body {
        Body::Reading(r) => r
            .values
            .iter()
            .map(|v| (v.name.clone(), v.value, v.unit.clone()))
            .collect(),
        Body::Position(_) => Vec::new(),
    }
}

fn header<'a>(d: &'a Decoded, name: &str) -> Option<&'a str> {
    d.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn birth() -> Vec<u8> {
    let mut temp = metric(
        Some("Inputs/Temp"),
        Some(1),
        datatype::INT16,
        Value::Int(0xFFF6),
    );
    temp.properties = Some(PropertySet {
        keys: vec!["engUnit".into()],
        values: vec![PropertyValue {
            r#type: Some(datatype::STRING),
            is_null: None,
            value: Some(PropertyScalar::String("Cel".into())),
        }],
    });
    payload(
        Some(0),
        vec![
            metric(Some("bdSeq"), None, datatype::INT64, Value::Long(3)),
            temp,
            metric(
                Some("Run"),
                Some(2),
                datatype::BOOLEAN,
                Value::Boolean(true),
            ),
            metric(
                Some("Label"),
                Some(3),
                datatype::STRING,
                Value::String("north".into()),
            ),
        ],
    )
}

#[test]
fn a_birth_then_data_by_alias_resolve_names_types_and_units() {
    let sp = decoder();
    let born = sp
        .decode("spBv1.0/Plant1/NBIRTH/Line3", &birth(), 0)
        .unwrap();
    assert_eq!(born.len(), 1);
    assert_eq!(born[0].event.device_id, "Plant1.Line3");
    assert_eq!(
        values(&born[0]),
        [
            ("online".into(), 1.0, "".into()),
            ("bdSeq".into(), 3.0, "".into()),
            ("Inputs.Temp".into(), -10.0, "Cel".into()),
            ("Run".into(), 1.0, "".into()),
        ]
    );
    assert_eq!(header(&born[0], "metric.Label"), Some("north"));
    assert_eq!(header(&born[0], "sparkplug-message"), Some("NBIRTH"));

    let data = payload(
        Some(1),
        vec![
            Metric {
                alias: Some(1),
                value: Some(Value::Int(25)),
                ..Metric::default()
            },
            Metric {
                alias: Some(2),
                timestamp: Some(1_699_999_990_000),
                is_historical: Some(true),
                value: Some(Value::Boolean(false)),
                ..Metric::default()
            },
        ],
    );
    let events = sp.decode("spBv1.0/Plant1/NDATA/Line3", &data, 0).unwrap();
    assert_eq!(
        events.len(),
        2,
        "the historical metric in an event of its own"
    );
    let historical = &events[0];
    assert_eq!(historical.event.time_ms, 1_699_999_990_000);
    assert_eq!(header(historical, "sparkplug-historical"), Some("true"));
    assert_eq!(values(historical), [("Run".into(), 0.0, "".into())]);
    assert_eq!(
        values(&events[1]),
        [("Inputs.Temp".into(), 25.0, "Cel".into())]
    );
    assert!(events
        .iter()
        .all(|e| header(e, "sparkplug-stale").is_none()));
}

#[test]
fn a_seq_gap_or_an_unknown_alias_flags_the_node_until_its_next_birth() {
    let sp = decoder();
    sp.decode("spBv1.0/G/NBIRTH/N", &birth(), 0).unwrap();
    let data = |seq, alias| {
        payload(
            Some(seq),
            vec![Metric {
                alias: Some(alias),
                datatype: Some(datatype::DOUBLE),
                value: Some(Value::Double(1.5)),
                ..Metric::default()
            }],
        )
    };
    let fine = sp.decode("spBv1.0/G/NDATA/N", &data(1, 1), 0).unwrap();
    assert_eq!(header(&fine[0], "sparkplug-stale"), None);
    let gap = sp.decode("spBv1.0/G/NDATA/N", &data(3, 1), 0).unwrap();
    assert_eq!(header(&gap[0], "sparkplug-stale"), Some("seq-gap"));
    let after = sp.decode("spBv1.0/G/NDATA/N", &data(4, 1), 0).unwrap();
    assert_eq!(
        header(&after[0], "sparkplug-stale"),
        Some("seq-gap"),
        "until the next birth"
    );
    sp.decode("spBv1.0/G/NBIRTH/N", &birth(), 0).unwrap();
    let unknown = sp.decode("spBv1.0/G/NDATA/N", &data(1, 99), 0).unwrap();
    assert_eq!(
        header(&unknown[0], "sparkplug-stale"),
        Some("unknown-alias")
    );
    assert_eq!(
        values(&unknown[0]),
        [("alias_99".into(), 1.5, "".into())],
        "kept, not dropped"
    );
    // Data from a node never born: stored, flagged.
    let orphan = sp.decode("spBv1.0/G/NDATA/Other", &data(7, 1), 0).unwrap();
    assert_eq!(header(&orphan[0], "sparkplug-stale"), Some("no-birth"));
}

#[test]
fn a_death_is_a_state_event_and_a_late_will_does_not_end_a_newer_session() {
    let sp = decoder();
    sp.decode("spBv1.0/G/NBIRTH/N", &birth(), 0).unwrap();
    let death = |bd| {
        payload(
            None,
            vec![metric(
                Some("bdSeq"),
                None,
                datatype::INT64,
                Value::Long(bd),
            )],
        )
    };
    let late = sp.decode("spBv1.0/G/NDEATH/N", &death(2), 0).unwrap();
    assert_eq!(header(&late[0], "sparkplug-stale"), Some("old-bdseq"));
    let dead = sp.decode("spBv1.0/G/NDEATH/N", &death(3), 0).unwrap();
    assert_eq!(
        values(&dead[0]),
        [
            ("online".into(), 0.0, "".into()),
            ("bdSeq".into(), 3.0, "".into())
        ]
    );
    assert_eq!(header(&dead[0], "sparkplug-stale"), None);
    let ddeath = payload(Some(1), vec![]);
    let d = sp.decode("spBv1.0/G/DDEATH/N/Press", &ddeath, 0).unwrap();
    assert_eq!(d[0].event.device_id, "G.N.Press");
    assert_eq!(values(&d[0]), [("online".into(), 0.0, "".into())]);
}

#[test]
fn what_is_not_data_is_refused_saying_why() {
    let sp = decoder();
    for (topic, body, expected) in [
        ("spBv1.0/G/NCMD/N", birth(), "command"),
        ("spBv1.0/STATE/host", birth(), "host application"),
        ("spBv1.0/G/NDATA", birth(), "topic is"),
        ("spBv1.0/G/DDATA/N", birth(), "/{device}"),
        (
            "spBv1.0/G/NDATA/N",
            b"\xff\xff\xff".to_vec(),
            "not a Sparkplug B payload",
        ),
        (
            "spBv1.0/G g/NDATA/N",
            birth(),
            "map it in [sparkplug] devices",
        ),
        (
            "spBv1.0/G/NDATA/N",
            payload(
                Some(1),
                vec![metric(
                    Some("s"),
                    None,
                    datatype::STRING,
                    Value::String("x".into()),
                )],
            ),
            "no numeric metric",
        ),
    ] {
        let error = sp.decode(topic, &body, 0).unwrap_err();
        assert!(error.reason.contains(expected), "{topic}: {}", error.reason);
    }
    let mapped = Sparkplug::new(
        SparkplugConfig {
            devices: [("G g/N".to_owned(), "line-3".to_owned())].into(),
        },
        Stats::default(),
    );
    let events = mapped.decode("spBv1.0/G g/NBIRTH/N", &birth(), 0).unwrap();
    assert_eq!(events[0].event.device_id, "line-3");
}

#[test]
fn signed_integers_are_read_whether_sign_extended_or_not() {
    for (dt, wire, expected) in [
        (datatype::INT8, 0xFFu32, -1.0),
        (datatype::INT8, 0xFFFF_FFFF, -1.0),
        (datatype::INT16, 0x8000, -32768.0),
        (datatype::INT32, 0xFFFF_FFFE, -2.0),
        (datatype::UINT32, 0xFFFF_FFFE, 4_294_967_294.0),
    ] {
        assert_eq!(
            number(Some(dt), Some(&Value::Int(wire))),
            Some(expected),
            "{dt} {wire:#x}"
        );
    }
    assert_eq!(
        number(Some(datatype::INT64), Some(&Value::Long(u64::MAX))),
        Some(-1.0)
    );
}
