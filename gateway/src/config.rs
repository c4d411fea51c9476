//! Configuration: TOML as read ([`RawConfig`]), then validated once into [`Config`].
//!
//! Two phases, as ripgrep does it: the raw structs mirror the file (every field optional, unknown
//! keys refused), and [`Config::from_raw`] turns them into typed values (`SocketAddr`,
//! `Duration`, `NonZeroUsize`, paths) or a [`ConfigError`] that names the key and says what is
//! wrong. Nothing after start-up parses configuration again. The shipped file
//! `config/gateway.toml` documents every key, its unit and its default; `tributary
//! print-config` prints it.
//!
//! Each part owns its section: the raw type, the validated type and the validation live beside
//! its code (`ingest/tcp/config.rs`, `ingest/mqtt/config.rs`, `spool/config.rs`,
//! `identity/config.rs`, `forward/config.rs`, `route/config.rs`, `admin/config.rs`, and the
//! connectors'). This module only reads the file and assembles the parts, checking what spans
//! several of them (at least one listener; who may reach which listener). It imports downward
//! only: no part imports it back. What the parts share ([`ConfigError`], address and count
//! parsers, naming rules) is in [`tributary_common::validate`], below them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::forward::{RawFileSink, RawKafka, RawTime, SinkConfig, TimePolicy};
use crate::identity::{Anonymous, AuthConfig, RawAuth, RawTls, TlsConfig};
use crate::ingest::bridge::{BridgeConfig, RawBridge};
use crate::ingest::files::{FileSource, RawFiles};
use crate::ingest::mqtt::{MqttConfig, RawMqtt};
use crate::ingest::tcp::{RawTcp, TcpConfig};
use crate::ingest::teltonika::{RawTeltonika, TeltonikaConfig};
use crate::observe::admin::{AdminConfig, RawAdmin};
use crate::route::{RawRoutes, RoutesConfig};
pub use tributary_common::validate::ConfigError;
use tributary_common::validate::{invalid, named_entries};
use tributary_spool::{RawSpool, SpoolConfig};

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

fn rule_entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<crate::route::rules::RawRule>, D::Error> {
    named_entries(d, "rules")
}

