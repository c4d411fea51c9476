//! Exactly once into Kafka (`kafka.delivery = "exactly-once"`): each batch of spool rows is one
//! Kafka transaction, together with a progress marker saying how far the spool has been
//! delivered.
//!
//! # Design
//! - The producer is transactional: `transactional.id = tributary-{gateway_id}`. Opening it
//!   (`init_transactions`) fences any earlier producer with the same id: a gateway restarted
//!   after a crash fences its own zombie, and the transaction that zombie left open is aborted
//!   before this one reads anything. A second live gateway with the same id is fenced in turn,
//!   and a fenced forwarder stops for good, loudly ([`super::super::ForwardError::Fenced`]).
//! - A batch is up to `transaction_max_events` rows (and about `max_in_flight_bytes`), read in strict
//!   id order (`live_share` does not apply). Its records and one marker go in one
//!   transaction. The marker is a record in the progress topic (compacted, one partition, made
//!   if missing) keyed by the gateway id, whose value names the spool file (its instance
//!   number) and the highest row id the transaction holds ([`Marker`]).
//! - After the commit, the rows are deleted from the spool as in at-least-once mode.
//! - At start, after `init_transactions` and before producing anything, the forwarder reads
//!   the last committed marker (read committed). Rows of this spool at or below it were
//!   committed to Kafka by an earlier run that died before deleting them: they are deleted
//!   without being sent again. A marker of another spool file (a spool salvaged or replaced)
//!   is not trusted: nothing is deleted, and that is logged.
//!
//! # Invariants
//! - A row is deleted only after the transaction holding it (and the marker covering it)
//!   committed, or when a committed marker of this spool covers it.
//! - Row ids never repeat within a spool file (`spool_meta.id_floor`), so "through id N" stays
//!   true across restarts.
//! - Whatever the crash point (before the commit, during it, after it and before the delete),
//!   each row reaches read-committed consumers once: an uncommitted transaction is aborted by
//!   the next `init_transactions`, and a committed one's rows are deleted by its marker.
//!
//! # Errors, as Kafka documents them
//! - A transaction that fails with an abortable error (a record refused, a broker lost mid-way,
//!   the transaction timing out in an outage) is aborted and its batch sent again after a
//!   backoff, in a new transaction. A record refused for good is found by sending one row per
//!   transaction through the highest refused row and quarantined after
//!   [`super::QUARANTINE_AFTER`] refusals alone, as in at-least-once mode.
//! - A retriable error of the commit itself is retried as it stands.
//! - Fenced or fatal: forwarding stops without touching the spool: fenced for good (another
//!   gateway has this id; fix the configuration and restart), fatal with a new producer from
//!   the supervisor. Both are logged at error level, counted and shown in `/readyz?verbose`
//!   and on the status page.

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{
    count_client_error, count_error, explain, kind_of, quarantine, refused_alone, send, InFlight,
    Outcome, Refused, Reports,
};
use crate::forward::config::{client_config, ExactlyOnce, KafkaConfig};
use crate::forward::{Backoff, Drain, ForwardError, TimePolicy};
use crate::observe::stats::Stats;
use tributary_spool::{Spool, Spooled};

/// How long one call of the transaction API may block (librdkafka retries inside it).
const CALL: Duration = Duration::from_secs(30);

/// The progress marker: the value of a record in the progress topic, keyed by the gateway id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    pub gateway_id: String,
    /// The spool file's instance number ([`Spool::instance`]).
    pub spool: i64,
    /// Every row of that spool at or below this id is committed to Kafka.
    pub through: i64,
    /// When the gateway began the transaction that committed this marker (gateway clock, ms
    /// since the Unix epoch).
    pub committed_ms: i64,
}

type Shared = Arc<ThreadedProducer<Reports>>;

/// What became of one batch's transaction.
enum Batch {
    Committed(Vec<InFlight>),
    /// Aborted; the rows stay in the spool and go again. The outcomes of its records.
    Aborted(String, Vec<Outcome>),
    /// Fenced, or a fatal error: no more transactions from this producer.
    Over(ForwardError),
}

