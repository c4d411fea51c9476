//! Reading topics for `verify` with an rdkafka consumer.
//!
//! The reader assigns every partition of the topics from the beginning (no consumer group
//! offsets are committed) and reads each up to its high watermark as it was when
//! [`KafkaReader::catch_up`] was called, then on until nothing more arrives for [`SETTLE`].
//! Calling it again reads what arrived since.
//!
//! The watermark alone is not trusted: tansu 0.6.0 (memory engine) answers ListOffsets
//! "latest" with the last batch's base offset + 1, so a partition holding one batch of 200
//! records reports a high watermark of 1. A reader that stopped there would report 199 events
//! missing that are not.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{check, Observed, Options, Verdict};
use crate::manifest::Manifest;

/// Why topics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KafkaReadError {
    #[error("creating a consumer for {brokers}: {source}")]
    Client {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {topic} has no partitions on {brokers} after {waited:?} (does it exist?)")]
    NoTopic {
        topic: String,
        brokers: String,
        waited: Duration,
    },
    #[error("{topic}/{partition}: {what}")]
    Partition {
        topic: String,
        partition: i32,
        what: String,
    },
    #[error("reading {topic}/{partition}: only up to offset {at} of {high} within {waited:?}")]
    Slow {
        topic: String,
        partition: i32,
        at: i64,
        high: i64,
        waited: Duration,
    },
}

/// How long a read goes on after the watermarks without a new record.
pub const SETTLE: Duration = Duration::from_secs(1);

pub struct KafkaReader {
    brokers: String,
    consumer: BaseConsumer,
    /// (topic, partition) -> next offset to read.
    next: HashMap<(String, i32), i64>,
    partitions: HashMap<String, i32>,
    records: Vec<Observed>,
}

impl KafkaReader {
    /// Connects and learns the partitions of `topics`, waiting up to `timeout` for them.
    pub fn new(
        brokers: &str,
        topics: &[String],
        timeout: Duration,
    ) -> Result<Self, KafkaReadError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("tributary-sim-verify-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .map_err(|source| KafkaReadError::Client {
                brokers: brokers.to_owned(),
                source,
            })?;
        let mut reader = Self {
            brokers: brokers.to_owned(),
            consumer,
            next: HashMap::new(),
            partitions: HashMap::new(),
            records: Vec::new(),
        };
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            let n = reader.partition_count(topic, timeout)?;
            reader.partitions.insert(topic.clone(), n);
            for p in 0..n {
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .map_err(|e| reader.partition_error(topic, p, e))?;
                reader.next.insert((topic.clone(), p), 0);
            }
        }
        reader
            .consumer
            .assign(&tpl)
            .map_err(|source| KafkaReadError::Client {
                brokers: brokers.to_owned(),
                source,
            })?;
        Ok(reader)
    }

    fn partition_error(
        &self,
        topic: &str,
        partition: i32,
        e: impl std::fmt::Display,
    ) -> KafkaReadError {
        KafkaReadError::Partition {
            topic: topic.to_owned(),
            partition,
            what: e.to_string(),
        }
    }

    fn partition_count(&self, topic: &str, timeout: Duration) -> Result<i32, KafkaReadError> {
        let started = Instant::now();
        loop {
            if let Ok(m) = self
                .consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
            {
                if let Some(t) = m.topics().iter().find(|t| t.name() == topic) {
                    if t.error().is_none() && !t.partitions().is_empty() {
                        return Ok(t.partitions().len() as i32);
                    }
                }
            }
            if started.elapsed() >= timeout {
                return Err(KafkaReadError::NoTopic {
                    topic: topic.to_owned(),
                    brokers: self.brokers.clone(),
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Partition counts of the topics read.
    pub fn partitions(&self) -> &HashMap<String, i32> {
        &self.partitions
    }

    pub fn records(&self) -> &[Observed] {
        &self.records
    }

    /// Reads every partition up to its current high watermark, within `timeout`.
    pub fn catch_up(&mut self, timeout: Duration) -> Result<(), KafkaReadError> {
        let started = Instant::now();
        let mut high: HashMap<(String, i32), i64> = HashMap::new();
        for (topic, partition) in self.next.keys() {
            let (_, h) = self
                .consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .map_err(|e| self.partition_error(topic, *partition, e))?;
            high.insert((topic.clone(), *partition), h);
        }
        let mut last_record = Instant::now();
        loop {
            let behind = high
                .iter()
                .find(|(k, h)| self.next.get(*k).is_some_and(|n| n < *h));
            if behind.is_none() && last_record.elapsed() >= SETTLE {
                return Ok(());
            }
            if let Some(((topic, partition), h)) = behind.filter(|_| started.elapsed() >= timeout) {
                return Err(KafkaReadError::Slow {
                    topic: topic.clone(),
                    partition: *partition,
                    at: self
                        .next
                        .get(&(topic.clone(), *partition))
                        .copied()
                        .unwrap_or(0),
                    high: *h,
                    waited: started.elapsed(),
                });
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(e)) => tracing::warn!(error = %e, "Consumer error; retrying."),
                Some(Ok(m)) => {
                    last_record = Instant::now();
                    let event_id = m.headers().and_then(|hs| {
                        hs.iter()
                            .find(|h| h.key == "event-id")
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    });
                    self.next
                        .insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
                    self.records.push(Observed {
                        topic: m.topic().to_owned(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        event_id,
                    });
                }
            }
        }
    }
}

/// Reads `topics` and checks them against `manifest`. While acknowledged events are missing,
/// reads again what arrived since, for up to `wait` (the gateway may still be forwarding).
pub fn verify(
    manifest: &Manifest,
    brokers: &str,
    topics: &[String],
    options: Options,
    wait: Duration,
) -> Result<Verdict, KafkaReadError> {
    let started = Instant::now();
    let mut reader = KafkaReader::new(brokers, topics, wait.max(Duration::from_secs(10)))?;
    loop {
        reader.catch_up(Duration::from_secs(120))?;
        let partitions = reader.partitions().clone();
        let verdict = check(
            manifest,
            reader.records().to_vec(),
            &|t| partitions.get(t).copied(),
            options,
        );
        if !verdict.missing() || started.elapsed() >= wait {
            return Ok(verdict);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
