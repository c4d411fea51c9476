//! Configuration: TOML as read ([`RawConfig`]), then validated once into [`Config`].
//!
//! Two phases, as ripgrep does it: the raw structs mirror the file (every field optional, unknown
//! keys refused), and [`Config::from_raw`] turns them into typed values (`SocketAddr`,
//! `Duration`, `NonZeroUsize`, paths) or a [`ConfigError`] that names the key and says what is
//! wrong. Nothing after start-up parses configuration again. The shipped file
//! `config/gateway.toml` documents every key, its unit and its default; `tributary
//! print-config` prints it.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::spool::{FullPolicy, Limits};

mod connectors;
mod identity;
mod mqtt;
mod routes;
mod sink;
pub use identity::{cleartext_listeners, Anonymous, AuthConfig, IdentityFrom, OnDeny, TlsConfig};
pub use mqtt::{MqttConfig, RawMqtt};
pub use routes::{
    device_glob, event_kind, legal_topic, value_format, RawRoutes, RawRule, RoutesConfig,
};
pub use sink::{KafkaConfig, RawFileSink, RawKafka, SinkConfig, TopicSpec};

/// The documented default configuration, shipped as `config/gateway.toml`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/gateway.toml");

/// The commented-out examples of the shipped config from the line starting `from` up to the line
/// starting `until` (or the end), uncommented: what the tests parse, so the examples stay valid.
#[cfg(test)]
pub(crate) fn shipped_examples(from: &str, until: Option<&str>) -> String {
    let start = DEFAULT_CONFIG_TOML
        .find(from)
        .unwrap_or(DEFAULT_CONFIG_TOML.len());
    let rest = &DEFAULT_CONFIG_TOML[start..];
    let end = until.and_then(|u| rest.find(u)).unwrap_or(rest.len());
    rest[..end]
        .lines()
        .map(|l| {
            let l = l
                .strip_prefix("# ")
                .or_else(|| l.strip_prefix('#'))
                .unwrap_or(l);
            format!("{l}\n")
        })
        .collect()
}

/// A configuration problem, naming the key (`section.key`) where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("config key `{key}`: {problem}")]
    Rule { key: String, problem: String },
    /// A file the config names (a certificate, the credentials file) does not load.
    #[error("{0}")]
    Files(String),
}

/// Reads `[[list]]` entries one at a time, so that a mistake in one (a key it does not know, a
/// value of the wrong type) names the entry and its name: `rules[1] ("hot"): unknown field
/// `colour``. Read as one array, TOML's error would point at the line only.
fn named_entries<'de, D, T>(d: D, list: &str) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    let tables = Vec::<toml::Table>::deserialize(d)?;
    tables
        .into_iter()
        .enumerate()
        .map(|(i, table)| {
            let name = match table.get("name").and_then(|n| n.as_str()) {
                Some(n) => format!(" ({n:?})"),
                None => String::new(),
            };
            T::deserialize(toml::Value::Table(table))
                .map_err(|e| D::Error::custom(format!("{list}[{i}]{name}: {}", e.message())))
        })
        .collect()
}

fn rule_entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<crate::rules::RawRule>, D::Error> {
    named_entries(d, "rules")
}

fn mapping_entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<crate::mapping::RawMapping>, D::Error> {
    named_entries(d, "mappings")
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, problem)
}

impl ConfigError {
    /// The key's value is wrong: `problem` says how.
    pub(crate) fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            problem: problem.into(),
        }
    }
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub gateway: RawGateway,
    #[serde(default)]
    pub tcp: RawTcp,
    #[serde(default)]
    pub mqtt: RawMqtt,
    #[serde(default)]
    pub spool: RawSpool,
    #[serde(default)]
    pub kafka: RawKafka,
    #[serde(default)]
    pub routes: RawRoutes,
    #[serde(default)]
    pub file_sink: RawFileSink,
    #[serde(default)]
    pub admin: crate::admin::RawAdmin,
    #[serde(default)]
    pub time: RawTime,
    #[serde(default)]
    pub tls: identity::RawTls,
    #[serde(default)]
    pub auth: identity::RawAuth,
    /// `[[rules]]`: stream processing at the edge ([`crate::rules`]).
    #[serde(default, deserialize_with = "rule_entries")]
    pub rules: Vec<crate::rules::RawRule>,
    /// `[[mappings]]`: payloads of devices that do not speak Tributary's formats
    /// ([`crate::mapping`]).
    #[serde(default, deserialize_with = "mapping_entries")]
    pub mappings: Vec<crate::mapping::RawMapping>,
    /// `[teltonika]`: Codec 8 trackers over TCP.
    #[serde(default)]
    pub teltonika: connectors::RawTeltonika,
    /// `[[files]]`: files followed line by line.
    #[serde(default)]
    pub files: Vec<connectors::RawFiles>,
    /// `[[bridges]]`: upstream MQTT brokers Tributary subscribes to.
    #[serde(default)]
    pub bridges: Vec<connectors::RawBridge>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub data_dir: Option<PathBuf>,
    pub shutdown_grace_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTime {
    pub kafka_timestamp: Option<String>,
    pub max_future_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub tls_listen: Option<String>,
    pub max_frame_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub idle_timeout_ms: Option<u64>,
    /// Removed: refused with a pointer to per-device passwords.
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    pub path: Option<PathBuf>,
    pub group_commit_max_events: Option<usize>,
    pub group_commit_wait_ms: Option<u64>,
    pub max_bytes: Option<u64>,
    pub min_free_bytes: Option<u64>,
    pub when_full: Option<String>,
    pub max_age_ms: Option<u64>,
    pub forget_devices_after_ms: Option<u64>,
    pub dedup_window: Option<usize>,
}

