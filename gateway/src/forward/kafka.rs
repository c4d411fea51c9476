//! The Kafka sink: an idempotent rdkafka producer fed from the spool in id order.
//!
//! # Settings and why
//! - `enable.idempotence=true`, `acks=all`: no duplicates or reordering from librdkafka's own
//!   retries, and an acknowledgement means the in-sync replicas have it.
//! - `message.timeout.ms=0` (infinite): during an outage messages wait in librdkafka instead of
//!   failing, so a long outage never drops or reorders anything; the spool keeps accepting.
//! - `partitioner=murmur2_random`: the Java client's partitioner, so a key lands on the
//!   partition Java, kafka-python and Spark expect.
//! - Key = device id, timestamp = event time, headers `event-id`, `kind`, `content-type`.
//! - `compression.type=lz4`, `linger.ms=50`: an edge box often sits on a metered or cellular
//!   link; batching for 50 ms and lz4 (cheap on ARM cores) cut requests and bytes. Override
//!   either in `[kafka.properties]` (for example `compression.type = "zstd"`).
//! - TLS and SASL: librdkafka is built with OpenSSL, so `security.protocol`, `ssl.*` and
//!   `sasl.*` (PLAIN, SCRAM, OAUTHBEARER) in `[kafka.properties]` pass straight through.
//!
//! # Flow
//! At most `max_in_flight` records are handed to the producer and not yet confirmed. Their
//! delivery reports come back on one channel ([`Reports`], the producer's context). Each
//! successful delivery report queues the row's id for deletion; ids are deleted in batches, one
//! batch at a time, while sending goes on ([`Acks`]). A
//! failed delivery (only errors librdkafka does not retry itself reach us, such as an unknown
//! topic) stops new sends; once the in-flight records settle, confirmed ids are deleted and
//! reading restarts at the failed row after a backoff, so rows are never skipped.
//!
//! # Records Kafka refuses for good
//! Some refusals are about the record itself and will never succeed: too large
//! (`message.max.bytes`, locally or at the broker), an invalid timestamp (Kafka 4.0 refuses
//! records more than an hour in the future by default), an invalid record. The broker refuses
//! the whole produce batch for one such record, so after a refusal the forwarder sends one row
//! at a time through the highest row refused: only a row refused while sent alone is to blame.
//! After [`QUARANTINE_AFTER`] such failures of the same row, it is moved to the spool's
//! quarantine with the reason (`tributary spool quarantine` lists, requeues or drops
//! it), counted (`quarantined`) and logged at error level, and the stream flows on. That
//! device's later events are then delivered before it: its order has a documented gap.
//!
//! Refusals about the gateway's rights or the cluster's state are not about the record: an ACL
//! without Write, a topic that does not exist, refused credentials, too few in-sync replicas.
//! They stall the affected records, which stay in the spool in order and flow on by themselves
//! once the operator fixes the cluster; [`explain`] says what to fix, in the log, in
//! `/readyz?verbose` and on the status page.
//!
//! At most `max_in_flight` records and about `max_in_flight_bytes` bytes are in librdkafka at
//! once. With `live_share` above 0, a backlog drains with fresh events interleaved ahead of it
//! ([`super::cursor`]).
//!
//! Only this module names rdkafka types.

mod stall;
#[cfg(test)]
mod tests;
pub mod transactional;

use std::time::Duration;

use futures::future::{BoxFuture, OptionFuture};
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::Instant;

use super::config::{client_config, KafkaConfig, TopicSpec};
use super::cursor::Cursor;
use super::{Backoff, Drain, ForwardError};
use crate::observe::stats::Stats;
use tributary_spool::{Spool, Spooled};

const FETCH: usize = 1000;
const ACK_BATCH: usize = 1000;
/// Failures of one row with a permanent error before it is quarantined.
pub const QUARANTINE_AFTER: u32 = 3;

