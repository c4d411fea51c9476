//! The connector sections: `[teltonika]`, `[[files]]` and `[[bridges]]`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, non_zero, socket_addr, ConfigError, MAX_DURATION_MS};
use crate::ingest::bridge::BridgeConfig;
use crate::ingest::files::{FileSource, LineFormat};
use crate::ingest::teltonika::TeltonikaConfig;
use crate::mapping::RawMapping;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeltonika {
    pub listen: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub names: BTreeMap<String, String>,
    pub accept_unknown: Option<bool>,
    pub accept_unknown_max: Option<usize>,
    pub accept_unknown_per_minute: Option<u32>,
    pub trust_imei: Option<bool>,
}

/// `[teltonika]`: off unless `listen` is set. `network_opt_in` is `auth.anonymous = "network"`.
///
/// A tracker proves nothing but its IMEI, which is printed on its label. So beyond loopback the
/// listener needs `trust_imei = true` (said at every start), and taking IMEIs not in `names`
/// needs `auth.anonymous = "network"`, as any listener that lets anyone in does.
pub fn teltonika(
    raw: RawTeltonika,
    network_opt_in: bool,
) -> Result<Option<TeltonikaConfig>, ConfigError> {
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
    let listen = socket_addr("teltonika.listen", Some(listen), "")?;
    let trust_imei = raw.trust_imei.unwrap_or(false);
    if !listen.ip().is_loopback() {
        if accept_unknown && !network_opt_in {
            return Err(invalid(
                "teltonika.accept_unknown",
                format!(
                    "listens on {listen}, beyond this machine, taking any IMEI: anyone on the \
                     network could write as a tracker of their choosing. List the trackers in \
                     teltonika.names, or accept that with auth.anonymous = \"network\""
                ),
            ));
        }
        if !trust_imei {
            return Err(invalid(
                "teltonika.trust_imei",
                format!(
                    "teltonika.listen is {listen}, beyond this machine, and trackers prove \
                     nothing but their IMEI (printed on the label): anyone who reads one can \
                     write as that tracker. Keep the listener on a network you control (a \
                     private APN, a VPN) and say so with teltonika.trust_imei = true, or bind \
                     it to 127.0.0.1"
                ),
            ));
        }
    }
    let accept_unknown_max = match raw.accept_unknown_max {
        None => 1000,
        Some(n) if (1..=1_000_000).contains(&n) => n,
        Some(_) => {
            return Err(invalid(
                "teltonika.accept_unknown_max",
                "must be from 1 to 1000000",
            ))
        }
    };
    let accept_unknown_per_minute = match raw.accept_unknown_per_minute {
        None => 60,
        Some(n) if (1..=100_000).contains(&n) => n,
        Some(_) => {
            return Err(invalid(
                "teltonika.accept_unknown_per_minute",
                "must be from 1 to 100000",
            ))
        }
    };
    Ok(Some(TeltonikaConfig {
        listen,
        max_connections: non_zero("teltonika.max_connections", raw.max_connections, 20_000)?,
        max_connections_per_address: non_zero(
            "teltonika.max_connections_per_address",
            raw.max_connections_per_address,
            super::PER_ADDRESS,
        )?,
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
        accept_unknown_max,
        accept_unknown_per_minute,
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
    pub rotate_wait_ms: Option<u64>,
    pub follow_symlinks: Option<bool>,
    pub max_files: Option<usize>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBridge {
    pub name: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
    pub topics: Option<Vec<RawSubscription>>,
    pub keep_alive_s: Option<u64>,
    pub max_payload_bytes: Option<usize>,
}

/// A topic filter, alone (QoS 1) or with its QoS.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSubscription {
    Filter(String),
    WithQos { filter: String, qos: u8 },
}

/// `[[bridges]]`: upstream MQTT brokers to subscribe to.
pub fn bridges(raw: Vec<RawBridge>) -> Result<Vec<BridgeConfig>, ConfigError> {
    let mut out: Vec<BridgeConfig> = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let bad = |key: &str, problem: String| ConfigError::Rule {
            key: format!("bridges[{i}].{key}"),
            problem,
        };
        let name = b
            .name
            .ok_or_else(|| bad("name", "a bridge needs a name".into()))?;
        if tributary_protocol::validate_device_id(&name).is_err() {
            return Err(bad(
                "name",
                format!("{name:?} is not 1 to 64 of A-Z a-z 0-9 _ . -"),
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(bad("name", format!("{name:?} names two bridges")));
        }
        let host = b
            .host
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("host", "a bridge needs the upstream broker's host".into()))?;
        let topics = b.topics.unwrap_or_default();
        if topics.is_empty() {
            return Err(bad(
                "topics",
                "a bridge needs at least one topic filter".into(),
            ));
        }
        let topics = topics
            .into_iter()
            .map(|t| {
                let (filter, qos) = match t {
                    RawSubscription::Filter(f) => (f, 1),
                    RawSubscription::WithQos { filter, qos } => (filter, qos),
                };
                if !crate::route::valid_filter(&filter) {
                    return Err(bad(
                        "topics",
                        format!("{filter:?} is not an MQTT filter (+ for one level, # last)"),
                    ));
                }
                if qos > 2 {
                    return Err(bad(
                        "topics",
                        format!("{filter:?}: QoS {qos} is not 0, 1 or 2"),
                    ));
                }
                Ok((filter, qos))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if b.password.is_some() && b.username.is_none() {
            return Err(bad("password", "a password needs a username".into()));
        }
        let client_id = b.client_id.unwrap_or_else(|| format!("tributary-{name}"));
        if client_id.is_empty() || client_id.len() > 65535 {
            return Err(bad("client_id", "must be 1 to 65535 bytes".into()));
        }
        let keep_alive = match b.keep_alive_s.unwrap_or(30) {
            s @ 5..=65535 => Duration::from_secs(s),
            _ => return Err(bad("keep_alive_s", "must be from 5 to 65535".into())),
        };
        let port = b
            .port
            .unwrap_or(if b.ca_file.is_some() { 8883 } else { 1883 });
        let config = BridgeConfig {
            name,
            host,
            port,
            client_id,
            username: b.username,
            password: b.password,
            ca_file: b.ca_file,
            topics,
            keep_alive,
            max_payload_bytes: b.max_payload_bytes.unwrap_or(256 * 1024).max(1),
        };
        // A CA file that does not load is a config error, found now rather than at connect.
        crate::ingest::bridge::options(&config).map_err(|e| bad("ca_file", e.to_string()))?;
        out.push(config);
    }
    Ok(out)
}
