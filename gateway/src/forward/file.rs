//! The file sink: one JSON-lines file per topic, `<dir>/<topic>.jsonl`.
//!
//! Like Kafka Connect's FileStreamSink, for running without a broker. Each line is one message:
//! `{"topic", "key", "timestamp_ms", "headers": {name: value}, "value": <the JSON value>}`.
//! Lines are appended, flushed and fsynced before their spool rows are acknowledged, so the
//! sink is as durable as the spool; a crash between the fsync and the acknowledgement repeats
//! those lines on the next start (recognisable by the `event-id` header).
//!
//! A crash in the middle of a batch's write can leave a torn line at the end of a file (the
//! writer's buffer reaches the file in pieces). Its rows were not acknowledged, so they are
//! still in the spool and are written again; but appended after the torn piece, the first of
//! them would join it in one line no reader can parse. So a file is trimmed back to its last
//! complete line when the sink opens it ([`trim_torn_tail`]), and the trim is logged.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Backoff, Drain, ForwardError};
use crate::observe::stats::Stats;
use tributary_spool::{Spool, Spooled};

const BATCH: usize = 2000;

/// Forwards spooled records to files under `dir` until drained after `drain.stop`.
pub async fn run(
    dir: PathBuf,
    time: super::TimePolicy,
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
                let now = tributary_common::clock::now_ms();
                for (row, event_ms) in rows.iter().zip(&event_times) {
                    stats.record_forwarded(&row.record.topic, 1);
                    super::record_delivery(&stats, now, row.received_ms, *event_ms);
                }
                cursor = last;
            }
            Err(error) => {
                stats.forward_failed(error.to_string(), tributary_common::clock::now_ms());
                for topic in batch_topics {
                    stats
                        .instruments
                        .forward_errors
                        .get_or_create(&crate::observe::stats::ForwardErrorLabel {
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
                match trim_torn_tail(&path) {
                    Ok(0) => {}
                    Ok(bytes) => tracing::warn!(
                        message = "File sink: removed a line torn by a crash; its events are still in the spool and are written again.",
                        path = %path.display(),
                        bytes
                    ),
                    Err(source) => return Err(ForwardError::File { path, source }),
                }
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
            if let Err(source) = out.write_all(&line) {
                // Reopened (and trimmed back to its last complete line) on the retry.
                self.open.remove(topic);
                return Err(ForwardError::File {
                    path: path_for(&self.dir, topic),
                    source,
                });
            }
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

/// Cuts `path` back to just after its last newline, so it ends with a complete line; returns
/// how many bytes were cut (0 when it already did, or does not exist). Only a crash in the
/// middle of a write leaves such a tail, and its rows are still in the spool.
pub fn trim_torn_tail(path: &Path) -> std::io::Result<u64> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
        file.sync_data()?;
    }
    Ok(len - end)
}

/// The file a topic's messages go to.
pub fn path_for(dir: &Path, topic: &str) -> PathBuf {
    dir.join(format!("{topic}.jsonl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_and_complete_lines_are_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.jsonl");
        assert_eq!(trim_torn_tail(&path).expect("missing is fine"), 0);
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":2}\n").expect("write");
        assert_eq!(trim_torn_tail(&path).expect("trim"), 0);
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":2}\n{\"c\":").expect("write");
        assert_eq!(trim_torn_tail(&path).expect("trim"), 5);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"{\"a\":1}\n{\"b\":2}\n"
        );
        // A torn first line, and a tail longer than one read.
        let long = vec![b'x'; 200 * 1024];
        std::fs::write(&path, &long).expect("write");
        assert_eq!(trim_torn_tail(&path).expect("trim"), long.len() as u64);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
        let mut with_line = b"{}\n".to_vec();
        with_line.extend_from_slice(&long);
        std::fs::write(&path, &with_line).expect("write");
        assert_eq!(trim_torn_tail(&path).expect("trim"), long.len() as u64);
        assert_eq!(std::fs::read(&path).expect("read"), b"{}\n");
    }
}