/// A bounded name for an error: librdkafka's code, as its enum names it.
fn kind_of(error: &rdkafka::error::KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => "MessageSizeTooLarge",
        Some(RDKafkaErrorCode::InvalidTimestamp) => "InvalidTimestamp",
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => "TopicAuthorizationFailed",
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => "UnknownTopicOrPartition",
        Some(RDKafkaErrorCode::UnknownTopic) => "UnknownTopic",
        Some(RDKafkaErrorCode::InvalidRecord) => "InvalidRecord",
        Some(RDKafkaErrorCode::QueueFull) => "QueueFull",
        Some(RDKafkaErrorCode::MessageTimedOut) => "MessageTimedOut",
        Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => "ClusterAuthorizationFailed",
        Some(RDKafkaErrorCode::SaslAuthenticationFailed) => "SaslAuthenticationFailed",
        Some(RDKafkaErrorCode::Authentication) => "Authentication",
        Some(RDKafkaErrorCode::SSL) => "SSL",
        Some(RDKafkaErrorCode::NotEnoughReplicas) => "NotEnoughReplicas",
        Some(RDKafkaErrorCode::NotEnoughReplicasAfterAppend) => "NotEnoughReplicasAfterAppend",
        Some(RDKafkaErrorCode::AllBrokersDown) => "AllBrokersDown",
        Some(RDKafkaErrorCode::BrokerTransportFailure) => "BrokerTransportFailure",
        Some(RDKafkaErrorCode::Fatal) => "Fatal",
        Some(_) => "other",
        None => "client",
    }
}

/// Whether a delivery error is about the record itself, so retrying can never succeed.
///
/// A refusal about the gateway's rights (an ACL that does not grant Write, a topic that does not
/// exist yet) is not: the operator fixes the cluster and the same records go through. Those
/// stall the stream with the records kept in the spool, in order, and say why ([`explain`]).
fn permanent(error: &rdkafka::error::KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidTimestamp
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::UnsupportedForMessageFormat
        )
    )
}

/// What an operator reads for a failure: the error, and for the refusals an operator must fix
/// on the cluster's side, what to fix. `topic` is empty for errors of the whole client.
pub fn explain(error: &rdkafka::error::KafkaError, topic: &str) -> String {
    let fix = match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => format!(
            "the cluster's ACLs do not let the gateway's principal write to topic {topic:?}: \
             grant it Describe and Write on the topic; records wait in the spool meanwhile"
        ),
        Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => "the cluster's ACLs refuse the \
             gateway's principal a cluster operation: its idempotent producer needs Write on at \
             least one topic (or IdempotentWrite on the cluster, on brokers before 3.0), and \
             creating topics needs Create; records wait in the spool meanwhile"
            .into(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            format!(
                "topic {topic:?} does not exist and the cluster does not create it: create it \
                 (or set kafka.auto_create = true where the gateway may); records wait in the \
                 spool meanwhile"
            )
        }
        Some(RDKafkaErrorCode::SaslAuthenticationFailed | RDKafkaErrorCode::Authentication) => {
            "Kafka refused the gateway's credentials: check sasl.mechanisms, sasl.username and \
             sasl.password in [kafka.properties]; records wait in the spool meanwhile"
                .into()
        }
        Some(RDKafkaErrorCode::SSL) => "TLS to Kafka failed: check ssl.ca.location (the CA that \
             signed the brokers' certificates) and the brokers' names; records wait in the spool \
             meanwhile"
            .into(),
        Some(
            RDKafkaErrorCode::NotEnoughReplicas | RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
        ) => {
            format!(
                "topic {topic:?} has fewer in-sync replicas than min.insync.replicas, so Kafka \
                 refuses acks=all writes; records wait in the spool until the brokers are back"
            )
        }
        _ => return error.to_string(),
    };
    format!("{error}: {fix}")
}

/// Counts an error in `tributary_forward_errors_total{topic, error}`.
fn count_error(stats: &Stats, topic: &str, kind: &str) {
    stats
        .instruments
        .forward_errors
        .get_or_create(&crate::observe::stats::ForwardErrorLabel {
            topic: topic.to_owned(),
            error: kind.to_owned(),
        })
        .inc();
}