/// Forwards spooled rows to Kafka in transactions until drained after `drain.stop`.
pub async fn run(
    config: KafkaConfig,
    eos: ExactlyOnce,
    time: TimePolicy,
    spool: Spool,
    stats: Stats,
    drain: Drain,
) -> Result<(), ForwardError> {
    let (reports, mut outcomes) = unbounded_channel();
    let producer: Shared = Arc::new(
        client_config(&config)
            .create_with_context(Reports {
                outcomes: reports.clone(),
                stats: stats.clone(),
            })
            .map_err(|e| ForwardError::Producer(e.to_string()))?,
    );
    if let Some(spec) = config.create_topics.clone() {
        let admin = client_config(&config)
            .create::<AdminClient<DefaultClientContext>>()
            .map_err(|e| ForwardError::Producer(e.to_string()))?;
        let (stop, stats) = (drain.stop.clone(), stats.clone());
        tokio::spawn(async move { super::create_topics(admin, spec, stats, stop).await });
    }
    let Some(()) = progress_topic(&config, &eos, &producer, &stats, &drain).await? else {
        return Ok(());
    };
    let Some(()) = init(&producer, &stats, &drain).await? else {
        return Ok(());
    };
    let Some(mut after) = resume(&config, &eos, &spool, &stats, &drain).await? else {
        return Ok(());
    };
    tracing::info!(message = "Forwarding exactly once.", gateway_id = %eos.gateway_id, progress_topic = %eos.progress_topic, after);

    let mut backoff = Backoff::default();
    let mut refused = Refused::default();
    let mut isolate_through = i64::MIN;
    let max = eos.max_events.get();
    let max_bytes = config.max_in_flight_bytes.get();
    let mut deadline = None;
    let mut prefetched: Option<Vec<Spooled>> = None;
    let mut deleting: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        if deadline.is_none() && drain.stop.is_cancelled() {
            deadline = Some(drain.deadline());
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            tracing::warn!(
                message = "Shutdown grace period ran out; unforwarded events stay in the spool."
            );
            break;
        }
        let isolating = after < isolate_through;
        let limit = if isolating { 1 } else { max };
        let fetched = match prefetched.take() {
            Some(rows) => Ok(rows),
            None => spool.fetch_range(after, i64::MAX, limit).await,
        };
        let mut rows = match fetched {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(message = "Reading the spool failed.", %error);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if rows.is_empty() {
            if deadline.is_some() {
                break;
            }
            tokio::select! {
                _ = spool.appended() => tokio::time::sleep(crate::forward::COALESCE).await,
                _ = drain.stop.cancelled() => {}
            }
            continue;
        }
        let mut bytes = 0;
        if let Some(cut) = rows.iter().position(|r| {
            bytes += r.record.size();
            bytes > max_bytes
        }) {
            rows.truncate(cut.max(1));
        }
        let through = rows.last().map_or(after, |r| r.id);
        let marker = Marker {
            gateway_id: eos.gateway_id.clone(),
            spool: spool.instance(),
            through,
            committed_ms: tributary_common::clock::now_ms(),
        };
        // The next batch is read while this one commits; it is used only if this one commits.
        let next = async {
            match isolating {
                true => None,
                false => spool.fetch_range(through, i64::MAX, limit).await.ok(),
            }
        };
        let (batch, next) = tokio::join!(
            transact(
                &producer,
                &eos,
                rows,
                &marker,
                isolating,
                time,
                &stats,
                &reports,
                &mut outcomes,
            ),
            next
        );
        match batch {
            Batch::Committed(delivered) => {
                let now = tributary_common::clock::now_ms();
                for o in &delivered {
                    crate::forward::record_delivery(&stats, now, o.received_ms, o.event_ms);
                }
                let forwarded: Vec<(i64, String)> =
                    delivered.into_iter().map(|o| (o.id, o.topic)).collect();
                // One delete at a time, beside the next transaction. One that fails is not
                // retried: the marker covers these rows, and the next start deletes them
                // without sending them again.
                if let Some(previous) = deleting.take() {
                    let _ = previous.await;
                }
                let (spool2, stats2) = (spool.clone(), stats.clone());
                deleting = Some(tokio::spawn(async move {
                    let ids = forwarded.iter().map(|(id, _)| *id).collect();
                    match spool2.ack(ids).await {
                        Ok(()) => super::count_forwarded(&stats2, &forwarded),
                        Err(error) => {
                            tracing::warn!(message = "Deleting committed rows from the spool failed; the next start deletes them by the marker.", %error)
                        }
                    }
                }));
                after = through;
                prefetched = next.filter(|rows| !rows.is_empty());
                backoff.reset();
            }
            Batch::Aborted(why, results) => {
                for Outcome {
                    record: o,
                    error,
                    kind,
                } in results
                {
                    let Some((error, permanent)) = error else {
                        continue;
                    };
                    count_error(&stats, &o.topic, kind);
                    if permanent {
                        isolate_through = isolate_through.max(o.id);
                        if o.alone {
                            refused_alone(&mut refused, o.id, error);
                        }
                    }
                }
                stats.forward_failed(
                    format!("transaction aborted: {why}"),
                    tributary_common::clock::now_ms(),
                );
                if quarantine(&spool, &stats, &mut refused).await {
                    backoff.reset();
                    continue;
                }
                let delay = backoff.next_delay();
                tracing::warn!(message = "Transaction aborted; its rows go again.", reason = %why, after, delay_ms = delay.as_millis() as u64);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = drain.stop.cancelled(), if deadline.is_none() => {}
                }
            }
            Batch::Over(error) => {
                let kind = match error {
                    ForwardError::Fenced(_) => "Fenced",
                    _ => "Fatal",
                };
                count_client_error(&stats, kind);
                // The supervisor shows it (`forward_failed`) and decides whether to restart.
                return Err(error);
            }
        }
    }
    if let Some(last) = deleting.take() {
        let _ = last.await;
    }
    let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
    Ok(())
}

