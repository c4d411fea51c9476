//! The exactly-once forwarder against librdkafka's mock cluster, which speaks the transaction
//! protocol: resuming from a committed marker, and ignoring one of another spool file. The
//! crash-point guarantees run against Apache Kafka in `tests/tests/cluster.rs`.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::Marker;
use crate::forward::config::{ExactlyOnce, KafkaConfig};
use crate::forward::Drain;
use crate::observe::stats::Stats;
use tributary_spool::record::{EventId, Record};
use tributary_spool::{Limits, Spool, SpoolConfig};

const TOPIC: &str = "eos";
const PROGRESS: &str = "eos.progress";

fn record(device: u64, seq: u64) -> Record {
    Record {
        topic: TOPIC.into(),
        key: format!("d{device}").into_bytes(),
        value: format!("{device}:{seq}").into_bytes(),
        timestamp_ms: 1_700_000_000_000,
        headers: Vec::new(),
        origin: Some(EventId {
            device_id: format!("d{device}"),
            session: 0,
            seq,
            writer: None,
        }),
        event: None,
        mqtt_topic: None,
    }
}

fn config(brokers: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_owned(),
        max_in_flight: NonZeroUsize::new(100).unwrap(),
        max_in_flight_bytes: NonZeroUsize::new(1 << 20).unwrap(),
        live_share: 0.0,
        properties: Default::default(),
        create_topics: None,
        exactly_once: Some(ExactlyOnce {
            gateway_id: "g1".into(),
            progress_topic: PROGRESS.into(),
            transaction_timeout: Duration::from_secs(10),
            replication: 1,
            max_events: NonZeroUsize::new(100).unwrap(),
        }),
    }
}

/// Commits `marker` to the progress topic as an earlier run of the gateway would have.
fn commit_marker(brokers: &str, marker: &Marker) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", "tributary-g1")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(10)).unwrap();
    producer.begin_transaction().unwrap();
    let value = serde_json::to_vec(marker).unwrap();
    producer
        .send(BaseRecord::to(PROGRESS).key("g1").payload(&value))
        .map_err(|(e, _)| e)
        .unwrap();
    producer
        .commit_transaction(Duration::from_secs(10))
        .unwrap();
}

/// Every value on the topic, read committed.
fn committed_values(brokers: &str, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "check")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    // More than expected would be duplicates: give them a second to show.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(1) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    out
}

/// A mock cluster with the records' topic and the progress topic, its bootstrap servers, and a
/// directory for the spool.
fn cluster() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
    tempfile::TempDir,
) {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic(TOPIC, 3, 3).unwrap();
    mock.create_topic(PROGRESS, 1, 3).unwrap();
    let brokers = mock.bootstrap_servers();
    (mock, brokers, tempfile::tempdir().unwrap())
}

/// A spool of 4 devices x 50 events; the ids of its rows in order.
async fn filled(dir: &tempfile::TempDir) -> (Spool, Vec<i64>) {
    let config = SpoolConfig {
        path: dir.path().join("spool.db"),
        group_commit_max_events: NonZeroUsize::new(1000).unwrap(),
        group_commit_wait: Duration::from_millis(1),
        limits: Limits::unlimited(),
        forget_devices_after: Duration::from_secs(3600),
    };
    let spool = Spool::open(&config, Stats::default()).unwrap().0;
    for d in 0..4 {
        spool
            .append((1..=50).map(|s| record(d, s)).collect())
            .await
            .unwrap();
    }
    let ids = spool
        .fetch(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    (spool, ids)
}

async fn forward_until_drained(brokers: &str, spool: &Spool) {
    forward_with(config(brokers), spool).await
}

async fn forward_with(config: KafkaConfig, spool: &Spool) {
    let stop = CancellationToken::new();
    let stats = Stats::default();
    let eos = config.exactly_once.clone().unwrap();
    let task = tokio::spawn(super::run(
        config,
        eos,
        crate::forward::TimePolicy::default(),
        spool.clone(),
        stats.clone(),
        Drain {
            stop: stop.clone(),
            deadline: crate::shutdown::Deadline::new(Duration::from_secs(10)),
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while spool.stats().await.unwrap().rows > 0 {
        assert!(
            Instant::now() < deadline,
            "the spool did not drain: {:?}",
            stats.forward_state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}

fn counts(values: &[String]) -> BTreeMap<&str, usize> {
    let mut n = BTreeMap::new();
    for v in values {
        *n.entry(v.as_str()).or_insert(0) += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_a_committed_marker_of_this_spool_covers_are_deleted_not_sent_again() {
    let (_mock, brokers, dir) = cluster();
    let (spool, ids) = filled(&dir).await;
    // An earlier run committed the first 80 rows, then died before deleting them.
    commit_marker(
        &brokers,
        &Marker {
            gateway_id: "g1".into(),
            spool: spool.instance(),
            through: ids[79],
            committed_ms: 0,
        },
    );
    forward_until_drained(&brokers, &spool).await;
    let values = committed_values(&brokers, 120);
    let n = counts(&values);
    assert_eq!(
        values.len(),
        120,
        "the 120 rows after the marker, once each"
    );
    assert!(n.values().all(|c| *c == 1), "{n:?}");
    assert!(!n.contains_key("0:1"), "device 0's first rows were covered");
    assert!(n.contains_key("1:31") && n.contains_key("3:50"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_marker_of_another_spool_file_deletes_nothing() {
    let (_mock, brokers, dir) = cluster();
    let (spool, ids) = filled(&dir).await;
    commit_marker(
        &brokers,
        &Marker {
            gateway_id: "g1".into(),
            spool: spool.instance() ^ 1,
            through: ids[199],
            committed_ms: 0,
        },
    );
    forward_until_drained(&brokers, &spool).await;
    let values = committed_values(&brokers, 200);
    assert_eq!(
        values.len(),
        200,
        "every row goes: the marker counts in another spool"
    );
    assert!(counts(&values).values().all(|c| *c == 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_kafka_refuses_for_good_is_quarantined_and_the_rest_arrive_once() {
    let (_mock, brokers, dir) = cluster();
    let (spool, _) = filled(&dir).await;
    // One record larger than the producer takes, among 200.
    let mut big = record(9, 1);
    big.value = vec![b'x'; 20_000];
    spool.append(vec![big]).await.unwrap();
    spool
        .append((2..=10).map(|s| record(9, s)).collect())
        .await
        .unwrap();
    let mut config = config(&brokers);
    config
        .properties
        .insert("message.max.bytes".into(), "10000".into());
    forward_with(config, &spool).await;
    let values = committed_values(&brokers, 209);
    let n = counts(&values);
    // librdkafka's mock cluster does not hide aborted transactions from read-committed
    // consumers (Apache Kafka does: the cluster test reads committed there), so the rows of
    // the batch aborted for the refusal show twice here, and only those.
    assert_eq!(n.len(), 209, "every record but the refused one");
    let twice: Vec<&str> = n.iter().filter(|(_, c)| **c > 1).map(|(v, _)| *v).collect();
    assert!(twice.iter().all(|v| v.starts_with("9:")), "{twice:?}");
    assert!(n.contains_key("9:2") && n.contains_key("9:10") && n.contains_key("0:1"));
    assert!(
        !values.iter().any(|v| v.len() > 100),
        "the large one is not in Kafka"
    );
    assert_eq!(spool.stats().await.unwrap().rows, 0);
    let quarantined = tributary_spool::tools::quarantined(&dir.path().join("spool.db")).unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(
        quarantined[0].reason.contains("refused by Kafka 3 times"),
        "{quarantined:?}"
    );
}