/// Counts an error of the whole client, not of one topic's record, in
/// `tributary_forward_errors_total{topic=""}`.
fn count_client_error(stats: &Stats, kind: &str) {
    count_error(stats, "", kind);
}

/// Rows that failed with a permanent error while sent alone: how often, and the last error.
type Refused = std::collections::HashMap<i64, (u32, String)>;

/// Notes that row `id` was refused for good while sent alone, towards [`QUARANTINE_AFTER`].
fn refused_alone(refused: &mut Refused, id: i64, error: String) {
    let entry = refused.entry(id).or_insert((0, String::new()));
    entry.0 += 1;
    entry.1 = error;
}

/// A record while librdkafka holds it: its delivery report's opaque, which [`Reports`] turns
/// into an [`Outcome`].
struct InFlight {
    id: i64,
    /// Sent alone, while isolating a refusal: its outcome is its own, not its batch's.
    alone: bool,
    topic: String,
    /// Bytes it counts against `max_in_flight_bytes` ([`tributary_spool::record::Record::size`]).
    size: usize,
    /// When the row was committed to the spool, and the record's event time (ms).
    received_ms: i64,
    event_ms: i64,
}

/// A delivery outcome.
struct Outcome {
    record: Box<InFlight>,
    /// The delivery error, if it failed, and whether it is permanent.
    error: Option<(String, bool)>,
    /// The error's kind for the metric: librdkafka's code name.
    kind: &'static str,
}

impl Outcome {
    /// `record`'s outcome, given its delivery error (`None`: delivered).
    fn of(record: Box<InFlight>, error: Option<&rdkafka::error::KafkaError>) -> Self {
        let (error, kind) = match error {
            None => (None, ""),
            Some(error) => (
                Some((explain(error, &record.topic), permanent(error))),
                kind_of(error),
            ),
        };
        Self {
            record,
            error,
            kind,
        }
    }
}

/// The producer's context: every delivery report becomes an [`Outcome`] on one channel, read
/// by the forwarder's loop. (rdkafka's `FutureProducer` gives each record a oneshot channel
/// and the forwarder a future to poll: two allocations and a future more per record.)
/// librdkafka reports every record it accepted exactly once; a report after the forwarder
/// stopped has no reader and is dropped: its row stays in the spool.
struct Reports {
    outcomes: UnboundedSender<Outcome>,
    stats: Stats,
}

impl ClientContext for Reports {
    /// Errors of the whole client, not of one record: credentials or TLS refused, every broker
    /// unreachable, a fatal producer error. librdkafka retries them itself; the operator sees
    /// the last one in `/readyz?verbose` and the status page, and counts in
    /// `tributary_forward_errors_total{topic=""}`.
    ///
    /// A connection to one broker failing is counted and logged at warning level only: with
    /// the others up, nothing is wrong for the gateway, and the operator's attention belongs to
    /// what stops deliveries (said here, or by the stall check).
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let kind = kind_of(&error);
        count_client_error(&self.stats, kind);
        if kind == "BrokerTransportFailure" {
            tracing::warn!(message = "A Kafka broker connection failed.", reason, kind);
            return;
        }
        let text = explain(&error, "");
        tracing::error!(message = "Kafka client error.", error = %text, reason, kind);
        let text = format!("{text} ({reason})");
        if kind == "AllBrokersDown" {
            self.stats
                .forward_failed_vaguely(text, tributary_common::clock::now_ms());
        } else {
            self.stats
                .forward_failed(text, tributary_common::clock::now_ms());
        }
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, record: Box<InFlight>) {
        let error = result.as_ref().err().map(|(error, _)| error);
        if let Some(error) = error {
            let error = explain(error, &record.topic);
            tracing::warn!(message = "Kafka delivery failed.", %error, topic = %record.topic, id = record.id);
        }
        let _ = self.outcomes.send(Outcome::of(record, error));
    }
}

