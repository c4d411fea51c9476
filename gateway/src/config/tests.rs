use super::*;
use crate::forward::TimestampSource;
use crate::route::Format;
use tributary_spool::FullPolicy;

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
fn kafka_properties_librdkafka_refuses_together_are_refused_at_start() {
    // Each is valid alone; librdkafka refuses the pair only when it creates the producer.
    let err = parse("[kafka]\nbrokers = \"127.0.0.1:9\"\n[kafka.properties]\nacks = \"0\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kafka.properties") && err.contains("acks") && err.contains("idempotence"),
        "{err}"
    );
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

#[test]
fn a_listener_beyond_loopback_needs_a_way_to_authenticate_devices() {
    let err = parse("[mqtt]\nlisten = \"0.0.0.0:1883\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mqtt.listen") && err.contains("0.0.0.0:1883"),
        "{err}"
    );
    assert!(
        err.contains("auth.credentials") && err.contains("auth.anonymous"),
        "says how to add credentials or opt in: {err}"
    );
    let opted_in = "[mqtt]\nlisten = \"0.0.0.0:1883\"\n[auth]\nanonymous = \"network\"\n";
    assert!(parse(opted_in).is_ok());
    // Passwords on a plain listener beyond loopback would cross the network in clear text:
    // only with the explicit opt-in.
    let passwords = "[mqtt]\nlisten = \"0.0.0.0:1883\"\n[auth]\ncredentials = \"p\"\n";
    let err = parse(passwords).unwrap_err().to_string();
    assert!(
        err.contains("mqtt.listen")
            && err.contains("clear text")
            && err.contains("auth.cleartext_passwords"),
        "{err}"
    );
    assert!(parse(&format!("{passwords}cleartext_passwords = true\n")).is_ok());
    let passwords_tls = "[mqtt]\nlisten = \"127.0.0.1:1883\"\ntls_listen = \"0.0.0.0:8883\"\n\
                         [tls]\ncert = \"c\"\nkey = \"k\"\n[auth]\ncredentials = \"p\"\n";
    assert!(
        parse(passwords_tls).is_ok(),
        "TLS beyond loopback, plain on loopback"
    );
    // Client certificates authenticate on a TLS listener only.
    let certs_plain = "[tcp]\nlisten = \"0.0.0.0:7878\"\n\
                       [tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n";
    assert!(parse(certs_plain)
        .unwrap_err()
        .to_string()
        .contains("tcp.listen"));
    let certs_tls = "[tcp]\ntls_listen = \"0.0.0.0:7879\"\n\
                     [tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n";
    assert!(parse(certs_tls).is_ok());
    let broker = "[mqtt]\nbroker_listen = \"0.0.0.0:1884\"\n[auth]\ncredentials = \"p\"\n";
    assert!(parse(broker)
        .unwrap_err()
        .to_string()
        .contains("mqtt.broker_listen"));
}

