//! Sparkplug B against an independent implementation: an edge node and its device built on
//! pysparkplug (`tests/clients/sparkplug_node.py`) publish births, data by alias, a historical
//! metric, a seq gap, an alias no birth defined, a will (NDEATH) and, in a second session, a
//! death; what Kafka holds must be what the library published, event by event, whether the
//! node publishes to the gateway's MQTT listener or to a site broker the gateway bridges.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tributary_tests::clients::clients;
use tributary_tests::env;
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{consume, create_topics, Msg};

use super::connectors::{wait_for_log, SiteBroker};

/// Runs one phase of the edge node; what it says the gateway must have made of it.
fn node(port: u16, phase: &str) -> Vec<Value> {
    node_with(port, phase, None)
}

/// [`node`], authenticating as the edge node with `password`.
fn node_with(port: u16, phase: &str, password: Option<&str>) -> Vec<Value> {
    let mut command = Command::new(env("TRIBUTARY_TEST_SPARKPLUG_PYTHON"));
    command
        .arg(clients().join("sparkplug_node.py"))
        .args([&port.to_string(), phase]);
    if let Some(password) = password {
        command.env("SPARKPLUG_PASSWORD", password);
    }
    let out = command.output().expect("sparkplug_node.py");
    assert!(
        out.status.success(),
        "sparkplug_node.py {phase}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an expected event"))
        .collect()
}

/// An event's values by name, and units by name (where not empty).
fn values(m: &Msg) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut values = BTreeMap::new();
    let mut units = BTreeMap::new();
    for v in m.value["values"].as_array().expect("a reading") {
        let name = v["name"].as_str().expect("name").to_owned();
        values.insert(name.clone(), v["value"].as_f64().expect("value"));
        let unit = v["unit"].as_str().unwrap_or_default();
        if !unit.is_empty() {
            units.insert(name, unit.to_owned());
        }
    }
    (values, units)
}

/// What the node published in both phases, against `port` (the gateway's MQTT listener or a
/// site broker it bridges), and when it began.
fn publish_both_phases(port: u16) -> (Vec<Value>, u64) {
    let started_ms = tributary_sim::generate::now_ms();
    let mut expected = node(port, "a");
    // The will is published when the broker sees the connection end.
    std::thread::sleep(Duration::from_millis(500));
    expected.extend(node(port, "b"));
    (expected, started_ms)
}

/// Kafka's readings topic against what the node says it published, event by event.
fn check(brokers: &str, topics: &Topics, expected: &[Value], started_ms: u64) {
    let got = consume(
        brokers,
        &topics.readings,
        expected.len(),
        Duration::from_secs(20),
    );
    let summary: Vec<String> = got
        .iter()
        .map(|m| {
            format!(
                "{} {:?} {}",
                m.key,
                m.headers.get("sparkplug-message"),
                m.text
            )
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "{summary:#?}");
    for (i, (m, e)) in got.iter().zip(expected).enumerate() {
        let at = format!("event {i}: {e}\n{}", summary[i]);
        assert_eq!(m.key, e["device"], "{at}");
        assert_eq!(
            m.headers.get("sparkplug-message").map(String::as_str),
            e["message"].as_str(),
            "{at}"
        );
        let (values, units) = values(m);
        let want: BTreeMap<String, f64> = e["values"]
            .as_object()
            .expect("values")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().expect("a number")))
            .collect();
        assert_eq!(values, want, "{at}");
        let want_units: BTreeMap<String, String> = e["units"]
            .as_object()
            .expect("units")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("unit").to_owned()))
            .collect();
        assert_eq!(units, want_units, "{at}");
        assert_eq!(
            m.headers.contains_key("sparkplug-historical"),
            e["historical"] == true,
            "{at}"
        );
        assert_eq!(
            m.headers.get("sparkplug-stale").map(String::as_str),
            e["stale"].as_str(),
            "{at}"
        );
        for (k, v) in e["headers"].as_object().expect("headers") {
            assert_eq!(m.headers.get(k).map(String::as_str), v.as_str(), "{at}");
        }
        let time = m.value["time_ms"].as_u64().expect("time");
        if e["historical"] == true {
            assert!(
                time < started_ms - 50_000,
                "a historical metric keeps its own time: {at}"
            );
        } else {
            assert!(time >= started_ms - 1000, "{at}");
        }
        assert_eq!(
            m.timestamp_ms.and_then(|t| u64::try_from(t).ok()),
            Some(time),
            "the Kafka timestamp is the metric's: {at}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sparkplug_births_aliases_history_a_gap_and_deaths_arrive_as_the_library_published() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("sparkplug");
    create_topics(&brokers, &topics.all(), 1).await;
    let gateway = Gateway::start_with(Some(&brokers), &topics, "[sparkplug]\nenabled = true\n");
    let (expected, started_ms) = publish_both_phases(gateway.mqtt.port());
    check(&brokers, &topics, &expected, started_ms);
}

/// The same edge node on a site's own broker (Debian's mosquitto, which stores the will),
/// bridged: the same decoder makes the same events.
#[tokio::test(flavor = "multi_thread")]
async fn sparkplug_through_a_bridged_site_broker_the_same() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("sparkplug-bridge");
    create_topics(&brokers, &topics.all(), 1).await;
    let site = SiteBroker::start();
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        &format!(
            "[sparkplug]\nenabled = true\n\
             [[bridges]]\nname = \"site\"\nhost = \"127.0.0.1\"\nport = {}\n\
             client_id = \"plant-gw\"\ntopics = [\"spBv1.0/#\"]\n",
            site.port
        ),
    );
    wait_for_log(&gateway, "Bridge connected", 0);
    std::thread::sleep(Duration::from_millis(300));
    let (expected, started_ms) = publish_both_phases(site.port);
    check(&brokers, &topics, &expected, started_ms);
}

/// An edge node that authenticated as `Line3` publishes under its own edge node id, and an
/// NBIRTH under `Line4`'s is refused by the ACL: kept as a dead letter that says so, never an
/// event of Line4.
#[tokio::test(flavor = "multi_thread")]
async fn an_authenticated_edge_node_publishes_only_under_its_own_id() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("sparkplug-acl");
    create_topics(&brokers, &topics.all(), 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("devices.passwd");
    tributary_tests::import_passwords(&passwd, "Line3 pw-line3\n");
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        &format!(
            "[sparkplug]\nenabled = true\n[auth]\ncredentials = {passwd:?}\nanonymous = \"never\"\n"
        ),
    );
    let started_ms = tributary_sim::generate::now_ms();
    let expected = node_with(gateway.mqtt.port(), "intruder", Some("pw-line3"));
    check(&brokers, &topics, &expected, started_ms);
    let dead = consume(&brokers, &topics.dead_letter, 1, Duration::from_secs(20));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].value["reason"],
        r#"acl: device "Line3" may not publish on "spBv1.0/Plant1/NBIRTH/Line4""#,
        "{}",
        dead[0].text
    );
}
