use apache_avro::types::Value as Avro;

use super::*;

fn event(json: &str, device: &str, kind: Kind) -> Event {
    let (events, _): (Vec<Event>, Vec<u64>) =
        tributary_protocol::json::decode(device, kind, json.as_bytes())
            .unwrap()
            .into_iter()
            .unzip();
    events.into_iter().next().unwrap()
}

fn reading(device: &str) -> Event {
    event(
        r#"{"seq":7,"time_ms":1700000000123,"kind":"reading","values":[{"name":"temperature","value":21.5,"unit":"Cel"},{"name":"rh","value":40,"unit":"%"}]}"#,
        device,
        Kind::Reading,
    )
}

fn position(device: &str) -> Event {
    event(
        r#"{"seq":8,"time_ms":1700000000456,"kind":"position","lat":52.5,"lon":13.4,"speed_mps":12.5,"satellites":9}"#,
        device,
        Kind::Position,
    )
}

fn rule(topic: &str) -> Rule {
    Rule {
        kind: None,
        device: None,
        mqtt_topic: None,
        topic: topic.into(),
        key: "{device_id}".into(),
        format: Format::Json,
        partitions: None,
        replication: None,
    }
}

fn router(rules: Vec<Rule>) -> Router {
    Router::new(RoutesConfig {
        readings: "default.readings".into(),
        positions: "default.positions".into(),
        dead_letter: "dead".into(),
        rules,
    })
    .unwrap()
}

#[test]
fn globs_match_like_shell_patterns() {
    assert!(glob_matches("truck-*", "truck-17"));
    assert!(glob_matches("*-7", "truck-7"));
    assert!(glob_matches("t?uck*", "truck"));
    assert!(glob_matches("*", ""));
    assert!(!glob_matches("truck-*", "car-1"));
    assert!(!glob_matches("t?", "t"));
}

#[test]
fn mqtt_filters_match_by_level() {
    assert!(filter_matches("devices/+/position", "devices/t1/position"));
    assert!(filter_matches("devices/#", "devices/t1/position/pc"));
    assert!(!filter_matches(
        "devices/+/position",
        "devices/t1/position/pc"
    ));
    assert!(!filter_matches("devices/+", "devices/t1/readings"));
}

#[test]
fn the_first_matching_rule_wins_and_unmatched_events_take_their_kinds_default() {
    let mut trucks = rule("fleet.trucks");
    trucks.device = Some("truck-*".into());
    trucks.kind = Some(Kind::Position);
    let mut all_positions = rule("fleet.positions");
    all_positions.kind = Some(Kind::Position);
    let r = router(vec![trucks, all_positions]);
    assert_eq!(
        r.event(position("truck-1"), 0, None).unwrap().topic,
        "fleet.trucks"
    );
    assert_eq!(
        r.event(position("car-1"), 0, None).unwrap().topic,
        "fleet.positions"
    );
    assert_eq!(
        r.event(reading("truck-1"), 0, None).unwrap().topic,
        "default.readings"
    );
}

#[test]
fn an_mqtt_topic_rule_never_matches_tcp_input() {
    let mut via_mqtt = rule("from.mqtt");
    via_mqtt.mqtt_topic = Some("devices/+/readings".into());
    let r = router(vec![via_mqtt]);
    assert_eq!(
        r.event(reading("a"), 0, Some("devices/a/readings"))
            .unwrap()
            .topic,
        "from.mqtt"
    );
    assert_eq!(
        r.event(reading("a"), 0, None).unwrap().topic,
        "default.readings"
    );
}

#[test]
fn the_key_template_and_headers_follow_the_rule() {
    let mut keyed = rule("by.kind");
    keyed.key = "{kind}-{device_id}".into();
    keyed.format = Format::Avro {
        schema_id: Some(42),
    };
    let rec = router(vec![keyed])
        .event(reading("env-1"), 0, None)
        .unwrap();
    assert_eq!(rec.key, b"reading-env-1");
    let header = |name: &str| {
        rec.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("event-id"), Some("env-1:7"));
    assert_eq!(
        header("content-type"),
        Some("application/vnd.confluent.avro")
    );
    assert_eq!(header("schema-id"), Some("42"));
    assert_eq!(rec.timestamp_ms, 1_700_000_000_123);
}

#[test]
fn csv_has_the_documented_13_columns_for_both_kinds() {
    let enc = Encoder::new().unwrap();
    let line = String::from_utf8(enc.encode(&reading("env-1"), Format::Csv).unwrap()).unwrap();
    assert_eq!(
        line,
        "env-1,7,1700000000123,reading,temperature:21.5:Cel|rh:40:%,,,,,,,,"
    );
    let line = String::from_utf8(enc.encode(&position("t-1"), Format::Csv).unwrap()).unwrap();
    assert_eq!(
        line,
        "t-1,8,1700000000456,position,,52.5,13.4,,12.5,,,9,gps"
    );
    assert_eq!(line.split(',').count(), 13);
}

#[test]
fn avro_values_decode_with_the_shipped_schema_and_confluent_framing_prefixes_the_id() {
    let enc = Encoder::new().unwrap();
    let schema = apache_avro::Schema::parse_str(format::AVRO_SCHEMA).unwrap();
    let bytes = enc
        .encode(&position("t-1"), Format::Avro { schema_id: None })
        .unwrap();
    let value = apache_avro::from_avro_datum(&schema, &mut &bytes[..], None).unwrap();
    let Avro::Record(fields) = value else {
        panic!("a record")
    };
    assert_eq!(fields[0], ("device_id".into(), Avro::String("t-1".into())));
    assert_eq!(fields[1], ("seq".into(), Avro::Long(8)));
    let framed = enc
        .encode(&position("t-1"), Format::Avro { schema_id: Some(7) })
        .unwrap();
    assert_eq!(&framed[..5], &[0, 0, 0, 0, 7]);
    assert_eq!(&framed[5..], &bytes[..]);
}

#[test]
fn postcard_values_are_the_event_as_devices_encode_it() {
    let enc = Encoder::new().unwrap();
    let e = reading("env-1");
    let bytes = enc.encode(&e, Format::Postcard).unwrap();
    assert_eq!(postcard::from_bytes::<Event>(&bytes).unwrap(), e);
}

#[test]
fn with_rules_a_record_carries_its_event_and_the_mqtt_topic_it_arrived_on() {
    let routes = crate::config::Config::parse("", std::path::Path::new("t.toml"))
        .unwrap()
        .routes;
    let event = tributary_protocol::Event {
        device_id: "env-1".into(),
        seq: 1,
        time_ms: 5,
        body: tributary_protocol::Body::Reading(tributary_protocol::Reading {
            values: vec![tributary_protocol::SensorValue {
                name: "t".into(),
                value: 1.0,
                unit: "Cel".into(),
            }],
        }),
    };
    let keeping = Router::new(routes.clone()).unwrap().keeping_events(true);
    let r = keeping
        .event(event.clone(), 0, Some("devices/env-1/readings"))
        .unwrap();
    assert_eq!(r.mqtt_topic.as_deref(), Some("devices/env-1/readings"));
    assert!(r.event.is_some());
    let plain = Router::new(routes).unwrap();
    let r = plain
        .event(event, 0, Some("devices/env-1/readings"))
        .unwrap();
    assert!(
        r.mqtt_topic.is_none() && r.event.is_none(),
        "nothing kept without rules"
    );
}
