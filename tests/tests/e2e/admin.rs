//! The admin listener: `/metrics` read by Prometheus's own Python parser, `/readyz` through a
//! Kafka outage and a full spool, `/api/status`, the supervised forwarder, and a bad librdkafka
//! property refused at start.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use tributary_sim::scenario::{Group, Link, Scenario};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::{binary, env, http_get};

/// `/metrics` parsed by `prometheus_client.parser` (Python): `name{labels}` to value.
pub(crate) fn scrape(gateway: &Gateway) -> BTreeMap<String, f64> {
    let (code, text) = http_get(gateway.admin, "/metrics");
    assert_eq!(code, 200, "{text}");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(env("TRIBUTARY_TEST_PYTHON"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("{key} missing from /metrics: {:#?}", m.keys()))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_a_fleet_sent_and_a_prometheus_parser_reads_them() {
    let topics = Topics::unique("admin-metrics");
    let mut gateway = Gateway::start(None, &topics);
    let mut s = Scenario::plain(gateway.tcp, gateway.mqtt, Link::Tcp, "am", 6, 25);
    let mqtt = Group {
        name: "m".into(),
        count: 4,
        link: Link::Mqtt { qos: 1 },
        ..s.groups[0].clone()
    };
    s.groups[0].count = 6;
    s.groups.push(mqtt);
    let report = tributary_tests::run(s).await;
    assert!(report.failures().next().is_none());
    // Everything is forwarded to the file sink within a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = scrape(&gateway);
        let forwarded = m
            .get(&format!(
                "tributary_forwarded_events_total{{topic=\"{}\"}}",
                topics.readings
            ))
            .copied()
            .unwrap_or(0.0);
        if forwarded >= 250.0 || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (transport, sent) in [("tcp", 150.0), ("mqtt", 100.0)] {
        for counter in ["received", "acked"] {
            let key = format!("tributary_events_{counter}_total{{transport=\"{transport}\"}}");
            assert_eq!(value(&m, &key), sent, "{key}");
        }
    }
    let readings = format!("topic=\"{}\"", topics.readings);
    assert_eq!(
        value(
            &m,
            &format!("tributary_records_spooled_total{{{readings}}}")
        ),
        250.0
    );
    assert_eq!(
        value(
            &m,
            &format!("tributary_forwarded_events_total{{{readings}}}")
        ),
        250.0
    );
    assert_eq!(value(&m, "tributary_spool_rows{}"), 0.0);
    assert!(value(&m, "tributary_spool_max_bytes{}") > 0.0);
    assert!(value(&m, "tributary_disk_free_bytes{}") > 0.0);
    let commits = value(&m, "tributary_spool_commit_duration_seconds_count{}");
    let syncs = value(&m, "tributary_spool_sync_duration_seconds_count{}");
    assert!(commits >= 1.0);
    // Every acknowledged batch waited for a sync; one sync may cover several commits.
    assert!(
        syncs >= 1.0 && syncs <= commits,
        "{syncs} syncs for {commits} commits"
    );
    assert_eq!(
        value(&m, "tributary_delivery_latency_seconds_count{}"),
        250.0
    );
    assert_eq!(value(&m, "tributary_forwarder_up{}"), 1.0);
    assert_eq!(value(&m, r#"tributary_build_info{version="0.1.0"}"#), 1.0);

    let (code, status) = http_get(gateway.admin, "/api/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["spool"]["rows"], 0, "{status}");
    assert_eq!(
        status["topics"][&topics.readings]["forwarded"], 250,
        "{status}"
    );
    assert_eq!(http_get(gateway.admin, "/livez").0, 200);
    gateway.stop();
}

#[test]
fn readiness_ignores_a_kafka_outage_but_not_a_full_spool_and_comes_back_when_space_frees() {
    let topics = Topics::unique("admin-ready");
    // Kafka at an address where nothing listens: the forwarder buffers. The spool holds about
    // 40 events, and unforwarded rows expire after 2 s.
    let gateway = Gateway::start_with(
        Some("127.0.0.1:9"),
        &topics,
        "[spool]\nmax_bytes = 8000\nmax_age_ms = 2000\nmin_free_bytes = 0\n",
    );
    let (code, body) = http_get(gateway.admin, "/readyz?verbose");
    assert_eq!(code, 200, "Kafka down is not 'not ready': {body}");
    assert!(body.contains("[+]kafka"), "{body}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let refused = rt.block_on(async {
        let mut d = tributary_sim::tcp::TcpDevice::connect(gateway.tcp, "fill-1", None, None)
            .await
            .expect("connect");
        for seq in 1..=200u64 {
            let time = tributary_sim::generate::now_ms();
            let events = vec![tributary_sim::generate::event(
                0, "fill-1", seq, time, false,
            )];
            if d.send_batch(&events).await.is_err() {
                return true;
            }
        }
        false
    });
    assert!(refused, "the spool refused events once full");
    let (code, body) = http_get(gateway.admin, "/readyz?verbose");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[-]spool_space"), "{body}");
    let (_, status) = http_get(gateway.admin, "/api/status");
    assert!(status.contains("\"ready\":false"), "{status}");

    // The rows expire (spool.max_age_ms), space frees, and the gateway is ready again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(gateway.admin, "/readyz?verbose");
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_failing_forwarder_is_restarted_and_shown_until_it_recovers() {
    let topics = Topics::unique("admin-forwarder");
    let dir = tempfile::tempdir().expect("temp dir");
    // The sink's directory cannot be made: a file stands where it should be.
    let blocker = dir.path().join("blocked");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let sink = blocker.join("sink");
    let gateway = Gateway::start_with(None, &topics, &format!("[file_sink]\ndir = {sink:?}\n"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (_, body) = http_get(gateway.admin, "/readyz?verbose");
        if body.contains("restarting after") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        body.contains("restarting after") && body.contains("blocked"),
        "{body}"
    );
    assert!(gateway
        .log()
        .contains("The forwarder failed; restarting it."));
    // The operator clears the way; the next restart succeeds and the forwarder runs.
    std::fs::remove_file(&blocker).expect("remove");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(&gateway);
        if value(&m, "tributary_forwarder_up{}") == 1.0 {
            assert!(value(&m, "tributary_forwarder_restarts_total{}") >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "the forwarder did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_invalid_librdkafka_property_is_refused_at_start_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[kafka]\nbrokers = \"127.0.0.1:9092\"\n[kafka.properties]\n\"compression.type\" = \"bogus\"\n",
    )
    .expect("write");
    for command in ["check-config", "run"] {
        let out = Command::new(binary("tributary"))
            .args([command, "--config"])
            .arg(&config)
            .output()
            .expect("tributary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command}: {stderr}");
        assert!(
            stderr.contains("kafka.properties") && stderr.contains("compression.type"),
            "{command}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_kafka_refuses_for_good_is_quarantined_and_the_stream_flows_on() {
    use tributary_protocol::{Body, Reading, SensorValue};
    use tributary_sim::tcp::TcpDevice;
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("quarantine");
    tributary_tests::kafka::create_topics(&brokers, &topics.all(), 3).await;
    // librdkafka refuses records over 2000 bytes: a record too large for Kafka, for good.
    let mut gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        "[kafka.properties]\n\"message.max.bytes\" = \"2000\"\n",
    );
    let time = tributary_sim::generate::now_ms() - 60_000;
    let small =
        |device: &str, seq: u64| tributary_sim::generate::event(0, device, seq, time + seq, false);
    let mut big = small("q-1", 3);
    big.body = Body::Reading(Reading {
        values: (0..60)
            .map(|i| SensorValue {
                name: format!("vibration_band_{i:02}_rms_mm_per_s"),
                value: i as f64,
                unit: "mm/s".into(),
            })
            .collect(),
    });
    let mut a = TcpDevice::connect(gateway.tcp, "q-1", None, None)
        .await
        .expect("connect");
    a.send_batch(&[small("q-1", 1), small("q-1", 2), big, small("q-1", 4)])
        .await
        .expect("acknowledged: the spool has it");
    let mut b = TcpDevice::connect(gateway.tcp, "q-2", None, None)
        .await
        .expect("connect");
    for seq in 1..=5 {
        b.send_batch(&[small("q-2", seq)])
            .await
            .expect("acknowledged");
        a.send_batch(&[small("q-1", 4 + seq)])
            .await
            .expect("acknowledged");
    }
    // Everything but the big record reaches Kafka: 8 of q-1's and 5 of q-2's.
    let got =
        tributary_tests::kafka::consume(&brokers, &topics.readings, 13, Duration::from_secs(30));
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in &got {
        seqs.entry(m.key.clone())
            .or_default()
            .push(m.value["seq"].as_u64().unwrap_or(0));
    }
    assert_eq!(
        seqs.get("q-1"),
        Some(&vec![1, 2, 4, 5, 6, 7, 8, 9]),
        "{seqs:?}"
    );
    assert_eq!(seqs.get("q-2"), Some(&vec![1, 2, 3, 4, 5]), "{seqs:?}");
    let m = scrape(&gateway);
    let readings = format!("reason=\"quarantined\",topic=\"{}\"", topics.readings);
    assert_eq!(
        value(
            &m,
            &format!("tributary_events_discarded_total{{{readings}}}")
        ),
        1.0
    );
    let errors = format!(
        "tributary_forward_errors_total{{error=\"MessageSizeTooLarge\",topic=\"{}\"}}",
        topics.readings
    );
    assert!(value(&m, &errors) >= 3.0, "each refusal counted");
    assert!(gateway.log().contains("Record quarantined"));

    let stopped = gateway.stop();
    assert!(stopped.status.success());
    let (code, listing) = gateway.spool_tool(&["quarantine"]);
    assert_eq!(code, Some(0), "{listing}");
    let line: serde_json::Value =
        serde_json::from_str(listing.lines().next().expect("one")).expect("json line");
    assert_eq!(line["headers"]["event-id"], "q-1:3");
    assert!(
        line["reason"].as_str().unwrap_or("").contains("too large"),
        "{line}"
    );
    // The operator drops it.
    let id = line["id"].as_i64().expect("id").to_string();
    let (code, out) = gateway.spool_tool(&["quarantine", "--drop", &id]);
    assert_eq!(code, Some(0), "{out}");
    let (_, listing) = gateway.spool_tool(&["quarantine"]);
    assert!(listing.trim().is_empty(), "{listing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_from_a_clock_hours_ahead_gets_a_clamped_kafka_timestamp_and_keeps_its_time() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("clamp");
    tributary_tests::kafka::create_topics(&brokers, &topics.all(), 1).await;
    let gateway = Gateway::start(Some(&brokers), &topics);
    let now = tributary_sim::generate::now_ms();
    let ahead = now + 3 * 3600 * 1000;
    let mut d = tributary_sim::tcp::TcpDevice::connect(gateway.tcp, "fast-clock", None, None)
        .await
        .expect("connect");
    d.send_batch(&[
        tributary_sim::generate::event(0, "fast-clock", 1, now - 1000, false),
        tributary_sim::generate::event(0, "fast-clock", 2, ahead, false),
    ])
    .await
    .expect("acknowledged");
    let got =
        tributary_tests::kafka::consume(&brokers, &topics.readings, 2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "{got:?}");
    let normal = &got[0];
    assert_eq!(normal.timestamp_ms, Some(now as i64 - 1000));
    assert!(normal.headers.contains_key("received-ms"));
    assert!(!normal.headers.contains_key("event-time-ms"));
    let clamped = &got[1];
    let received: i64 = clamped.headers["received-ms"].parse().expect("received-ms");
    assert_eq!(
        clamped.timestamp_ms,
        Some(received + 55 * 60 * 1000),
        "{clamped:?}"
    );
    assert_eq!(clamped.headers["event-time-ms"], ahead.to_string());
    assert_eq!(
        clamped.value["time_ms"], ahead,
        "the value keeps the device's time"
    );
    let m = scrape(&gateway);
    assert_eq!(value(&m, "tributary_timestamps_clamped_total{}"), 1.0);
}

/// KIP-1030 at the real broker: Apache Kafka 4 refuses records stamped more than an hour
/// ahead (`log.message.timestamp.after.max.ms`). With `kafka_timestamp = "event"` the gateway
/// passes the device's time through, so a clock 3 h ahead is refused by the broker for good:
/// the record goes to the quarantine with the broker's reason, and the device's other events
/// flow on.
#[tokio::test(flavor = "multi_thread")]
async fn with_event_timestamps_the_broker_refuses_a_clock_hours_ahead_and_the_record_is_quarantined(
) {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("kip1030");
    tributary_tests::kafka::create_topics(&brokers, &topics.all(), 1).await;
    let mut gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        "[time]\nkafka_timestamp = \"event\"\n",
    );
    let now = tributary_sim::generate::now_ms();
    let mut d = tributary_sim::tcp::TcpDevice::connect(gateway.tcp, "fast-clock", None, None)
        .await
        .expect("connect");
    d.send_batch(&[
        tributary_sim::generate::event(0, "fast-clock", 1, now - 1000, false),
        tributary_sim::generate::event(0, "fast-clock", 2, now + 3 * 3600 * 1000, false),
        tributary_sim::generate::event(0, "fast-clock", 3, now - 500, false),
    ])
    .await
    .expect("acknowledged: the spool has them");
    let got =
        tributary_tests::kafka::consume(&brokers, &topics.readings, 2, Duration::from_secs(30));
    let seqs: Vec<u64> = got.iter().filter_map(|m| m.value["seq"].as_u64()).collect();
    assert_eq!(seqs, vec![1, 3], "{got:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(&gateway);
        let errors = format!(
            "tributary_forward_errors_total{{error=\"InvalidTimestamp\",topic=\"{}\"}}",
            topics.readings
        );
        if value(&m, &errors) >= 3.0 && gateway.log().contains("Record quarantined") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker's refusal was not counted: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(gateway.stop().status.success());
    let (code, listing) = gateway.spool_tool(&["quarantine"]);
    assert_eq!(code, Some(0), "{listing}");
    let line: serde_json::Value =
        serde_json::from_str(listing.lines().next().expect("one")).expect("json line");
    assert_eq!(line["headers"]["event-id"], "fast-clock:2");
    assert!(
        line["reason"].as_str().unwrap_or("").contains("timestamp"),
        "the broker's reason: {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_every_few_milliseconds_is_counted_and_stored_but_logged_rate_limited() {
    let topics = Topics::unique("garbage");
    let mut gateway = Gateway::start(None, &topics);
    let mut d = tributary_sim::tcp::TcpDevice::connect(gateway.tcp, "noisy-1", None, None)
        .await
        .expect("connect");
    let time = tributary_sim::generate::now_ms();
    for round in 0..10u64 {
        // Five events a batch with no values: each one invalid, each a dead letter.
        let batch: Vec<_> = (0..5)
            .map(|i| {
                let seq = round * 5 + i + 1;
                let mut e = tributary_sim::generate::event(0, "noisy-1", seq, time, false);
                e.body = tributary_protocol::Body::Reading(tributary_protocol::Reading {
                    values: Vec::new(),
                });
                e
            })
            .collect();
        d.send_batch(&batch).await.expect("answered");
    }
    let m = scrape(&gateway);
    assert_eq!(
        value(&m, r#"tributary_dead_letters_total{transport="tcp"}"#),
        50.0
    );
    let dead = format!("topic=\"{}\"", topics.dead_letter);
    assert_eq!(
        value(&m, &format!("tributary_records_spooled_total{{{dead}}}")),
        50.0
    );
    gateway.stop();
    let lines = gateway
        .log()
        .matches("Refused input kept as a dead letter.")
        .count();
    assert!(
        (1..=2).contains(&lines),
        "50 dead letters, {lines} log lines"
    );
}

#[test]
fn logs_can_be_json_lines_with_the_connection_in_their_span() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tcp = tributary_tests::loopback(tributary_tests::free_port());
    let config = dir.path().join("g.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\ndata_dir = {:?}\n[admin]\nlisten = \"\"\n[tcp]\nlisten = \"{tcp}\"\n\
             [mqtt]\nenabled = false\n",
            dir.path().join("data")
        ),
    )
    .expect("write");
    let child = Command::new(binary("tributary"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,tributary_gateway::ingest=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(tcp).is_err() {
        assert!(Instant::now() < deadline, "the gateway did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut d = tributary_sim::tcp::TcpDevice::connect(tcp, "json-1", None, None)
            .await
            .expect("connect");
        let now = tributary_sim::generate::now_ms();
        let e = tributary_sim::generate::event(0, "json-1", 1, now, false);
        d.send_batch(&[e]).await.expect("acknowledged");
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "Gateway ready."),
        "{stderr}"
    );
    let connected = lines
        .iter()
        .find(|l| l["message"] == "Device connected over TCP.")
        .unwrap_or_else(|| panic!("no connection line: {stderr}"));
    assert_eq!(connected["span"]["device_id"], "json-1", "{connected}");
    assert_eq!(connected["span"]["transport"], "tcp", "{connected}");
    assert!(connected["span"]["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
}
