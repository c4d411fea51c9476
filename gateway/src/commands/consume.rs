//! The commands topic's consumer: each command into the spool's queue, with the offsets.
//!
//! Every partition of the topic is assigned (no group balancing: every gateway of a fleet
//! reads the whole topic and keeps its own devices' commands, see the README's "Commands").
//! It resumes at the offsets its spool saved (`source_offsets`, `commands:{topic}:{partition}`),
//! else at the group's committed offsets, else at the beginning. A batch of messages becomes
//! one [`Spool::queue`] call with the partitions' next offsets, so a command is queued (or its
//! refusal stored) exactly when its offset is saved. Then the offsets are committed to Kafka
//! too, for `kafka-consumer-groups --describe` to show the lag; nothing depends on that commit.
//!
//! What a message becomes ([`decide`]): a queued command; a skipped one (a `tributary-gateway`
//! header naming another gateway: counted, `skipped`); or an outcome at once: "refused"
//! (no device id in the key, too large, not a command) or "expired" (past its expiry on
//! arrival). Nothing is dropped in silence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use tributary_client::command::{valid_id, valid_name, Command};
use tributary_common::clock::now_ms;
use tributary_spool::commands::{Done, NewCommand, Op};
use tributary_spool::{SourceState, Spool};

use super::outcome::{Kind, Outcome};
use super::{Commands, CommandsConfig};
use crate::forward::KafkaConfig;
use crate::observe::stats::Stats;

/// The header that addresses a command to one gateway of a fleet sharing a topic.
pub const GATEWAY_HEADER: &str = "tributary-gateway";

/// The most messages queued in one spool commit.
const BATCH: usize = 500;

/// A command as its author writes it to the commands topic (key: the device id).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Authored {
    id: String,
    name: String,
    #[serde(default)]
    args: Option<serde_json::Value>,
    /// When it expires, ms since the Unix epoch; or `ttl_ms` from when the gateway reads it.
    expires_ms: Option<i64>,
    ttl_ms: Option<u64>,
}

/// What one message becomes.
#[derive(Debug)]
pub enum Decision {
    Queue(Op),
    /// Its outcome is stored at once (refused or expired), with the reason counted.
    Answer(Op, &'static str),
    /// For another gateway.
    Skip,
}

/// The source name a partition's offset is saved under.
fn source(topic: &str, partition: i32) -> String {
    format!("commands:{topic}:{partition}")
}

/// Decides what the message (`key`, `value`, the gateway header) at `position` becomes.
pub fn decide(
    config: &CommandsConfig,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    gateway: Option<&[u8]>,
    position: (i32, i64),
    now: i64,
) -> Decision {
    if let (Some(mine), Some(theirs)) = (&config.gateway_id, gateway) {
        if theirs != mine.as_bytes() {
            return Decision::Skip;
        }
    }
    let device = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .filter(|d| tributary_protocol::device_id::validate_device_id(d).is_ok());
    let value = value.unwrap_or_default();
    let parsed = serde_json::from_slice::<Authored>(value);
    // An id to answer by, even when the command is not one.
    let fallback = format!("{}:{}:{}", config.topic, position.0, position.1);
    let (id, name) = match &parsed {
        Ok(a) if valid_id(&a.id) => (a.id.clone(), a.name.clone()),
        _ => (fallback, String::new()),
    };
    let refuse = |reason: String, label: &'static str| {
        let outcome = Outcome::new(device.unwrap_or(""), &id, &name, Kind::Refused, now)
            .reason(reason)
            .record(&config.responses_topic);
        Decision::Answer(Op::Outcome(outcome), label)
    };
    let Some(device) = device else {
        return refuse(
            "the record's key must be a device id (1 to 64 of A-Z a-z 0-9 _ - .)".into(),
            "refused_device",
        );
    };
    if value.len() > config.max_bytes {
        return refuse(
            format!(
                "the command is {} bytes, over commands.max_bytes ({})",
                value.len(),
                config.max_bytes
            ),
            "refused_too_large",
        );
    }
    let authored = match parsed {
        Ok(a) => a,
        Err(e) => {
            return refuse(
                format!(
                "not a command ({{\"id\", \"name\", \"args\", \"expires_ms\" or \"ttl_ms\"}}): {e}"
            ),
                "refused_invalid",
            )
        }
    };
    if !valid_id(&authored.id) {
        return refuse(
            "\"id\" must be 1 to 128 printable characters without / + #".into(),
            "refused_invalid",
        );
    }
    if !valid_name(&authored.name) {
        return refuse(
            "\"name\" must be 1 to 64 of A-Z a-z 0-9 _ - .".into(),
            "refused_invalid",
        );
    }
    let ttl = authored
        .ttl_ms
        .map(Duration::from_millis)
        .unwrap_or(config.default_ttl);
    let expires_ms = authored
        .expires_ms
        .unwrap_or_else(|| now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)));
    if expires_ms <= now {
        let mut outcome = Outcome::new(device, &id, &name, Kind::Expired, now)
            .reason("past its expiry when the gateway read it; never delivered");
        outcome.expires_ms = Some(expires_ms);
        return Decision::Answer(
            Op::Outcome(outcome.record(&config.responses_topic)),
            "expired",
        );
    }
    let body = Command {
        id: id.clone(),
        name: name.clone(),
        args: authored
            .args
            .unwrap_or(serde_json::Value::Object(Default::default())),
        expires_ms: Some(expires_ms),
    }
    .to_bytes();
    let overflow = Outcome::new(device, &id, &name, Kind::Refused, now)
        .reason(format!(
            "the device already has {} commands queued (commands.max_queued_per_device)",
            config.max_queued_per_device
        ))
        .record(&config.responses_topic);
    Decision::Queue(Op::Enqueue {
        command: NewCommand {
            device: device.to_owned(),
            command_id: id,
            name,
            body,
            received_ms: now,
            expires_ms,
        },
        limit: config.max_queued_per_device,
        overflow,
    })
}

