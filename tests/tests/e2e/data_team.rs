//! The data team's side: the examples in `examples/`, run as their READMEs say, on what a
//! simulated fleet sent through the gateway. Kafka's console consumer prints each event with its
//! device id as key, its event time as the record timestamp and its headers; Kafka Connect's
//! FileStreamSink writes every acknowledged event to a file; both read committed records only.
//! And the other direction: Connect's FileStreamSource beside Tributary's own `[[files]]`
//! source, both SIGKILLed just after a rotation. And a Kafka Streams application joining each
//! vehicle's positions with its latest reading, and counting them per minute of event time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_sim::scenario::Link;
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::create_topics;
use tributary_tests::{env, free_port, run};

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// A small mixed fleet through a gateway into a fresh set of topics: the topics, and the
/// readings each device sent (every one acknowledged).
async fn fleet(stem: &str) -> (String, Topics, BTreeMap<String, Vec<u64>>) {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique(stem);
    create_topics(&brokers, &topics.all(), 3).await;
    let mut gateway = Gateway::start(Some(&brokers), &topics);
    let report = run(crate::spec(&gateway, Link::Tcp, stem, 6, 40)).await;
    crate::assert_all_acked(&report);
    gateway.wait_drained(Duration::from_secs(60));
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let (readings, _) = crate::expected(&report);
    (brokers, topics, readings)
}

