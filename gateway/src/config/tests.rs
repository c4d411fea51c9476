use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[test]
fn the_shipped_config_is_valid_and_uses_the_file_sink() {
    let config = parse(DEFAULT_CONFIG_TOML).unwrap();
    assert!(matches!(config.sink, SinkConfig::File { .. }));
    assert_eq!(config.routes.readings, "telemetry.readings");
    assert_eq!(config.spool.path, PathBuf::from("data/spool.db"));
}

#[test]
fn an_empty_file_gets_every_default() {
    let config = parse("").unwrap();
    assert_eq!(config.tcp.unwrap().listen.map(|a| a.port()), Some(7878));
    assert_eq!(config.mqtt.unwrap().listen.map(|a| a.port()), Some(1883));
    assert_eq!(config.shutdown_grace, Duration::from_secs(10));
}

#[test]
fn errors_name_the_key_and_the_problem() {
    let err = parse("[tcp]\nlisten = \"nowhere\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tcp.listen") && err.contains("nowhere"),
        "{err}"
    );
    let err = parse("[kafka]\nbrokers = \"localhost\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("kafka.brokers"), "{err}");
    let err = parse("[routes]\nreadings = \"a/b\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("routes.readings"), "{err}");
    let err = parse("[spool]\ngroup_commit_max_events = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("spool.group_commit_max_events"), "{err}");
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = parse("[spool]\nmax_size = 3\n").unwrap_err().to_string();
    assert!(err.contains("max_size"), "{err}");
}

#[test]
fn tributarys_own_kafka_settings_cannot_be_overridden() {
    let err = parse(
        "[kafka]\nbrokers = \"k:9092\"\n[kafka.properties]\n\"enable.idempotence\" = \"false\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("enable.idempotence"), "{err}");
}

#[test]
fn spool_limits_have_documented_defaults_and_a_bad_policy_is_named() {
    let config = parse("").unwrap();
    assert_eq!(config.spool.limits.max_bytes, 1 << 30);
    assert_eq!(config.spool.limits.min_free_bytes, 100 << 20);
    assert_eq!(config.spool.limits.policy, FullPolicy::Block);
    assert_eq!(config.spool.limits.max_age, None);
    let err = parse("[spool]\nwhen_full = \"panic\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spool.when_full") && err.contains("drop_oldest"),
        "{err}"
    );
}

#[test]
fn route_rules_are_validated_and_errors_name_the_rule() {
    let config = parse(
        "[[routes.rule]]\nkind = \"position\"\ndevice = \"truck-*\"\ntopic = \"fleet.trucks\"\nformat = \"avro\"\navro_schema_id = 3\n\
         [[routes.rule]]\nmqtt_topic = \"devices/+/readings\"\ntopic = \"r.csv\"\nformat = \"csv\"\nkey = \"{kind}-{device_id}\"\n",
    )
    .unwrap();
    assert_eq!(config.routes.rules.len(), 2);
    assert_eq!(
        config.routes.rules[0].format,
        Format::Avro { schema_id: Some(3) }
    );
    for (toml, key) in [
        (
            "[[routes.rule]]\ntopic = \"t\"\nformat = \"xml\"\n",
            "routes.rule[0].format",
        ),
        (
            "[[routes.rule]]\ntopic = \"t\"\nkind = \"photo\"\n",
            "routes.rule[0].kind",
        ),
        ("[[routes.rule]]\ntopic = \"a/b\"\n", "routes.rule[0].topic"),
        (
            "[[routes.rule]]\ntopic = \"t\"\nkey = \"{imei}\"\n",
            "routes.rule[0].key",
        ),
        (
            "[[routes.rule]]\ntopic = \"t\"\nmqtt_topic = \"a/#/b\"\n",
            "routes.rule[0].mqtt_topic",
        ),
        (
            "[[routes.rule]]\ntopic = \"t\"\navro_schema_id = 1\n",
            "routes.rule[0].avro_schema_id",
        ),
    ] {
        let err = parse(toml).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn auto_create_uses_each_routes_partitions_and_replication() {
    let config = parse(
        "[kafka]\nbrokers = \"k:9092\"\nauto_create = true\ntopic_partitions = 6\n\
         [[routes.rule]]\ntopic = \"fleet\"\npartitions = 12\nreplication = 3\n",
    )
    .unwrap();
    let SinkConfig::Kafka(kafka) = config.sink else {
        panic!("kafka")
    };
    let topics = kafka.create_topics.unwrap().topics;
    assert!(topics.contains(&("telemetry.readings".into(), 6, 1)));
    assert!(topics.contains(&("fleet".into(), 12, 3)));
    let err = parse("[[routes.rule]]\ntopic = \"t\"\npartitions = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("routes.rule[0].partitions"), "{err}");
}
