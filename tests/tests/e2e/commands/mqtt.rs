//! MQTT devices: mosquitto and paho take their own commands, queued ones after a crash, a
//! resumed session, and the refusals.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn devices_receive_only_their_own_commands_and_every_outcome_reaches_kafka() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("devices.passwd");
    import_passwords(&passwd, "cmd-1 pw-one\n");
    let site = site("cmds", &format!("[auth]\ncredentials = {passwd:?}\n")).await;
    wait_reading(&site);
    let port = site.gateway.mqtt.port().to_string();
    // mosquitto_sub with cmd-1's credentials: its own commands are granted, another device's
    // refused ("All subscription requests were denied").
    let denied = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-q", "1"])
        .args(["-i", "cmd-1", "-u", "cmd-1", "-P", "pw-one"])
        .args(["-t", "devices/cmd-2/commands/#", "-C", "1", "-W", "10"])
        .output()
        .expect("mosquitto_sub");
    let said = format!(
        "{:?}: {}{}",
        denied.status,
        String::from_utf8_lossy(&denied.stdout),
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(said.contains("denied"), "{said}");
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-q", "1"])
        .args(["-i", "cmd-1", "-u", "cmd-1", "-P", "pw-one"])
        .args([
            "-t",
            "devices/cmd-1/commands/#",
            "-C",
            "2",
            "-W",
            "60",
            "-v",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    // cmd-2 on paho over MQTT 5 (anonymous, on loopback).
    let paho = paho_commands(site.gateway.mqtt.port(), "cmd-2", 2, false);
    std::thread::sleep(Duration::from_secs(2));
    produce(
        &site.brokers,
        &site.commands,
        &[
            command(
                "cmd-1",
                json!({"id": "c1", "name": "set_interval", "args": {"interval_ms": 500}}),
            ),
            command("cmd-2", json!({"id": "c3", "name": "get_state"})),
            command("cmd-1", json!({"id": "c2", "name": "get_state"})),
            command(
                "cmd-2",
                json!({"id": "c4", "name": "set_interval", "args": {"interval_ms": 2000}}),
            ),
            command(
                "cmd-1",
                json!({"id": "old", "name": "reboot", "expires_ms": 1}),
            ),
            ("cmd-1".into(), "reboot now!".into(), Vec::new()),
        ],
    )
    .await;
    let out = sub.wait_with_output().expect("mosquitto_sub");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let got: Vec<(&str, Value)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, p)| (t, serde_json::from_str(p).expect("a command is JSON")))
        .collect();
    assert_eq!(got.len(), 2, "mosquitto_sub got: {text}");
    assert_eq!(got[0].0, "devices/cmd-1/commands/set_interval");
    assert_eq!(got[0].1["id"], "c1");
    assert_eq!(got[0].1["args"]["interval_ms"], 500);
    assert_eq!(got[1].0, "devices/cmd-1/commands/get_state", "{text}");
    assert_eq!(got[1].1["id"], "c2");
    // cmd-1 answers c1 the 3.1.1 way, with its credentials.
    assert!(mosquitto_pub_with(
        site.gateway.mqtt.port(),
        1,
        "devices/cmd-1/results/c1",
        r#"{"ok":true,"interval_ms":500}"#,
        &["-u", "cmd-1", "-P", "pw-one", "-i", "cmd-1"],
    ));
    let paho = lines(paho);
    let cmds = received(&paho);
    assert_eq!(cmds.len(), 2, "{paho:?}");
    assert_eq!(cmds[0]["command"]["id"], "c3");
    assert_eq!(cmds[0]["response_topic"], "devices/cmd-2/results/c3");
    assert_eq!(cmds[0]["correlation"], "c3");
    assert_eq!(cmds[1]["command"]["id"], "c4");
    // delivered ×4, answered ×3 (c1, c3, c4), expired (old), refused (the text).
    let outcomes = outcomes(&site, 9);
    assert_eq!(kinds(&outcomes, "c1"), ["delivered", "answered"]);
    assert_eq!(kinds(&outcomes, "c2"), ["delivered"]);
    assert_eq!(kinds(&outcomes, "c3"), ["delivered", "answered"]);
    assert_eq!(kinds(&outcomes, "c4"), ["delivered", "answered"]);
    assert_eq!(kinds(&outcomes, "old"), ["expired"]);
    let answered = &outcomes["c1"][1];
    assert_eq!(answered["result"]["interval_ms"], 500);
    assert_eq!(answered["device_id"], "cmd-1");
    assert!(answered["delivered_ms"].as_i64() <= answered["at_ms"].as_i64());
    assert_eq!(outcomes["c4"][1]["result"]["name"], "set_interval");
    let refused: Vec<&Value> = outcomes
        .values()
        .flatten()
        .filter(|o| o["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{outcomes:?}");
    assert!(refused[0]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("not a command"));
    assert_eq!(refused[0]["device_id"], "cmd-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_device_gets_its_queued_commands_in_order_after_a_crash_and_never_an_expired_one(
) {
    let mut site = site("cmds-offline", "").await;
    wait_reading(&site);
    let mut batch = Vec::new();
    for i in 1..=6 {
        let ttl = if i == 3 { 1_500 } else { 120_000 };
        batch.push(command(
            "off-1",
            json!({"id": format!("q{i}"), "name": "set_interval", "args": {"interval_ms": i * 100}, "ttl_ms": ttl}),
        ));
    }
    produce(&site.brokers, &site.commands, &batch).await;
    // q3 expires while the device is away; the others wait in the spool through a SIGKILL.
    let expired = outcomes(&site, 1);
    assert_eq!(kinds(&expired, "q3"), ["expired"], "{expired:?}");
    site.gateway.kill();
    site.gateway.restart();
    wait_reading(&site);
    // What waits, as the operator sees it.
    let (code, listed) = site.gateway.spool_tool(&["commands", "--device", "off-1"]);
    assert_eq!(code, Some(0), "{listed}");
    let waiting: Vec<Value> = listed
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ids: Vec<&str> = waiting
        .iter()
        .filter_map(|c| c["command_id"].as_str())
        .collect();
    assert_eq!(ids, ["q1", "q2", "q4", "q5", "q6"], "{listed}");
    assert!(waiting.iter().all(|c| c["delivered_ms"].is_null()));
    assert_eq!(waiting[0]["command"]["args"]["interval_ms"], 100);
    let (code, body) = tributary_tests::http_get(site.gateway.admin, "/api/status");
    assert_eq!(code, 200, "{body}");
    let status: Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(
        status["commands"]["off-1"],
        json!({"queued": 5, "delivered": 0})
    );
    let device = paho_commands(site.gateway.mqtt.port(), "off-1", 5, true);
    let got = received(&lines(device));
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|c| c["command"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["q1", "q2", "q4", "q5", "q6"]);
    assert!(got
        .iter()
        .all(|c| c["topic"] == "devices/off-1/commands/set_interval"));
    let outcomes = outcomes(&site, 11);
    for id in ["q1", "q2", "q4", "q5", "q6"] {
        assert_eq!(
            kinds(&outcomes, id),
            ["delivered", "answered"],
            "{id}: {outcomes:?}"
        );
    }
    assert_eq!(kinds(&outcomes, "q3"), ["expired"]);
    assert!(outcomes["q3"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("not delivered"));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_unknown_devices_refused_a_command_for_a_device_nobody_named_is_answered_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("devices.passwd");
    import_passwords(&passwd, "known-1 pw-one\n");
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("cmds-unknown");
    let commands = unique_topic("cmds-unknown.commands");
    let responses = unique_topic("cmds-unknown.responses");
    create_topics(&brokers, &[&commands], 1).await;
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        &format!(
            "[auth]\ncredentials = {passwd:?}\n[commands]\ntopic = {commands:?}\nresponses_topic = {responses:?}\nunknown_devices = \"refuse\"\n"
        ),
    );
    let site = Site {
        gateway,
        commands,
        responses,
        brokers,
    };
    wait_reading(&site);
    produce(
        &site.brokers,
        &site.commands,
        &[
            command("ghost-9", json!({"id": "g1", "name": "reboot"})),
            command("known-1", json!({"id": "k1", "name": "reboot"})),
        ],
    )
    .await;
    let outcomes = outcomes(&site, 1);
    assert_eq!(kinds(&outcomes, "g1"), ["refused"], "{outcomes:?}");
    assert!(outcomes["g1"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("unknown device"));
    assert!(
        !outcomes.contains_key("k1"),
        "known-1's command waits: {outcomes:?}"
    );
    let (_, listed) = site.gateway.spool_tool(&["commands"]);
    assert!(
        listed.contains("\"k1\"") && !listed.contains("\"g1\""),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mqtt_5_session_resumed_keeps_its_command_subscription() {
    let site = site("cmds-session", "").await;
    wait_reading(&site);
    let port = site.gateway.mqtt.port();
    produce(
        &site.brokers,
        &site.commands,
        &[command("sess-1", json!({"id": "s1", "name": "get_state"}))],
    )
    .await;
    let first = received(&lines(paho_commands_with(
        port,
        "sess-1",
        1,
        &["--keep-session"],
    )));
    assert_eq!(first.len(), 1);
    produce(
        &site.brokers,
        &site.commands,
        &[command("sess-1", json!({"id": "s2", "name": "get_state"}))],
    )
    .await;
    // Clean Start 0 within the expiry: the session is present, and the device does not
    // subscribe again; its command comes all the same.
    let out = lines(paho_commands_with(port, "sess-1", 1, &["--keep-session"]));
    assert!(out.iter().any(|l| l["session_present"] == true), "{out:?}");
    let second = received(&out);
    assert_eq!(second.len(), 1, "{out:?}");
    assert_eq!(second[0]["command"]["id"], "s2");
}
