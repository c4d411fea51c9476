//! Reading the gateway's file sink for `verify`: `<dir>/<topic>.jsonl`, one JSON object per
//! line with `key` and `headers` (see the gateway's `forward::file`). Line numbers stand in
//! for offsets; there are no partitions.

use std::path::Path;

use serde::Deserialize;

use std::time::{Duration, Instant};

use super::{check, Observed, Options, Verdict};
use crate::manifest::Manifest;

/// Why the file sink could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileReadError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// Every record of `topic` in the sink under `dir`. A line that is not a sink record becomes a
/// record without an event id (reported as unreadable); a missing file is an empty topic.
pub fn read(dir: &Path, topic: &str) -> Result<Vec<Observed>, FileReadError> {
    let path = dir.join(format!("{topic}.jsonl"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FileReadError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let line: Option<Line> = serde_json::from_str(l).ok();
            Observed {
                topic: topic.to_owned(),
                partition: -1,
                offset: i as i64 + 1,
                key: line
                    .as_ref()
                    .and_then(|l| l.key.clone())
                    .map(String::into_bytes),
                event_id: line.and_then(|mut l| l.headers.remove("event-id")),
            }
        })
        .collect())
}

/// Reads `topics` from the sink under `dir` and checks them against `manifest`. While
/// acknowledged events are missing, reads again for up to `wait` (the gateway may still be
/// forwarding).
pub fn verify(
    manifest: &Manifest,
    dir: &Path,
    topics: &[String],
    options: Options,
    wait: Duration,
) -> Result<Verdict, FileReadError> {
    let started = Instant::now();
    loop {
        let mut records = Vec::new();
        for t in topics {
            records.extend(read(dir, t)?);
        }
        let verdict = check(manifest, records, &|_| None, options);
        if !verdict.missing() || started.elapsed() >= wait {
            return Ok(verdict);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
