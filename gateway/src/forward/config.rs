//! `[kafka]`, `[file_sink]` and `[time]`: where forwarded events go, and which time becomes a
//! record's timestamp. With brokers, Kafka (librdkafka's properties passed through after
//! Tributary's own, checked at start by [`check`], which builds a producer and connects
//! nowhere); without, JSON lines per topic in a directory.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::route::RoutesConfig;
use tributary_common::validate::{invalid, non_zero, ConfigError, MAX_DURATION_MS};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub brokers: Option<String>,
    pub max_in_flight: Option<usize>,
    pub auto_create: Option<bool>,
    pub max_in_flight_bytes: Option<usize>,
    pub live_share: Option<f64>,
    pub topic_partitions: Option<i32>,
    pub topic_replication: Option<i32>,
    /// `"at-least-once"` (the default) or `"exactly-once"` (transactions).
    pub delivery: Option<String>,
    /// This gateway's stable id: its transactional id and its progress marker's key.
    pub gateway_id: Option<String>,
    pub progress_topic: Option<String>,
    pub transaction_timeout_ms: Option<u64>,
    pub transaction_max_events: Option<usize>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileSink {
    pub dir: Option<PathBuf>,
}

/// Where forwarded events go.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Kafka(KafkaConfig),
    /// No brokers configured: JSON lines per topic in this directory.
    File {
        dir: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Most messages handed to the producer and not yet acknowledged.
    pub max_in_flight: NonZeroUsize,
    /// About the most bytes (keys, values, headers) handed to the producer and not yet
    /// acknowledged.
    pub max_in_flight_bytes: NonZeroUsize,
    /// Share of each refill given to fresh events while a backlog drains (0: strict order).
    pub live_share: f64,
    /// librdkafka properties, passed through after Tributary's own.
    pub properties: BTreeMap<String, String>,
    /// Topics to create through the Admin API if missing (`auto_create`), else `None`.
    pub create_topics: Option<TopicSpec>,
    /// `delivery = "exactly-once"`: transactions, and what they need; `None` at least once.
    pub exactly_once: Option<ExactlyOnce>,
}

/// What the exactly-once forwarder needs ([`super::kafka::transactional`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactlyOnce {
    /// The gateway's stable id (`kafka.gateway_id`): `transactional.id` is
    /// `tributary-{gateway_id}`, and the progress marker's key is the id itself.
    pub gateway_id: String,
    /// The compacted topic of progress markers (`kafka.progress_topic`).
    pub progress_topic: String,
    /// `transaction.timeout.ms`: how long a transaction may stay open before the cluster aborts
    /// it; also each record's delivery timeout.
    pub transaction_timeout: Duration,
    /// The progress topic's replication factor (`kafka.topic_replication`).
    pub replication: i32,
    /// Most rows in one transaction (`kafka.transaction_max_events`); `max_in_flight_bytes`
    /// bounds its bytes.
    pub max_events: NonZeroUsize,
}

/// The default `kafka.transaction_max_events`. Each transaction costs a few round trips to
/// the cluster whatever its size; at 50,000 rows a drain's steady rate matched at-least-once
/// on the drain bench, at 10,000 it was about 0.7 of it. At most librdkafka's default queue
/// (100,000 messages).
pub const TRANSACTION_MAX_EVENTS: usize = 50_000;

/// The default `kafka.progress_topic`.
pub const PROGRESS_TOPIC: &str = "tributary.progress";
/// The default `kafka.transaction_timeout_ms`: one minute. A transaction holds one batch of at
/// most `max_in_flight` rows; it stays open only while Kafka is slow to take them. During an
/// outage it times out, is aborted, and the same rows go again in a new one once Kafka is back
/// (they never leave the spool meanwhile), so the timeout bounds how long read-committed
/// consumers wait behind an open transaction, not how long an outage may last. Brokers refuse
/// more than their `transaction.max.timeout.ms` (15 minutes by default).
pub const TRANSACTION_TIMEOUT_MS: u64 = 60_000;

