//! MQTT 5 and 3.1 on the device listener, with the client libraries devices use: paho-mqtt
//! (PyPI) and MQTT.js (npm). What each publish was answered, what Kafka holds, and how a full
//! spool slows an MQTT 5 device down instead of cutting it off.

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use serde_json::{json, Value};
use tributary_tests::clients::{answers, mqttjs, paho, paho_output, paho_spawn, plan};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{consume, create_topics};
use tributary_tests::{env, free_port, import_passwords, loopback};

mod letter;

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

/// An anonymous device (a loopback listener) names itself only in its topic: what it publishes
/// and the gateway refuses before decoding (too many user properties, too large) is still kept
/// under that device, not `unknown`.
#[tokio::test(flavor = "multi_thread")]
async fn an_anonymous_device_s_refused_publishes_are_keyed_by_the_device_its_topic_names() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("mqtt5-anon-dead");
    create_topics(&brokers, &topics.all(), 3).await;
    let gateway = Gateway::start_in_dir(
        tempfile::tempdir().expect("temp dir"),
        Some(&brokers),
        &topics,
        "max_payload_bytes = 2048\nmax_user_properties = 4\n",
        "",
    );
    let port = gateway.mqtt.port().to_string();
    let own = "devices/anon-7/readings";
    let many: Vec<Value> = (0..5).map(|i| json!([format!("k{i}"), "v"])).collect();
    let entries = json!([
        {"topic": own, "payload": reading(1), "qos": 1, "user": many},
        {"topic": own, "payload": "x".repeat(3000), "qos": 1},
    ]);
    let file = plan(gateway.dir.path(), "anon", &entries);
    let lines = paho(&[
        "--port",
        &port,
        "--client-id",
        "some-client",
        "--plan",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(codes(&lines), [0x83, 0x83], "{lines:?}");
    let dead = consume(&brokers, &topics.dead_letter, 2, IDLE);
    assert_eq!(dead.len(), 2, "{dead:?}");
    for m in &dead {
        assert_eq!(m.key, "anon-7", "keyed by the topic's device: {m:?}");
        assert_eq!(m.value["device_id"], "anon-7", "{m:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_mqtt_5_device_against_a_full_spool_is_slowed_down_not_cut_off_and_loses_nothing() {
    let kafka_port = free_port();
    let brokers = loopback(kafka_port).to_string();
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

    let broker = tokio::task::spawn_blocking(move || {
        tributary_tests::broker::KafkaCluster::start_on(kafka_port)
    })
    .await
    .expect("the broker starts");
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

/// A raw MQTT 5 connection: for what no well-behaved client library would send.
struct Raw5 {
    stream: tokio::net::TcpStream,
    read: bytes::BytesMut,
}

impl Raw5 {
    async fn connect(addr: std::net::SocketAddr, id: &str) -> (Self, v5::ConnAck) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut raw = Self {
            stream,
            read: bytes::BytesMut::new(),
        };
        let connect = v5::Connect {
            keep_alive: 30,
            client_id: id.into(),
            clean_start: true,
            properties: None,
        };
        raw.send(&[v5::Packet::Connect(connect, None, None)]).await;
        match raw.next().await {
            Some(v5::Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("CONNACK expected: {other:?}"),
        }
    }

    async fn send(&mut self, packets: &[v5::Packet]) {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        for p in packets {
            p.write(&mut out, None).expect("encode");
        }
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next packet, or `None` once the gateway closed the connection.
    async fn next(&mut self) -> Option<v5::Packet> {
        use tokio::io::AsyncReadExt;
        loop {
            match v5::Packet::read(&mut self.read, None) {
                Ok(p) => return Some(p),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("the gateway wrote a packet that does not parse: {e:?}"),
            }
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                self.stream.read_buf(&mut self.read),
            );
            match read.await.expect("an answer within 10 s") {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

fn publish5(topic: &str, alias: Option<u16>, qos: QoS5, pkid: u16, payload: String) -> v5::Packet {
    let mut p = v5::Publish::new(topic, qos, payload, None);
    p.pkid = pkid;
    p.properties = alias.map(|a| v5::PublishProperties {
        topic_alias: Some(a),
        ..Default::default()
    });
    v5::Packet::Publish(p)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_breaking_mqtt_5_s_rules_hears_why_in_a_disconnect_and_is_counted() {
    let topics = Topics::unique("mqtt5-raw");
    let mut gateway = Gateway::start_with_mqtt(None, &topics, "receive_maximum = 4\n", "");
    let topic = "devices/raw-1/readings";

    // An alias it never set.
    let (mut raw, ack) = Raw5::connect(gateway.mqtt, "raw-1").await;
    let grant = ack.properties.expect("grants");
    assert_eq!(grant.receive_max, Some(4));
    raw.send(&[publish5(topic, Some(1), QoS5::AtLeastOnce, 1, reading(1))])
        .await;
    assert!(matches!(raw.next().await, Some(v5::Packet::PubAck(a)) if a.pkid == 1));
    raw.send(&[publish5("", Some(1), QoS5::AtLeastOnce, 2, reading(2))])
        .await;
    assert!(
        matches!(raw.next().await, Some(v5::Packet::PubAck(a)) if a.pkid == 2),
        "alias 1 resolves to the topic it was set to"
    );
    raw.send(&[publish5("", Some(3), QoS5::AtLeastOnce, 3, reading(3))])
        .await;
    match raw.next().await {
        Some(v5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, v5::DisconnectReasonCode::TopicAliasInvalid)
        }
        other => panic!("DISCONNECT 0x94 expected: {other:?}"),
    }
    assert!(raw.next().await.is_none(), "and closed");

    // QoS 2 publishes whose PUBREL never comes count against the grant: the fifth is one too
    // many.
    let (mut raw, _) = Raw5::connect(gateway.mqtt, "raw-2").await;
    let own = "devices/raw-2/readings";
    for pkid in 1..=4u16 {
        raw.send(&[publish5(
            own,
            None,
            QoS5::ExactlyOnce,
            pkid,
            reading(pkid.into()),
        )])
        .await;
        assert!(matches!(raw.next().await, Some(v5::Packet::PubRec(r)) if r.pkid == pkid));
    }
    raw.send(&[publish5(own, None, QoS5::ExactlyOnce, 5, reading(5))])
        .await;
    match raw.next().await {
        Some(v5::Packet::Disconnect(d)) => {
            assert_eq!(
                d.reason_code,
                v5::DisconnectReasonCode::ReceiveMaximumExceeded
            )
        }
        other => panic!("DISCONNECT 0x93 expected: {other:?}"),
    }

    // Shutting down, the gateway says so.
    let (mut raw, _) = Raw5::connect(gateway.mqtt, "raw-3").await;
    let stopped = gateway.stop();
    match raw.next().await {
        Some(v5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, v5::DisconnectReasonCode::ServerShuttingDown)
        }
        other => panic!("DISCONNECT 0x8B expected: {other:?}"),
    }
    assert_eq!(stopped.refused("mqtt/topic_alias"), 1, "{}", stopped.stdout);
    assert_eq!(
        stopped.refused("mqtt/receive_maximum"),
        1,
        "{}",
        stopped.stdout
    );
}
