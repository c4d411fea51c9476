//! `tributary-node` takes commands over TCP, MQTT 3.1.1 and MQTT 5: `set_interval` slows its
//! sensor, visibly in Kafka, and its answer reaches the responses topic.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_node_agent_slows_its_sensor_on_command_over_tcp_mqtt_and_mqtt_5() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("cmd-node");
    create_topics(&brokers, &topics.all(), 1).await;
    let commands = unique_topic("cmd-node.commands");
    let responses = unique_topic("cmd-node.responses");
    create_topics(&brokers, &[&commands], 1).await;
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        &format!("[commands]\ntopic = {commands:?}\nresponses_topic = {responses:?}\n"),
    );
    let site = Site {
        gateway,
        commands,
        responses,
        brokers,
    };
    wait_reading(&site);
    let nodes: Vec<_> = [
        ("pi-tcp", "tcp", site.gateway.tcp),
        ("pi-mqtt", "mqtt", site.gateway.mqtt),
        ("pi-mqtt5", "mqtt5", site.gateway.mqtt),
    ]
    .into_iter()
    .map(|(id, transport, addr)| {
        let config = site.gateway.dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "device_id = \"{id}\"\ngateway = \"{addr}\"\ntransport = \"{transport}\"\nbatch = 5\ncommands = true\n\
                 [[sensor]]\ntype = \"bme280\"\nbus = \"sim\"\ninterval_ms = 100\n"
            ),
        )
        .expect("node config");
        Command::new(tributary_tests::binary("tributary-node"))
            .arg("--config")
            .arg(&config)
            .args(["--run-for-ms", "6000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tributary-node")
    })
    .collect();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let slow: Vec<_> = ["pi-tcp", "pi-mqtt", "pi-mqtt5"]
        .iter()
        .map(|d| command(d, json!({"id": format!("slow-{d}"), "name": "set_interval", "args": {"interval_ms": 1000}})))
        .collect();
    produce(&site.brokers, &site.commands, &slow).await;
    for node in nodes {
        let out = node.wait_with_output().expect("node");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let readings = consume(
        &site.brokers,
        &topics.readings,
        10_000,
        Duration::from_secs(10),
    );
    let mut times: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in &readings {
        times
            .entry(m.key.clone())
            .or_default()
            .push(m.value["time_ms"].as_i64().unwrap_or(0));
    }
    for device in ["pi-tcp", "pi-mqtt", "pi-mqtt5"] {
        let t = times
            .get(device)
            .unwrap_or_else(|| panic!("no readings from {device}"));
        let gaps: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().take(5).all(|g| *g < 500),
            "{device} sampled fast first: {gaps:?}"
        );
        assert!(
            gaps.iter().rev().take(2).all(|g| *g >= 900),
            "{device} slowed down: {gaps:?}"
        );
    }
    let outcomes = outcomes(&site, 6);
    for device in ["pi-tcp", "pi-mqtt", "pi-mqtt5"] {
        let id = format!("slow-{device}");
        let answered = outcomes
            .get(&id)
            .and_then(|o| o.iter().find(|o| o["outcome"] == "answered"))
            .unwrap_or_else(|| panic!("no answer from {device}: {outcomes:?}"));
        assert_eq!(
            answered["result"],
            json!({"ok": true, "interval_ms": 1000, "sensors": 1})
        );
    }
}