/// Checks `kafka.gateway_id`: 1 to 200 of `A-Z a-z 0-9 . _ -` (not `.` or `..`), so it is a
/// valid Kafka key and transactional id as it stands.
fn gateway_id(id: Option<String>) -> Result<String, ConfigError> {
    let id = id.unwrap_or_default();
    // The characters of a topic name: a valid record key and transactional id as it stands.
    if id.len() <= 200 && tributary_common::validate::names::legal_topic(&id) {
        Ok(id)
    } else if id.is_empty() {
        Err(invalid(
            "kafka.gateway_id",
            "delivery = \"exactly-once\" needs a stable id for this gateway (its transactional id)",
        ))
    } else {
        Err(invalid(
            "kafka.gateway_id",
            format!("{id:?}: use 1 to 200 of A-Z a-z 0-9 . _ - (not . or ..)"),
        ))
    }
}

/// Topics the forwarder creates if they are missing: `(name, partitions, replication)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub topics: Vec<(String, i32, i32)>,
}

/// Validates the sink; with `auto_create`, lists the topics to create: the routes', then the
/// rules' (`rule_topics`).
pub fn sink(
    kafka: RawKafka,
    file: RawFileSink,
    data_dir: &Path,
    routes: &RoutesConfig,
    rule_topics: &[String],
) -> Result<SinkConfig, ConfigError> {
    let brokers = kafka.brokers.unwrap_or_default();
    let default_topic_shape = (
        kafka.topic_partitions.unwrap_or(3),
        kafka.topic_replication.unwrap_or(1),
    );
    let sink = if brokers.trim().is_empty() {
        if kafka.delivery.as_deref() == Some("exactly-once") {
            return Err(invalid(
                "kafka.delivery",
                "\"exactly-once\" needs kafka.brokers: the file sink is at least once",
            ));
        }
        SinkConfig::File {
            dir: file.dir.unwrap_or_else(|| data_dir.join("sink")),
        }
    } else {
        for b in brokers.split(',') {
            let b = b.trim();
            let port_ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(invalid(
                    "kafka.brokers",
                    format!("{b:?} is not host:port (brokers are a comma-separated list)"),
                ));
            }
        }
        for key in ["bootstrap.servers", "enable.idempotence"] {
            if kafka.properties.contains_key(key) {
                return Err(invalid(
                    "kafka.properties",
                    format!("{key:?} is set by Tributary and may not be overridden"),
                ));
            }
        }
        let partitions = kafka.topic_partitions.unwrap_or(3);
        if partitions < 1 {
            return Err(invalid("kafka.topic_partitions", "must be at least 1"));
        }
        let replication = kafka.topic_replication.unwrap_or(1);
        if replication < 1 {
            return Err(invalid("kafka.topic_replication", "must be at least 1"));
        }
        let exactly_once = match kafka.delivery.as_deref().unwrap_or("at-least-once") {
            "at-least-once" => None,
            "exactly-once" => {
                for key in [
                    "transactional.id",
                    "transaction.timeout.ms",
                    "message.timeout.ms",
                ] {
                    if kafka.properties.contains_key(key) {
                        return Err(invalid(
                            "kafka.properties",
                            format!("{key:?} is set by delivery = \"exactly-once\"; use kafka.gateway_id and kafka.transaction_timeout_ms"),
                        ));
                    }
                }
                let progress_topic = tributary_common::validate::names::topic(
                    "kafka.progress_topic",
                    kafka.progress_topic,
                    PROGRESS_TOPIC,
                )?;
                let timeout_ms = kafka
                    .transaction_timeout_ms
                    .unwrap_or(TRANSACTION_TIMEOUT_MS);
                if !(1_000..=900_000).contains(&timeout_ms) {
                    return Err(invalid(
                        "kafka.transaction_timeout_ms",
                        format!("{timeout_ms} is outside 1000 to 900000 (brokers allow at most their transaction.max.timeout.ms, 15 minutes by default)"),
                    ));
                }
                let max_events = non_zero(
                    "kafka.transaction_max_events",
                    kafka.transaction_max_events,
                    TRANSACTION_MAX_EVENTS,
                )?;
                if max_events.get() > 100_000 {
                    return Err(invalid(
                        "kafka.transaction_max_events",
                        format!("{max_events} is above 100000 (librdkafka's queue)"),
                    ));
                }
                Some(ExactlyOnce {
                    gateway_id: gateway_id(kafka.gateway_id)?,
                    progress_topic,
                    transaction_timeout: Duration::from_millis(timeout_ms),
                    replication,
                    max_events,
                })
            }
            other => {
                return Err(invalid(
                    "kafka.delivery",
                    format!("{other:?} is not \"at-least-once\" or \"exactly-once\""),
                ))
            }
        };
        SinkConfig::Kafka(KafkaConfig {
            brokers: brokers.trim().to_owned(),
            max_in_flight: non_zero("kafka.max_in_flight", kafka.max_in_flight, 10_000)?,
            max_in_flight_bytes: non_zero(
                "kafka.max_in_flight_bytes",
                kafka.max_in_flight_bytes,
                32 << 20,
            )?,
            live_share: match kafka.live_share.unwrap_or(0.0) {
                s if (0.0..=0.9).contains(&s) => s,
                s => {
                    return Err(invalid(
                        "kafka.live_share",
                        format!("{s} is outside 0.0 to 0.9"),
                    ))
                }
            },
            properties: kafka.properties,
            create_topics: kafka
                .auto_create
                .unwrap_or(false)
                .then(|| TopicSpec { topics: Vec::new() }),
            exactly_once,
        })
    };

    let mut sink = sink;
    if let SinkConfig::Kafka(KafkaConfig {
        create_topics: Some(spec),
        ..
    }) = &mut sink
    {
        let (partitions, replication) = default_topic_shape;
        for name in [&routes.readings, &routes.positions, &routes.dead_letter] {
            spec.topics.push((name.clone(), partitions, replication));
        }
        for r in &routes.rules {
            if !spec.topics.iter().any(|(n, _, _)| n == &r.topic) {
                spec.topics.push((
                    r.topic.clone(),
                    r.partitions.unwrap_or(partitions),
                    r.replication.unwrap_or(replication),
                ));
            }
        }
        for name in rule_topics {
            if !spec.topics.iter().any(|(n, _, _)| n == name) {
                spec.topics.push((name.clone(), partitions, replication));
            }
        }
    }

    if let SinkConfig::Kafka(k) = &sink {
        check(k).map_err(|problem| {
            invalid(
                "kafka.properties",
                format!(
                    "librdkafka refuses the producer configuration: {}",
                    redact(&problem, &k.properties)
                ),
            )
        })?;
    }
    Ok(sink)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTime {
    pub kafka_timestamp: Option<String>,
    pub max_future_ms: Option<u64>,
}

