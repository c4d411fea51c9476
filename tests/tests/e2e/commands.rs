//! Commands from Kafka to devices, and their outcomes back into Kafka: real MQTT clients
//! (mosquitto_sub and mosquitto_pub with credentials over 3.1.1, paho-mqtt over MQTT 5 with
//! Response Topic and Correlation Data), Apache Kafka for both topics.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{consume, create_topics, produce, Msg};
use tributary_tests::{env, import_passwords, mosquitto_pub_with, unique_topic};

mod crash;
mod fleet;
mod mqtt;
mod node;
mod teltonika;

/// A gateway taking commands from a topic of its own, and the two topics.
pub(super) struct Site {
    pub(super) gateway: Gateway,
    pub(super) commands: String,
    pub(super) responses: String,
    pub(super) brokers: String,
}

pub(super) async fn site(stem: &str, extra: &str) -> Site {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique(stem);
    let commands = unique_topic(&format!("{stem}.commands"));
    let responses = unique_topic(&format!("{stem}.responses"));
    create_topics(&brokers, &[&commands], 3).await;
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        &format!("{extra}\n[commands]\ntopic = {commands:?}\nresponses_topic = {responses:?}\n"),
    );
    Site {
        gateway,
        commands,
        responses,
        brokers,
    }
}

pub(super) fn command(device: &str, value: Value) -> (String, String, Vec<(String, String)>) {
    (device.to_owned(), value.to_string(), Vec::new())
}

/// The outcomes on the responses topic, by command id, in the order they were written.
pub(super) fn outcomes(site: &Site, expected: usize) -> BTreeMap<String, Vec<Value>> {
    let msgs: Vec<Msg> = consume(
        &site.brokers,
        &site.responses,
        expected,
        Duration::from_secs(30),
    );
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in msgs {
        assert_eq!(
            m.value["device_id"].as_str(),
            Some(m.key.as_str()),
            "an outcome is keyed by its device: {m:?}"
        );
        assert_eq!(
            m.headers.get("outcome"),
            m.value["outcome"].as_str().map(str::to_owned).as_ref()
        );
        let id = m.value["command_id"].as_str().unwrap_or("").to_owned();
        out.entry(id).or_default().push(m.value);
    }
    out
}

pub(super) fn kinds(outcomes: &BTreeMap<String, Vec<Value>>, id: &str) -> Vec<String> {
    outcomes
        .get(id)
        .map(|v| {
            v.iter()
                .map(|o| o["outcome"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for the gateway's log to say the consumer is reading.
pub(super) fn wait_reading(site: &Site) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !site.gateway.log().contains("Reading commands.") {
        assert!(
            Instant::now() < deadline,
            "the commands consumer never started: {}",
            site.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(super) fn paho_commands(port: u16, device: &str, count: usize, v311: bool) -> Child {
    paho_commands_with(port, device, count, if v311 { &["--v311"] } else { &[] })
}

pub(super) fn paho_commands_with(port: u16, device: &str, count: usize, extra: &[&str]) -> Child {
    let mut cmd = Command::new(env("TRIBUTARY_TEST_PYTHON"));
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/paho_commands.py"
    ))
    .args(["--port", &port.to_string(), "--device", device])
    .args(["--count", &count.to_string(), "--timeout", "60"])
    .args(extra);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("paho_commands.py")
}

pub(super) fn lines(child: Child) -> Vec<Value> {
    let out = child.wait_with_output().expect("client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let parsed: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !parsed.is_empty(),
        "the client printed nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parsed
}

pub(super) fn received(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.get("command").is_some())
        .cloned()
        .collect()
}
