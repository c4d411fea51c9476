//! The connector sections: `[teltonika]` and `[[files]]`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, non_zero, socket_addr, ConfigError, MAX_DURATION_MS};
use crate::ingest::files::{FileSource, LineFormat};
use crate::ingest::teltonika::TeltonikaConfig;
use crate::mapping::RawMapping;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeltonika {
    pub listen: Option<String>,
    pub max_connections: Option<usize>,
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub names: BTreeMap<String, String>,
    pub accept_unknown: Option<bool>,
}

/// `[teltonika]`: off unless `listen` is set.
pub fn teltonika(raw: RawTeltonika) -> Result<Option<TeltonikaConfig>, ConfigError> {
    let Some(listen) = raw.listen.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    for (imei, name) in &raw.names {
        if imei.len() != 15 || !imei.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "teltonika.names",
                format!("{imei:?} is not an IMEI (15 digits)"),
            ));
        }
        if let Err(e) = tributary_protocol::validate_device_id(name) {
            return Err(invalid(
                "teltonika.names",
                format!("{imei}: device id {name:?}: {e}"),
            ));
        }
    }
    let accept_unknown = raw.accept_unknown.unwrap_or(false);
    if raw.names.is_empty() && !accept_unknown {
        return Err(invalid(
            "teltonika.names",
            "no tracker would be accepted: list IMEIs (\"356307042441013\" = \"truck-12\") or set accept_unknown = true",
        ));
    }
    Ok(Some(TeltonikaConfig {
        listen: socket_addr("teltonika.listen", Some(listen), "")?,
        max_connections: non_zero("teltonika.max_connections", raw.max_connections, 20_000)?,
        idle_timeout: match raw.idle_timeout_ms {
            None => Duration::from_secs(600),
            Some(ms) if (1..=MAX_DURATION_MS).contains(&ms) => Duration::from_millis(ms),
            Some(_) => {
                return Err(invalid(
                    "teltonika.idle_timeout_ms",
                    format!("must be from 1 to {MAX_DURATION_MS}"),
                ))
            }
        },
        names: raw.names,
        accept_unknown,
    }))
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
}

/// `[[files]]`: the file-tail sources.
pub fn files(raw: Vec<RawFiles>) -> Result<Vec<FileSource>, ConfigError> {
    let mut out: Vec<FileSource> = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        let bad = |key: &str, problem: String| ConfigError::Rule {
            key: format!("files[{i}].{key}"),
            problem,
        };
        let name = f.name.ok_or_else(|| {
            bad(
                "name",
                "a file source needs a name (it keys the saved offsets)".into(),
            )
        })?;
        if tributary_protocol::validate_device_id(&name).is_err() {
            return Err(bad(
                "name",
                format!("{name:?} is not 1 to 64 of A-Z a-z 0-9 _ . -"),
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(bad("name", format!("{name:?} names two file sources")));
        }
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
        let mapping = |f: Option<RawMapping>| -> Result<Box<crate::mapping::Mapping>, ConfigError> {
            let raw = f.ok_or_else(|| {
                bad(
                    "mapping",
                    "json and csv lines need a mapping (device_id, kind, values...)".into(),
                )
            })?;
            crate::mapping::validate_inline(&raw, &format!("files[{i}].mapping"))
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
                if !super::legal_topic(&topic) {
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
        out.push(FileSource {
            name,
            path,
            format,
            start_at_end,
            max_line_bytes,
            poll,
        });
    }
    Ok(out)
}
