//! The file-tail source: Kafka Connect's FileStreamSource, done safely.
//!
//! Each `[[files]]` source follows the files a path or glob names and turns each complete line
//! into a record: `text` lines go to the source's topic as they are (key: `key`, or the file's
//! name); `json` lines and `csv` rows (the first line is the header) become events through the
//! source's inline `mapping`, and so take the routes, formats, rules and dead letters every
//! device event takes.
//!
//! # Invariants
//! - **Neither lost nor repeated.** How far each file has been read is committed in the same
//!   spool transaction as the lines read up to there ([`tributary_spool::SourceState`]), so after a
//!   crash reading resumes exactly after the last committed line. (Fluent Bit advances its
//!   offset before delivery and loses lines; here a line is in the spool before its offset.)
//! - **Rotation.** A file is known by device, inode and its first line's fingerprint
//!   ([`tail`]). Renamed away (logrotate's default), it is still read through the open handle
//!   for `rotate_wait` (a writer appends to it until it reopens its log), then let go; truncated in place (copytruncate), it is read again from the start;
//!   a new file at the path is a new file.
//! - A partial last line waits for its newline. A line over `max_line_bytes` is a dead letter
//!   (its first 1 KiB kept) and reading goes on after it; so is a line the mapping refuses.
//! - A spool that refuses (full, failing) keeps the offset where it was; the lines are read
//!   again at the next poll.
//! - Only regular files are read, never through a symbolic link unless `follow_symlinks`, never
//!   a compressed archive (`.gz`, ...); a glob follows at most `max_files` files. What is
//!   refused is logged and counted once (`files/symlink`, `files/not_a_regular_file`,
//!   `files/compressed`, `files/too_many_files`).
//! - A path that a rotated file no longer matches (`*.log` for `app.log.1`) is warned about at
//!   start: lines appended after the rename are then read only within `rotate_wait`.

pub mod config;
pub mod tail;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

pub use self::config::{FileSource, LineFormat, RawFiles};
use self::tail::FileId;
use super::{Inbound, Ingest};
use crate::route::mapping::Mappings;
use crate::route::DeadLetter;
use crate::shutdown::Scope;
use tributary_spool::record::Record;
use tributary_spool::SourceState;

/// Lines committed per spool append, at most.
const MAX_LINES: usize = 1000;
/// Bytes read per append, about.
const MAX_BYTES: usize = 1 << 20;

/// A file being followed.
struct Followed {
    id: FileId,
    path: PathBuf,
    file: File,
    /// Where the next unread line starts (all before it is committed).
    offset: u64,
    /// The header row, for CSV.
    header: Vec<String>,
    /// Whether the last discovery found it (by any name).
    seen: bool,
    /// Since when discovery has not found it.
    gone_since: Option<std::time::Instant>,
}

/// Whether `pattern` still names a file logrotate renamed (`app.log` to `app.log.1`): if not,
/// lines its writer appends after the rename are read only through the open handle, for
/// `rotate_wait`, and a crash in that window loses them.
pub fn follows_rotation(pattern: &std::path::Path) -> bool {
    let Some(name) = pattern.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    let example = name.replace('*', "app").replace('?', "a");
    crate::route::glob_matches(name, &format!("{example}.1"))
}

/// A rotated archive by its name (`.gz`, `.bz2`, `.xz`, `.zst`, `.zip`, `.lz4`).
fn is_compressed(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["gz", "bz2", "xz", "zst", "zip", "lz4"].contains(&e))
}

/// Follows `source` until `scope.stop`.
pub async fn serve(source: FileSource, ingest: Ingest, scope: Scope) {
    if !follows_rotation(&source.path) {
        tracing::warn!(
            message = "This file source's path does not match a rotated file (app.log renamed to app.log.1): lines written to it after the rename are lost if the gateway stops within rotate_wait_ms. End the pattern with `*` (\"app.log*\").",
            source = %source.name,
            path = %source.path.display(),
        );
    }
    let source = Arc::new(source);
    let saved: HashMap<String, u64> = match ingest
        .spool
        .sources(&format!("file:{}:", source.name))
        .await
    {
        Ok(states) => states
            .into_iter()
            .filter_map(|s| Some((s.source, u64::from_be_bytes(s.state.try_into().ok()?))))
            .collect(),
        Err(error) => {
            tracing::error!(message = "Cannot read the saved file offsets; the file source does not start.", source = %source.name, %error);
            return;
        }
    };
    let mappings = match &source.format {
        LineFormat::Json(m) | LineFormat::Csv(m) => Mappings::new(vec![(**m).clone()]),
        LineFormat::Text { .. } => Mappings::default(),
    };
    let mut tailer = Tailer::new(source.clone(), ingest, mappings, saved);
    loop {
        tailer.poll().await;
        tokio::select! {
            _ = scope.stop.cancelled() => break,
            _ = tokio::time::sleep(source.poll) => {}
        }
    }
}

