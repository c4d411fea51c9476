//! `tributary-node` against a running gateway, with simulated chips behind the real drivers.

use std::process::Command;

use tributary_tests::binary;
use tributary_tests::gateway::{Gateway, Topics};

/// Runs `tributary-node` with simulated sensors for 2 s against `gateway` (over `transport`:
/// TCP, MQTT or MQTT 5; with `secure`, over TLS with a password, to a gateway that accepts
/// nobody without one) and checks what reached the gateway's file sink.
fn node_events_arrive(transport: &str, secure: bool) {
    let topics = Topics::unique("node");
    let dir = tempfile::tempdir().unwrap();
    let mut credentials = String::new();
    let mut gateway = if secure {
        let mut pki = tributary_tests::pki::Pki::new(dir.path());
        let server = pki.server();
        let passwd = dir.path().join("devices.passwd");
        tributary_tests::import_passwords(&passwd, "pi-sim-1 node-secret\n");
        credentials = format!("password = \"node-secret\"\ntls_ca = {:?}\n", pki.ca_file());
        let sections = format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n[auth]\ncredentials = {passwd:?}\nanonymous = \"never\"\n",
            server.cert, server.key
        );
        Gateway::start_secure(dir, None, &topics, &sections)
    } else {
        Gateway::start_with(None, &topics, "")
    };
    let config = gateway.dir.path().join("node.toml");
    let addr = match (transport, secure) {
        ("tcp", false) => gateway.tcp,
        ("tcp", true) => gateway.tcp_tls.unwrap(),
        (_, false) => gateway.mqtt,
        (_, true) => gateway.mqtt_tls.unwrap(),
    };
    std::fs::write(
        &config,
        format!(
            "device_id = \"pi-sim-1\"\ngateway = \"{addr}\"\ntransport = \"{transport}\"\nbatch = 5\n{credentials}\
             [[sensor]]\ntype = \"bme280\"\nbus = \"sim\"\ninterval_ms = 100\n\
             [[sensor]]\ntype = \"gnss\"\nport = \"sim\"\ninterval_ms = 200\n"
        ),
    )
    .unwrap();
    let out = Command::new(binary("tributary-node"))
        .args(["--config"])
        .arg(&config)
        .args(["--run-for-ms", "2000"])
        .output()
        .expect("run tributary-node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pending 0"),
        "everything acknowledged: {stdout}"
    );
    gateway.stop();

    let readings = gateway.sink_lines(&topics.readings);
    let positions = gateway.sink_lines(&topics.positions);
    assert!(readings.len() >= 10, "{} readings", readings.len());
    assert!(positions.len() >= 5, "{} positions", positions.len());
    let r = &readings[0]["value"];
    assert_eq!(r["device_id"], "pi-sim-1");
    let names: Vec<&str> = r["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["temperature", "humidity", "pressure"]);
    let t = r["values"][0]["value"].as_f64().unwrap();
    assert!((20.0..30.0).contains(&t), "{t} °C");
    let p = &positions[0]["value"];
    assert!((p["lat"].as_f64().unwrap() - 52.52).abs() < 0.02);
    assert_eq!(p["satellites"], 9);
    // The node sends its boot session: event ids are device:session:seq.
    let id = readings[0]["headers"]["event-id"].as_str().unwrap();
    assert_eq!(id.split(':').count(), 3, "{id}");
    assert!(id.starts_with("pi-sim-1:"), "{id}");
}

#[test]
fn the_node_agent_reads_simulated_sensors_and_its_events_arrive_over_tcp() {
    node_events_arrive("tcp", false);
}

#[test]
fn the_node_agent_reads_simulated_sensors_and_its_events_arrive_over_mqtt() {
    node_events_arrive("mqtt", false);
}

#[test]
fn the_node_agent_logs_in_with_its_password_over_tls_on_tcp() {
    node_events_arrive("tcp", true);
}

#[test]
fn the_node_agent_logs_in_with_its_password_over_tls_on_mqtt() {
    node_events_arrive("mqtt", true);
}

#[test]
fn the_node_agent_speaks_mqtt_5() {
    node_events_arrive("mqtt5", false);
}

#[test]
fn an_mqtt_5_node_drops_what_the_gateway_refuses_for_good_and_moves_on() {
    let topics = Topics::unique("node-refused");
    // Every reading is larger than this: each is answered 0x83 and kept as a dead letter.
    let mut gateway = Gateway::start_with_mqtt(None, &topics, "max_payload_bytes = 64\n", "");
    let config = gateway.dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"pi-sim-2\"\ngateway = \"{}\"\ntransport = \"mqtt5\"\nbatch = 5\n\
             [[sensor]]\ntype = \"bme280\"\nbus = \"sim\"\ninterval_ms = 100\n",
            gateway.mqtt
        ),
    )
    .unwrap();
    let out = Command::new(binary("tributary-node"))
        .args(["--config"])
        .arg(&config)
        .args(["--run-for-ms", "1500"])
        .output()
        .expect("run tributary-node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("pending 0"), "it moved on: {stdout}");
    let refused: u64 = stdout
        .split("refused ")
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused >= 5, "{stdout}");
    assert!(
        stderr.contains("payload too large"),
        "the gateway's reason is logged: {stderr}"
    );
    gateway.stop();
    assert!(gateway.sink_lines(&topics.readings).is_empty());
    let dead = gateway.sink_lines(&topics.dead_letter);
    assert_eq!(dead.len() as u64, refused, "each one kept by the gateway");
}

/// Runs `tributary-node` with `config` as its config file, until it exits.
fn node_with(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(binary("tributary-node"))
        .args(["--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn a_missing_bus_is_a_clear_error_naming_it() {
    let out = node_with(
        "device_id = \"pi-1\"\ngateway = \"127.0.0.1:9\"\n\
         [[sensor]]\ntype = \"bme280\"\nbus = \"/dev/i2c-99\"\ninterval_ms = 1000\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open /dev/i2c-99"), "{stderr}");
    assert!(stderr.contains("raspi-config"), "with a hint: {stderr}");
}

#[test]
fn a_bad_node_config_exits_64_naming_the_key() {
    let out = node_with(
        "device_id = \"pi 1\"\ngateway = \"127.0.0.1:9\"\n[[sensor]]\ntype = \"gnss\"\nport = \"sim\"\ninterval_ms = 1\n",
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("device_id"));
}
