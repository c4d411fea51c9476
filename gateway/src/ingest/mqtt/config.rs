//! The `[mqtt]` section: the device listener (MQTT 3.1, 3.1.1 and 5) and the embedded broker.

use std::net::SocketAddr;
use std::num::NonZeroUsize;

use serde::Deserialize;

use tributary_common::validate::{invalid, non_zero, optional_addr, ConfigError, PER_ADDRESS};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub tls_listen: Option<String>,
    pub max_payload_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub broker_listen: Option<String>,
    pub receive_maximum: Option<u32>,
    pub max_keep_alive_s: Option<u32>,
    pub max_user_properties: Option<usize>,
    pub max_user_property_bytes: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The plain-text listener; `None` when disabled (`listen = ""`).
    pub listen: Option<SocketAddr>,
    /// The TLS listener (conventionally port 8883), if any.
    pub tls_listen: Option<SocketAddr>,
    pub max_payload_bytes: NonZeroUsize,
    pub max_connections: NonZeroUsize,
    /// Connections one address may hold on a listener not bound to loopback.
    pub max_connections_per_address: NonZeroUsize,
    /// The embedded broker for subscribers and local apps; `None` when disabled.
    pub broker_listen: Option<SocketAddr>,
    /// MQTT 5: the Receive Maximum granted while the spool has room (1 to 65535).
    pub receive_maximum: u16,
    /// MQTT 5: the longest keep-alive a device may ask for (1 to 65535 s).
    pub max_keep_alive_s: u16,
    /// MQTT 5: the most user properties one publish may carry into Kafka headers, and their
    /// names and values together.
    pub max_user_properties: usize,
    pub max_user_property_bytes: usize,
}

/// Validates `[mqtt]`; `None` when MQTT ingest is disabled.
pub fn validate(raw: RawMqtt) -> Result<Option<MqttConfig>, ConfigError> {
    if !raw.enabled.unwrap_or(true) {
        return Ok(None);
    }
    let u16_in = |key: &'static str, value: Option<u32>, default: u16| match value {
        None => Ok(default),
        Some(v) => u16::try_from(v)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| invalid(key, format!("{v} is not between 1 and 65535"))),
    };
    Ok(Some(MqttConfig {
        listen: optional_addr("mqtt.listen", raw.listen, Some("127.0.0.1:1883"))?,
        tls_listen: optional_addr("mqtt.tls_listen", raw.tls_listen, None)?,
        max_payload_bytes: non_zero("mqtt.max_payload_bytes", raw.max_payload_bytes, 256 * 1024)?,
        max_connections: non_zero("mqtt.max_connections", raw.max_connections, 20_000)?,
        max_connections_per_address: non_zero(
            "mqtt.max_connections_per_address",
            raw.max_connections_per_address,
            PER_ADDRESS,
        )?,
        broker_listen: optional_addr(
            "mqtt.broker_listen",
            raw.broker_listen,
            Some("127.0.0.1:1884"),
        )?,
        receive_maximum: u16_in("mqtt.receive_maximum", raw.receive_maximum, 32)?,
        max_keep_alive_s: u16_in("mqtt.max_keep_alive_s", raw.max_keep_alive_s, 65_535)?,
        max_user_properties: raw.max_user_properties.unwrap_or(16),
        max_user_property_bytes: raw.max_user_property_bytes.unwrap_or(4096),
    }))
}