struct Tailer {
    source: Arc<FileSource>,
    ingest: Ingest,
    mappings: Mappings,
    /// Offsets saved by earlier runs, by key; taken when their file is found.
    saved: HashMap<String, u64>,
    followed: Vec<Followed>,
    /// The first scan of a source that has saved no offset yet (its very first start): only then
    /// does `start_at_end` skip what files hold. At a later start, a file the gateway has not
    /// seen (created while it was down) is read from its start.
    first_scan: bool,
    /// Paths refused (a link, not a regular file, over `max_files`), counted once each.
    refused: std::collections::HashSet<PathBuf>,
}

impl Tailer {
    fn new(
        source: Arc<FileSource>,
        ingest: Ingest,
        mappings: Mappings,
        saved: HashMap<String, u64>,
    ) -> Self {
        Self {
            source,
            ingest,
            mappings,
            first_scan: saved.is_empty(),
            saved,
            followed: Vec::new(),
            refused: std::collections::HashSet::new(),
        }
    }

    async fn poll(&mut self) {
        self.discover();
        let mut i = 0;
        while i < self.followed.len() {
            if self.drain(i).await.is_err() {
                // The spool refused: try again at the next poll, from the committed offset.
                return;
            }
            let f = &mut self.followed[i];
            let gone_for = match (f.seen, f.gone_since) {
                (true, _) => None,
                (false, None) => Some(*f.gone_since.insert(std::time::Instant::now())),
                (false, Some(t)) => Some(t),
            }
            .map(|t| t.elapsed());
            if f.seen {
                f.gone_since = None;
            }
            let f = &self.followed[i];
            if gone_for.is_some_and(|d| d >= self.source.rotate_wait)
                && tail::len(&f.file) <= f.offset
            {
                // Renamed or deleted, read to its end and quiet for rotate_wait: let it go, and
                // forget its offset.
                let key = f.id.key(&self.source.name);
                tracing::info!(message = "A followed file is gone and was read to its end.", source = %self.source.name, path = %f.path.display());
                let forget = SourceState {
                    source: key,
                    state: Vec::new(),
                };
                if self
                    .commit(Vec::new(), Vec::new(), Vec::new(), forget)
                    .await
                    .is_err()
                {
                    return;
                }
                self.followed.remove(i);
                continue;
            }
            i += 1;
        }
        self.first_scan = false;
    }

    /// Counts and logs a path not followed, once.
    fn refuse(&mut self, path: PathBuf, reason: &'static str) {
        if self.refused.len() < 10_000 && self.refused.insert(path.clone()) {
            self.ingest.stats.record_refusal(
                crate::transport::Transport::Files,
                reason,
                None,
                None,
            );
            tracing::warn!(message = "A file the source names is not followed.", source = %self.source.name, path = %path.display(), reason, hint = "a symbolic link needs follow_symlinks = true; only regular, uncompressed files are read; a glob follows at most max_files");
        }
    }

    /// Finds the files the path names now, and follows the new ones.
    fn discover(&mut self) {
        for f in &mut self.followed {
            f.seen = false;
        }
        for path in tail::discover(&self.source.path) {
            if is_compressed(&path) {
                // logrotate's compressed archives (app.log.2.gz): a `*.log*` glob matches
                // them, and they are not lines.
                self.refuse(path, "compressed");
                continue;
            }
            let known = self.followed.iter().any(|f| f.path == path);
            if self.followed.len() >= self.source.max_files && !known {
                self.refuse(path, "too_many_files");
                continue;
            }
            let opened = tail::open(
                &path,
                self.source.max_line_bytes,
                self.source.follow_symlinks,
            );
            let (file, id, first) = match opened {
                Ok(Some(opened)) => opened,
                Ok(None) => continue,
                Err(reason) => {
                    self.refuse(path, reason);
                    continue;
                }
            };
            if let Some(f) = self.followed.iter_mut().find(|f| f.id == id) {
                f.seen = true;
                f.path = path;
                if tail::len(&f.file) < f.offset {
                    tracing::info!(message = "A followed file was truncated; reading it from the start.", source = %self.source.name, path = %f.path.display());
                    f.offset = 0;
                }
                continue;
            }
            let key = id.key(&self.source.name);
            let offset = match self.saved.remove(&key) {
                Some(offset) if offset <= tail::len(&file) => offset,
                Some(_) => 0,
                None if self.first_scan && self.source.start_at_end => tail::len(&file),
                None => 0,
            };
            let header = match &self.source.format {
                LineFormat::Csv(_) => csv_fields(&first).unwrap_or_default(),
                _ => Vec::new(),
            };
            tracing::info!(message = "Following a file.", source = %self.source.name, path = %path.display(), offset);
            self.followed.push(Followed {
                id,
                path,
                file,
                offset,
                header,
                seen: true,
                gone_since: None,
            });
        }
    }