/// Which time becomes a record's Kafka timestamp (`[time]`). Device clocks can be wrong: a
/// Raspberry Pi has no real-time clock, and Kafka 4.0 refuses records more than an hour in the
/// future by default (KIP-1030, `message.timestamp.after.max.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimePolicy {
    pub kafka_timestamp: TimestampSource,
    /// With `Clamp`: the most an event time may be ahead of the receive time.
    pub max_future: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampSource {
    /// The device's event time, whatever it is.
    Event,
    /// The gateway's receive time (when the spool committed the event).
    Receive,
    /// The event time, but at most `max_future` after the receive time (the default).
    Clamp,
}

impl Default for TimePolicy {
    fn default() -> Self {
        Self {
            kafka_timestamp: TimestampSource::Clamp,
            max_future: Duration::from_secs(55 * 60),
        }
    }
}

/// Validates `[time]`.
pub fn time(raw: RawTime) -> Result<TimePolicy, ConfigError> {
    Ok(TimePolicy {
        kafka_timestamp: match raw.kafka_timestamp.as_deref() {
            None | Some("clamp") => TimestampSource::Clamp,
            Some("event") => TimestampSource::Event,
            Some("receive") => TimestampSource::Receive,
            Some(other) => {
                return Err(invalid(
                    "time.kafka_timestamp",
                    format!("{other:?} is not \"clamp\", \"event\" or \"receive\""),
                ))
            }
        },
        max_future: match raw.max_future_ms {
            None => TimePolicy::default().max_future,
            Some(ms) if ms <= MAX_DURATION_MS => Duration::from_millis(ms),
            Some(_) => {
                return Err(invalid(
                    "time.max_future_ms",
                    format!("must be at most {MAX_DURATION_MS} (100 years)"),
                ))
            }
        },
    })
}