/// Forwards spooled records to Kafka until drained after `drain.stop`.
pub async fn run(
    config: KafkaConfig,
    time: super::TimePolicy,
    spool: Spool,
    stats: Stats,
    drain: Drain,
) -> Result<(), ForwardError> {
    if let Some(eos) = config.exactly_once.clone() {
        return transactional::run(config, eos, time, spool, stats, drain).await;
    }
    let (reports, mut outcomes) = unbounded_channel();
    let producer: ThreadedProducer<Reports> = client_config(&config)
        .create_with_context(Reports {
            outcomes: reports.clone(),
            stats: stats.clone(),
        })
        .map_err(|e| ForwardError::Producer(e.to_string()))?;
    if let Some(spec) = config.create_topics.clone() {
        let admin = client_config(&config)
            .create::<AdminClient<DefaultClientContext>>()
            .map_err(|e| ForwardError::Producer(e.to_string()))?;
        let stop = drain.stop.clone();
        let stats = stats.clone();
        tokio::spawn(async move { create_topics(admin, spec, stats, stop).await });
    }
    // For asking the cluster why records in flight are not confirmed (see [`stall`]).
    let metadata = std::sync::Arc::new(
        client_config(&config)
            .create::<AdminClient<DefaultClientContext>>()
            .map_err(|e| ForwardError::Producer(e.to_string()))?,
    );
    let mut last_report = Instant::now();
    let mut sent_topics = std::collections::BTreeSet::new();
    let mut diagnosis: Option<tokio::task::JoinHandle<_>> = None;
    let mut stall_tick = tokio::time::interval(stall::STALL_AFTER);
    let max = config.max_in_flight.get();
    let max_bytes = config.max_in_flight_bytes.get();
    let low_water = (max / 2).clamp(1, FETCH);
    // Records handed to the producer whose outcome has not been read yet.
    let mut inflight = 0usize;
    let mut inflight_bytes = 0usize;
    let mut cursor = Cursor::new(config.live_share, 2 * max);
    let mut rewind: Option<i64> = None;
    let mut acks = Acks::default();
    let mut backoff = Backoff::default();
    let mut refused = Refused::default();
    let mut idle = false;
    // Kafka refuses a whole produce batch for one bad record (an invalid timestamp, say), so a
    // refusal does not say which record is at fault. After one, rows are sent one at a time
    // through the highest row that was refused: only a row refused while alone counts towards
    // the quarantine, and the good rows batched with a bad one are delivered.
    let mut isolate = false;
    let mut isolate_through = i64::MIN;
    // librdkafka raised a fatal error: the producer sends nothing more (each record comes back
    // `Fatal`). Once nothing is in flight, the forwarder returns and the supervisor makes a new
    // producer; the rows are still in the spool.
    let mut fatal = false;
    let mut outcome = Ok(());
    let mut deadline: Option<Instant> = None;
    let mut ack_tick = tokio::time::interval(Duration::from_millis(50));

    loop {
        if deadline.is_none() && drain.stop.is_cancelled() {
            deadline = Some(drain.deadline());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            acks.flush(&spool, &stats).await;
            tracing::warn!(
                message = "Shutdown grace period ran out; unforwarded events stay in the spool.",
                in_flight = inflight
            );
            break;
        }
        // Refill in chunks, not one slot per delivery report: each refill is a round trip to
        // the spool's thread and a query.
        let room = max.saturating_sub(inflight);
        let wanted = if isolate { 1 } else { room.min(FETCH) };
        if rewind.is_none()
            && !idle
            && (room >= low_water || inflight == 0)
            && (!isolate || inflight == 0)
            && inflight_bytes < max_bytes
        {
            match refill(&spool, &mut cursor, wanted).await {
                Ok(rows) if rows.is_empty() => idle = true,
                Ok(rows) => {
                    if inflight == 0 {
                        last_report = Instant::now();
                    }
                    for row in rows {
                        if !sent_topics.contains(&row.record.topic) {
                            sent_topics.insert(row.record.topic.clone());
                        }
                        inflight += 1;
                        inflight_bytes += send(&producer, row, isolate, time, &stats, &reports);
                    }
                    stats.instruments.kafka_inflight.set(inflight as i64);
                    stats
                        .instruments
                        .kafka_inflight_bytes
                        .set(inflight_bytes as i64);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(message = "Reading the spool failed.", %error);
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
        }
        if fatal && inflight == 0 {
            let why = producer
                .client()
                .fatal_error()
                .map(|(code, reason)| {
                    let error = rdkafka::error::KafkaError::Global(code);
                    format!("{} ({reason})", explain(&error, ""))
                })
                .unwrap_or_else(|| "fatal error".into());
            outcome = Err(ForwardError::Fatal(why));
            break;
        }
        if let (Some(failed), true) = (rewind, inflight == 0) {
            acks.flush(&spool, &stats).await;
            if quarantine(&spool, &stats, &mut refused).await {
                // The stream can go on at once, in batches: what blocked it is out of the way.
                backoff.reset();
                isolate = false;
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                message = "Retrying from the first undelivered row.",
                id = failed,
                delay_ms = delay.as_millis() as u64
            );
            tokio::time::sleep(delay).await;
            cursor.rewind(failed);
            rewind = None;
            idle = false;
            continue;
        }
        if deadline.is_some() && idle && inflight == 0 {
            break;
        }
        let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(first) = outcomes.recv(), if inflight > 0 => {
                // Take every report that is already in, not just the first.
                last_report = Instant::now();
                sent_topics.clear();
                let mut next = Some(first);
                let now = tributary_common::clock::now_ms();
                while let Some(Outcome { record: o, error, kind }) = next {
                    inflight = inflight.saturating_sub(1);
                    inflight_bytes = inflight_bytes.saturating_sub(o.size);
                    match error {
                        None => {
                            super::record_delivery(&stats, now, o.received_ms, o.event_ms);
                            if o.alone && o.id >= isolate_through {
                                isolate = false;
                            }
                            acks.confirmed.push((o.id, o.topic));
                            if rewind.is_none() {
                                backoff.reset();
                            }
                        }
                        Some((error, permanent)) => {
                            fatal |= kind == "Fatal";
                            count_error(&stats, &o.topic, kind);
                            stats.forward_failed(format!("{}: {error}", o.topic), now);
                            if permanent && o.alone {
                                refused_alone(&mut refused, o.id, error);
                            }
                            if permanent {
                                isolate = true;
                                isolate_through = isolate_through.max(o.id);
                            }
                            rewind = Some(rewind.map_or(o.id, |r| r.min(o.id)));
                        }
                    }
                    next = outcomes.try_recv().ok();
                }
                stats.instruments.kafka_inflight.set(inflight as i64);
                stats.instruments.kafka_inflight_bytes.set(inflight_bytes as i64);
                if acks.confirmed.len() >= ACK_BATCH {
                    acks.start(&spool);
                }
            }
            Some(done) = OptionFuture::from(acks.running.as_mut()) => {
                acks.finished(done, &stats);
                if acks.confirmed.len() >= ACK_BATCH {
                    acks.start(&spool);
                }
            }
            _ = spool.appended(), if idle && rewind.is_none() => {
                tokio::time::sleep(super::COALESCE).await;
                idle = false;
            }
            _ = ack_tick.tick() => acks.start(&spool),
            _ = stall_tick.tick(), if inflight > 0 && diagnosis.is_none() => {
                if last_report.elapsed() >= stall::STALL_AFTER {
                    diagnosis = Some(tokio::spawn(stall::diagnose(metadata.clone(), sent_topics.clone())));
                }
            }
            Some(found) = OptionFuture::from(diagnosis.as_mut()), if diagnosis.is_some() => {
                diagnosis = None;
                // A report that came in meanwhile means it is moving again.
                if inflight > 0 && last_report.elapsed() >= stall::STALL_AFTER {
                    let (text, kind) = stall::describe(
                        found.ok().flatten().as_deref(),
                        inflight,
                        last_report.elapsed().as_secs(),
                    );
                    tracing::warn!(message = "Kafka confirms nothing.", reason = %text, kind);
                    count_client_error(&stats, kind);
                    // Failing since the last report, not since this check.
                    let since = tributary_common::clock::now_ms()
                        .saturating_sub(last_report.elapsed().as_millis() as i64);
                    if kind == "Stalled" {
                        stats.forward_failed_vaguely(text, since);
                    } else {
                        stats.forward_failed(text, since);
                    }
                }
            }
            _ = drain.stop.cancelled(), if deadline.is_none() => {}
            _ = tokio::time::sleep_until(until), if deadline.is_some() => {}
        }
    }
    acks.flush(&spool, &stats).await;
    // Anything still queued inside librdkafka was not confirmed and stays in the spool. Flushing
    // and dropping the producer (which joins its polling thread) block: not on an async worker.
    drop(outcomes);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = producer.flush(Duration::from_millis(100));
        drop(producer);
    })
    .await;
    outcome
}

