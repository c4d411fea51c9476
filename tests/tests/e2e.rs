//! End-to-end: the real `tributary` binary, real MQTT and TCP clients, a real Kafka-compatible
//! broker, and consumers reading what arrived. Run with `tests/run`.

mod e2e {
    pub mod admin;
    pub mod commands;
    pub mod connectors;
    pub mod crash;
    pub mod data_team;
    pub mod dedup;
    pub mod front_door;
    pub mod full_disk;
    pub mod kafka;
    pub mod limits;
    pub mod modbus;
    pub mod mqtt5;
    pub mod node;
    pub mod rules;
    pub mod security;
    pub mod sim;
    pub mod sparkplug;
    pub mod spool;
    pub mod status_page;
}

use std::collections::BTreeMap;
use std::time::Duration;

use tributary_protocol::{Kind, Message};
use tributary_sim::run::RunReport;
use tributary_sim::scenario::{Group, Link, ModelKind, Scenario};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{check_stream, consume, create_topics, verify};
use tributary_tests::{binary, env, free_port, loopback, run};

const IDLE: Duration = Duration::from_secs(30);

/// A mixed fleet: half environment stations (readings), half trucks (positions), with the
/// default fault rates, over `link`.
fn spec(gateway: &Gateway, link: Link, prefix: &str, devices: usize, events: u64) -> Scenario {
    let mut s = Scenario::plain(gateway.tcp, gateway.mqtt, link, prefix, devices, events);
    s.faults = tributary_sim::model::FaultRates::default();
    let sensors = Group {
        name: "env".into(),
        count: devices / 2,
        ..s.groups[0].clone()
    };
    let trucks = Group {
        name: "truck".into(),
        model: ModelKind::Truck,
        count: devices - devices / 2,
        ..s.groups[0].clone()
    };
    s.groups = vec![sensors, trucks];
    s
}

/// What a run sent, per device, split by topic (readings, positions).
fn expected(report: &RunReport) -> (BTreeMap<String, Vec<u64>>, BTreeMap<String, Vec<u64>>) {
    let (mut readings, mut positions) = (BTreeMap::new(), BTreeMap::new());
    for d in &report.devices {
        let seqs = (d.first_seq..=d.last_sent_seq.unwrap_or(0)).collect();
        match d.kind {
            Kind::Reading => readings.insert(d.id.clone(), seqs),
            Kind::Position => positions.insert(d.id.clone(), seqs),
        };
    }
    (readings, positions)
}

fn assert_all_acked(report: &RunReport) {
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(report.acked(), report.sent(), "{}", report.table());
}

