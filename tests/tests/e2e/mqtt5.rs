//! MQTT 5 and 3.1 on the device listener, with the client libraries devices use: paho-mqtt
//! (PyPI) and MQTT.js (npm). What each publish was answered, what Kafka holds, and how a full
//! spool slows an MQTT 5 device down instead of cutting it off.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use tributary_tests::clients::{answers, mqttjs, paho, paho_output, paho_spawn, plan};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{consume, create_topics};
use tributary_tests::{env, free_port, import_passwords, loopback};

const IDLE: Duration = Duration::from_secs(20);

fn reading(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"time_ms":{},"values":[{{"name":"t","value":20.5,"unit":"Cel"}}]}}"#,
        1_700_000_000_000 + seq
    )
}

fn codes(lines: &[Value]) -> Vec<u64> {
    answers(lines)
        .iter()
        .map(|a| a["rc"].as_u64().unwrap_or(u64::MAX))
        .collect()
}

fn connack(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find_map(|l| l.get("connack"))
        .unwrap_or_else(|| panic!("no CONNACK: {lines:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn paho_and_mqtt_js_over_mqtt_5_and_3_1_are_stored_with_user_properties_as_headers() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("mqtt5");
    create_topics(&brokers, &topics.all(), 3).await;
    let gateway = Gateway::start(Some(&brokers), &topics);
    let port = gateway.mqtt.port().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    // Device `id` publishes seq 1 (QoS 1, with properties) and seq 2 (QoS 2).
    let two = |id: &str| {
        json!([
            {"topic": format!("devices/{id}/readings"), "payload": reading(1), "qos": 1,
             "user": [["site", "depot-3"], ["line", "2"]], "content_type": "application/json",
             "utf8": true},
            {"topic": format!("devices/{id}/readings"), "payload": reading(2), "qos": 2,
             "user": [["site", "depot-3"]]},
        ])
    };
    let mut runs = Vec::new();
    for (version, id) in [("5", "paho5-1"), ("31", "paho31-1")] {
        let file = plan(dir.path(), id, &two(id));
        let file = file.to_str().expect("utf-8");
        runs.push((
            id,
            paho(&[
                "--port",
                &port,
                "--version",
                version,
                "--client-id",
                id,
                "--plan",
                file,
            ]),
        ));
    }
    for (version, id) in [(5u8, "js5-1"), (3, "js31-1")] {
        let file = plan(dir.path(), id, &two(id));
        runs.push((id, mqttjs(gateway.mqtt.port(), version, id, &file)));
    }
    for (id, lines) in &runs {
        assert_eq!(connack(lines)["rc"], 0, "{id}: {lines:?}");
        assert_eq!(codes(lines), [0, 0], "{id}: {lines:?}");
    }
    let v5 = connack(&runs[0].1);
    assert_eq!(v5["props"]["ReceiveMaximum"], 32, "the configured grant");
    assert_eq!(v5["props"]["TopicAliasMaximum"], 32);
    // A topic no decoder or mapping takes (anonymous on loopback, so the ACL allows it).
    let elsewhere = json!([{"topic": "weather/now", "payload": "{}", "qos": 1}]);
    let file = plan(dir.path(), "elsewhere", &elsewhere);
    let lines = mqttjs(gateway.mqtt.port(), 5, "js5-2", &file);
    assert_eq!(codes(&lines), [0x90], "topic name invalid: {lines:?}");

    let got = consume(&brokers, &topics.readings, 8, IDLE);
    assert_eq!(got.len(), 8, "{got:?}");
    let dead = consume(&brokers, &topics.dead_letter, 1, IDLE);
    assert!(
        dead[0].value["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("weather/now"),
        "{dead:?}"
    );
    for (id, _) in &runs {
        let mine: Vec<_> = got.iter().filter(|m| m.key == *id).collect();
        let seqs: Vec<u64> = mine
            .iter()
            .filter_map(|m| m.value["seq"].as_u64())
            .collect();
        assert_eq!(seqs, [1, 2], "{id}: in order, once");
        let first = &mine[0].headers;
        assert_eq!(first["event-id"], format!("{id}:1"));
        if id.contains('5') {
            assert_eq!(first["mqtt.site"], "depot-3", "{id}: {first:?}");
            assert_eq!(first["mqtt.line"], "2", "{id}: {first:?}");
            assert_eq!(mine[1].headers["mqtt.site"], "depot-3");
        } else {
            assert!(
                !first.keys().any(|k| k.starts_with("mqtt.")),
                "{id}: MQTT 3.1 has no properties: {first:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_refused_publish_gets_the_reason_code_that_says_why_and_is_kept_as_a_dead_letter() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("mqtt5-refused");
    create_topics(&brokers, &topics.all(), 3).await;
    let dir = tempfile::tempdir().expect("temp dir");
    import_passwords(&dir.path().join("devices.passwd"), "r5-1 pw-one\n");
    let gateway = Gateway::start_in_dir(
        dir,
        Some(&brokers),
        &topics,
        "max_payload_bytes = 2048\nmax_user_properties = 4\n",
        "[auth]\ncredentials = \"{dir}/devices.passwd\"\n",
    );
    let port = gateway.mqtt.port().to_string();
    let own = "devices/r5-1/readings";
    let many: Vec<Value> = (0..5).map(|i| json!([format!("k{i}"), "v"])).collect();
    let entries = json!([
        {"topic": own, "payload": "{not json", "qos": 1},
        {"topic": "devices/r5-2/readings", "payload": reading(1), "qos": 1},
        {"topic": "weather/now", "payload": "{}", "qos": 1},
        {"topic": own, "payload": "x".repeat(3000), "qos": 1},
        {"topic": own, "payload": "{}", "qos": 2},
        {"topic": own, "payload": reading(2), "qos": 1, "user": many},
        {"topic": own, "payload": reading(3), "qos": 1, "content_type": "text/plain"},
        {"topic": own, "payload": reading(4), "qos": 1},
        // Over the Maximum Packet Size the CONNACK gave (2 KiB payloads plus 64 KiB).
        {"topic": own, "payload": "y".repeat(70_000), "qos": 1},
    ]);
    let file = plan(gateway.dir.path(), "refused", &entries);
    let lines = paho(&[
        "--port",
        &port,
        "--client-id",
        "r5-1",
        "--username",
        "r5-1",
        "--password",
        "pw-one",
        "--plan",
        file.to_str().expect("utf-8"),
    ]);
    // Payload format invalid, not authorized (another device's topic, and a topic outside the
    // device's own: the ACL comes first), implementation specific
    // (too large), packet identifier not found (paho answers a refusing PUBREC with PUBREL),
    // implementation specific (user properties), payload format invalid (content type), success.
    assert_eq!(
        codes(&lines),
        [0x99, 0x87, 0x87, 0x83, 0x92, 0x83, 0x99, 0x00],
        "{lines:?}"
    );
    let reasons: Vec<&str> = answers(&lines)
        .iter()
        .map(|a| a["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("may not publish"), "{reasons:?}");
    assert!(
        reasons[3].contains("payload too large: 3000 bytes"),
        "{reasons:?}"
    );
    assert!(reasons[5].contains("5 user properties"), "{reasons:?}");
    assert!(reasons[6].contains("content type"), "{reasons:?}");
    let disconnect = lines
        .iter()
        .find(|l| l.get("disconnect").is_some())
        .unwrap_or_else(|| panic!("the oversize packet ends the session: {lines:?}"));
    assert_eq!(
        disconnect["disconnect"], 0x95,
        "packet too large: {lines:?}"
    );

    let wrong = paho(&[
        "--port",
        &port,
        "--client-id",
        "r5-1",
        "--username",
        "r5-1",
        "--password",
        "wrong",
    ]);
    assert_eq!(
        connack(&wrong)["rc"],
        0x86,
        "bad user name or password: {wrong:?}"
    );

    let stored = consume(&brokers, &topics.readings, 1, IDLE);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].value["seq"], 4);
    let dead = consume(&brokers, &topics.dead_letter, 8, IDLE);
    assert_eq!(dead.len(), 8, "every refusal kept: {dead:?}");
    let texts: Vec<&str> = dead
        .iter()
        .map(|m| m.value["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(
        texts.iter().any(|r| r.contains("70000 bytes")),
        "the oversize packet too: {texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_mqtt_5_device_against_a_full_spool_is_slowed_down_not_cut_off_and_loses_nothing() {
    let brokers = loopback(free_port()).to_string();
    let topics = Topics::unique("mqtt5-flow");
    // Kafka is down: the spool (about 1,000 events' room) fills, and stays full until it is up.
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        "[spool]\nmax_bytes = 150000\nwhen_full = \"block\"\n",
    );
    let port = gateway.mqtt.port().to_string();
    let events = 3000u64;
    let flood = paho_spawn(&[
        "--port",
        &port,
        "--client-id",
        "flow-1",
        "--flood",
        &events.to_string(),
        "--device",
        "flow-1",
        "--timeout",
        "240",
    ]);
    // Wait until the spool is full and the device is told so.
    let full = async {
        loop {
            let (_, metrics) = tributary_tests::http_get(gateway.admin, "/metrics");
            if metrics
                .lines()
                .any(|l| l.contains("reason=\"spool_full\"") && !l.ends_with(" 0"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), full)
        .await
        .expect("the spool fills and the device hears 'quota exceeded'");
    let late = paho(&["--port", &port, "--client-id", "flow-2"]);
    let granted = connack(&late)["props"]["ReceiveMaximum"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        granted < 32,
        "a full spool grants less than mqtt.receive_maximum: {late:?}"
    );

    let broker = tributary_tests::MemoryTansu::start(&brokers);
    create_topics(&brokers, &topics.all(), 3).await;
    let lines = tokio::task::spawn_blocking(move || paho_output(flood))
        .await
        .expect("flood");
    let got = consume(&brokers, &topics.readings, events as usize, IDLE);
    drop(broker);
    let done = &lines
        .iter()
        .find_map(|l| l.get("done"))
        .unwrap_or_else(|| panic!("the flood ended: {lines:?}"));
    assert_eq!(done["disconnects"], 0, "never cut off: {lines:?}");
    assert!(done["busy"].as_u64().unwrap_or(0) > 0, "told busy: {done}");
    assert_eq!(done["refused"], 0);
    let acked: BTreeSet<u64> = done["acked"]
        .as_array()
        .expect("acked")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let missing: Vec<u64> = (1..=events).filter(|s| !acked.contains(s)).collect();
    assert!(missing.is_empty(), "never acknowledged: {missing:?}");
    let seqs: Vec<u64> = got.iter().filter_map(|m| m.value["seq"].as_u64()).collect();
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    let lost: Vec<u64> = acked.difference(&unique).copied().collect();
    assert!(lost.is_empty(), "acknowledged but not in Kafka: {lost:?}");
    assert_eq!(seqs.len(), unique.len(), "none twice");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order in the partition"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mqtt_5_connack_assigns_an_id_sets_the_keep_alive_and_keeps_a_session() {
    let topics = Topics::unique("mqtt5-connack");
    let gateway = Gateway::start_with_mqtt(None, &topics, "max_keep_alive_s = 120\n", "");
    let port = gateway.mqtt.port().to_string();
    // No client id, no keep-alive: the gateway picks both and says so.
    let lines = paho(&["--port", &port, "--client-id", "", "--keepalive", "0"]);
    let props = &connack(&lines)["props"];
    assert_eq!(connack(&lines)["rc"], 0, "{lines:?}");
    assert!(
        props["AssignedClientIdentifier"]
            .as_str()
            .is_some_and(|id| id.starts_with("tributary-")),
        "{props}"
    );
    assert_eq!(props["ServerKeepAlive"], 120, "{props}");
    // A session that outlives its connection is present when the device comes back.
    let session = [
        "--port",
        &port,
        "--client-id",
        "s5-1",
        "--session-expiry",
        "300",
    ];
    let first = paho(&session);
    assert_eq!(connack(&first)["session_present"], false, "{first:?}");
    let again = paho(&session);
    assert_eq!(connack(&again)["session_present"], true, "{again:?}");
    // Clean Start discards it.
    let clean = paho(&["--port", &port, "--client-id", "s5-1"]);
    assert_eq!(connack(&clean)["session_present"], false, "{clean:?}");
}
