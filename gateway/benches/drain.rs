//! Drain rate: a spool pre-filled with 1,000,000 events forwarded into the broker, beside a
//! plain rdkafka producer sending the same bytes (same keys, values, headers, timestamps and
//! producer settings) to the same broker, in one run.
//!
//! `cargo bench -p tributary-gateway --bench drain`
//!
//! The spool is drained twice, from two spools filled alike: at least once (the default) and
//! exactly once (`delivery = "exactly-once"`: one transaction per batch with its progress
//! marker). Each line says events/s and the gateway process's CPU seconds for the drain.
//!
//! The broker is `TRIBUTARY_BENCH_KAFKA` (host:port) if set; otherwise the bench starts a
//! one-node Apache Kafka on free loopback ports (`tests/kafka/node`), for both sides.
//! `BENCH_EVENTS` changes the count.

use std::num::NonZeroUsize;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tributary_gateway::forward::KafkaConfig;
use tributary_gateway::forward::{kafka, Drain};
use tributary_gateway::observe::stats::Stats;
use tributary_spool::record::{EventId, Record};
use tributary_spool::SpoolConfig;
use tributary_spool::{Limits, Spool, SpoolDb};

fn records(topic: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let device = format!("dev-{}", i % 1000);
            let seq = (i / 1000) as u64 + 1;
            let value = format!(
                r#"{{"device_id":"{device}","seq":{seq},"time_ms":{},"kind":"reading","values":[{{"name":"temperature","value":21.5,"unit":"Cel"}},{{"name":"humidity","value":40.1,"unit":"%"}}]}}"#,
                1_700_000_000_000u64 + i as u64
            );
            Record {
                topic: topic.into(),
                key: device.clone().into_bytes(),
                value: value.into_bytes(),
                timestamp_ms: 1_700_000_000_000 + i as i64,
                headers: vec![
                    ("event-id".into(), format!("{device}:{seq}")),
                    ("kind".into(), "reading".into()),
                    ("content-type".into(), "application/json".into()),
                ],
                origin: Some(EventId {
                    device_id: device,
                    session: 0,
                    seq,
                    writer: None,
                }),
                event: None,
                mqtt_topic: None,
            }
        })
        .collect()
}

/// The broker to drain into: `TRIBUTARY_BENCH_KAFKA`, or a one-node Apache Kafka of the bench's
/// own, started from the jars `tests/kafka/fetch` brings by `tests/kafka/node` (killed at the end).
fn start_kafka(dir: &std::path::Path) -> (String, Option<Child>) {
    if let Ok(b) = std::env::var("TRIBUTARY_BENCH_KAFKA") {
        return (b, None);
    }
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kafka");
    let fetched = Command::new(tests.join("fetch"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/kafka/fetch (Maven and Java 17), or set TRIBUTARY_BENCH_KAFKA");
    assert!(fetched.status.success(), "tests/kafka/fetch failed");
    let libs = String::from_utf8_lossy(&fetched.stdout).trim().to_owned();
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|ls| {
            ls.iter()
                .map(|l| l.local_addr().map(|a| a.port()))
                .collect()
        })
        .expect("free ports");
    let (port, ctrl) = (ports[0], ports[1]);
    let log_path = dir.join("kafka.log");
    let log = std::fs::File::create(&log_path).expect("broker log");
    let child = Command::new(tests.join("node"))
        .args([
            "--libs",
            &libs,
            "--id",
            "1",
            "--cluster-id",
            "dHJpYnV0YXJ5LWJlbmNoAA",
        ])
        .arg("--dir")
        .arg(dir.join("kafka"))
        .args([
            "--port",
            &port.to_string(),
            "--controller-port",
            &ctrl.to_string(),
        ])
        .args(["--voters", &format!("1@127.0.0.1:{ctrl}")])
        .stdout(log.try_clone().expect("broker log"))
        .stderr(log)
        .spawn()
        .expect("tests/kafka/node");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("Kafka Server started")
    {
        assert!(
            Instant::now() < deadline,
            "Kafka did not start: see {log_path:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (format!("127.0.0.1:{port}"), Some(child))
}

async fn create(brokers: &str, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1)))
        .collect();
    admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics");
}

fn kafka_config(brokers: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.into(),
        max_in_flight: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
        max_in_flight_bytes: NonZeroUsize::new(32 << 20).unwrap_or(NonZeroUsize::MIN),
        live_share: 0.0,
        properties: Default::default(),
        create_topics: None,
        exactly_once: None,
    }
}

