//! `[[bridges]]`: upstream MQTT brokers the gateway subscribes to, and the client options each
//! one connects with (a pure function of its entry, so validation can build them without
//! connecting: a CA file that does not load is a config error at start).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, Transport};
use serde::Deserialize;

use tributary_common::validate::names::valid_filter;
use tributary_common::validate::ConfigError;

/// One `[[bridges]]` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Connect with TLS, trusting these CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Topic filters with the QoS to subscribe at.
    pub topics: Vec<(String, u8)>,
    pub keep_alive: Duration,
    pub max_payload_bytes: usize,
}

/// Why a bridge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge {name}: CA file {path}: {problem}")]
    Ca {
        name: String,
        path: PathBuf,
        problem: String,
    },
}

/// The MQTT client options of `config`.
pub fn options(config: &BridgeConfig) -> Result<MqttOptions, BridgeError> {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(config.keep_alive)
        .set_max_packet_size(config.max_payload_bytes + 64 * 1024, 64 * 1024);
    if let Some(user) = &config.username {
        options.set_credentials(user, config.password.clone().unwrap_or_default());
    }
    if let Some(path) = &config.ca_file {
        let bad = |problem: String| BridgeError::Ca {
            name: config.name.clone(),
            path: path.clone(),
            problem,
        };
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?
        {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        options.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
        ));
    }
    Ok(options)
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
pub fn validate(raw: Vec<RawBridge>) -> Result<Vec<BridgeConfig>, ConfigError> {
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
                if !valid_filter(&filter) {
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
        options(&config).map_err(|e| bad("ca_file", e.to_string()))?;
        out.push(config);
    }
    Ok(out)
}
