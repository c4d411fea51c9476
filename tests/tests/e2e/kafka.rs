//! What a data team relies on, against the real broker: topics created as configured, the Java
//! client's partitioning. (A broker restart under load is in `tests/cluster.rs`.)

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tributary_sim::model::FaultRates;
use tributary_sim::scenario::{Group, ModelKind, Scenario};
use tributary_tests::gateway::{Gateway, Topics};
use tributary_tests::kafka::{consume, create_topics};
use tributary_tests::{env, run};

const IDLE: Duration = Duration::from_secs(30);

fn spec(gateway: &Gateway, prefix: &str, devices: usize, events: u64) -> Scenario {
    tributary_tests::spec(gateway.tcp, prefix, devices, events)
}

/// The partitions `topic` has, once the metadata names any: a topic created a moment ago may
/// be answered without partitions (LEADER_NOT_AVAILABLE) while its leaders are elected.
fn partitions_of(brokers: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .unwrap();
        let n = md
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if n > 0 || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_created_topics_have_the_configured_partitions() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("auto");
    let gateway = Gateway::start_with(
        Some(&brokers),
        &topics,
        "auto_create = true\ntopic_partitions = 5\n",
    );
    let report = run(spec(&gateway, "auto", 8, 20)).await;
    assert_eq!(report.acked(), 160);
    let got = consume(&brokers, &topics.readings, 160, IDLE);
    assert_eq!(got.len(), 160);
    for topic in topics.all() {
        assert_eq!(partitions_of(&brokers, topic), 5, "{topic}");
    }
    assert!(
        got.iter().any(|m| m.partition == 4),
        "all five partitions are used"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_lands_on_the_partition_the_java_client_computes() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let python = env("TRIBUTARY_TEST_PYTHON");
    let topics = Topics::unique("murmur");
    create_topics(&brokers, &topics.all(), 7).await;
    let gateway = Gateway::start(Some(&brokers), &topics);
    let report = run(spec(&gateway, "truck", 60, 2)).await;
    assert_eq!(report.acked(), 120);
    let got = consume(&brokers, &topics.readings, 120, IDLE);
    let placed: BTreeSet<(String, i32)> =
        got.iter().map(|m| (m.key.clone(), m.partition)).collect();
    assert_eq!(placed.len(), 60, "each key on exactly one partition");
    // kafka-python's DefaultPartitioner is the Java client's: murmur2(key) & 0x7fffffff % n.
    let script = r#"
import sys
from kafka.partitioner.default import murmur2
bad = []
for line in sys.stdin:
    key, partition = line.split()
    expected = (murmur2(key.encode()) & 0x7fffffff) % 7
    if expected != int(partition):
        bad.append(f"{key}: on {partition}, Java puts it on {expected}")
print("\n".join(bad) if bad else "ok")
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for (key, partition) in &placed {
            writeln!(stdin, "{key} {partition}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let used: BTreeSet<i32> = placed.iter().map(|(_, p)| *p).collect();
    assert!(
        used.len() >= 5,
        "60 keys spread over most of 7 partitions: {used:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_python_decodes_json_csv_and_avro_values_with_their_headers_and_timestamps() {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let python = env("TRIBUTARY_TEST_PYTHON");
    let topics = Topics::unique("fmt");
    let (json_t, csv_t, avro_t) = (
        tributary_tests::unique_topic("fmt.json"),
        tributary_tests::unique_topic("fmt.csv"),
        tributary_tests::unique_topic("fmt.avro"),
    );
    create_topics(&brokers, &[&json_t, &csv_t, &avro_t], 3).await;
    let extra = format!(
        "[[routes.rule]]\ndevice = \"j-*\"\ntopic = \"{json_t}\"\n\
         [[routes.rule]]\ndevice = \"c-*\"\ntopic = \"{csv_t}\"\nformat = \"csv\"\n\
         [[routes.rule]]\ndevice = \"a-*\"\ntopic = \"{avro_t}\"\nformat = \"avro\"\navro_schema_id = 12\n"
    );
    let gateway = Gateway::start_with(Some(&brokers), &topics, &extra);
    for prefix in ["j", "c", "a"] {
        // One truck reports positions, one station readings.
        let mut s = spec(&gateway, prefix, 1, 3);
        s.faults = FaultRates::NONE;
        s.groups = vec![
            Group {
                name: "truck".into(),
                model: ModelKind::Truck,
                ..s.groups[0].clone()
            },
            Group {
                name: "env".into(),
                ..s.groups[0].clone()
            },
        ];
        assert_eq!(run(s).await.acked(), 6);
    }
    let script = r#"
import csv, io, json, sys
import fastavro
from kafka import KafkaConsumer
brokers, schema_path = sys.argv[1], sys.argv[2]
schema = fastavro.parse_schema(json.load(open(schema_path)))
for topic in sys.argv[3:]:
    c = KafkaConsumer(topic, bootstrap_servers=brokers, auto_offset_reset="earliest",
                      consumer_timeout_ms=20000, group_id=None)
    got = []
    for m in c:
        h = {k: v.decode() for k, v in m.headers}
        ct = h["content-type"]
        if ct == "application/json":
            v = json.loads(m.value)
        elif ct == "text/csv":
            cols = next(csv.reader([m.value.decode()]))
            assert len(cols) == 13, cols
            values = [p.split(":") for p in cols[4].split("|")] if cols[4] else []
            assert all(len(p) == 3 for p in values), values
            v = {"device_id": cols[0], "seq": int(cols[1]), "time_ms": int(cols[2]), "kind": cols[3],
                 "values": values, "lat": cols[5]}
        else:
            assert m.value[0] == 0, "Confluent magic byte"
            schema_id = int.from_bytes(m.value[1:5], "big")
            v = fastavro.schemaless_reader(io.BytesIO(m.value[5:]), schema)
            v["schema_id"] = schema_id
            v["time_ms"] = int(v["time_ms"].timestamp() * 1000)
        got.append({"topic": topic, "key": m.key.decode(), "timestamp": m.timestamp,
                    "event_id": h["event-id"], "kind_header": h["kind"], "value": v})
        if len(got) == 6:
            break
    for g in got:
        print(json.dumps(g, default=str))
"#;
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/event.avsc");
    let out = Command::new(python)
        .args(["-c", script, &brokers, schema, &json_t, &csv_t, &avro_t])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 18, "{lines:?}");
    for l in &lines {
        let v = &l["value"];
        let device = v["device_id"].as_str().unwrap();
        assert_eq!(l["key"], device, "key = device id: {l}");
        assert_eq!(l["event_id"], format!("{device}:{}", v["seq"]), "{l}");
        assert_eq!(
            l["timestamp"], v["time_ms"],
            "Kafka timestamp = event time: {l}"
        );
        assert_eq!(l["kind_header"], v["kind"]);
        let kind = if device.contains("-truck-") {
            "position"
        } else {
            "reading"
        };
        assert_eq!(v["kind"], kind, "{l}");
    }
    let avro_position = lines
        .iter()
        .find(|l| l["topic"] == avro_t.as_str() && l["value"]["kind"] == "position")
        .unwrap();
    assert_eq!(avro_position["value"]["schema_id"], 12);
    assert!(avro_position["value"]["position"]["lat"].as_f64().unwrap() > 52.0);
    let csv_reading = lines
        .iter()
        .find(|l| l["topic"] == csv_t.as_str() && l["value"]["kind"] == "reading")
        .unwrap();
    // name:value:unit, as the README's example reads it.
    let first = &csv_reading["value"]["values"][0];
    assert_eq!(first[0], "temperature", "{csv_reading}");
    assert!(
        first[1].as_str().unwrap().parse::<f64>().is_ok(),
        "{csv_reading}"
    );
    assert_eq!(first[2], "Cel", "{csv_reading}");
}

/// Two gateways configured with one `kafka.gateway_id` (a copied config): the second one's
/// transactional producer fences the first, which stops forwarding, keeps its events in its
/// spool and says why in `/readyz?verbose`; the second forwards on.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_gateway_with_the_same_gateway_id_fences_the_first_which_stops_forwarding_and_says_why(
) {
    let brokers = env("TRIBUTARY_TEST_KAFKA");
    let topics = Topics::unique("fenced");
    create_topics(&brokers, &topics.all(), 3).await;
    let eos = format!(
        "delivery = \"exactly-once\"\ngateway_id = \"{}\"\n",
        topics.readings
    );
    let first = Gateway::start_with(Some(&brokers), &topics, &eos);
    assert_eq!(run(spec(&first, "fa", 2, 10)).await.acked(), 20);
    assert_eq!(consume(&brokers, &topics.readings, 20, IDLE).len(), 20);

    let second = Gateway::start_with(Some(&brokers), &topics, &eos);
    assert_eq!(run(spec(&second, "fb", 2, 10)).await.acked(), 20);
    assert_eq!(consume(&brokers, &topics.readings, 40, IDLE).len(), 40);

    // The first gateway still accepts, but its next transaction finds it fenced.
    assert_eq!(run(spec(&first, "fc", 2, 10)).await.acked(), 20);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (_, body) = tributary_tests::http_get(first.admin, "/readyz?verbose");
        if body.contains("same kafka.gateway_id") || std::time::Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("fenced"), "{body}");
    assert!(
        first
            .log()
            .contains("another gateway runs with the same kafka.gateway_id"),
        "{}",
        first.log()
    );
    // Its events wait in its spool; none of them reached Kafka.
    std::thread::sleep(Duration::from_secs(2));
    let (_, metrics) = tributary_tests::http_get(first.admin, "/metrics");
    assert!(
        metrics.contains("tributary_spool_rows 20"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("tributary_spool_rows"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metrics.contains("tributary_forward_errors_total{topic=\"\",error=\"Fenced\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("tributary_forward_errors_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(consume(&brokers, &topics.readings, 41, IDLE).len(), 40);
}