/// One batch in one transaction: begin, the records, the marker, commit. Waits for every
/// record's outcome before it returns.
#[allow(clippy::too_many_arguments)]
async fn transact(
    producer: &Shared,
    eos: &ExactlyOnce,
    rows: Vec<Spooled>,
    marker: &Marker,
    alone: bool,
    time: TimePolicy,
    stats: &Stats,
    reports: &UnboundedSender<Outcome>,
    outcomes: &mut UnboundedReceiver<Outcome>,
) -> Batch {
    // Reports left from an earlier, aborted transaction's records are stale.
    while outcomes.try_recv().is_ok() {}
    if let Err(error) = producer.begin_transaction() {
        // No transaction is open, so there is nothing to abort.
        return match over(&error, fatal_code(producer)) {
            Some(end) => Batch::Over(end),
            None => Batch::Aborted(explain(&error, ""), Vec::new()),
        };
    }
    let expected = rows.len() + 1;
    for row in rows {
        send(producer, row, alone, time, stats, reports);
    }
    let value = serde_json::to_vec(marker).unwrap_or_default();
    let pending = Box::new(InFlight {
        id: 0,
        alone: false,
        topic: eos.progress_topic.clone(),
        size: value.len(),
        received_ms: 0,
        event_ms: 0,
    });
    if let Err((error, refused)) = producer.send(
        BaseRecord::with_opaque_to(&eos.progress_topic, pending)
            .key(&eos.gateway_id)
            .payload(&value),
    ) {
        let _ = reports.send(Outcome::of(refused.delivery_opaque, Some(&error)));
    }
    // Every record's delivery report first: then the commit's own flush finds the queue empty
    // and returns at once. (rdkafka's flush polls in steps of 100 ms, which the producer's own
    // thread leaves nothing to serve: every commit took 100 ms more than the cluster did.)
    // Records time out at the transaction timeout (`message.timeout.ms`), so all report by then.
    let mut results = collect(outcomes, expected, eos.transaction_timeout + CALL).await;
    // A record refused before it reached the cluster (too large for the producer, say) leaves
    // the transaction committable without it; its row would then sit below a marker that
    // claims it. So any refusal, or a report missing, aborts the batch.
    let refused = results
        .iter()
        .find_map(|o| o.error.as_ref().map(|(e, _)| e.clone()))
        .or_else(|| {
            (results.len() < expected)
                .then(|| format!("{} of {expected} records unconfirmed", results.len()))
        });
    if let Some(why) = refused {
        return match abort(producer).await {
            Some(end) => Batch::Over(end),
            None => {
                let missing = expected.saturating_sub(results.len());
                results.extend(collect(outcomes, missing, CALL).await);
                count_client_error(stats, "RecordRefused");
                Batch::Aborted(why, results)
            }
        };
    }
    let committing = std::time::Instant::now();
    let committed = loop {
        let p = producer.clone();
        let result = match tokio::task::spawn_blocking(move || p.commit_transaction(CALL)).await {
            Ok(result) => result,
            Err(e) => return Batch::Over(ForwardError::Fatal(e.to_string())),
        };
        match result {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.txn_requires_abort() => {
                tracing::warn!(message = "Committing a transaction failed; retrying.", error = %e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => break other,
        }
    };
    tracing::debug!(
        message = "Transaction ended.",
        rows = expected - 1,
        commit_ms = committing.elapsed().as_millis() as u64,
        ok = committed.is_ok()
    );
    let error = match committed {
        Ok(()) => {
            // Every record reported delivered before the commit (checked above).
            let delivered = results
                .into_iter()
                .filter(|o| o.record.id > 0)
                .map(|o| *o.record)
                .collect();
            return Batch::Committed(delivered);
        }
        Err(error) => error,
    };
    if let Some(end) = over(&error, fatal_code(producer)) {
        return Batch::Over(end);
    }
    if let Some(end) = abort(producer).await {
        return Batch::Over(end);
    }
    // Aborted: every record in it has reported now (as purged, or with its own refusal).
    let missing = expected.saturating_sub(results.len());
    results.extend(collect(outcomes, missing, CALL).await);
    count_client_error(stats, kind_of(&error));
    Batch::Aborted(explain(&error, ""), results)
}

/// Aborts the open transaction, retrying while the cluster is away (a new transaction cannot
/// begin before); `Some` when the producer is over instead.
async fn abort(producer: &Shared) -> Option<ForwardError> {
    loop {
        let p = producer.clone();
        match tokio::task::spawn_blocking(move || p.abort_transaction(CALL)).await {
            Ok(Ok(())) => return None,
            Ok(Err(e)) => {
                if let Some(end) = over(&e, fatal_code(producer)) {
                    return Some(end);
                }
                tracing::warn!(message = "Aborting a transaction failed; retrying.", error = %e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Some(ForwardError::Fatal(e.to_string())),
        }
    }
}

/// Whether an error ends this producer's transactions: fenced (another gateway has this
/// `transactional.id`: stop for good) or fatal (a new producer is made).
fn over(error: &KafkaError, fatal_code: Option<RDKafkaErrorCode>) -> Option<ForwardError> {
    let why = explain(error, "");
    let fatal = matches!(error, KafkaError::Transaction(e) if e.is_fatal());
    // Fenced shows as the call's error, or as the producer's fatal error (`_FENCED`).
    let fenced = matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    ) || (fatal
        && matches!(
            fatal_code,
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
        ));
    if fenced {
        tracing::error!(message = "This gateway's transactional producer was fenced: another gateway runs with the same kafka.gateway_id. Forwarding stops; events stay in the spool.", error = %why);
        return Some(ForwardError::Fenced(why));
    }
    if fatal {
        tracing::error!(message = "The transactional producer failed for good; a new one is made.", error = %why);
        return Some(ForwardError::Fatal(why));
    }
    None
}

/// The producer's fatal error code, once it has one (fenced shows here as `_FENCED`).
fn fatal_code(producer: &Shared) -> Option<RDKafkaErrorCode> {
    producer.client().fatal_error().map(|(code, _)| code)
}

/// Waits for `n` outcomes: every record librdkafka accepted reports once, committed or aborted.
async fn collect(
    outcomes: &mut UnboundedReceiver<Outcome>,
    n: usize,
    within: Duration,
) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, outcomes.recv()).await {
            Ok(Some(o)) => out.push(o),
            _ => break,
        }
    }
    out
}

