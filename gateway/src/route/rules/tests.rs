use super::*;

fn parse(toml_text: &str) -> Result<Vec<Rule>, RuleError> {
    #[derive(Deserialize)]
    struct File {
        rules: Vec<RawRule>,
    }
    let file: File = toml::from_str(toml_text).expect("toml");
    validate(&file.rules)
}

fn reading(device: &str, seq: u64, time_ms: u64, t: f64) -> Event {
    test_reading(device, seq, time_ms, &[("t", t)])
}

const WINDOW: &str = r#"
[[rules]]
name = "w"
type = "window"
size_ms = 60000
fields = ["values.t"]
topic = "w"
"#;

const HOT: &str = r#"
[[rules]]
name = "hot"
type = "filter"
kind = "reading"
device = "boiler-*"
where = "values.t > 80"
topic = "alerts.hot"
"#;

#[test]
fn a_valid_rule_is_read_with_its_selection_and_a_version() {
    let rules = parse(HOT).unwrap();
    let r = &rules[0];
    assert_eq!(r.name, "hot");
    assert_eq!(r.kind, Some(Kind::Reading));
    assert_eq!(r.topic, "alerts.hot");
    assert_eq!(r.format, Format::Json);
    assert_eq!(r.version.len(), 16);
    let changed = parse(&HOT.replace("80", "85")).unwrap();
    assert_ne!(
        changed[0].version, r.version,
        "a changed rule has a new version"
    );
    assert_eq!(
        parse(HOT).unwrap()[0].version,
        r.version,
        "and the same rule the same"
    );
    assert!(r.selects(&reading("boiler-1", 1, 0, 90.0), "telemetry.readings", None));
    assert!(!r.selects(&reading("fan-1", 1, 0, 90.0), "telemetry.readings", None));
}

#[test]
fn a_rule_may_select_by_the_mqtt_topic_an_event_arrived_on() {
    let rules = parse(&HOT.replace(
        "[[rules]]\n",
        "[[rules]]\nmqtt_topic = \"devices/+/readings\"\n",
    ))
    .unwrap();
    let r = &rules[0];
    let hot = reading("boiler-1", 1, 0, 90.0);
    assert!(r.selects(
        &hot,
        "telemetry.readings",
        Some("devices/boiler-1/readings")
    ));
    assert!(!r.selects(&hot, "telemetry.readings", Some("tele/boiler-1/SENSOR")));
    assert!(
        !r.selects(&hot, "telemetry.readings", None),
        "TCP events have no MQTT topic"
    );
    let err =
        parse(&HOT.replace("[[rules]]\n", "[[rules]]\nmqtt_topic = \"a/#/b\"\n")).unwrap_err();
    assert_eq!(err.key, "rules[0].mqtt_topic");
}

#[test]
fn mistakes_name_the_rule_and_key() {
    for (text, key, says) in [
        (
            HOT.replace("name = \"hot\"", "name = \"h/t\""),
            "rules[0].name",
            "not a rule name",
        ),
        (
            HOT.replace("type = \"filter\"", "type = \"sliding\""),
            "rules[0].type",
            "\"sliding\"",
        ),
        (
            HOT.replace("values.t > 80", "values.t >"),
            "rules[0].where",
            "ends too soon",
        ),
        (
            HOT.replace("alerts.hot", "alerts hot"),
            "rules[0].topic",
            "legal Kafka topic",
        ),
        (
            HOT.replace("kind = \"reading\"", "kind = \"alarm\""),
            "rules[0].kind",
            "\"alarm\"",
        ),
        (
            format!("{HOT}interval_ms = 5\n"),
            "rules[0].interval_ms",
            "does not apply",
        ),
        (
            format!("{HOT}{HOT}"),
            "rules[1].name",
            "used by an earlier rule",
        ),
        (
            HOT.replace("topic = \"alerts.hot\"", "topic = \"a\"\nformat = \"xml\""),
            "rules[0].format",
            "\"xml\"",
        ),
        (
            "[[rules]]\nname = \"d\"\ntype = \"deadband\"\nfield = \"values.t\"\ntopic = \"x\"\n"
                .into(),
            "rules[0].absolute",
            "needs absolute or relative",
        ),
        (
            "[[rules]]\nname = \"d\"\ntype = \"downsample\"\ninterval_ms = 0\ntopic = \"x\"\n"
                .into(),
            "rules[0].interval_ms",
            "interval_ms > 0",
        ),
        (
            format!("{WINDOW}hop_ms = 120000\n"),
            "rules[0].hop_ms",
            "at most size_ms",
        ),
        (
            WINDOW.replace("\"values.t\"", "\"values.t * 2\""),
            "rules[0].fields",
            "not an expression",
        ),
        (
            format!("{WINDOW}aggregates = [\"median\"]\n"),
            "rules[0].aggregates",
            "\"median\" is not count",
        ),
        (
            format!("{WINDOW}aggregates = [\"count\", \"p101\"]\n"),
            "rules[0].aggregates",
            "\"p101\" is not count, min, max, mean, sum, last or a percentile",
        ),
        (
            format!("{WINDOW}when = \"values.t > 1\"\n"),
            "rules[0].when",
            "does not apply",
        ),
        (
            "[[rules]]\nname = \"a\"\ntype = \"threshold\"\nfor_ms = 5\ntopic = \"x\"\n".into(),
            "rules[0].when",
            "needs the condition",
        ),
    ] {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e:?}");
        assert!(e.problem.contains(says), "{text}: {e:?}");
    }
}