/// `(device, seq)` of every event a list names.
fn pairs(expected: &BTreeMap<String, Vec<u64>>) -> BTreeSet<(String, u64)> {
    expected
        .iter()
        .flat_map(|(d, seqs)| seqs.iter().map(move |s| (d.clone(), *s)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_s_console_consumer_prints_device_keys_event_times_and_event_ids() {
    let (brokers, topics, readings) = fleet("console").await;
    let out = Command::new(root().join("examples/console-consumer/run"))
        .args([&brokers, &topics.readings])
        .env("TIMEOUT_MS", "5000")
        .output()
        .expect("examples/console-consumer/run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut seen = BTreeSet::new();
    for line in stdout.lines() {
        // print.timestamp, print.headers, print.key, then the value, tab-separated.
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        assert_eq!(fields.len(), 4, "{line}");
        let time: i64 = fields[0]
            .strip_prefix("CreateTime:")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("a CreateTime timestamp: {line}"));
        let headers: BTreeMap<&str, &str> = fields[1]
            .split(',')
            .filter_map(|h| h.split_once(':'))
            .collect();
        let value: Value = serde_json::from_str(fields[3]).expect("the event as JSON");
        let device = value["device_id"].as_str().expect("device_id");
        let seq = value["seq"].as_u64().expect("seq");
        assert_eq!(fields[2], device, "the key is the device id: {line}");
        assert_eq!(
            Some(time),
            value["time_ms"].as_i64(),
            "timestamp = event time: {line}"
        );
        assert_eq!(headers.get("kind"), Some(&"reading"), "{line}");
        let id = headers.get("event-id").expect("an event-id header");
        assert!(
            id.starts_with(&format!("{device}:")) && id.ends_with(&format!(":{seq}")),
            "event-id {id} names {device} and {seq}"
        );
        assert!(
            seen.insert((device.to_owned(), seq)),
            "printed twice: {line}"
        );
    }
    assert_eq!(
        seen,
        pairs(&readings),
        "every acknowledged reading, once\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_connect_s_file_stream_sink_writes_every_acknowledged_event() {
    let (brokers, topics, readings) = fleet("connect-sink").await;
    let want = pairs(&readings);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("readings.txt");
    let mut connect = Command::new(root().join("examples/connect/run"))
        .args([
            "sink",
            &brokers,
            &topics.readings,
            &file.display().to_string(),
        ])
        .env("CONNECT_PORT", free_port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("examples/connect/run");
    let read = || -> Vec<String> {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while read().len() < want.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    // A little longer: a record written twice would show now.
    std::thread::sleep(Duration::from_secs(2));
    let _ = connect.kill();
    let out = connect.wait_with_output().expect("connect");
    let lines = read();
    let got: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("an event per line");
            (
                v["device_id"].as_str().expect("device").to_owned(),
                v["seq"].as_u64().expect("seq"),
            )
        })
        .collect();
    let distinct: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(
        distinct,
        want,
        "every acknowledged event in the file\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(got.len(), want.len(), "each once");
}

/// Records of `topic` by line text, each with the event-ids it arrived under (Connect's have
/// none: a repeat is a second copy).
fn lines_by_text(brokers: &str, topic: &str, at_least: usize) -> BTreeMap<String, Vec<String>> {
    let got = tributary_tests::kafka::consume(brokers, topic, at_least, Duration::from_secs(15));
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in got {
        out.entry(m.text.trim().to_owned())
            .or_default()
            .push(m.headers.get("event-id").cloned().unwrap_or_default());
    }
    out
}

/// Kafka Connect's FileStreamSource (as Kafka's quickstart teaches it) and Tributary's
/// `[[files]]` source follow the same log while it is rotated (renamed to `app.log.1`, a new
/// `app.log` begun), and both are SIGKILLed just after the rotation and started again. Every
/// line reaches Kafka through Tributary, each stored once (a delivery repeat carries the same
/// event-id); what FileStreamSource lost and repeated is printed (README: examples/connect).
#[tokio::test(flavor = "multi_thread")]
async fn file_stream_source_and_the_file_tail_killed_during_rotation() {
    use std::io::Write;
    const LINES: usize = 1000;
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("tail-vs-connect");
    let (tail_topic, connect_topic) = (
        tributary_tests::unique_topic("files.tail"),
        tributary_tests::unique_topic("files.connect"),
    );
    create_topics(&brokers, &[&tail_topic, &connect_topic], 1).await;
    create_topics(&brokers, &topics.all(), 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("app.log");
    let write = |from: usize, to: usize| {
        for i in from..to {
            // Opened by name for each line: after the rename the writer writes the new file.
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("the log");
            writeln!(f, "line {i:05}").expect("a line");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let files = format!(
        "[[files]]\nname = \"app\"\npath = \"{}*\"\nformat = \"text\"\ntopic = \"{tail_topic}\"\npoll_ms = 20\n",
        log.display()
    );
    let mut gateway = Gateway::start_with(Some(&brokers), &topics, &files);
    let (port, offsets) = (free_port(), dir.path().join("connect.offsets"));
    let start_connect = || {
        Command::new(root().join("examples/connect/run"))
            .args([
                "source",
                &brokers,
                &connect_topic,
                &log.display().to_string(),
            ])
            .env("CONNECT_PORT", port.to_string())
            .env("CONNECT_OFFSETS", &offsets)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("examples/connect/run source")
    };
    let mut connect = start_connect();
    write(0, 100);
    // Both are reading before the rotation comes.
    assert_eq!(lines_by_text(&brokers, &tail_topic, 100).len(), 100);
    // Connect takes seconds to start (more on a busy machine).
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines_by_text(&brokers, &connect_topic, 100).len() < 100 {
        assert!(Instant::now() < deadline, "FileStreamSource did not start");
    }
    write(100, 600);
    std::fs::rename(&log, dir.path().join("app.log.1")).expect("rotate");
    write(600, 650);
    gateway.kill();
    let _ = connect.kill();
    let _ = connect.wait();
    write(650, 800);
    gateway.restart();
    connect = start_connect();
    write(800, LINES);

    let tail = lines_by_text(&brokers, &tail_topic, LINES);
    let missing: Vec<usize> = (0..LINES)
        .filter(|i| !tail.contains_key(&format!("line {i:05}")))
        .collect();
    assert!(missing.is_empty(), "the file tail lost {missing:?}");
    let twice: Vec<_> = tail
        .iter()
        .filter(|(_, ids)| ids.iter().collect::<BTreeSet<_>>().len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "lines stored twice by the file tail: {twice:?}"
    );
    // FileStreamSource: given time to catch up, then counted.
    std::thread::sleep(Duration::from_secs(5));
    let _ = connect.kill();
    let _ = connect.wait();
    let by_connect = lines_by_text(&brokers, &connect_topic, LINES);
    let lost = (0..LINES)
        .filter(|i| !by_connect.contains_key(&format!("line {i:05}")))
        .count();
    let repeated: usize = by_connect.values().map(|v| v.len() - 1).sum();
    eprintln!(
        "{LINES} lines, a rotation and a SIGKILL: the file tail delivered each once; \
         FileStreamSource lost {lost} and repeated {repeated}"
    );
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// The Kafka Streams example (Java, `examples/kafka-streams`) on a simulated fleet's positions
/// and a reading per truck: every position is joined with its truck's reading, and the
/// per-minute counts add up to each truck's positions.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_streams_joins_positions_with_the_latest_reading_and_counts_per_minute() {
    use tributary_sim::scenario::{Group, ModelKind, Scenario};
    const TRUCKS: usize = 3;
    const FIXES: u64 = 20;
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("streams");
    let (enriched, per_minute) = (
        tributary_tests::unique_topic("streams.enriched"),
        tributary_tests::unique_topic("streams.per-minute"),
    );
    // Co-partitioned inputs (same partition count, the gateway's murmur2 keys): no repartition.
    create_topics(&brokers, &topics.all(), 3).await;
    create_topics(&brokers, &[&enriched, &per_minute], 3).await;
    let mut gateway = Gateway::start(Some(&brokers), &topics);
    let day_ago = tributary_sim::generate::now_ms() - 86_400_000;
    for i in 0..TRUCKS {
        let reading = format!(
            r#"{{"seq":1,"time_ms":{day_ago},"values":[{{"name":"fuel","value":{},"unit":"%"}}]}}"#,
            50 + i
        );
        assert!(tributary_tests::mosquitto_pub(
            gateway.mqtt.port(),
            1,
            &format!("devices/streams-truck-{i}/readings"),
            &reading,
        ));
    }
    let mut s = Scenario::plain(gateway.tcp, gateway.mqtt, Link::Tcp, "streams", 0, FIXES);
    s.groups = vec![Group {
        name: "truck".into(),
        model: ModelKind::Truck,
        count: TRUCKS,
        ..s.groups[0].clone()
    }];
    let report = run(s).await;
    crate::assert_all_acked(&report);
    gateway.wait_drained(Duration::from_secs(60));

    let mut app = Command::new(root().join("examples/kafka-streams/run"))
        .args([
            brokers.as_str(),
            &topics.readings,
            &topics.positions,
            &enriched,
            &per_minute,
            &tributary_tests::unique_topic("streams-app"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("examples/kafka-streams/run");
    let want = TRUCKS * FIXES as usize;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut joined = Vec::new();
    while joined.len() < want && Instant::now() < deadline {
        joined = tributary_tests::kafka::consume(&brokers, &enriched, want, Duration::from_secs(5));
    }
    // The last count of each (truck, minute), summed per truck, once the app has committed
    // them all (counts are emitted as its cache is flushed, every commit).
    let per_truck = || {
        let counts = tributary_tests::kafka::consume(
            &brokers,
            &per_minute,
            usize::MAX,
            Duration::from_secs(2),
        );
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for m in &counts {
            last.insert(m.key.clone(), m.text.parse().expect("a count"));
        }
        let mut per_truck: BTreeMap<String, u64> = BTreeMap::new();
        for (key, n) in last {
            let truck = key.split('@').next().expect("truck@minute").to_owned();
            *per_truck.entry(truck).or_default() += n;
        }
        per_truck
    };
    let mut counted = per_truck();
    while counted.values().sum::<u64>() < want as u64 && Instant::now() < deadline {
        counted = per_truck();
    }
    let _ = app.kill();
    let out = app.wait_with_output().expect("the streams app");
    let stopped = gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let mut seen = BTreeSet::new();
    for m in &joined {
        let position = &m.value["position"];
        let reading = &m.value["reading"];
        assert_eq!(position["device_id"], m.key.as_str(), "{}", m.text);
        assert_eq!(
            reading["device_id"],
            m.key.as_str(),
            "the truck's own reading: {}",
            m.text
        );
        assert_eq!(reading["values"][0]["name"], "fuel", "{}", m.text);
        assert!(
            seen.insert((m.key.clone(), position["seq"].as_u64().expect("seq"))),
            "joined twice: {}",
            m.text
        );
    }
    assert_eq!(
        seen.len(),
        want,
        "every position joined\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counted.len(), TRUCKS, "{counted:?}");
    assert!(
        counted.values().all(|n| *n == FIXES),
        "every position counted once: {counted:?}"
    );
}
