//! `config/node.toml`: which sensors, where, how often, and where the gateway is.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use super::NodeError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's device id (1 to 64 of A-Z a-z 0-9 _ . -).
    pub device_id: String,
    /// The gateway's TCP ingest address, or its MQTT listener with `transport = "mqtt"`.
    pub gateway: SocketAddr,
    /// `tcp` (default), `mqtt` (MQTT 3.1.1, QoS 1; PUBACK only after the gateway's spool
    /// commit) or `mqtt5` (the same over MQTT 5, acting on the gateway's reason codes).
    #[serde(default)]
    pub transport: TransportKind,
    /// This device's password, where the gateway requires one (`tributary devices add`).
    /// Sent over TCP in HELLO, over MQTT as the password with the device id as username.
    /// (`token`, the old shared secret's key, is read as the password.)
    #[serde(default, alias = "token")]
    pub password: Option<String>,
    /// The CA that signed the gateway's certificate (PEM): connect over TLS, to the gateway's
    /// TLS listener. Unset: plain text.
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name the gateway's certificate must carry; default: `gateway`'s IP.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Unacknowledged events kept during an outage; the oldest go first when full.
    #[serde(default = "default_buffer")]
    pub buffer_events: usize,
    /// Events per TCP batch.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Take commands from the gateway (`set_interval`, `get_state`): over TCP, HELLO says
    /// protocol 4; over MQTT, the node subscribes to `devices/{id}/commands/#`.
    #[serde(default)]
    pub commands: bool,
    #[serde(default, rename = "sensor")]
    pub sensors: Vec<SensorConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    #[default]
    Tcp,
    Mqtt,
    Mqtt5,
}

fn default_buffer() -> usize {
    10_000
}

fn default_batch() -> usize {
    50
}

/// One sensor.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SensorConfig {
    /// Temperature, humidity, pressure.
    Bme280 {
        /// `/dev/i2c-1`, or `sim`.
        bus: String,
        #[serde(default = "bme280_address")]
        address: u8,
        interval_ms: u64,
    },
    /// One ADC channel scaled to a named value: `value = volts * scale + offset`.
    Ads1115 {
        bus: String,
        #[serde(default = "ads1115_address")]
        address: u8,
        /// A0..A3, or A0A1, A0A3, A1A3, A2A3 for differential inputs.
        channel: String,
        /// Full-scale volts: 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256.
        #[serde(default = "default_range")]
        range: f32,
        name: String,
        unit: String,
        #[serde(default = "one")]
        scale: f64,
        #[serde(default)]
        offset: f64,
        interval_ms: u64,
    },
    /// A GNSS receiver speaking NMEA on a serial port.
    Gnss {
        /// `/dev/serial0`, or `sim`.
        port: String,
        #[serde(default = "default_baud")]
        baud: u32,
        interval_ms: u64,
    },
}

fn bme280_address() -> u8 {
    crate::bme280::DEFAULT_ADDRESS
}
fn ads1115_address() -> u8 {
    crate::ads1115::DEFAULT_ADDRESS
}
fn default_range() -> f32 {
    4.096
}
fn one() -> f64 {
    1.0
}
fn default_baud() -> u32 {
    9600
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| NodeError::ParseConfig {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        tributary_protocol::validate_device_id(&config.device_id).map_err(|e| {
            NodeError::Config {
                key: "device_id".into(),
                problem: e.to_string(),
            }
        })?;
        if config.sensors.is_empty() {
            return Err(NodeError::Config {
                key: "sensor".into(),
                problem: "no [[sensor]] configured".into(),
            });
        }
        for (i, s) in config.sensors.iter().enumerate() {
            let interval = match s {
                SensorConfig::Bme280 { interval_ms, .. }
                | SensorConfig::Ads1115 { interval_ms, .. }
                | SensorConfig::Gnss { interval_ms, .. } => *interval_ms,
            };
            if interval == 0 {
                return Err(NodeError::Config {
                    key: format!("sensor[{i}].interval_ms"),
                    problem: "must be at least 1".into(),
                });
            }
        }
        Ok(config)
    }
}