/// The device listeners: `(key, address, is_tls)` for each one configured.
fn listeners(
    tcp: Option<&TcpConfig>,
    mqtt: Option<&MqttConfig>,
) -> Vec<(&'static str, SocketAddr, bool)> {
    let mut out = Vec::new();
    if let Some(t) = tcp {
        out.extend(t.listen.map(|a| ("tcp.listen", a, false)));
        out.extend(t.tls_listen.map(|a| ("tcp.tls_listen", a, true)));
    }
    if let Some(m) = mqtt {
        out.extend(m.listen.map(|a| ("mqtt.listen", a, false)));
        out.extend(m.tls_listen.map(|a| ("mqtt.tls_listen", a, true)));
    }
    out
}

impl Config {
    /// The device listeners: `(key, address, is_tls)` for each one configured.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr, bool)> {
        listeners(self.tcp.as_ref(), self.mqtt.as_ref())
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// How long a graceful shutdown may take before it gives up waiting.
    pub shutdown_grace: Duration,
    pub tcp: Option<TcpConfig>,
    pub mqtt: Option<MqttConfig>,
    pub spool: SpoolConfig,
    pub sink: SinkConfig,
    pub routes: RoutesConfig,
    /// The admin listener (metrics, health, status); `None` when disabled.
    pub admin: Option<crate::admin::AdminConfig>,
    /// Which time a record's Kafka timestamp is.
    pub time: TimePolicy,
    /// Certificates for the TLS listeners; `None` without TLS.
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    /// How payloads on other topics than `devices/...` become events.
    pub mappings: Vec<crate::mapping::Mapping>,
    /// The Teltonika tracker listener; `None` when off (the default).
    pub teltonika: Option<crate::ingest::teltonika::TeltonikaConfig>,
    /// The file-tail sources.
    pub files: Vec<crate::ingest::files::FileSource>,
    /// The upstream brokers bridged in.
    pub bridges: Vec<crate::ingest::bridge::BridgeConfig>,
}

#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// The plain-text listener; `None` when disabled (`listen = ""`).
    pub listen: Option<SocketAddr>,
    /// The TLS listener, if any.
    pub tls_listen: Option<SocketAddr>,
    pub max_frame_bytes: NonZeroUsize,
    /// Connections beyond this (per listener) are refused with NACK busy.
    pub max_connections: NonZeroUsize,
    /// Connections one address may hold on a listener not bound to loopback.
    pub max_connections_per_address: NonZeroUsize,
    /// A session that sends nothing for this long after HELLO is closed.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub path: PathBuf,
    /// Most events one transaction commits.
    pub group_commit_max_events: NonZeroUsize,
    /// How long the writer waits for more events before it commits a partial group.
    pub group_commit_wait: Duration,
    /// Size, free-disk and age bounds, and the policy when full.
    pub limits: Limits,
    /// A device session (its sequence state) not heard from for this long is forgotten.
    pub forget_devices_after: Duration,
    /// The rules the writer runs as it stores events (`[[rules]]`).
    pub rules: crate::rules::RuleSet,
}

/// Which time becomes a record's Kafka timestamp (`[time]`). Device clocks can be wrong: a
/// Raspberry Pi has no real-time clock, and Kafka 4.0 refuses records more than an hour in the
/// future by default (KIP-1030, `message.timestamp.after.max.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimePolicy {
    pub kafka_timestamp: TimestampSource,
    /// With `Clamp`: the most an event time may be ahead of the receive time.
    pub max_future: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampSource {
    /// The device's event time, whatever it is.
    Event,
    /// The gateway's receive time (when the spool committed the event).
    Receive,
    /// The event time, but at most `max_future` after the receive time (the default).
    Clamp,
}