/// Whether the cluster's metadata lists `topic` with its partitions.
fn exists(producer: &Shared, topic: &str) -> bool {
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .is_ok_and(|m| {
            m.topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        })
}

/// Creates the progress topic if it is missing: compacted, one partition (a topic an operator
/// made beforehand is used as it is, and needs no Create right). Retries while the cluster is
/// unreachable; `None` when the gateway stops first.
async fn progress_topic(
    config: &KafkaConfig,
    eos: &ExactlyOnce,
    producer: &Shared,
    stats: &Stats,
    drain: &Drain,
) -> Result<Option<()>, ForwardError> {
    let (p, name) = (producer.clone(), eos.progress_topic.clone());
    if tokio::task::spawn_blocking(move || exists(&p, &name))
        .await
        .unwrap_or(false)
    {
        return Ok(Some(()));
    }
    let admin = client_config(config)
        .create::<AdminClient<DefaultClientContext>>()
        .map_err(|e| ForwardError::Producer(e.to_string()))?;
    let topic = NewTopic::new(
        &eos.progress_topic,
        1,
        TopicReplication::Fixed(eos.replication),
    )
    .set("cleanup.policy", "compact");
    let mut backoff = Backoff::default();
    loop {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let why = match admin.create_topics([&topic], &options).await {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => {
                    tracing::info!(message = "Created the progress topic.", topic = %eos.progress_topic);
                    return Ok(Some(()));
                }
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => return Ok(Some(())),
                Some(Err((_, code))) => format!(
                    "cannot create the progress topic {:?} ({code}): grant the gateway's \
                     principal Create, or create it: kafka-topics.sh --create --topic {} \
                     --partitions 1 --replication-factor {} --config cleanup.policy=compact",
                    eos.progress_topic, eos.progress_topic, eos.replication
                ),
            },
            Err(error) => format!("creating the progress topic: {error}"),
        };
        tracing::warn!(message = "The progress topic is not there yet; retrying.", reason = %why);
        stats.forward_failed(why, tributary_common::clock::now_ms());
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = drain.stop.cancelled() => return Ok(None),
        }
    }
}