/// The consumer's settings: the connection's (brokers, security) from `[kafka]`, its own
/// after them.
fn consumer(kafka: &KafkaConfig, config: &CommandsConfig) -> Result<StreamConsumer, String> {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in &kafka.properties {
        // The producer's own settings mean nothing to a consumer (librdkafka warns of each).
        if !crate::forward::config::producer_only(k) {
            c.set(k, v);
        }
    }
    c.set("group.id", &config.group_id)
        .set("client.id", "tributary-commands")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    c.create().map_err(|e| e.to_string())
}

/// Reads commands until `stop`; restarts itself after a failure, with a backoff.
pub async fn run(
    commands: Arc<Commands>,
    kafka: KafkaConfig,
    spool: Spool,
    stats: Stats,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = serve(&commands, &kafka, &spool, &stats) => r,
        };
        if let Err(error) = outcome {
            tracing::warn!(message = "The commands consumer failed; starting again.", topic = %commands.config.topic, %error, retry_in_ms = backoff.as_millis() as u64);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn serve(
    commands: &Commands,
    kafka: &KafkaConfig,
    spool: &Spool,
    stats: &Stats,
) -> Result<(), String> {
    let config = &commands.config;
    let consumer = Arc::new(consumer(kafka, config)?);
    let partitions = partitions(&consumer, &config.topic).await?;
    let saved: BTreeMap<String, i64> = spool
        .sources(&format!("commands:{}:", config.topic))
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|s| {
            let text = std::str::from_utf8(&s.state).ok()?;
            Some((s.source, text.parse().ok()?))
        })
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let offset = match saved.get(&source(&config.topic, *p)) {
            Some(next) => Offset::Offset(*next),
            None => Offset::Stored,
        };
        tpl.add_partition_offset(&config.topic, *p, offset)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    tracing::info!(message = "Reading commands.", topic = %config.topic, partitions = partitions.len(), resumed = saved.len());
    loop {
        let first = consumer.recv().await.map_err(|e| e.to_string())?;
        let mut batch = Vec::with_capacity(16);
        take(&first, config, &mut batch);
        drop(first);
        while batch.len() < BATCH {
            match tokio::time::timeout(Duration::from_millis(5), consumer.recv()).await {
                Ok(Ok(m)) => take(&m, config, &mut batch),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => break,
            }
        }
        queue(commands, spool, stats, &consumer, batch).await;
    }
}

/// One message read: its decision, partition and offset.
struct Taken {
    decision: Decision,
    partition: i32,
    offset: i64,
}