#[test]
fn derived_records_carry_their_rule_and_sources_in_headers() {
    let rules = parse(
        r#"
[[rules]]
name = "per-10s"
type = "downsample"
interval_ms = 10000
mode = "mean"
topic = "telemetry.readings.10s"
"#,
    )
    .unwrap();
    let set = RuleSet::new(rules).unwrap();
    let mut states: HashMap<(usize, String), State> = HashMap::new();
    let mut records = Vec::new();
    for (seq, time, t) in [(1, 1_000, 10.0), (2, 2_000, 20.0), (3, 11_000, 0.0)] {
        let id = EventId {
            device_id: "s1".into(),
            session: 0,
            seq,
            writer: None,
        };
        let out = set.run(
            &id,
            &reading("s1", seq, time, t),
            ("telemetry.readings", None),
            &mut states,
        );
        assert!(!out.replace_raw);
        records.extend(out.records.into_iter().map(|(_, r)| r));
    }
    assert_eq!(
        records.len(),
        1,
        "the first interval closed when seq 3 arrived"
    );
    let r = &records[0];
    assert_eq!(r.topic, "telemetry.readings.10s");
    assert_eq!(r.key, b"s1");
    assert_eq!(r.timestamp_ms, 2_000);
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("event-id"), Some("s1:2/per-10s"));
    assert_eq!(header("rule"), Some("per-10s"));
    assert_eq!(header("source-seqs"), Some("1-2"));
    assert_eq!(header("source-count"), Some("2"));
    assert_eq!(header("content-type"), Some("application/json"));
    let value: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
    assert_eq!(value["values"][0]["value"], 15.0);
    assert_eq!(value["seq"], 2);
}

#[test]
fn the_examples_in_config_gateway_toml_are_valid_rules() {
    let block = crate::config::shipped_examples("# [[rules]]", None)
        // The shipped zones file, wherever the test runs from.
        .replace(
            "\"config/depots.geojson\"",
            &format!(
                "{:?}",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../config/depots.geojson")
            ),
        );
    let rules = parse(&block).unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "hot",
            "temperature-by-exception",
            "positions-per-minute",
            "temperature-5m",
            "boiler-overheat",
            "depots"
        ]
    );
}

#[test]
fn windows_and_thresholds_are_read_with_their_defaults() {
    let rules = parse(&format!(
        "{WINDOW}{}",
        "[[rules]]\nname = \"a\"\ntype = \"threshold\"\nwhen = \"speed_mps > 30\"\ntopic = \"x\"\n"
    ))
    .unwrap();
    match &rules[0].logic {
        Logic::Window(w) => {
            assert_eq!((w.size_ms, w.hop_ms, w.lateness_ms), (60_000, 60_000, 0));
            assert_eq!(w.aggregates.len(), 6);
            assert_eq!(w.fields[0].0, "t");
        }
        other => panic!("{other:?}"),
    }
    match &rules[1].logic {
        Logic::Threshold(t) => {
            assert_eq!((t.for_ms, t.clear_for_ms), (0, 0));
            assert!(t.clear.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_geofence_reads_its_zones_file_and_its_version_follows_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("zones.geojson");
    let square = |name: &str| {
        format!(
            r#"{{"type": "FeatureCollection", "features": [{{"type": "Feature",
            "properties": {{"name": "{name}"}}, "geometry": {{"type": "Polygon",
            "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}}}}]}}"#
        )
    };
    std::fs::write(&zones, square("depot")).unwrap();
    let text = format!(
        "[[rules]]\nname = \"g\"\ntype = \"geofence\"\nzones = {:?}\ndwell_ms = 60000\n\
         max_hdop = 2.5\ntopic = \"fences\"\n",
        zones.display().to_string()
    );
    let first = parse(&text).unwrap();
    match &first[0].logic {
        Logic::Geofence(g) => {
            assert_eq!(g.zones[0].name, "depot");
            assert_eq!((g.dwell_ms, g.max_hdop), (Some(60_000), Some(2.5)));
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&zones, square("yard")).unwrap();
    assert_ne!(
        parse(&text).unwrap()[0].version,
        first[0].version,
        "new zones, new version"
    );
    std::fs::remove_file(&zones).unwrap();
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key, "rules[0].zones");
    assert!(e.problem.contains("zones.geojson"), "{e:?}");
}
