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

/// A gateway taking commands from a topic of its own, and the two topics.
struct Site {
    gateway: Gateway,
    commands: String,
    responses: String,
    brokers: String,
}

async fn site(stem: &str, extra: &str) -> Site {
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

fn command(device: &str, value: Value) -> (String, String, Vec<(String, String)>) {
    (device.to_owned(), value.to_string(), Vec::new())
}

/// The outcomes on the responses topic, by command id, in the order they were written.
fn outcomes(site: &Site, expected: usize) -> BTreeMap<String, Vec<Value>> {
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

fn kinds(outcomes: &BTreeMap<String, Vec<Value>>, id: &str) -> Vec<String> {
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
fn wait_reading(site: &Site) {
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

fn paho_commands(port: u16, device: &str, count: usize, v311: bool) -> Child {
    paho_commands_with(port, device, count, if v311 { &["--v311"] } else { &[] })
}

fn paho_commands_with(port: u16, device: &str, count: usize, extra: &[&str]) -> Child {
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

fn lines(child: Child) -> Vec<Value> {
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

fn received(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.get("command").is_some())
        .cloned()
        .collect()
}

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
    let past = tributary_common_now_ms() - 1_000;
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
                json!({"id": "old", "name": "reboot", "expires_ms": past}),
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

fn tributary_common_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A device on rumqttc (MQTT 3.1.1) that subscribes to its commands at every CONNACK, records
/// each command id it receives, in order, and answers each (again, if it comes again).
async fn obedient(port: u16, device: String, seen: Arc<Mutex<BTreeMap<String, Vec<String>>>>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new(device.clone(), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 64);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client
                    .subscribe(format!("devices/{device}/commands/#"), QoS::AtLeastOnce)
                    .await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(c) = tributary_client::command::Command::parse(&p.payload) else {
                    continue;
                };
                seen.lock()
                    .expect("seen")
                    .entry(device.clone())
                    .or_default()
                    .push(c.id.clone());
                let topic = tributary_client::command::result_topic(&device, &c.id);
                // Not awaited here: this task polls the event loop that drains the requests.
                let client = client.clone();
                tokio::spawn(async move {
                    let answer = format!("{{\"done\":\"{}\"}}", c.id);
                    let _ = client.publish(topic, QoS::AtLeastOnce, false, answer).await;
                });
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_sigkills_while_a_thousand_commands_flow_lose_none_and_keep_each_device_in_order() {
    const DEVICES: usize = 10;
    const PER_DEVICE: usize = 100;
    let mut site = site("cmds-kill", "").await;
    wait_reading(&site);
    let port = site.gateway.mqtt.port();
    let seen: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let devices: Vec<_> = (0..DEVICES)
        .map(|d| tokio::spawn(obedient(port, format!("kd-{d}"), seen.clone())))
        .collect();
    // 1,000 commands in 20 batches over about 8 seconds, while the gateway is killed 5 times.
    let (brokers, topic) = (site.brokers.clone(), site.commands.clone());
    let producer = tokio::spawn(async move {
        for batch in 0..20 {
            let records: Vec<_> = (0..PER_DEVICE / 20)
                .flat_map(|i| {
                    let n = batch * (PER_DEVICE / 20) + i;
                    (0..DEVICES).map(move |d| {
                        command(
                            &format!("kd-{d}"),
                            json!({"id": format!("k{d}-{n:03}"), "name": "set_interval", "args": {"interval_ms": n}}),
                        )
                    })
                })
                .collect();
            produce(&brokers, &topic, &records).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        site.gateway.kill();
        site.gateway.restart();
    }
    producer.await.expect("producer");
    wait_reading(&site);
    // Every command answered: wait for the devices to have seen them all.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let complete = {
            let seen = seen.lock().expect("seen");
            (0..DEVICES).all(|d| {
                seen.get(&format!("kd-{d}")).is_some_and(|ids| {
                    ids.iter().collect::<std::collections::BTreeSet<_>>().len() == PER_DEVICE
                })
            })
        };
        if complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every command arrived: {:?}\n{}",
            seen.lock().map(|s| s
                .iter()
                .map(|(d, ids)| (d.clone(), ids.len()))
                .collect::<Vec<_>>()),
            site.gateway
                .log()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ommand") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for d in &devices {
        d.abort();
    }
    let seen = seen.lock().expect("seen").clone();
    for d in 0..DEVICES {
        let ids = &seen[&format!("kd-{d}")];
        // In queue order: each command first arrives after every earlier one first arrived.
        let mut first: Vec<&String> = Vec::new();
        for id in ids {
            if !first.contains(&id) {
                first.push(id);
            }
        }
        let expected: Vec<String> = (0..PER_DEVICE).map(|n| format!("k{d}-{n:03}")).collect();
        assert_eq!(
            first,
            expected.iter().collect::<Vec<_>>(),
            "kd-{d} out of order"
        );
    }
    let outcomes = outcomes(&site, DEVICES * PER_DEVICE * 2);
    let mut unanswered = Vec::new();
    for d in 0..DEVICES {
        for n in 0..PER_DEVICE {
            let id = format!("k{d}-{n:03}");
            let k = kinds(&outcomes, &id);
            if !k.iter().any(|k| k == "answered") || !k.iter().any(|k| k == "delivered") {
                unanswered.push((id, k));
            }
        }
    }
    assert!(unanswered.is_empty(), "outcomes missing: {unanswered:?}");
    assert!(
        outcomes
            .values()
            .flatten()
            .all(|o| matches!(o["outcome"].as_str(), Some("delivered" | "answered"))),
        "only delivered and answered outcomes"
    );
    let redelivered: usize =
        seen.values().map(|ids| ids.len()).sum::<usize>() - DEVICES * PER_DEVICE;
    eprintln!("commands received again after a kill: {redelivered}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_simulated_fleet_of_200_on_mqtt_3_5_and_tcp_changes_its_reporting_interval_on_command_visibly_in_kafka(
) {
    use tributary_sim::scenario::{Group, Link, Scenario};
    let topics = Topics::unique("cmd-fleet");
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    create_topics(&brokers, &topics.all(), 3).await;
    let commands = unique_topic("cmd-fleet.commands");
    let responses = unique_topic("cmd-fleet.responses");
    create_topics(&brokers, &[&commands], 3).await;
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
    // 200 stations on MQTT 3.1.1, MQTT 5 and the TCP protocol (4), reporting every 10 s of
    // simulated time at 20 times real speed (2 readings a second each).
    let mut s = Scenario::plain(
        site.gateway.tcp,
        site.gateway.mqtt,
        Link::Mqtt { qos: 1 },
        "fleet",
        200,
        0,
    );
    s.speedup = 20.0;
    s.duration = Some(Duration::from_secs(16));
    s.commands = true;
    let base = Group {
        interval: Duration::from_secs(10),
        ..s.groups[0].clone()
    };
    s.groups = vec![
        Group {
            name: "v3".into(),
            count: 70,
            ..base.clone()
        },
        Group {
            name: "v5".into(),
            count: 70,
            link: Link::Mqtt5 { qos: 1 },
            ..base.clone()
        },
        Group {
            name: "tcp".into(),
            count: 60,
            link: Link::Tcp,
            ..base
        },
    ];
    let ids: Vec<String> = s
        .groups
        .iter()
        .flat_map(|g| (0..g.count).map(|i| g.device_id(&s.prefix, i)))
        .collect();
    let run = tokio::spawn(async move { tributary_tests::run(s).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let set: Vec<_> = ids
        .iter()
        .map(|d| {
            command(
                d,
                json!({"id": format!("slow-{d}"), "name": "set_interval", "args": {"interval_ms": 60_000}}),
            )
        })
        .collect();
    produce(&site.brokers, &site.commands, &set).await;
    let report = run.await.expect("the run");
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(report.acked(), report.sent(), "{}", report.table());
    let obeyed: u64 = report.devices.iter().map(|d| d.commands).sum();
    assert!(obeyed >= 200, "devices obeyed {obeyed} commands");
    // In Kafka: each station's readings came every 10 s, then every 60 s.
    let readings = consume(
        &site.brokers,
        &topics.readings,
        report.acked() as usize,
        Duration::from_secs(30),
    );
    let mut times: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in &readings {
        times
            .entry(m.key.clone())
            .or_default()
            .push(m.value["time_ms"].as_i64().unwrap_or(0));
    }
    assert_eq!(times.len(), 200, "every station reported");
    for (device, t) in &times {
        let gaps: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.first() == Some(&10_000), "{device}: {gaps:?}");
        assert_eq!(
            gaps.last(),
            Some(&60_000),
            "{device} did not slow down: {gaps:?}"
        );
        let switched = gaps.iter().position(|g| *g == 60_000).unwrap_or(gaps.len());
        assert!(
            gaps[..switched].iter().all(|g| *g == 10_000)
                && gaps[switched..].iter().all(|g| *g == 60_000),
            "{device}: {gaps:?}"
        );
    }
    let outcomes = outcomes(&site, 400);
    for d in &ids {
        let answered = outcomes
            .get(&format!("slow-{d}"))
            .and_then(|o| o.iter().find(|o| o["outcome"] == "answered"))
            .unwrap_or_else(|| {
                panic!(
                    "no answer from {d}: {:?}",
                    outcomes.get(&format!("slow-{d}"))
                )
            });
        assert_eq!(
            answered["result"],
            json!({"ok": true, "interval_ms": 60_000})
        );
    }
}

/// The tracker's side of Codec 12, from Teltonika's protocol description: the next command the
/// server sent (its text), read from `stream`.
fn read_codec12_command(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).expect("a Codec 12 header");
    assert_eq!(&header[..4], &[0, 0, 0, 0], "preamble");
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut rest = vec![0u8; len + 4];
    stream.read_exact(&mut rest).expect("a Codec 12 packet");
    let (data, crc) = rest.split_at(len);
    assert_eq!(
        u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]),
        u32::from(super::connectors::crc16(data)),
        "CRC-16/IBM over codec id to quantity 2"
    );
    assert_eq!(
        (data[0], data[1], data[2]),
        (0x0C, 1, 0x05),
        "codec 12, one command"
    );
    let size = u32::from_be_bytes([data[3], data[4], data[5], data[6]]) as usize;
    assert_eq!(data[7 + size], 1, "quantity 2");
    String::from_utf8(data[7..7 + size].to_vec()).expect("ASCII")
}

/// A Codec 12 response carrying `text`, as a tracker sends it.
fn codec12_response(text: &str) -> Vec<u8> {
    let mut d = vec![0x0C, 1, 0x06];
    d.extend_from_slice(&(text.len() as u32).to_be_bytes());
    d.extend_from_slice(text.as_bytes());
    d.push(1);
    let mut out = vec![0, 0, 0, 0];
    out.extend_from_slice(&(d.len() as u32).to_be_bytes());
    out.extend_from_slice(&d);
    out.extend_from_slice(&u32::from(super::connectors::crc16(&d)).to_be_bytes());
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_teltonika_tracker_takes_codec_12_commands_between_its_records_and_its_responses_reach_kafka(
) {
    use std::io::{Read, Write};
    let port = tributary_tests::free_port();
    let site = site(
        "cmds-teltonika",
        &format!(
            "[teltonika]\nlisten = \"127.0.0.1:{port}\"\nnames = {{ \"356307042441013\" = \"truck-12\" }}\n"
        ),
    )
    .await;
    wait_reading(&site);
    produce(
        &site.brokers,
        &site.commands,
        &[
            command(
                "truck-12",
                json!({"id": "t1", "name": "setdigout", "args": {"text": "setdigout 1"}}),
            ),
            command("truck-12", json!({"id": "t2", "name": "getinfo"})),
        ],
    )
    .await;
    let mut tracker = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tracker
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let imei = b"356307042441013";
    let mut hello = (imei.len() as u16).to_be_bytes().to_vec();
    hello.extend_from_slice(imei);
    tracker.write_all(&hello).expect("IMEI");
    let mut accepted = [0u8; 1];
    tracker.read_exact(&mut accepted).expect("handshake answer");
    assert_eq!(accepted, [1]);
    assert_eq!(read_codec12_command(&mut tracker), "setdigout 1");
    // A record arrives before the response: answered with its count, as always.
    tracker
        .write_all(&super::connectors::codec8(&[(
            1_700_000_000_000,
            52.5,
            13.4,
            40,
        )]))
        .expect("AVL packet");
    let mut count = [0u8; 4];
    tracker.read_exact(&mut count).expect("record count");
    assert_eq!(count, 1u32.to_be_bytes());
    tracker
        .write_all(&codec12_response("DOUT1:1 DOUT2:0 Timeout:0"))
        .expect("response");
    assert_eq!(read_codec12_command(&mut tracker), "getinfo");
    tracker
        .write_all(&codec12_response(
            "RTC:2026/12/7 20:10 Init:2026/12/7 20:00 UpTime:600s",
        ))
        .expect("response");
    let outcomes = outcomes(&site, 4);
    assert_eq!(
        kinds(&outcomes, "t1"),
        ["delivered", "answered"],
        "{outcomes:?}"
    );
    assert_eq!(
        kinds(&outcomes, "t2"),
        ["delivered", "answered"],
        "{outcomes:?}"
    );
    assert_eq!(outcomes["t1"][1]["result"], "DOUT1:1 DOUT2:0 Timeout:0");
    assert_eq!(outcomes["t1"][1]["device_id"], "truck-12");
    assert!(outcomes["t2"][1]["result"]
        .as_str()
        .unwrap_or("")
        .starts_with("RTC:"));
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