/// `init_transactions`, retried while the cluster is unreachable; `None` when the gateway stops
/// first.
async fn init(producer: &Shared, stats: &Stats, drain: &Drain) -> Result<Option<()>, ForwardError> {
    let mut backoff = Backoff::default();
    loop {
        let p = producer.clone();
        let result = tokio::task::spawn_blocking(move || p.init_transactions(CALL))
            .await
            .map_err(|e| ForwardError::Fatal(e.to_string()))?;
        let error = match result {
            Ok(()) => return Ok(Some(())),
            Err(error) => error,
        };
        let why = explain(&error, "");
        let retriable = !matches!(&error, KafkaError::Transaction(e) if e.is_fatal());
        if !retriable {
            return Err(ForwardError::Fatal(why));
        }
        tracing::warn!(message = "Opening the transactional producer failed; retrying.", reason = %why);
        stats.forward_failed(
            format!("opening the transactional producer: {why}"),
            tributary_common::clock::now_ms(),
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = drain.stop.cancelled() => return Ok(None),
        }
    }
}

/// Reads the last committed marker and deletes the rows of this spool it covers; returns the
/// id to forward after (`None` when the gateway stops first).
async fn resume(
    config: &KafkaConfig,
    eos: &ExactlyOnce,
    spool: &Spool,
    stats: &Stats,
    drain: &Drain,
) -> Result<Option<i64>, ForwardError> {
    let mut backoff = Backoff::default();
    let marker = loop {
        let (config, eos2) = (config.clone(), eos.clone());
        let read = tokio::task::spawn_blocking(move || last_marker(&config, &eos2))
            .await
            .map_err(|e| ForwardError::Fatal(e.to_string()))?;
        match read {
            Ok(marker) => break marker,
            Err(why) => {
                tracing::warn!(message = "Reading the progress marker failed; retrying.", reason = %why);
                stats.forward_failed(
                    format!("reading the progress marker: {why}"),
                    tributary_common::clock::now_ms(),
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = drain.stop.cancelled() => return Ok(None),
                }
            }
        }
    };
    let Some(marker) = marker else {
        return Ok(Some(0));
    };
    if marker.spool != spool.instance() {
        tracing::warn!(
            message = "The progress marker counts in another spool file (salvaged or replaced); nothing is deleted by it. Rows committed before it may reach Kafka twice.",
            marker_spool = marker.spool,
            this_spool = spool.instance(),
            through = marker.through
        );
        return Ok(Some(0));
    }
    // Committed to Kafka by an earlier run, not deleted before it stopped.
    let mut deleted = 0usize;
    loop {
        let rows = match spool.fetch_range(0, marker.through, 10_000).await {
            Ok(rows) if rows.is_empty() => break,
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(message = "Reading the spool failed.", %error);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let forwarded: Vec<(i64, String)> =
            rows.into_iter().map(|r| (r.id, r.record.topic)).collect();
        if let Err(error) = spool
            .ack(forwarded.iter().map(|(id, _)| *id).collect())
            .await
        {
            tracing::warn!(message = "Deleting rows the marker covers failed; retrying.", %error);
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        deleted += forwarded.len();
        super::count_forwarded(stats, &forwarded);
    }
    tracing::info!(
        message = "Resumed after the last committed transaction.",
        through = marker.through,
        deleted_already_in_kafka = deleted
    );
    Ok(Some(marker.through))
}

/// The last marker with this gateway's key in the progress topic, read committed; `Ok(None)`
/// when there is none.
fn last_marker(config: &KafkaConfig, eos: &ExactlyOnce) -> Result<Option<Marker>, String> {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c.set("group.id", format!("tributary-{}-progress", eos.gateway_id))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("log_level", "3");
    let consumer: BaseConsumer = c.create().map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&eos.progress_topic, 0, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut last = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if std::time::Instant::now() > deadline {
            return Err("no end of the progress topic within 60 s".into());
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(last),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(m)) => {
                if m.key() != Some(eos.gateway_id.as_bytes()) {
                    continue;
                }
                match m.payload().map(serde_json::from_slice::<Marker>) {
                    Some(Ok(marker)) => last = Some(marker),
                    Some(Err(e)) => {
                        return Err(format!(
                            "the marker at offset {} does not decode: {e}",
                            m.offset()
                        ))
                    }
                    None => last = None,
                }
            }
        }
    }
}