impl Default for TimePolicy {
    fn default() -> Self {
        Self {
            kafka_timestamp: TimestampSource::Clamp,
            max_future: Duration::from_secs(55 * 60),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        Self::from_raw(raw)
    }

    /// Validates a raw config, applying the documented defaults.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let data_dir = raw
            .gateway
            .data_dir
            .unwrap_or_else(|| PathBuf::from("data"));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("gateway.data_dir", "must not be empty"));
        }
        // A day at most: the deadline is an `Instant`, and no edge box waits longer to stop.
        let shutdown_grace = match raw.gateway.shutdown_grace_ms {
            None => Duration::from_secs(10),
            Some(ms) if ms <= MAX_GRACE_MS => Duration::from_millis(ms),
            Some(_) => {
                return Err(invalid(
                    "gateway.shutdown_grace_ms",
                    format!("must be at most {MAX_GRACE_MS} (a day)"),
                ))
            }
        };

        if raw.tcp.token.is_some() {
            return Err(invalid(
                "tcp.token",
                "the shared token was replaced by per-device passwords: remove it, add devices \
                 with `tributary devices add`, and set auth.credentials",
            ));
        }
        let tcp = if raw.tcp.enabled.unwrap_or(true) {
            Some(TcpConfig {
                listen: optional_addr("tcp.listen", raw.tcp.listen, Some("127.0.0.1:7878"))?,
                tls_listen: optional_addr("tcp.tls_listen", raw.tcp.tls_listen, None)?,
                max_frame_bytes: non_zero(
                    "tcp.max_frame_bytes",
                    raw.tcp.max_frame_bytes,
                    tributary_protocol::DEFAULT_MAX_FRAME_BYTES,
                )?,
                max_connections: non_zero("tcp.max_connections", raw.tcp.max_connections, 20_000)?,
                max_connections_per_address: non_zero(
                    "tcp.max_connections_per_address",
                    raw.tcp.max_connections_per_address,
                    PER_ADDRESS,
                )?,
                idle_timeout: match raw.tcp.idle_timeout_ms {
                    None => Duration::from_secs(600),
                    Some(ms) if (1..=MAX_DURATION_MS).contains(&ms) => Duration::from_millis(ms),
                    Some(_) => {
                        return Err(invalid(
                            "tcp.idle_timeout_ms",
                            format!("must be from 1 to {MAX_DURATION_MS}"),
                        ))
                    }
                },
            })
        } else {
            None
        };
        let mqtt = mqtt::validate(raw.mqtt)?;
        let tcp = tcp.filter(|t| t.listen.is_some() || t.tls_listen.is_some());
        let mqtt = mqtt.filter(|m| m.listen.is_some() || m.tls_listen.is_some());
        if tcp.is_none() && mqtt.is_none() {
            return Err(invalid(
                "tcp.enabled",
                "both tcp and mqtt ingest are disabled (or have no listen address); enable at least one",
            ));
        }
        let listeners = listeners(tcp.as_ref(), mqtt.as_ref());
        let tls = identity::tls(raw.tls, listeners.iter().any(|l| l.2))?;
        let auth = identity::auth(raw.auth)?;
        let broker = mqtt.as_ref().and_then(|m| m.broker_listen);
        identity::check_exposure(&listeners, broker, &auth, tls.as_ref())?;
        let admin = crate::admin::config::admin(raw.admin, auth.anonymous == Anonymous::Network)?;

        let teltonika = connectors::teltonika(raw.teltonika, auth.anonymous == Anonymous::Network)?;
        let files = connectors::files(raw.files)?;
        let bridges = connectors::bridges(raw.bridges)?;
        let mappings = crate::mapping::validate(&raw.mappings).map_err(|e| ConfigError::Rule {
            key: e.key,
            problem: e.problem,
        })?;
        let rules = crate::rules::validate(&raw.rules).map_err(|e| ConfigError::Rule {
            key: e.key,
            problem: e.problem,
        })?;
        let rule_topics: Vec<String> = rules.iter().map(|r| r.topic.clone()).collect();
        let rules =
            crate::rules::RuleSet::new(rules).map_err(|e| ConfigError::Files(e.to_string()))?;
        let spool = SpoolConfig {
            rules,
            path: raw.spool.path.unwrap_or_else(|| data_dir.join("spool.db")),
            group_commit_max_events: non_zero(
                "spool.group_commit_max_events",
                raw.spool.group_commit_max_events,
                1000,
            )?,
            group_commit_wait: Duration::from_millis(raw.spool.group_commit_wait_ms.unwrap_or(0)),
            limits: Limits {
                max_bytes: raw.spool.max_bytes.unwrap_or(1 << 30),
                min_free_bytes: raw.spool.min_free_bytes.unwrap_or(100 << 20),
                policy: match raw.spool.when_full.as_deref() {
                    None => FullPolicy::Block,
                    Some(p) => p.parse().map_err(|e| invalid("spool.when_full", e))?,
                },
                max_age: match raw.spool.max_age_ms {
                    None | Some(0) => None,
                    Some(ms) if ms > MAX_DURATION_MS => {
                        return Err(invalid(
                            "spool.max_age_ms",
                            format!("must be at most {MAX_DURATION_MS} (100 years)"),
                        ))
                    }
                    Some(ms) => Some(Duration::from_millis(ms)),
                },
                dedup_window: match raw.spool.dedup_window {
                    None => crate::spool::seqs::DEFAULT_WINDOW,
                    Some(w) if crate::spool::seqs::valid_width(w) => w,
                    Some(w) => {
                        return Err(invalid(
                            "spool.dedup_window",
                            format!("{w} is not a multiple of 64 from 64 to 65536"),
                        ))
                    }
                },
            },
            forget_devices_after: match raw.spool.forget_devices_after_ms {
                None => Duration::from_millis(30 * 24 * 3600 * 1000),
                Some(ms) if (1..=MAX_DURATION_MS).contains(&ms) => Duration::from_millis(ms),
                Some(_) => {
                    return Err(invalid(
                        "spool.forget_devices_after_ms",
                        format!("must be from 1 to {MAX_DURATION_MS} (100 years)"),
                    ))
                }
            },
        };
        if spool.limits.max_bytes == 0 {
            return Err(invalid("spool.max_bytes", "must be at least 1"));
        }
        if spool.group_commit_wait > Duration::from_secs(1) {
            return Err(invalid(
                "spool.group_commit_wait_ms",
                "must be at most 1000: every acknowledgement waits this long at worst",
            ));
        }

        let routes = routes::routes(raw.routes)?;
        let sink = sink::sink(raw.kafka, raw.file_sink, &data_dir, &routes, &rule_topics)?;
        Ok(Config {
            data_dir,
            shutdown_grace,
            tcp,
            mqtt,
            spool,
            sink,
            routes,
            admin,
            time: TimePolicy {
                kafka_timestamp: match raw.time.kafka_timestamp.as_deref() {
                    None | Some("clamp") => TimestampSource::Clamp,
                    Some("event") => TimestampSource::Event,
                    Some("receive") => TimestampSource::Receive,
                    Some(other) => {
                        return Err(invalid(
                            "time.kafka_timestamp",
                            format!("{other:?} is not \"clamp\", \"event\" or \"receive\""),
                        ))
                    }
                },
                max_future: match raw.time.max_future_ms {
                    None => TimePolicy::default().max_future,
                    Some(ms) if ms <= MAX_DURATION_MS => Duration::from_millis(ms),
                    Some(_) => {
                        return Err(invalid(
                            "time.max_future_ms",
                            format!("must be at most {MAX_DURATION_MS} (100 years)"),
                        ))
                    }
                },
            },
            tls,
            auth,
            mappings,
            teltonika,
            files,
            bridges,
        })
    }
}