async fn fleet_arrives_exactly_once_in_order(stem: &str, link: Link) {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique(stem);
    create_topics(&brokers, &topics.all(), 3).await;
    let mut gateway = Gateway::start(Some(&brokers), &topics);
    let report = run(spec(&gateway, link, stem, 10, 100)).await;
    assert_all_acked(&report);
    // tributary-sim's verifier: nothing missing, no duplicates, in order, right partitions.
    let verdict = verify(&brokers, &topics.all(), &report.manifest(), false);
    assert!(verdict.ok(), "{}", verdict.report());
    assert_eq!(verdict.found, 1000, "{}", verdict.report());
    // And every record's key, headers and timestamp.
    let (readings, positions) = expected(&report);
    let got = consume(&brokers, &topics.readings, 500, IDLE);
    check_stream(&got, &readings, "reading");
    let got = consume(&brokers, &topics.positions, 500, IDLE);
    check_stream(&got, &positions, "position");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_tcp_devices_arrive_exactly_once_keyed_and_in_order() {
    fleet_arrives_exactly_once_in_order("tcp", Link::Tcp).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_mqtt_devices_arrive_exactly_once_keyed_and_in_order() {
    fleet_arrives_exactly_once_in_order("mqtt", Link::Mqtt { qos: 1 }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_mqtt_5_simulator_devices_arrive_exactly_once_keyed_and_in_order() {
    fleet_arrives_exactly_once_in_order("mqtt5", Link::Mqtt5 { qos: 1 }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mosquitto_pub_reading_is_read_by_kafka_python() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let python = env("TRIBUTARY_TEST_PYTHON");
    let topics = Topics::unique("mosq");
    create_topics(&brokers, &topics.all(), 3).await;
    let gateway = Gateway::start(Some(&brokers), &topics);
    assert!(tributary_tests::mosquitto_pub(
        gateway.mqtt.port(),
        1,
        "devices/greenhouse-1/readings",
        r#"{"seq":7,"time_ms":1700000000123,"values":[{"name":"co2","value":612,"unit":"ppm"}]}"#,
    ));
    let script = r#"
import json, sys
from kafka import KafkaConsumer
c = KafkaConsumer(sys.argv[2], bootstrap_servers=sys.argv[1], auto_offset_reset="earliest",
                  consumer_timeout_ms=30000, group_id=None)
for m in c:
    print(json.dumps({"key": m.key.decode(), "timestamp": m.timestamp,
                      "headers": {k: v.decode() for k, v in m.headers},
                      "value": json.loads(m.value)}))
    break
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, &brokers, &topics.readings])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(line["key"], "greenhouse-1");
    assert_eq!(line["timestamp"], 1700000000123i64);
    assert_eq!(line["headers"]["event-id"], "greenhouse-1:7");
    assert_eq!(line["value"]["kind"], "reading");
    assert_eq!(line["value"]["values"][0]["name"], "co2");
    assert_eq!(line["value"]["values"][0]["value"], 612.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_resending_acknowledged_events_makes_no_duplicates_in_kafka() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("resend");
    create_topics(&brokers, &topics.all(), 3).await;
    let gateway = Gateway::start(Some(&brokers), &topics);
    let mut spec = tributary_tests::spec(gateway.tcp, "resend", 4, 50);
    // A resend repeats the events as they were, times included: fix the simulated start.
    spec.start_ms = Some(1_700_000_000_000);
    assert_all_acked(&run(spec.clone()).await);
    // Let the first round reach Kafka, so the resend meets forwarded (deleted) rows too.
    assert_eq!(consume(&brokers, &topics.readings, 200, IDLE).len(), 200);
    // After "reconnecting", each device resends everything plus 10 new events.
    spec.events = 60;
    let report = run(spec).await;
    assert_all_acked(&report);
    let got = consume(&brokers, &topics.readings, 240, IDLE);
    check_stream(&got, &expected(&report).0, "reading");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_is_refused_counted_and_dead_lettered_while_others_carry_on() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("bad");
    create_topics(&brokers, &topics.all(), 3).await;
    let mut gateway = Gateway::start(Some(&brokers), &topics);

    // MQTT: a payload that is not JSON.
    assert!(tributary_tests::mosquitto_pub(
        gateway.mqtt.port(),
        1,
        "devices/broken-1/readings",
        "{not json"
    ));

    // TCP: a frame with a bad CRC gets a NACK that says so, then the connection closes.
    let mut device = tributary_sim::tcp::TcpDevice::connect(gateway.tcp, "broken-2", None, None)
        .await
        .unwrap();
    let mut frame = tributary_protocol::encode_frame(&Message::Events(vec![])).unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    match device.send_raw(&frame).await.unwrap() {
        Some(Message::Nack(nack)) => {
            assert_eq!(nack.code, tributary_protocol::NackCode::Malformed);
            assert!(nack.text.contains("CRC"), "{}", nack.text);
        }
        other => panic!("expected a NACK, got {other:?}"),
    }

    // Other devices are unaffected.
    let good = run(tributary_tests::spec(gateway.tcp, "good", 2, 20)).await;
    assert_all_acked(&good);
    check_stream(
        &consume(&brokers, &topics.readings, 40, IDLE),
        &expected(&good).0,
        "reading",
    );

    let dead = consume(&brokers, &topics.dead_letter, 2, IDLE);
    assert_eq!(dead.len(), 2, "{dead:?}");
    let mqtt = dead
        .iter()
        .find(|m| m.key == "broken-1")
        .expect("MQTT dead letter");
    assert!(mqtt.value["reason"].as_str().unwrap().contains("not JSON"));
    assert_eq!(mqtt.value["payload"], "{not json");
    let tcp = dead
        .iter()
        .find(|m| m.key == "broken-2")
        .expect("TCP dead letter");
    assert!(tcp.value["reason"].as_str().unwrap().contains("CRC"));

    let stopped = gateway.stop();
    assert!(stopped.status.success());
    let dead_row = stopped
        .stdout
        .lines()
        .find(|l| l.starts_with(&topics.dead_letter))
        .unwrap_or_else(|| panic!("summary has the dead-letter topic:\n{}", stopped.stdout));
    assert_eq!(dead_row.split_whitespace().nth(1), Some("2"), "{dead_row}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_kafka_down_at_start_events_are_spooled_and_arrive_in_order_once_it_is_up() {
    let port = free_port();
    let brokers = loopback(port).to_string();
    let topics = Topics::unique("late");
    let mut gateway = Gateway::start(Some(&brokers), &topics);
    let report = run(spec(&gateway, Link::Tcp, "late", 6, 50)).await;
    assert_all_acked(&report);

    let broker =
        tokio::task::spawn_blocking(move || tributary_tests::broker::KafkaCluster::start_on(port))
            .await
            .expect("the broker starts");
    let result = async {
        create_topics(&brokers, &topics.all(), 3).await;
        let (readings, positions) = expected(&report);
        check_stream(
            &consume(&brokers, &topics.readings, 150, IDLE),
            &readings,
            "reading",
        );
        check_stream(
            &consume(&brokers, &topics.positions, 150, IDLE),
            &positions,
            "position",
        );
    };
    let outcome = tokio::time::timeout(Duration::from_secs(180), result).await;
    let stopped = gateway.stop();
    drop(broker);
    assert!(
        outcome.is_ok(),
        "events did not arrive; gateway log:\n{}",
        stopped.stderr
    );
}

#[test]
fn a_bad_config_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[mqtt]\nlisten = \"not-an-address\"\n").unwrap();
    let out = std::process::Command::new(binary("tributary"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mqtt.listen") && stderr.contains("not-an-address"),
        "{stderr}"
    );

    std::fs::write(&config, "[spool]\nsize = 3\n").unwrap();
    let out = std::process::Command::new(binary("tributary"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("size"));
}

/// Found by the demo: MQTT events that rumqttd had acknowledged just before SIGTERM were
/// still in its buffers when the gateway stopped reading, and were lost.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_events_acknowledged_just_before_sigterm_are_all_forwarded() {
    let topics = Topics::unique("sigterm");
    let mut gateway = Gateway::start(None, &topics);
    let spec = Scenario::plain(
        gateway.tcp,
        gateway.mqtt,
        Link::Mqtt { qos: 1 },
        "sigterm",
        20,
        200,
    );
    assert_all_acked(&run(spec).await);
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let sink = gateway.dir.path().join("data/sink");
    let lines = std::fs::read_to_string(sink.join(format!("{}.jsonl", topics.readings)))
        .unwrap_or_default();
    assert_eq!(lines.lines().count(), 4000, "summary:\n{}", stopped.stdout);
}