/// Creates the route topics that are missing, retrying while the cluster is unreachable.
/// Forwarding does not wait for it: records for a missing topic stay in the spool meanwhile.
/// A topic the cluster will not create (no Create ACL, a replication factor above its brokers)
/// is said at error level and in `/readyz?verbose`, with the command that creates it by hand.
async fn create_topics(
    admin: AdminClient<DefaultClientContext>,
    spec: TopicSpec,
    stats: Stats,
    stop: tokio_util::sync::CancellationToken,
) {
    let topics: Vec<NewTopic> = spec
        .topics
        .iter()
        .map(|(name, partitions, replication)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(*replication))
        })
        .collect();
    let mut backoff = Backoff::default();
    loop {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        match admin.create_topics(&topics, &options).await {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(topic) => tracing::info!(message = "Created topic.", %topic),
                        Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                            tracing::debug!(message = "Topic exists.", %topic)
                        }
                        Err((topic, code)) => {
                            let (partitions, replication) = spec
                                .topics
                                .iter()
                                .find(|(n, _, _)| *n == topic)
                                .map_or((0, 0), |(_, p, r)| (*p, *r));
                            let text = format!(
                                "cannot create topic {topic:?} ({code}): grant the gateway's \
                                 principal Create, or create it: kafka-topics.sh --create \
                                 --topic {topic} --partitions {partitions} \
                                 --replication-factor {replication}"
                            );
                            tracing::error!(message = "Cannot create topic.", %topic, error = %code, reason = %text);
                            stats.forward_failed(text, tributary_common::clock::now_ms());
                        }
                    }
                }
                return;
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(message = "Creating topics failed; retrying.", %error, delay_ms = delay.as_millis() as u64);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Hands one record to the producer; returns the bytes it counts in flight. Its outcome
/// arrives on `reports`: from the delivery report, or at once when the producer refuses it
/// (its queue is full, the record too large).
fn send(
    producer: &ThreadedProducer<Reports>,
    row: Spooled,
    alone: bool,
    time: super::TimePolicy,
    stats: &Stats,
    reports: &UnboundedSender<Outcome>,
) -> usize {
    let Spooled {
        id,
        mut record,
        received_ms,
    } = row;
    let event_ms = super::stamp(&mut record, received_ms, time, stats);
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (key, value) in &record.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let size = record.size();
    let pending = Box::new(InFlight {
        id,
        alone,
        topic: record.topic.clone(),
        size,
        received_ms,
        event_ms,
    });
    let queued = producer.send(
        BaseRecord::with_opaque_to(&record.topic, pending)
            .key(&record.key)
            .payload(&record.value)
            .timestamp(record.timestamp_ms)
            .headers(headers),
    );
    if let Err((error, refused)) = queued {
        tracing::warn!(message = "Kafka producer refused a record.", %error, topic = %record.topic, id);
        let _ = reports.send(Outcome::of(refused.delivery_opaque, Some(&error)));
    }
    size
}