/// The default of every device listener's `max_connections_per_address`: room for a depot's
/// fleet behind one NAT router, not for one peer to take a listener's every slot.
const PER_ADDRESS: usize = 1000;

/// The longest duration a `_ms` key may name: 100 years, far below where millisecond
/// arithmetic on `i64` timestamps could overflow.
const MAX_DURATION_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// The most `gateway.shutdown_grace_ms` may be.
const MAX_GRACE_MS: u64 = 24 * 3600 * 1000;

/// An address, `""` for none, or the default when the key is absent.
pub(crate) fn optional_addr(
    key: &'static str,
    value: Option<String>,
    default: Option<&str>,
) -> Result<Option<SocketAddr>, ConfigError> {
    match value.as_deref().or(default) {
        None | Some("") => Ok(None),
        Some(text) => socket_addr(key, Some(text.to_owned()), text).map(Some),
    }
}

fn socket_addr(
    key: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.as_deref().unwrap_or(default);
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not an address such as \"0.0.0.0:1883\" or \"[::1]:7878\""),
        )
    })
}

fn non_zero(
    key: &'static str,
    value: Option<usize>,
    default: usize,
) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::new(value.unwrap_or(default)).ok_or_else(|| invalid(key, "must be at least 1"))
}

#[cfg(test)]
mod tests;