fn take(m: &BorrowedMessage<'_>, config: &CommandsConfig, batch: &mut Vec<Taken>) {
    let gateway = m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == GATEWAY_HEADER)
            .and_then(|h| h.value)
    });
    let decision = decide(
        config,
        m.key(),
        m.payload(),
        gateway,
        (m.partition(), m.offset()),
        now_ms(),
    );
    batch.push(Taken {
        decision,
        partition: m.partition(),
        offset: m.offset(),
    });
}

/// Queues a batch with its offsets, retrying until the spool takes it; then wakes the devices
/// and commits the offsets to Kafka.
async fn queue(
    commands: &Commands,
    spool: &Spool,
    stats: &Stats,
    consumer: &StreamConsumer,
    batch: Vec<Taken>,
) {
    let topic = &commands.config.topic;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut ops = Vec::with_capacity(batch.len());
    let mut labels = Vec::with_capacity(batch.len());
    for t in batch {
        next.insert(t.partition, t.offset + 1);
        match t.decision {
            Decision::Queue(Op::Enqueue { command, .. })
                if commands.config.refuse_unknown && !commands.knows(&command.device).await =>
            {
                let outcome = Outcome::new(
                    &command.device,
                    &command.command_id,
                    &command.name,
                    Kind::Refused,
                    now_ms(),
                )
                .reason("unknown device: not in the credentials file or teltonika.names, and it never sent events here (commands.unknown_devices = \"refuse\")")
                .record(&commands.config.responses_topic);
                labels.push(Some("refused_unknown_device"));
                ops.push(Op::Outcome(outcome));
            }
            Decision::Queue(op) => {
                labels.push(None);
                ops.push(op);
            }
            Decision::Answer(op, label) => {
                labels.push(Some(label));
                ops.push(op);
            }
            Decision::Skip => stats.count_command("skipped"),
        }
    }
    let sources: Vec<SourceState> = next
        .iter()
        .map(|(p, o)| SourceState {
            source: source(topic, *p),
            state: o.to_string().into_bytes(),
        })
        .collect();
    let mut wait = Duration::from_millis(100);
    let done = loop {
        match spool.queue(ops.clone(), sources.clone()).await {
            Ok(done) => break done,
            Err(error) => {
                if let Some(suppressed) = tributary_common::ratelog::allow("commands_not_queued") {
                    tracing::warn!(message = "Commands not queued: the spool refused them; retrying (their offsets are not saved).", %error, suppressed);
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    for ((op, done), label) in ops.iter().zip(&done).zip(&labels) {
        match (done, label) {
            (Done::Queued, _) => {
                stats.count_command("queued");
                if let Op::Enqueue { command, .. } = op {
                    commands.wake(&command.device);
                }
            }
            (Done::Duplicate, _) => stats.count_command("duplicate"),
            (Done::Overflowed, _) => {
                stats.count_command("refused_queue_full");
                if let Some(suppressed) = tributary_common::ratelog::allow("commands_queue_full") {
                    if let Op::Enqueue { command, limit, .. } = op {
                        tracing::warn!(message = "A device's command queue is full: the command was refused (commands.max_queued_per_device).", device_id = %command.device, command_id = %command.command_id, limit, suppressed);
                    }
                }
            }
            (_, Some(label)) => {
                stats.count_command(label);
                if let Some(suppressed) = tributary_common::ratelog::allow(label) {
                    tracing::warn!(
                        message = "A command was answered at once, not queued.",
                        reason = label,
                        suppressed
                    );
                }
            }
            _ => {}
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &next {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    if let Err(error) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(message = "Committing the commands' offsets to Kafka failed (the spool has them).", %error);
    }
}

/// The topic's partitions, waiting until it exists.
async fn partitions(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<Vec<i32>, String> {
    let mut said = false;
    loop {
        let (c, t) = (consumer.clone(), topic.to_owned());
        let found = tokio::task::spawn_blocking(move || {
            c.fetch_metadata(Some(&t), Duration::from_secs(10))
                .map(|m| {
                    m.topics()
                        .iter()
                        .filter(|x| x.name() == t && x.error().is_none())
                        .flat_map(|x| x.partitions().iter().map(|p| p.id()))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        if !found.is_empty() {
            return Ok(found);
        }
        if !said {
            tracing::warn!(
                message = "The commands topic does not exist yet; waiting for it.",
                topic
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests;
