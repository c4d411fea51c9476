//! `[[files]]`: the file-tail sources, each a path or glob, what its lines are, and how it is
//! followed through rotation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::route::mapping::{Mapping, RawMapping};
use tributary_common::validate::names::legal_topic;
use tributary_common::validate::ConfigError;

/// What each line is.
#[derive(Debug, Clone, PartialEq)]
pub enum LineFormat {
    /// The line as it is, to `topic`.
    Text { topic: String, key: Option<String> },
    /// A JSON object per line, through the mapping.
    Json(Box<Mapping>),
    /// A CSV row per line, named by the header row, through the mapping.
    Csv(Box<Mapping>),
}

/// One `[[files]]` source, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSource {
    pub name: String,
    pub path: PathBuf,
    pub format: LineFormat,
    /// Files already there at the first start: read from their start (`false`) or end.
    pub start_at_end: bool,
    pub max_line_bytes: usize,
    pub poll: Duration,
    /// How long a file the path no longer names is still followed (a writer may append to a
    /// rotated file until it reopens its log): Fluent Bit's `Rotate_Wait`.
    pub rotate_wait: Duration,
    /// Follow a path that is a symbolic link (off: another user who can write the directory
    /// could point it at a file the gateway may read and they may not).
    pub follow_symlinks: bool,
    /// The most files a glob follows at once; more are refused, counted once each.
    pub max_files: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    pub name: Option<String>,
    pub path: Option<std::path::PathBuf>,
    pub format: Option<String>,
    pub topic: Option<String>,
    pub key: Option<String>,
    pub mapping: Option<RawMapping>,
    pub start_at: Option<String>,
    pub max_line_bytes: Option<usize>,
    pub poll_ms: Option<u64>,
    pub rotate_wait_ms: Option<u64>,
    pub follow_symlinks: Option<bool>,
    pub max_files: Option<usize>,
}

/// `[[files]]`: the file-tail sources.
pub fn validate(raw: Vec<RawFiles>) -> Result<Vec<FileSource>, ConfigError> {
    let mut out: Vec<FileSource> = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        let bad = |key: &str, problem: String| ConfigError::Rule {
            key: format!("files[{i}].{key}"),
            problem,
        };
        let name = tributary_common::validate::names::source_name(
            f.name,
            "file source",
            "it keys the saved offsets",
            |n| out.iter().any(|o| o.name == n),
        )
        .map_err(|problem| bad("name", problem))?;
        let path = f
            .path
            .ok_or_else(|| bad("path", "a file source needs a path or glob".into()))?;
        let parent_glob = path
            .parent()
            .and_then(|p| p.to_str())
            .is_some_and(|p| p.contains(['*', '?']));
        if parent_glob || path.file_name().is_none() {
            return Err(bad(
                "path",
                format!(
                    "{}: * and ? may stand in the file name only",
                    path.display()
                ),
            ));
        }
        let mapping = |f: Option<RawMapping>| -> Result<Box<Mapping>, ConfigError> {
            let raw = f.ok_or_else(|| {
                bad(
                    "mapping",
                    "json and csv lines need a mapping (device_id, kind, values...)".into(),
                )
            })?;
            crate::route::mapping::validate_inline(&raw, &format!("files[{i}].mapping"))
                .map(Box::new)
                .map_err(|e| ConfigError::Rule {
                    key: e.key,
                    problem: e.problem,
                })
        };
        let format = match f.format.as_deref().unwrap_or("text") {
            "text" => {
                let topic = f
                    .topic
                    .ok_or_else(|| bad("topic", "text lines need the topic they go to".into()))?;
                if !legal_topic(&topic) {
                    return Err(bad(
                        "topic",
                        format!("{topic:?} is not a legal Kafka topic name"),
                    ));
                }
                LineFormat::Text { topic, key: f.key }
            }
            "json" => LineFormat::Json(mapping(f.mapping)?),
            "csv" => LineFormat::Csv(mapping(f.mapping)?),
            other => return Err(bad("format", format!("{other:?} is not text, json or csv"))),
        };
        let start_at_end = match f.start_at.as_deref().unwrap_or("beginning") {
            "beginning" => false,
            "end" => true,
            other => {
                return Err(bad(
                    "start_at",
                    format!("{other:?} is not \"beginning\" or \"end\""),
                ))
            }
        };
        let max_line_bytes = match f.max_line_bytes.unwrap_or(64 * 1024) {
            n @ 16..=16_777_216 => n,
            _ => return Err(bad("max_line_bytes", "must be from 16 to 16777216".into())),
        };
        let poll = match f.poll_ms.unwrap_or(250) {
            ms @ 10..=3_600_000 => Duration::from_millis(ms),
            _ => return Err(bad("poll_ms", "must be from 10 to 3600000".into())),
        };
        let rotate_wait = match f.rotate_wait_ms.unwrap_or(5000) {
            ms @ 0..=86_400_000 => Duration::from_millis(ms),
            _ => {
                return Err(bad(
                    "rotate_wait_ms",
                    "must be at most 86400000 (a day)".into(),
                ))
            }
        };
        let max_files = match f.max_files.unwrap_or(100) {
            n @ 1..=10_000 => n,
            _ => return Err(bad("max_files", "must be from 1 to 10000".into())),
        };
        out.push(FileSource {
            name,
            path,
            format,
            start_at_end,
            max_line_bytes,
            poll,
            rotate_wait,
            follow_symlinks: f.follow_symlinks.unwrap_or(false),
            max_files,
        });
    }
    Ok(out)
}
