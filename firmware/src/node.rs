//! `tributary-node`: the device agent for a Raspberry Pi (or any Linux box with I2C and a UART).
//!
//! It reads the sensors named in `config/node.toml` through the `no_std` drivers of this crate
//! (BME280 and ADS1115 on `/dev/i2c-*` via linux-embedded-hal, a GNSS receiver on a serial
//! port), runs the [`crate::device`] loop, and sends to the gateway over TCP with ack-driven
//! resend, or over MQTT QoS 1 (`transport = "mqtt"`). A bus named `sim` is a simulated chip behind the same driver code, for trying the
//! agent (and testing it) without hardware.

pub mod commands;
pub mod config;
pub mod link;
pub mod mqtt;
pub mod mqtt5;
pub mod sim;
pub mod sources;
pub mod tcp;

/// Why the node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot read {path}: {source}")]
    ReadConfig {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    ParseConfig {
        path: std::path::PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config key `{key}`: {problem}")]
    Config { key: String, problem: String },
    #[error("cannot open {bus}: {reason}{hint}")]
    OpenBus {
        bus: String,
        reason: String,
        hint: &'static str,
    },
    #[error("no {chip} at {address:#04x} on {bus}: {reason}")]
    NoDevice {
        chip: &'static str,
        address: u8,
        bus: String,
        reason: String,
    },
}