    /// Reads and commits what the file at `i` has, batch by batch.
    async fn drain(&mut self, i: usize) -> Result<(), ()> {
        loop {
            let f = &mut self.followed[i];
            let chunk = match tail::read_lines(
                &mut f.file,
                f.offset,
                self.source.max_line_bytes,
                MAX_LINES,
                MAX_BYTES,
            ) {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(message = "Reading a followed file failed.", source = %self.source.name, path = %f.path.display(), %error);
                    return Ok(());
                }
            };
            if chunk.next == f.offset {
                return Ok(());
            }
            let (events, ready, dead) = self.lines(i, &chunk);
            let f = &self.followed[i];
            let state = SourceState {
                source: f.id.key(&self.source.name),
                state: chunk.next.to_be_bytes().to_vec(),
            };
            self.commit(events, ready, dead, state).await?;
            self.followed[i].offset = chunk.next;
        }
    }

    async fn commit(
        &self,
        events: Vec<Inbound>,
        ready: Vec<Record>,
        dead: Vec<DeadLetter>,
        state: SourceState,
    ) -> Result<(), ()> {
        self.ingest
            .submit_from(crate::transport::Transport::Files, events, ready, dead, vec![state])
            .await
            .map(drop)
            .map_err(|error| {
                if let Some(suppressed) = tributary_common::ratelog::allow("file_source_refused") {
                    tracing::warn!(message = "File lines not stored; reading them again later.", source = %self.source.name, %error, suppressed);
                }
            })
    }

    /// The events, ready-made records and dead letters of a chunk's lines.
    fn lines(&self, i: usize, chunk: &tail::Chunk) -> (Vec<Inbound>, Vec<Record>, Vec<DeadLetter>) {
        let f = &self.followed[i];
        let file_name = f
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file")
            .to_owned();
        let now = tributary_common::clock::now_ms();
        let (mut events, mut ready, mut dead) = (Vec::new(), Vec::new(), Vec::new());
        let letter = |at: u64, reason: String, bytes: &[u8], device: Option<String>| {
            DeadLetter::new(
                "file",
                format!("{}:{at}", f.path.display()),
                device,
                reason,
                &bytes[..bytes.len().min(crate::route::DEAD_LETTER_BYTES)],
            )
        };
        for (at, head, len) in &chunk.too_long {
            let reason = format!(
                "line of {len} bytes, over files.max_line_bytes ({})",
                self.source.max_line_bytes
            );
            dead.push(letter(*at, reason, head, None));
        }
        for (at, line) in &chunk.lines {
            let value = match &self.source.format {
                LineFormat::Text { topic, key } => {
                    let id = format!("{}:{:016x}:{at}", self.source.name, f.id.fingerprint);
                    let key = key.as_deref().unwrap_or(&file_name);
                    ready.push(text_record(topic, key, line, (&f.path, *at, id), now));
                    continue;
                }
                LineFormat::Csv(_) if *at == 0 => continue,
                LineFormat::Csv(_) => match csv_fields(line) {
                    Some(fields) => Ok(csv_object(&f.header, fields)),
                    None => Err("not a CSV row".to_owned()),
                },
                LineFormat::Json(_) => {
                    serde_json::from_slice::<Value>(line).map_err(|e| format!("not JSON: {e}"))
                }
            };
            let decoded = value
                .map_err(crate::route::Undecodable::unnamed)
                .and_then(|v| self.mappings.decode_value(&file_name, &v, None, now));
            match decoded {
                Ok(list) => events.extend(list.into_iter().map(|(event, session)| Inbound {
                    event,
                    session,
                    mqtt_topic: None,
                    headers: Vec::new(),
                    // A file's lines keep de-duplication state apart from the device's own.
                    writer: Some(format!("file:{file_name}")),
                })),
                Err(refused) => dead.push(letter(*at, refused.reason, line, refused.device_id)),
            }
        }
        (events, ready, dead)
    }
}

/// A text line as a record for `topic`: the line as its value; where it came from, and an
/// `event-id` (`{source}:{file fingerprint}:{offset}`) that names the line, in headers.
fn text_record(
    topic: &str,
    key: &str,
    line: &[u8],
    (path, at, id): (&std::path::Path, u64, String),
    now: i64,
) -> Record {
    Record {
        topic: topic.to_owned(),
        key: key.as_bytes().to_vec(),
        value: line.to_vec(),
        timestamp_ms: now,
        headers: vec![
            (
                "content-type".to_owned(),
                "text/plain; charset=utf-8".to_owned(),
            ),
            ("file".to_owned(), path.display().to_string()),
            ("offset".to_owned(), at.to_string()),
            ("event-id".to_owned(), id),
        ],
        origin: None,
        event: None,
        mqtt_topic: None,
    }
}

/// The fields of one CSV line, or `None` if it does not parse.
fn csv_fields(line: &[u8]) -> Option<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line);
    let record = reader.records().next()?.ok()?;
    Some(record.iter().map(|f| f.trim().to_owned()).collect())
}

/// A CSV row as a JSON object by header: numbers where a field is one, strings otherwise.
fn csv_object(header: &[String], fields: Vec<String>) -> Value {
    let map = header
        .iter()
        .zip(fields)
        .map(|(name, field)| {
            let value = match field.parse::<f64>() {
                Ok(n) if n.is_finite() => {
                    serde_json::Number::from_f64(n).map_or(Value::String(field), Value::Number)
                }
                _ => Value::String(field),
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests;
