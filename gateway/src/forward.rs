//! Forwarding: reading the spool in order and delivering each record to its destination.
//!
//! Two sinks: [`kafka`] (rdkafka, idempotent producer) and [`file`] (JSON lines per topic,
//! when no brokers are configured). Both follow the same rule: a spool row is acknowledged
//! (deleted) only after the destination confirmed it. On stop, a sink keeps draining until the
//! spool is empty or `deadline` passes; what is left stays in the spool for the next start.

pub mod config;
pub mod cursor;
pub mod file;
pub mod kafka;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{
    KafkaConfig, RawFileSink, RawKafka, RawTime, SinkConfig, TimePolicy, TimestampSource, TopicSpec,
};

use crate::observe::stats::Stats;

/// How long a forwarder that new rows woke from idle waits for more before it reads: at a
/// steady trickle one read then takes many commits' rows instead of one read per commit, which
/// costs a busy edge box far more CPU than the wait costs latency (Kafka's producer lingers
/// 50 ms anyway).
pub const COALESCE: Duration = Duration::from_millis(5);

/// When a forwarder should stop: after `stop`, once drained or at the shutdown deadline.
#[derive(Clone)]
pub struct Drain {
    pub stop: CancellationToken,
    /// Set when the gateway began to stop (`shutdown_grace_ms` from then), shared with ingest.
    pub deadline: crate::shutdown::Deadline,
}

impl Drain {
    /// The moment draining must end, once `stop` has fired.
    pub fn deadline(&self) -> Instant {
        self.deadline.at()
    }
}

/// Runs the sink's forwarder and restarts it when it fails, until it ends after `drain.stop`.
///
/// A forwarder only returns an error for something it cannot get past by retrying inside (the
/// producer cannot be created, the sink directory cannot be written), or it panics. Either way
/// the failure is logged at error level with its cause, counted
/// (`tributary_forwarder_restarts_total`), shown by `/readyz?verbose` and `/api/status`, and the
/// forwarder starts again after a backoff of 1 s doubling to 60 s. It never dies unseen.
pub async fn supervise(
    time: TimePolicy,
    sink: SinkConfig,
    spool: tributary_spool::Spool,
    stats: Stats,
    drain: Drain,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        stats.set_forwarder_running(true);
        let task = match sink.clone() {
            SinkConfig::Kafka(kafka) => tokio::spawn(kafka::run(
                kafka,
                time,
                spool.clone(),
                stats.clone(),
                drain.clone(),
            )),
            SinkConfig::File { dir } => tokio::spawn(file::run(
                dir,
                time,
                spool.clone(),
                stats.clone(),
                drain.clone(),
            )),
        };
        let result = task.await;
        stats.set_forwarder_running(false);
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(e @ ForwardError::Fenced(_))) => {
                let error = e.to_string();
                stats.forward_failed(error.clone(), tributary_common::clock::now_ms());
                tracing::error!(message = "Forwarding stopped for good.", %error);
                drain.stop.cancelled().await;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the forwarder task failed: {e}"),
        };
        stats.forward_failed(error.clone(), tributary_common::clock::now_ms());
        if drain.stop.is_cancelled() {
            tracing::error!(message = "The forwarder failed while stopping; unforwarded events stay in the spool.", %error);
            return;
        }
        stats.instruments.forwarder_restarts.inc();
        tracing::error!(message = "The forwarder failed; restarting it.", %error, delay_s = delay.as_secs());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = drain.stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// Forwarding failures that stop the forwarder (configuration, not transient errors).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot create the Kafka producer: {0}")]
    Producer(String),
    /// librdkafka's producer hit a fatal error (an idempotent producer refused its producer id,
    /// for example by the cluster's ACLs) and can send nothing more: a new one is made.
    #[error("the Kafka producer failed for good and is made again: {0}")]
    Fatal(String),
    /// Exactly-once: the transactional producer was fenced, because another gateway runs with
    /// the same `kafka.gateway_id`. Forwarding stops until the configuration is fixed and the
    /// gateway restarted: restarting the producer would fence the other gateway in turn.
    #[error("fenced: another gateway runs with the same kafka.gateway_id; forwarding stopped, events stay in the spool ({0})")]
    Fenced(String),
    #[error("file sink: cannot write {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Records a confirmed delivery: spool commit to the destination's confirmation, and event time to it.
