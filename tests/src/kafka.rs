//! Reading back what the gateway wrote: topic creation, an rdkafka consumer, and the checks
//! every end-to-end test makes on a topic's messages.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// One message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: Value,
    /// The value as text (lossy UTF-8), for values that are not JSON.
    pub text: String,
    pub timestamp_ms: Option<i64>,
    pub headers: BTreeMap<String, String>,
}

/// Creates topics with `partitions` partitions; existing ones are fine.
pub async fn create_topics(brokers: &str, names: &[&str], partitions: i32) {
    create_replicated_topics(brokers, names, partitions, 1).await
}

/// Creates topics with `partitions` partitions of `replication` replicas each.
pub async fn create_replicated_topics(
    brokers: &str,
    names: &[&str],
    partitions: i32,
    replication: i32,
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match admin.create_topics(&topics, &AdminOptions::new()).await {
            Ok(results) => {
                for r in results {
                    if let Err((name, code)) = r {
                        assert!(
                            code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                            "creating {name}: {code}"
                        );
                    }
                }
                return;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("create topics: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("creating topics {names:?}: {e}"),
        }
    }
}

/// Reads `topic` from the beginning until `expected` messages arrived, or nothing new came
/// for `idle`. Returns what it read, in (partition, offset) order.
pub fn consume(brokers: &str, topic: &str, expected: usize, idle: Duration) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", crate::unique_topic("verify"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    // A broker that just restarted may refuse the first requests: retry for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metadata = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(m) if m.topics().iter().any(|t| !t.partitions().is_empty()) => break m,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Ok(m) => break m,
            Err(e) => panic!("metadata for {topic}: {e}"),
        }
    };
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < expected && last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => eprintln!("consume {topic}: {e}"),
            Some(Ok(m)) => {
                last = Instant::now();
                out.push(to_msg(&m));
            }
        }
    }
    // A little longer, to catch duplicates arriving after the expected count.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(1) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(to_msg(&m));
        }
    }
    out.sort_by_key(|m| (m.partition, m.offset));
    out
}

fn to_msg(m: &rdkafka::message::BorrowedMessage<'_>) -> Msg {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                    (h.key.to_owned(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    Msg {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
        value: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
        timestamp_ms: m.timestamp().to_millis(),
        headers,
    }
}

/// Checks Tributary's promises on one topic's messages against what each device sent
/// (`sent[device] = seqs in order`): every event exactly once, key = device id, one partition
/// per device, seq order within it, headers present, timestamp = event time.
pub fn check_stream(msgs: &[Msg], sent: &BTreeMap<String, Vec<u64>>, kind: &str) {
    let mut seen: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    for m in msgs {
        let device = m.value["device_id"].as_str().unwrap_or_default().to_owned();
        let seq = m.value["seq"].as_u64().unwrap_or(u64::MAX);
        assert_eq!(m.key, device, "key is the device id: {m:?}");
        assert_eq!(
            m.headers.get("event-id").map(String::as_str),
            Some(format!("{device}:{seq}").as_str()),
            "event-id header: {m:?}"
        );
        assert_eq!(
            m.headers.get("kind").map(String::as_str),
            Some(kind),
            "{m:?}"
        );
        assert_eq!(
            m.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            m.timestamp_ms,
            m.value["time_ms"].as_i64(),
            "Kafka timestamp is the event time: {m:?}"
        );
        seen.entry(device).or_default().push((m.partition, seq));
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        sent.keys().collect::<Vec<_>>(),
        "devices in the topic"
    );
    for (device, expected) in sent {
        let got = &seen[device];
        let partitions: std::collections::BTreeSet<i32> = got.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            partitions.len(),
            1,
            "{device} spans partitions {partitions:?}"
        );
        let seqs: Vec<u64> = got.iter().map(|(_, s)| *s).collect();
        assert_eq!(&seqs, expected, "{device}: every event once, in seq order");
    }
}

/// `tributary-sim verify` as a library: reads `topics` and checks them against `manifest`,
/// waiting up to 60 s for acknowledged events still on their way.
pub fn verify(
    brokers: &str,
    topics: &[&str],
    manifest: &tributary_sim::manifest::Manifest,
    allow_duplicates: bool,
) -> tributary_sim::verify::Verdict {
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tributary_sim::verify::kafka::verify(
        manifest,
        brokers,
        &topics,
        tributary_sim::verify::Options { allow_duplicates },
        Duration::from_secs(60),
    )
    .expect("the topics can be read")
}

/// What kafka-python (`tests/clients/check_kafka.py`) found in the gateway's topics, against
/// the simulator's manifest of acknowledged events: an independent reader, not librdkafka.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PythonCheck {
    pub acknowledged: u64,
    pub found: u64,
    pub missing: u64,
    pub missing_sample: Vec<String>,
    pub duplicates: u64,
    pub different_copies: u64,
    pub out_of_order: u64,
    pub split_devices: u64,
    pub wrong_key: u64,
    pub records: u64,
}

impl PythonCheck {
    /// Every acknowledged event is there, each device in one partition in seq order, keyed by
    /// its device id, and any duplicate is an identical copy.
    pub fn holds(&self) -> bool {
        self.acknowledged > 0
            && self.missing == 0
            && self.found == self.acknowledged
            && self.out_of_order == 0
            && self.split_devices == 0
            && self.wrong_key == 0
            && self.different_copies == 0
    }
}

/// Reads `topics` to their end with kafka-python (`TRIBUTARY_TEST_PYTHON`) and checks them
/// against `manifest`; `read_committed` reads as `isolation_level="read_committed"`.
pub fn check_with_kafka_python(
    brokers: &str,
    topics: &[&str],
    manifest: &tributary_sim::manifest::Manifest,
    read_committed: bool,
) -> PythonCheck {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("manifest.json");
    std::fs::write(
        &path,
        serde_json::to_vec(manifest).expect("the manifest serialises"),
    )
    .expect("write the manifest");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/check_kafka.py");
    let mut cmd = std::process::Command::new(crate::env("TRIBUTARY_TEST_PYTHON"));
    cmd.arg(script).arg(brokers).arg(&path).args(topics);
    if read_committed {
        cmd.arg("--read-committed");
    }
    let out = cmd.output().expect("run check_kafka.py");
    assert!(
        out.status.success(),
        "check_kafka.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check_kafka.py printed no result ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A record to produce: key, value, headers.
pub type Produced = (String, String, Vec<(String, String)>);

/// Writes `records` to `topic`, in order, and waits for each delivery.
pub async fn produce(brokers: &str, topic: &str, records: &[Produced]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (key, value, headers) in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(value).headers(h),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce a command");
    }
}