fn mapping_entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<crate::route::mapping::RawMapping>, D::Error> {
    named_entries(d, "mappings")
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
    pub admin: RawAdmin,
    #[serde(default)]
    pub time: RawTime,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub auth: RawAuth,
    /// `[[rules]]`: stream processing at the edge ([`crate::route::rules`]).
    #[serde(default, deserialize_with = "rule_entries")]
    pub rules: Vec<crate::route::rules::RawRule>,
    /// `[[mappings]]`: payloads of devices that do not speak Tributary's formats
    /// ([`crate::route::mapping`]).
    #[serde(default, deserialize_with = "mapping_entries")]
    pub mappings: Vec<crate::route::mapping::RawMapping>,
    /// `[teltonika]`: Codec 8 trackers over TCP.
    #[serde(default)]
    pub teltonika: RawTeltonika,
    /// `[[files]]`: files followed line by line.
    #[serde(default)]
    pub files: Vec<RawFiles>,
    /// `[[bridges]]`: upstream MQTT brokers Tributary subscribes to.
    #[serde(default)]
    pub bridges: Vec<RawBridge>,
    /// `[[modbus]]`: Modbus TCP and RTU devices the gateway polls.
    #[serde(default)]
    pub modbus: Vec<crate::ingest::modbus::RawModbus>,
    /// `[sparkplug]`: Sparkplug B edge nodes on the MQTT listener and the bridges.
    #[serde(default)]
    pub sparkplug: crate::ingest::sparkplug::RawSparkplug,
    /// `[commands]`: commands from a Kafka topic to devices.
    #[serde(default)]
    pub commands: crate::commands::RawCommands,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub data_dir: Option<PathBuf>,
    pub shutdown_grace_ms: Option<u64>,
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

    /// What devices' identity is decided from ([`crate::identity::Authority::load`]).
    pub fn identity(&self) -> crate::identity::Sources<'_> {
        crate::identity::Sources {
            auth: &self.auth,
            tls: self.tls.as_ref(),
            trackers: self.teltonika.as_ref().map(|t| &t.names),
        }
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
    /// `[[rules]]`: run by the spool's writer as it stores events ([`crate::route::rules::store`]).
    pub rules: crate::route::rules::RuleSet,
    pub sink: SinkConfig,
    pub routes: RoutesConfig,
    /// The admin listener (metrics, health, status); `None` when disabled.
    pub admin: Option<AdminConfig>,
    /// Which time a record's Kafka timestamp is.
    pub time: TimePolicy,
    /// Certificates for the TLS listeners; `None` without TLS.
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    /// How payloads on other topics than `devices/...` become events.
    pub mappings: Vec<crate::route::mapping::Mapping>,
    /// The Teltonika tracker listener; `None` when off (the default).
    pub teltonika: Option<TeltonikaConfig>,
    /// The file-tail sources.
    pub files: Vec<FileSource>,
    /// The upstream brokers bridged in.
    pub bridges: Vec<BridgeConfig>,
    /// The Modbus links polled.
    pub modbus: Vec<crate::ingest::modbus::ModbusLink>,
    /// Sparkplug B decoding; `None` when off (the default).
    pub sparkplug: Option<crate::ingest::sparkplug::SparkplugConfig>,
    /// Commands from Kafka to devices; `None` when off (the default).
    pub commands: Option<crate::commands::CommandsConfig>,
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

        let tcp = crate::ingest::tcp::config::validate(raw.tcp)?;
        let mqtt = crate::ingest::mqtt::config::validate(raw.mqtt)?;
        let tcp = tcp.filter(|t| t.listen.is_some() || t.tls_listen.is_some());
        let mqtt = mqtt.filter(|m| m.listen.is_some() || m.tls_listen.is_some());
        if tcp.is_none() && mqtt.is_none() {
            return Err(invalid(
                "tcp.enabled",
                "both tcp and mqtt ingest are disabled (or have no listen address); enable at least one",
            ));
        }
        let listeners = listeners(tcp.as_ref(), mqtt.as_ref());
        let tls = crate::identity::config::tls(raw.tls, listeners.iter().any(|l| l.2))?;
        let auth = crate::identity::config::auth(raw.auth)?;
        let broker = mqtt.as_ref().and_then(|m| m.broker_listen);
        crate::identity::config::check_exposure(&listeners, broker, &auth, tls.as_ref())?;
        let network_opt_in = auth.anonymous == Anonymous::Network;
        let admin = crate::observe::admin::config::admin(raw.admin, network_opt_in)?;

        let teltonika = crate::ingest::teltonika::config::validate(raw.teltonika, network_opt_in)?;
        let files = crate::ingest::files::config::validate(raw.files)?;
        let bridges = crate::ingest::bridge::config::validate(raw.bridges)?;
        let modbus = crate::ingest::modbus::config::validate(raw.modbus)?;
        let sparkplug = crate::ingest::sparkplug::config::validate(raw.sparkplug)?;
        let mappings =
            crate::route::mapping::validate(&raw.mappings).map_err(|e| ConfigError::Rule {
                key: e.key,
                problem: e.problem,
            })?;
        let rules = crate::route::rules::validate(&raw.rules).map_err(|e| ConfigError::Rule {
            key: e.key,
            problem: e.problem,
        })?;
        let mut rule_topics: Vec<String> = rules.iter().map(|r| r.topic.clone()).collect();
        let gateway_id = raw.kafka.gateway_id.clone().filter(|g| !g.is_empty());
        let commands = crate::commands::config::validate(raw.commands, gateway_id.as_deref())?;
        // Outcomes are records like any other: the topic is created with the rules' topics.
        rule_topics.extend(commands.as_ref().map(|c| c.responses_topic.clone()));
        let rules = crate::route::rules::RuleSet::new(rules)
            .map_err(|e| ConfigError::Files(e.to_string()))?;
        let spool = tributary_spool::config::validate(raw.spool, &data_dir)?;

        let routes = crate::route::config::routes(raw.routes)?;
        let sink = crate::forward::config::sink(
            raw.kafka,
            raw.file_sink,
            &data_dir,
            &routes,
            &rule_topics,
        )?;
        if commands.is_some() && !matches!(sink, SinkConfig::Kafka(_)) {
            return Err(invalid(
                "commands.topic",
                "commands are read from Kafka: set kafka.brokers (the file sink has no commands)",
            ));
        }
        Ok(Config {
            data_dir,
            shutdown_grace,
            tcp,
            mqtt,
            spool,
            rules,
            sink,
            routes,
            admin,
            time: crate::forward::config::time(raw.time)?,
            tls,
            auth,
            mappings,
            teltonika,
            files,
            bridges,
            modbus,
            sparkplug,
            commands,
        })
    }
}

/// The most `gateway.shutdown_grace_ms` may be.
const MAX_GRACE_MS: u64 = 24 * 3600 * 1000;

#[cfg(test)]
mod tests;
