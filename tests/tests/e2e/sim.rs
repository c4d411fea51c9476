//! `tributary-sim` as users run it: ten thousand devices from one process, devices riding out
//! a gateway crash, `verify` naming every defect of a doctored topic, and `bench`.

use std::process::Command;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tributary_sim::manifest::{DeviceEntry, Manifest};
use tributary_sim::murmur2::partition_for;
use tributary_sim::scenario::{Group, Link, ModelKind, Scenario};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::create_topics;
use tributary_tests::{binary, env, run, unique_topic};

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(binary("tributary-sim"))
        .args(args)
        .output()
        .expect("run tributary-sim")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ten_thousand_devices_connect_and_each_gets_an_event_acknowledged() {
    let _turn = tributary_tests::LOAD_TURN.blocking_lock();
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(_, hard)| hard);
    assert!(
        hard >= 10_500,
        "the open file hard limit is {hard}: ten thousand sockets need more (ulimit -Hn)"
    );
    let topics = Topics::unique("tenk");
    let mut gateway = Gateway::start(None, &topics);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("run.json");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sim-10k.toml");
    let (tcp, mqtt) = (gateway.tcp.to_string(), gateway.mqtt.to_string());
    let out = sim(&[
        "run",
        "--scenario",
        scenario,
        "--tcp",
        &tcp,
        "--mqtt",
        &mqtt,
        "--prefix",
        "tenk",
        "--seq-start",
        "1",
        "--quiet",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\ngateway log:\n{}",
        text(&out),
        gateway.log()
    );
    let m = Manifest::read(&manifest).unwrap();
    assert_eq!(m.devices.len(), 10_000);
    let mut links = std::collections::BTreeMap::new();
    for d in &m.devices {
        assert!(
            d.acked_up_to.is_some_and(|a| a >= d.first_seq),
            "{} got nothing acknowledged: {d:?}",
            d.id
        );
        *links.entry(d.transport.as_str()).or_insert(0) += 1;
    }
    assert_eq!(links.get("tcp"), Some(&5500));
    assert_eq!(links.get("mqtt-qos1"), Some(&4500));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("total") && l.contains(" 100000 ")),
        "ten events from each device: {summary}"
    );
    // They were connected at the same time, not one after another: first connections spread
    // over 2 s, then ten events each at 30x real time.
    let peak: u64 = summary
        .split("peak ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(peak >= 9_000, "peak connections {peak}: {summary}");

    gateway.wait_drained(Duration::from_secs(120));
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let sink = gateway.sink_dir();
    let out = sim(&[
        "verify",
        "--manifest",
        manifest.to_str().unwrap(),
        "--file-sink",
        sink.to_str().unwrap(),
        "--topic",
        &topics.readings,
        "--topic",
        &topics.positions,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("100000 of the run's events found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_ride_out_a_gateway_crash_and_resend_what_was_not_acknowledged() {
    let topics = Topics::unique("ride");
    let mut gateway = Gateway::start(None, &topics);
    // Ten stations over TCP and ten machines over MQTT QoS 1, one event per simulated second
    // at 50x: about four seconds of sending.
    let mut s = Scenario::plain(gateway.tcp, gateway.mqtt, Link::Tcp, "ride", 10, 200);
    s.speedup = 50.0;
    s.groups[0].name = "env".into();
    s.groups[0].interval = Duration::from_secs(1);
    s.groups.push(Group {
        name: "machine".into(),
        model: ModelKind::Machine,
        link: Link::Mqtt { qos: 1 },
        ..s.groups[0].clone()
    });
    s.backoff.max = Duration::from_millis(500);
    let load = tokio::spawn(run(s));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gateway.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    gateway.restart();
    let report = load.await.unwrap();
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(report.acked(), 4000, "{}", report.table());
    let total = report.total();
    assert!(
        total.reconnects >= 20,
        "every device reconnected: {}",
        report.table()
    );
    assert!(
        total.resent > 0,
        "unacknowledged events were resent: {}",
        report.table()
    );

    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let mut records = Vec::new();
    for t in topics.all() {
        records.extend(tributary_sim::verify::file::read(&gateway.sink_dir(), t).unwrap());
    }
    // A crash may repeat what the sink wrote but the spool had not yet deleted: recognisable
    // by event id, allowed here. Nothing acknowledged may be missing or out of order.
    let options = tributary_sim::verify::Options {
        allow_duplicates: true,
    };
    let verdict = tributary_sim::verify::check(&report.manifest(), records, &|_| None, options);
    assert!(verdict.ok(), "{}", verdict.report());
    assert_eq!(verdict.found, 4000, "{}", verdict.report());
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_each_defect_in_a_doctored_kafka_topic() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topic = unique_topic("doctored");
    create_topics(&brokers, &[&topic], 3).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    // Two devices, seqs 1 to 6, as a gateway would write them, but: env-a:3 is missing,
    // env-a:4 is there twice, env-b:2 and env-b:3 are swapped, and env-b:5 is on the wrong
    // partition.
    let mut writes: Vec<(&str, u64, i32)> = Vec::new();
    for (device, seqs) in [("env-a", [1, 2, 4, 4, 5, 6]), ("env-b", [1, 3, 2, 4, 5, 6])] {
        let right = partition_for(device.as_bytes(), 3);
        for seq in seqs {
            let wrong = device == "env-b" && seq == 5;
            writes.push((device, seq, if wrong { (right + 1) % 3 } else { right }));
        }
    }
    for (device, seq, partition) in &writes {
        let id = format!("{device}:{seq}");
        let value = format!("{{\"device_id\":\"{device}\",\"seq\":{seq}}}");
        let record = FutureRecord::to(&topic)
            .key(*device)
            .payload(&value)
            .partition(*partition)
            .headers(OwnedHeaders::new().insert(Header {
                key: "event-id",
                value: Some(&id),
            }));
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let entry = |id: &str| DeviceEntry {
        id: id.into(),
        kind: "reading".into(),
        transport: "tcp".into(),
        first_seq: 1,
        last_sent_seq: Some(6),
        acked_up_to: Some(6),
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("run.json");
    Manifest {
        seed: 1,
        devices: vec![entry("env-a"), entry("env-b")],
    }
    .write(&manifest)
    .unwrap();
    let out = sim(&[
        "verify",
        "--manifest",
        manifest.to_str().unwrap(),
        "--kafka",
        &brokers,
        "--topic",
        &topic,
        "--wait",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    for expected in [
        "DEFECT missing: env-a: 1 acknowledged event(s) in no topic: seq 3",
        "DEFECT duplicate: env-a:4 at ",
        "DEFECT out-of-order: env-b: seq 2 at ",
        "DEFECT wrong-partition: env-b:5 at ",
        "FAILED: 4 defect(s)",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_reports_rates_latency_percentiles_and_the_gateways_cost() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("bench");
    create_topics(&brokers, &topics.all(), 3).await;
    let gateway = Gateway::start(Some(&brokers), &topics);
    let (tcp, pid) = (gateway.tcp.to_string(), gateway.pid().unwrap().to_string());
    let out = tokio::task::spawn_blocking(move || {
        sim(&[
            "bench",
            "--tcp",
            &tcp,
            "--devices",
            "10",
            "--rate",
            "1000",
            "--duration",
            "3",
            "--batch",
            "10",
            "--pid",
            &pid,
            "--kafka",
            &brokers,
            "--topic",
            &topics.readings,
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let sent = json["sent"].as_u64().unwrap();
    assert!(sent >= 2500, "about 3000 events at 1000/s for 3 s: {json}");
    assert_eq!(json["acked"], sent, "{json}");
    let ack = &json["ack_latency_ms"];
    let p = |k: &str| ack[k].as_f64().unwrap();
    assert!(
        p("p50") > 0.0 && p("p50") <= p("p99") && p("p99") <= p("p999") && p("p999") <= p("max"),
        "{ack}"
    );
    assert_eq!(ack["count"], sent);
    // From sending: every event, and never longer than from its due time (it is that less the
    // simulator's timer lateness).
    let from_send = &json["ack_from_send_ms"];
    assert_eq!(from_send["count"], sent, "{json}");
    for k in ["p50", "p99", "max"] {
        assert!(
            from_send[k].as_f64().unwrap() <= p(k) + 0.01,
            "{k}: {from_send} vs {ack}"
        );
    }
    let e2e = &json["e2e_latency_ms"];
    assert_eq!(e2e["count"], sent, "every event was seen in Kafka: {json}");
    assert!(e2e["p50"].as_f64().unwrap() <= e2e["p99"].as_f64().unwrap());
    let cost = &json["gateway"];
    assert!(cost["cpu_percent"].as_f64().unwrap() > 0.0, "{json}");
    assert!(cost["rss_peak_mib"].as_f64().unwrap() > 1.0, "{json}");
    assert!(
        stdout.contains("ack latency     p50"),
        "and a table: {stdout}"
    );
}

/// `bench --mqtt`: the same open-loop load as QoS 1 publishes, one event each, acknowledged by
/// PUBACK after the spool's commit.
#[tokio::test(flavor = "multi_thread")]
async fn bench_drives_mqtt_devices_and_reports_their_puback_latency() {
    let topics = Topics::unique("mqttbench");
    let mut gateway = Gateway::start(None, &topics);
    let (mqtt, pid) = (gateway.mqtt.to_string(), gateway.pid().unwrap().to_string());
    let out = tokio::task::spawn_blocking(move || {
        sim(&[
            "bench",
            "--mqtt",
            &mqtt,
            "--devices",
            "20",
            "--rate",
            "400",
            "--duration",
            "2",
            "--batch",
            "2",
            "--pid",
            &pid,
            "--json",
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(json["transport"], "mqtt", "{json}");
    let sent = json["sent"].as_u64().unwrap();
    assert!(sent >= 600, "about 800 publishes at 400/s for 2 s: {json}");
    assert_eq!(json["acked"], sent, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["ack_latency_ms"]["count"], sent, "{json}");
    assert_eq!(json["ack_from_send_ms"]["count"], sent, "{json}");
    gateway.stop();
    assert_eq!(
        gateway.sink_lines(&topics.readings).len() as u64,
        sent,
        "every PUBACKed publish is in the sink"
    );
}

#[test]
fn a_bad_scenario_exits_64_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[group]]\nname = \"g\"\nmodel = \"car\"\ncount = 1\ntransport = \"mqtt\"\nqos = 2\n",
    )
    .unwrap();
    let out = sim(&["run", "--scenario", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml: group[0].qos: 2 is not 0 or 1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn qos_0_devices_expect_no_acknowledgement_and_resend_nothing() {
    let topics = Topics::unique("qos0");
    let mut gateway = Gateway::start(None, &topics);
    let s = Scenario::plain(
        gateway.tcp,
        gateway.mqtt,
        Link::Mqtt { qos: 0 },
        "qos0",
        5,
        50,
    );
    let report = run(s).await;
    assert_eq!(report.sent(), 250, "{}", report.table());
    assert_eq!(report.acked(), 0, "QoS 0 has no PUBACK");
    assert_eq!(report.unacknowledged(), 0, "and none is expected");
    assert_eq!(report.total().resent, 0);
    let row = report.table();
    let line = row.lines().find(|l| l.contains("mqtt-qos0")).unwrap();
    assert_eq!(line.split_whitespace().nth(4), Some("-"), "{row}");

    assert!(gateway.stop().status.success());
    let records = tributary_sim::verify::file::read(&gateway.sink_dir(), &topics.readings).unwrap();
    let verdict = tributary_sim::verify::check(
        &report.manifest(),
        records,
        &|_| None,
        tributary_sim::verify::Options::default(),
    );
    assert!(verdict.ok(), "{}", verdict.report());
    // Over loopback with a clean DISCONNECT, nothing is lost even at QoS 0.
    assert_eq!(verdict.found, 250, "{}", verdict.report());
    assert_eq!(verdict.acknowledged, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_run_stops_producing_at_its_limit_and_delivers_all_it_sent() {
    let topics = Topics::unique("timed");
    let gateway = Gateway::start(None, &topics);
    let mut s = Scenario::plain(gateway.tcp, gateway.mqtt, Link::Tcp, "timed", 10, 0);
    s.duration = Some(Duration::from_secs(2));
    s.speedup = 600.0; // a station sampling every minute sends ten times a second
    s.groups.push(Group {
        name: "car".into(),
        model: ModelKind::Car,
        link: Link::Mqtt { qos: 1 },
        ..s.groups[0].clone()
    });
    let report = run(s).await;
    assert!(report.sent() > 100, "{}", report.table());
    assert_eq!(report.unacknowledged(), 0, "{}", report.table());
    assert_eq!(report.failures().count(), 0, "{}", report.table());
}