/// Reads the next rows as the cursor plans them: live rows first while a backlog drains.
async fn refill(
    spool: &Spool,
    cursor: &mut Cursor,
    room: usize,
) -> Result<Vec<Spooled>, tributary_spool::SpoolError> {
    if cursor.watches_for_backlog() {
        cursor.observe_last_id(spool.last_id().await?);
    }
    let mut rows = Vec::new();
    for fetch in cursor.plan(room) {
        let got = spool
            .fetch_range(fetch.after, fetch.until, fetch.limit)
            .await?;
        cursor.advance(&fetch, got.last().map(|r| r.id));
        // Usually one fetch: take its rows as they are rather than copying them into a new Vec.
        if rows.is_empty() {
            rows = got;
        } else {
            rows.extend(got);
        }
    }
    Ok(rows)
}

/// Moves rows that failed [`QUARANTINE_AFTER`] times with a permanent error to the spool's
/// quarantine; returns whether any moved.
async fn quarantine(spool: &Spool, stats: &Stats, refused: &mut Refused) -> bool {
    let due: Vec<(i64, String)> = refused
        .iter()
        .filter(|(_, (n, _))| *n >= QUARANTINE_AFTER)
        .map(|(id, (_, e))| (*id, e.clone()))
        .collect();
    let mut moved = false;
    for (id, error) in due {
        let reason = format!("refused by Kafka {QUARANTINE_AFTER} times: {error}");
        match spool.quarantine(id, reason.clone()).await {
            Ok(topic) => {
                refused.remove(&id);
                if let Some(topic) = topic {
                    tracing::error!(message = "Record quarantined: Kafka refuses it for good; the stream goes on without it.", id, %topic, %reason);
                    stats.record_discarded(
                        &topic,
                        crate::observe::stats::Discarded::Quarantined,
                        1,
                    );
                    moved = true;
                }
            }
            Err(error) => {
                tracing::warn!(message = "Quarantining a refused record failed; will retry.", id, %error)
            }
        }
    }
    moved
}