/// This process's CPU time (user + system), in seconds, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Fills a spool at `path` with `n` events for `topic`.
fn fill(path: &std::path::Path, topic: &str, n: usize) {
    let start = Instant::now();
    let mut db = SpoolDb::open(path).expect("spool");
    let all = records(topic, n);
    for chunk in all.chunks(10_000) {
        db.append(chunk.to_vec()).expect("append");
    }
    eprintln!(
        "pre-filled {n} events in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// Drains the spool at `path` with the forwarder as `kafka` configures it: events/s over the
/// whole drain, events/s from the first rows deleted on (the steady rate, without the
/// forwarder's start: connecting, and for exactly once opening the transactional producer and
/// reading the marker), and CPU seconds.
async fn drain(path: &std::path::Path, kafka: KafkaConfig, n: usize) -> (f64, f64, f64) {
    let config = SpoolConfig {
        path: path.to_owned(),
        group_commit_max_events: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
        group_commit_wait: Duration::from_millis(2),
        limits: Limits::unlimited(),
        forget_devices_after: std::time::Duration::from_secs(30 * 24 * 3600),
    };
    let (spool, _) = Spool::open(&config, Stats::default()).expect("open spool");
    let stop = CancellationToken::new();
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let forwarder = tokio::spawn(kafka::run(
        kafka,
        tributary_gateway::forward::TimePolicy::default(),
        spool.clone(),
        Stats::default(),
        Drain {
            stop: stop.clone(),
            deadline: tributary_gateway::shutdown::Deadline::new(Duration::from_secs(30)),
        },
    ));
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let rows = spool.gauges().await.expect("gauges").rows;
        if rows == 0 {
            break;
        }
        if first.is_none() && rows < n as u64 {
            first = Some((Instant::now(), rows));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (elapsed, cpu) = (start.elapsed(), cpu_seconds() - cpu);
    let steady = first.map_or(0.0, |(t, rows)| rows as f64 / t.elapsed().as_secs_f64());
    stop.cancel();
    let _ = forwarder.await;
    spool.close().await;
    (n as f64 / elapsed.as_secs_f64(), steady, cpu)
}

fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let (brokers, kafka) = start_kafka(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stamp = std::process::id();
    let (t_spool, t_plain) = (
        format!("drain-spool-{stamp}"),
        format!("drain-plain-{stamp}"),
    );
    runtime.block_on(create(&brokers, &[&t_spool, &t_plain]));

    let path = dir.path().join("spool.db");
    fill(&path, &t_spool, n);
    let bytes: usize = records(&t_spool, n.min(1000))
        .iter()
        .map(Record::size)
        .sum::<usize>()
        * n
        / n.min(1000);

    // Tributary: drain the spool, at least once.
    let (spool_rate, spool_steady, spool_cpu) =
        runtime.block_on(drain(&path, kafka_config(&brokers), n));

    // And exactly once, from a spool filled alike.
    let eos_path = dir.path().join("spool-eos.db");
    fill(&eos_path, &t_spool, n);
    let mut eos_config = kafka_config(&brokers);
    eos_config.exactly_once = Some(tributary_gateway::forward::config::ExactlyOnce {
        gateway_id: format!("drain-bench-{stamp}"),
        progress_topic: format!("drain-progress-{stamp}"),
        transaction_timeout: Duration::from_secs(60),
        replication: 1,
        max_events: NonZeroUsize::new(tributary_gateway::forward::config::TRANSACTION_MAX_EVENTS)
            .unwrap_or(NonZeroUsize::MIN),
    });
    let (eos_rate, eos_steady, eos_cpu) = runtime.block_on(drain(&eos_path, eos_config, n));

    // A plain producer, same settings, same bytes.
    let plain_rate = runtime.block_on(async {
        let producer: FutureProducer =
            tributary_gateway::forward::config::client_config(&kafka_config(&brokers))
                .create()
                .expect("producer");
        let all = records(&t_plain, n);
        let start = Instant::now();
        let mut inflight = FuturesUnordered::new();
        for r in &all {
            while inflight.len() >= 10_000 {
                let _ = inflight.next().await;
            }
            let mut headers = OwnedHeaders::new_with_capacity(3);
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let queued = producer
                .send_result(
                    FutureRecord::to(&r.topic)
                        .key(&r.key)
                        .payload(&r.value)
                        .timestamp(r.timestamp_ms)
                        .headers(headers),
                )
                .map_err(|(e, _)| e)
                .expect("queue");
            inflight.push(queued);
        }
        while let Some(result) = inflight.next().await {
            assert!(matches!(result, Ok(Ok(_))), "delivery failed");
        }
        n as f64 / start.elapsed().as_secs_f64()
    });

    println!(
        "broker: {brokers}  events: {n}  payload: {:.0} MB",
        bytes as f64 / 1e6
    );
    println!(
        "{:>28} {:>12} {:>12} {:>8}",
        "", "events/s", "steady", "CPU s"
    );
    println!(
        "{:>28} {:>12.0} {:>12.0} {:>8.1}",
        "drain, at least once", spool_rate, spool_steady, spool_cpu
    );
    println!(
        "{:>28} {:>12.0} {:>12.0} {:>8.1}",
        "drain, exactly once", eos_rate, eos_steady, eos_cpu
    );
    println!("{:>28} {:>12.0}", "plain rdkafka producer", plain_rate);
    println!(
        "{:>28} {:>12.2}",
        "at least once / plain",
        spool_rate / plain_rate
    );
    println!(
        "{:>28} {:>12.2} {:>12.2}",
        "exactly / at least once",
        eos_rate / spool_rate,
        eos_steady / spool_steady
    );
    println!(
        "{{\"bench\":\"drain\",\"events\":{n},\"spool_eps\":{spool_rate:.0},\"eos_eps\":{eos_rate:.0},\"spool_steady_eps\":{spool_steady:.0},\"eos_steady_eps\":{eos_steady:.0},\"plain_eps\":{plain_rate:.0},\"spool_cpu_s\":{spool_cpu:.1},\"eos_cpu_s\":{eos_cpu:.1}}}"
    );
    if let Some(mut child) = kafka {
        let _ = child.kill();
        let _ = child.wait();
    }
}
