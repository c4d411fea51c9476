//! The file sink: one JSON-lines file per topic, `<dir>/<topic>.jsonl`.
//!
//! Like Kafka Connect's FileStreamSink, for running without a broker. Each line is one message:
//! `{"topic", "key", "timestamp_ms", "headers": {name: value}, "value": <the JSON value>}`.
//! Lines are appended, flushed and fsynced before their spool rows are acknowledged, so the
//! sink is as durable as the spool; a crash between the fsync and the acknowledgement repeats
//! those lines on the next start (recognisable by the `event-id` header).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Backoff, Drain, ForwardError};
use crate::spool::{Spool, Spooled};
use crate::stats::Stats;

const BATCH: usize = 2000;

/// Forwards spooled records to files under `dir` until drained after `drain.stop`.
pub async fn run(
    dir: PathBuf,
    time: crate::config::TimePolicy,
    spool: Spool,
    stats: Stats,
    drain: Drain,
) -> Result<(), ForwardError> {
    std::fs::create_dir_all(&dir).map_err(|source| ForwardError::File {
        path: dir.clone(),
        source,
    })?;
    let mut files = Files {
        dir,
        open: HashMap::new(),
    };
    let mut cursor = 0;
    let mut backoff = Backoff::default();
    let mut deadline = None;
    loop {
        if deadline.is_none() && drain.stop.is_cancelled() {
            deadline = Some(drain.deadline());
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            tracing::warn!(message = "Shutdown grace period ran out; the rest stays in the spool.");
            return Ok(());
        }
        let rows = match spool.fetch(cursor, BATCH).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(message = "Reading the spool failed.", %error);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if rows.is_empty() {
            if deadline.is_some() {
                return Ok(());
            }
            tokio::select! {
                _ = spool.appended() => tokio::time::sleep(super::COALESCE).await,
                _ = drain.stop.cancelled() => {}
            }
            continue;
        }
        // As a Kafka consumer would see them: the timestamp policy and time headers applied.
        let mut rows = rows;
        let mut event_times = Vec::with_capacity(rows.len());
        for row in &mut rows {
            event_times.push(super::stamp(&mut row.record, row.received_ms, time, &stats));
        }
        let batch_topics: std::collections::BTreeSet<String> =
            rows.iter().map(|r| r.record.topic.clone()).collect();
        // Writing and fsyncing is blocking work: keep it off the async workers.
        let (result, returned) = tokio::task::spawn_blocking(move || {
            let r = files.write(&rows);
            (r.map(|()| rows), files)
        })
        .await
        .map_err(|e| ForwardError::File {
            path: PathBuf::from("<file sink task>"),
            source: std::io::Error::other(e.to_string()),
        })?;
        files = returned;
        match result {
            Ok(rows) => {
                backoff.reset();
                let Some(last) = rows.last().map(|r| r.id) else {
                    continue;
                };
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                // The lines are written: retry the delete rather than write them again. If the
                // gateway stops first, a restart writes them again (same event-id headers).
                while let Err(error) = spool.ack(ids.clone()).await {
                    tracing::warn!(message = "Deleting forwarded rows failed; will retry.", %error);
                    if drain.stop.is_cancelled() {
                        return Ok(());
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                let now = crate::record::now_ms();
                for (row, event_ms) in rows.iter().zip(&event_times) {
                    stats.record_forwarded(&row.record.topic, 1);
                    super::record_delivery(&stats, now, row.received_ms, *event_ms);
                }
                cursor = last;
            }
            Err(error) => {
                stats.forward_failed(error.to_string(), crate::record::now_ms());
                for topic in batch_topics {
                    stats
                        .instruments
                        .forward_errors
                        .get_or_create(&crate::stats::ForwardErrorLabel {
                            topic,
                            error: "io".to_owned(),
                        })
                        .inc();
                }
                tracing::warn!(message = "Writing to the file sink failed; retrying.", %error);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

struct Files {
    dir: PathBuf,
    open: HashMap<String, BufWriter<File>>,
}

impl Files {
    fn write(&mut self, rows: &[Spooled]) -> Result<(), ForwardError> {
        let mut touched = Vec::new();
        for row in rows {
            let topic = &row.record.topic;
            if !self.open.contains_key(topic) {
                let path = self.path(topic);
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| ForwardError::File { path, source })?;
                self.open.insert(topic.clone(), BufWriter::new(file));
            }
            let Some(out) = self.open.get_mut(topic) else {
                continue;
            };
            let mut line = serde_json::to_vec(&row.record.to_json()).unwrap_or_default();
            line.push(b'\n');
            out.write_all(&line).map_err(|source| ForwardError::File {
                path: path_for(&self.dir, topic),
                source,
            })?;
            if !touched.contains(topic) {
                touched.push(topic.clone());
            }
        }
        for topic in touched {
            let path = self.path(&topic);
            if let Some(out) = self.open.get_mut(&topic) {
                let synced = out.flush().and_then(|()| out.get_ref().sync_data());
                if let Err(source) = synced {
                    // Drop the handle: a failed fsync leaves the file's state unknown.
                    self.open.remove(&topic);
                    return Err(ForwardError::File { path, source });
                }
            }
        }
        Ok(())
    }

    fn path(&self, topic: &str) -> PathBuf {
        path_for(&self.dir, topic)
    }
}

/// The file a topic's messages go to.
pub fn path_for(dir: &Path, topic: &str) -> PathBuf {
    dir.join(format!("{topic}.jsonl"))
}