/// The producer configuration Tributary uses; `config.properties` are applied last.
pub fn client_config(config: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "0")
        .set("linger.ms", "50")
        .set("compression.type", "lz4")
        .set("client.id", "tributary");
    if let Some(eos) = &config.exactly_once {
        let timeout = eos.transaction_timeout.as_millis().to_string();
        c.set("transactional.id", format!("tributary-{}", eos.gateway_id))
            .set("transaction.timeout.ms", &timeout)
            .set("message.timeout.ms", &timeout);
    }
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

/// Whether `name` is a librdkafka property only a producer reads: the commands consumer, which
/// takes `[kafka.properties]` for the connection (security, timeouts), leaves these out.
pub fn producer_only(name: &str) -> bool {
    matches!(
        name,
        "acks"
            | "request.required.acks"
            | "enable.idempotence"
            | "partitioner"
            | "message.timeout.ms"
            | "delivery.timeout.ms"
            | "request.timeout.ms"
            | "linger.ms"
            | "queue.buffering.max.ms"
            | "queue.buffering.max.messages"
            | "queue.buffering.max.kbytes"
            | "batch.size"
            | "batch.num.messages"
            | "compression.type"
            | "compression.codec"
            | "compression.level"
            | "retries"
            | "message.send.max.retries"
            | "retry.backoff.ms"
            | "sticky.partitioning.linger.ms"
            | "transactional.id"
            | "transaction.timeout.ms"
            | "max.in.flight"
            | "max.in.flight.requests.per.connection"
    )
}

/// Creates the producer Tributary would run, and drops it before it sends anything, so that
/// what librdkafka refuses is found at start and by `check-config`: an unknown property or an
/// invalid value (checked one by one), and properties it accepts one by one but refuses
/// together (`acks = 0` with idempotence). The error names the property and the value.
/// librdkafka starts connecting in the background; nothing waits for a broker.
pub fn check(config: &KafkaConfig) -> Result<(), String> {
    client_config(config)
        .create::<rdkafka::producer::BaseProducer>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ...).
fn is_secret(key: &str) -> bool {
    ["password", "secret", "key.pem", "token", "jaas"]
        .iter()
        .any(|word| key.contains(word))
}

/// `problem` with the value of every secret property replaced by `<redacted>`: an error that
/// quotes a password must not put it into a terminal, a log or a CI transcript.
fn redact(problem: &str, properties: &std::collections::BTreeMap<String, String>) -> String {
    properties
        .iter()
        .filter(|(k, v)| is_secret(k) && !v.is_empty())
        .fold(problem.to_owned(), |text, (_, v)| {
            text.replace(v.as_str(), "<redacted>")
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_values_never_reach_the_error_text() {
        let properties = [
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "pem-pass"),
            ("compression.type", "bogus"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        let text = super::redact(
            "Invalid value \"hunter2\" for sasl.password; pem-pass; \"bogus\" for compression.type",
            &properties,
        );
        assert!(
            !text.contains("hunter2") && !text.contains("pem-pass"),
            "{text}"
        );
        assert!(text.contains("bogus"), "other values stay: {text}");
    }
}