pub fn record_delivery(stats: &Stats, now_ms: i64, received_ms: i64, event_ms: i64) {
    let seconds = |from: i64| (now_ms.saturating_sub(from)).max(0) as f64 / 1000.0;
    stats
        .instruments
        .delivery_seconds
        .observe(seconds(received_ms));
    stats
        .instruments
        .event_lag_seconds
        .observe(seconds(event_ms));
    stats.delivered(now_ms);
}

/// Sets a record's timestamp as `policy` says and adds the time headers, as it is sent: the
/// spool keeps the event time. Returns the event time.
pub fn stamp(
    record: &mut tributary_spool::record::Record,
    received_ms: i64,
    policy: TimePolicy,
    stats: &Stats,
) -> i64 {
    let event_ms = record.timestamp_ms;
    let (ts, replaced) = timestamp(policy, event_ms, received_ms, stats);
    record.timestamp_ms = ts;
    record
        .headers
        .extend(time_headers(event_ms, received_ms, replaced));
    event_ms
}

/// A record's Kafka timestamp under `policy`, from its event time and the time the spool
/// received it, and whether that is not the event time (then the event time travels in the
/// `event-time-ms` header). A clamp is counted.
pub fn timestamp(
    policy: TimePolicy,
    event_ms: i64,
    received_ms: i64,
    stats: &Stats,
) -> (i64, bool) {
    let latest = received_ms.saturating_add(policy.max_future.as_millis() as i64);
    match policy.kafka_timestamp {
        TimestampSource::Event => (event_ms, false),
        TimestampSource::Receive => (received_ms, received_ms != event_ms),
        TimestampSource::Clamp if event_ms > latest => {
            stats.instruments.timestamps_clamped.inc();
            (latest, true)
        }
        TimestampSource::Clamp => (event_ms, false),
    }
}

/// The headers a sink adds to a record when it sends it: `received-ms` (the gateway's receive
/// time) always, and `event-time-ms` when the timestamp is not the event time.
pub fn time_headers(event_ms: i64, received_ms: i64, replaced: bool) -> Vec<(String, String)> {
    let mut h = vec![("received-ms".to_owned(), received_ms.to_string())];
    if replaced {
        h.push(("event-time-ms".to_owned(), event_ms.to_string()));
    }
    h
}

/// Exponential backoff for transient failures: 100 ms doubling to 30 s (the default).
pub use tributary_common::backoff::Backoff;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::config::{TimePolicy, TimestampSource};

    #[test]
    fn the_timestamp_policy_clamps_only_events_too_far_ahead_and_counts_them() {
        let stats = Stats::default();
        let clamp = TimePolicy::default();
        let received = 1_700_000_000_000;
        let limit = received + 55 * 60 * 1000;
        assert_eq!(
            timestamp(clamp, received - 5000, received, &stats),
            (received - 5000, false)
        );
        assert_eq!(timestamp(clamp, limit, received, &stats), (limit, false));
        assert_eq!(timestamp(clamp, limit + 1, received, &stats), (limit, true));
        assert_eq!(stats.instruments.timestamps_clamped.get(), 1);
        let receive = TimePolicy {
            kafka_timestamp: TimestampSource::Receive,
            ..clamp
        };
        assert_eq!(timestamp(receive, 5, received, &stats), (received, true));
        let event = TimePolicy {
            kafka_timestamp: TimestampSource::Event,
            ..clamp
        };
        assert_eq!(
            timestamp(event, i64::MAX, received, &stats),
            (i64::MAX, false)
        );
    }

    #[test]
    fn stamping_keeps_the_event_time_in_a_header_when_it_is_replaced() {
        let mut record = tributary_spool::record::Record {
            topic: "t".into(),
            key: b"d".to_vec(),
            value: Vec::new(),
            timestamp_ms: 9_000_000_000_000,
            headers: Vec::new(),
            origin: None,
            event: None,
            mqtt_topic: None,
        };
        let event = stamp(&mut record, 1_000, TimePolicy::default(), &Stats::default());
        assert_eq!(event, 9_000_000_000_000);
        assert_eq!(record.timestamp_ms, 1_000 + 55 * 60 * 1000);
        assert_eq!(
            record.headers,
            [
                ("received-ms".to_owned(), "1000".to_owned()),
                ("event-time-ms".to_owned(), "9000000000000".to_owned())
            ]
        );
    }
}