/// Delivered rows on their way out of the spool. One delete runs at a time, beside sending, so
/// the forwarder never waits for the writer's commit; a delete that fails is tried again with
/// the next batch (if the gateway stops first, a restart resends those rows, which the
/// `event-id` header identifies).
#[derive(Default)]
struct Acks {
    /// Delivered, not yet being deleted.
    confirmed: Vec<(i64, String)>,
    /// The delete in progress; it resolves with its batch and the outcome.
    running: Option<BoxFuture<'static, AckDone>>,
}

type AckDone = (Vec<(i64, String)>, Result<(), tributary_spool::SpoolError>);

impl Acks {
    /// Starts deleting what is confirmed, unless a delete is running or nothing is confirmed.
    fn start(&mut self, spool: &Spool) {
        if self.running.is_some() || self.confirmed.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.confirmed);
        let spool = spool.clone();
        self.running = Some(
            async move {
                let outcome = spool.ack(batch.iter().map(|(id, _)| *id).collect()).await;
                (batch, outcome)
            }
            .boxed(),
        );
    }

    /// Counts a finished delete's rows forwarded, or keeps them for the next one.
    fn finished(&mut self, (batch, outcome): AckDone, stats: &Stats) {
        self.running = None;
        match outcome {
            Ok(()) => count_forwarded(stats, &batch),
            Err(error) => {
                tracing::warn!(message = "Deleting delivered rows from the spool failed; will retry.", %error);
                self.confirmed.extend(batch);
            }
        }
    }

    /// Waits for the running delete, then deletes the rest: before a rewind and at the end.
    async fn flush(&mut self, spool: &Spool, stats: &Stats) {
        if let Some(running) = self.running.take() {
            let done = running.await;
            self.finished(done, stats);
        }
        self.start(spool);
        if let Some(running) = self.running.take() {
            let done = running.await;
            self.finished(done, stats);
        }
    }
}

/// Counts delivered rows per topic: one update per run of the same topic.
fn count_forwarded(stats: &Stats, batch: &[(i64, String)]) {
    for run in batch.chunk_by(|a, b| a.1 == b.1) {
        if let Some((_, topic)) = run.first() {
            stats.record_forwarded(topic, run.len() as u64);
        }
    }
}