#[test]
fn identity_settings_are_checked_and_named() {
    let cases = [
        ("[tcp]\ntoken = \"x\"\n", "tcp.token"),
        ("[mqtt]\ntls_listen = \"127.0.0.1:8883\"\n", "tls.cert"),
        ("[tls]\ncert = \"c\"\n", "tls.key"),
        (
            "[tls]\ncert = \"c\"\nkey = \"k\"\ncrl = [\"r\"]\n",
            "tls.crl",
        ),
        (
            "[tls]\ncert = \"c\"\nkey = \"k\"\nidentity_from = \"o\"\n",
            "tls.identity_from",
        ),
        ("[auth]\nanonymous = \"sometimes\"\n", "auth.anonymous"),
        ("[auth]\non_deny = \"ignore\"\n", "auth.on_deny"),
        (
            "[[auth.acl]]\nallow = [\"devices/{client}/#\"]\n",
            "auth.acl[0].allow",
        ),
        (
            "[[auth.acl]]\ndevices = \"a/b\"\nallow = [\"x\"]\n",
            "auth.acl[0].devices",
        ),
        ("[[auth.acl]]\ndevices = \"a\"\n", "auth.acl[0].allow"),
        (
            "[spool]\nmax_age_ms = 18446744073709551615\n",
            "spool.max_age_ms",
        ),
        (
            "[spool]\nforget_devices_after_ms = 0\n",
            "spool.forget_devices_after_ms",
        ),
        ("[tcp]\nidle_timeout_ms = 0\n", "tcp.idle_timeout_ms"),
        (
            "[gateway]\nshutdown_grace_ms = 18446744073709551615\n",
            "gateway.shutdown_grace_ms",
        ),
    ];
    for (text, key) in cases {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn the_timestamp_policy_is_read_and_checked() {
    let c = parse("[time]\nkafka_timestamp = \"receive\"\nmax_future_ms = 1000\n").unwrap();
    assert_eq!(c.time.kafka_timestamp, TimestampSource::Receive);
    assert_eq!(c.time.max_future, Duration::from_secs(1));
    assert_eq!(parse("").unwrap().time, TimePolicy::default());
    let err = parse("[time]\nkafka_timestamp = \"device\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("time.kafka_timestamp"), "{err}");
}

#[test]
fn the_file_source_examples_in_the_shipped_config_are_valid() {
    let block = shipped_examples("# [[files]]", Some("# Modbus:"));
    let config = parse(&block).unwrap();
    let names: Vec<&str> = config.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["app", "meters"]);
}

#[test]
fn the_modbus_examples_in_the_shipped_config_are_valid() {
    let block = shipped_examples("# [[modbus]]", Some("# Rules:"));
    let config = parse(&block).unwrap();
    let devices: Vec<&str> = config
        .modbus
        .iter()
        .flat_map(|l| &l.devices)
        .map(|d| d.device_id.as_str())
        .collect();
    assert_eq!(devices, ["press-7", "meter-12"]);
}

#[test]
fn the_sparkplug_example_in_the_shipped_config_is_valid() {
    let block = shipped_examples("# [sparkplug]", Some("# MQTT bridges:"))
        .replace("enabled = false", "enabled = true");
    let config = parse(&block).unwrap();
    let sparkplug = config.sparkplug.expect("on");
    assert_eq!(sparkplug.devices["Plant 1/Line 3/Press 7"], "press-7");
}

#[test]
fn bad_file_sources_name_the_key() {
    let cases = [
        ("[[files]]\npath = \"/x/*.log\"\ntopic = \"t\"\n", "files[0].name"),
        ("[[files]]\nname = \"a\"\ntopic = \"t\"\n", "files[0].path"),
        ("[[files]]\nname = \"a\"\npath = \"/x/*/a.log\"\ntopic = \"t\"\n", "files[0].path"),
        ("[[files]]\nname = \"a\"\npath = \"/x/a.log\"\n", "files[0].topic"),
        ("[[files]]\nname = \"a\"\npath = \"/x/a.log\"\nformat = \"json\"\n", "files[0].mapping"),
        ("[[files]]\nname = \"a\"\npath = \"/x/a.log\"\nformat = \"xml\"\n", "files[0].format"),
        (
            "[[files]]\nname = \"a\"\npath = \"/x/a.log\"\nformat = \"csv\"\n[files.mapping]\nkind = \"reading\"\n",
            "files[0].mapping.device_id",
        ),
        ("[[files]]\nname = \"a\"\npath = \"/x/a\"\ntopic = \"t\"\n[[files]]\nname = \"a\"\npath = \"/x/b\"\ntopic = \"t\"\n", "files[1].name"),
        ("[teltonika]\nlisten = \"0.0.0.0:5027\"\nnames = { \"123\" = \"t-1\" }\n", "teltonika.names"),
        ("[[bridges]]\nhost = \"h\"\ntopics = [\"a/#\"]\n", "bridges[0].name"),
        ("[[bridges]]\nname = \"b\"\ntopics = [\"a/#\"]\n", "bridges[0].host"),
        ("[[bridges]]\nname = \"b\"\nhost = \"h\"\n", "bridges[0].topics"),
        ("[[bridges]]\nname = \"b\"\nhost = \"h\"\ntopics = [\"a/#/b\"]\n", "bridges[0].topics"),
        ("[[bridges]]\nname = \"b\"\nhost = \"h\"\ntopics = [{ filter = \"a\", qos = 3 }]\n", "bridges[0].topics"),
        ("[[bridges]]\nname = \"b\"\nhost = \"h\"\ntopics = [\"a\"]\npassword = \"p\"\n", "bridges[0].password"),
        ("[[bridges]]\nname = \"b\"\nhost = \"h\"\ntopics = [\"a\"]\nca_file = \"/nonexistent.pem\"\n", "bridges[0].ca_file"),
    ];
    for (text, key) in cases {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn the_bridge_example_in_the_shipped_config_is_valid() {
    let config = parse(&shipped_examples(
        "# [[bridges]]",
        Some("# File-tail sources:"),
    ))
    .unwrap();
    let b = &config.bridges[0];
    assert_eq!(
        (b.name.as_str(), b.port, b.client_id.as_str()),
        ("site", 1883, "tributary-depot-7")
    );
    assert_eq!(
        b.topics,
        [
            ("tele/+/SENSOR".to_owned(), 1),
            ("zigbee2mqtt/+".to_owned(), 1)
        ]
    );
}

#[test]
fn a_key_a_rule_or_mapping_does_not_know_names_the_entry() {
    for (text, says) in [
        (
            "[[rules]]\nname = \"ok\"\ntype = \"filter\"\nwhere = \"seq > 1\"\ntopic = \"a\"\n\
             [[rules]]\nname = \"hot\"\ntype = \"filter\"\nwher = \"seq > 1\"\ntopic = \"b\"\n",
            "rules[1] (\"hot\"): unknown field `wher`",
        ),
        (
            "[[mappings]]\ntopic = \"plant/#\"\ndevise = \"x\"\n",
            "mappings[0]: unknown field `devise`",
        ),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn exactly_once_needs_brokers_and_a_gateway_id_and_names_what_is_wrong() {
    let eos = |extra: &str| {
        parse(&format!(
            "[kafka]\nbrokers = \"k:9092\"\ndelivery = \"exactly-once\"\n{extra}"
        ))
    };
    let config = eos("gateway_id = \"depot-7\"\n").unwrap();
    let SinkConfig::Kafka(kafka) = &config.sink else {
        panic!("a Kafka sink");
    };
    let once = kafka.exactly_once.as_ref().unwrap();
    assert_eq!(once.gateway_id, "depot-7");
    assert_eq!(once.progress_topic, "tributary.progress");
    assert_eq!(once.transaction_timeout, Duration::from_secs(60));
    let props = crate::forward::config::client_config(kafka);
    assert_eq!(props.get("transactional.id"), Some("tributary-depot-7"));
    assert_eq!(props.get("message.timeout.ms"), Some("60000"));
    let named = |r: Result<Config, ConfigError>, key: &str| {
        let err = r.unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    };
    named(eos(""), "kafka.gateway_id");
    named(eos("gateway_id = \"depot 7\"\n"), "kafka.gateway_id");
    named(
        eos("gateway_id = \"d\"\ntransaction_timeout_ms = 10\n"),
        "kafka.transaction_timeout_ms",
    );
    named(
        eos("gateway_id = \"d\"\nprogress_topic = \"a/b\"\n"),
        "kafka.progress_topic",
    );
    named(
        eos("gateway_id = \"d\"\n[kafka.properties]\n\"transactional.id\" = \"x\"\n"),
        "kafka.properties",
    );
    named(
        parse("[kafka]\ndelivery = \"exactly-once\"\ngateway_id = \"d\"\n"),
        "kafka.delivery",
    );
    named(
        parse("[kafka]\nbrokers = \"k:9092\"\ndelivery = \"twice\"\n"),
        "kafka.delivery",
    );
    let default = parse("[kafka]\nbrokers = \"k:9092\"\n").unwrap();
    assert!(matches!(&default.sink, SinkConfig::Kafka(k) if k.exactly_once.is_none()));
}

#[test]
fn the_commands_example_in_the_shipped_config_is_valid_and_needs_kafka() {
    let block = shipped_examples("# [commands]", Some("[time]"));
    let kafka = "[kafka]\nbrokers = \"k1:9092\"\ngateway_id = \"depot-7\"\n";
    let config = parse(&format!("{block}{kafka}")).unwrap();
    let c = config.commands.expect("commands on");
    assert_eq!(c.topic, "site-a.commands");
    assert_eq!(c.group_id, "tributary-commands-depot-7");
    assert_eq!(c.gateway_id.as_deref(), Some("depot-7"));
    // The responses topic is created with the others when auto_create is on.
    let auto = parse(&format!("{block}{kafka}auto_create = true\n")).unwrap();
    let SinkConfig::Kafka(k) = auto.sink else {
        panic!("kafka sink");
    };
    let topics = k.create_topics.expect("topics to create").topics;
    assert!(topics.iter().any(|t| t.0 == "tributary.command-responses"));
    let err = parse(&block).unwrap_err().to_string();
    assert!(err.contains("commands.topic"), "{err}");
}
