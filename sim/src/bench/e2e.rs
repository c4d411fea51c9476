//! End-to-end latency: a consumer reading the topic from its end while the load runs.
//!
//! Every bench event carries its batch's due time (wall clock ms) as its timestamp, which the gateway
//! forwards as the Kafka timestamp. The consumer records `its clock - timestamp` for each
//! record whose key starts with the bench's prefix. Millisecond resolution. The consumer reads
//! committed, as a data team's consumer of an exactly-once gateway does: the latency is until
//! the transaction holding the event committed (for at-least-once records, until they are
//! replicated, as for any consumer).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::histogram;
use crate::generate::now_ms;

/// A consumer on its own thread.
pub struct E2e {
    stop: Arc<AtomicBool>,
    pub seen: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Histogram<u64>>,
}

impl E2e {
    /// Starts reading `topic` at its end; returns once the partitions are assigned.
    pub fn start(brokers: &str, topic: &str, prefix: &str) -> Result<Self, String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("tributary-sim-bench-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(|e| format!("consumer for {brokers}: {e}"))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::End)
                    .map_err(|e| format!("{topic}/{}: {e}", p.id()))?;
            }
        }
        if tpl.count() == 0 {
            return Err(format!("topic {topic} has no partitions on {brokers}"));
        }
        consumer
            .assign(&tpl)
            .map_err(|e| format!("assigning {topic}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let prefix = format!("{prefix}-").into_bytes();
        let (stop2, seen2) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            let mut h = histogram();
            // A consumer can be handed a record twice (tansu 0.6.0 answers "latest" with a low
            // offset, and a fetch from inside a batch repeats part of it): count each once.
            let mut seen = std::collections::HashSet::new();
            while !stop2.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    if !m.key().is_some_and(|k| k.starts_with(&prefix)) {
                        continue;
                    }
                    if !seen.insert((m.partition(), m.offset())) {
                        continue;
                    }
                    if let Some(ts) = m.timestamp().to_millis() {
                        let ms = now_ms().saturating_sub(ts.max(0) as u64);
                        let _ = h.record((ms * 1000).max(1));
                        seen2.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            h
        });
        Ok(Self { stop, seen, thread })
    }

    /// Waits until `expected` records were seen or `timeout` passed, then stops.
    pub fn finish(self, expected: u64, timeout: Duration) -> Histogram<u64> {
        let started = Instant::now();
        while self.seen.load(Ordering::Relaxed) < expected && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| histogram())
    }
}
