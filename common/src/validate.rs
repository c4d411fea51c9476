//! The vocabulary every part's configuration is validated in: [`ConfigError`], which names the
//! key at fault, and the parsers for addresses, counts and `[[list]]` entries that several parts
//! share; [`names`] holds the naming rules (device ids and globs, event kinds, Kafka topics, MQTT
//! filters).
//!
//! Each subsystem owns its configuration next to its code (the spool crate's `config.rs`, the
//! gateway's `ingest/tcp/config.rs`, `identity/config.rs`, `forward/config.rs`, ...): the serde
//! type as the file spells it, the validated type, and the function between them. The gateway's
//! `config.rs` reads the TOML and assembles the parts. This module sits below all of them.
//!
//! Invariant: it lives in `tributary-common`, below the spool and the gateway, so any part may
//! use it without an import running back up.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

pub mod names;

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

impl ConfigError {
    /// The key's value is wrong: `problem` says how.
    pub fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            problem: problem.into(),
        }
    }
}

/// Shorthand for [`ConfigError::invalid`].
pub fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, problem)
}

/// The longest duration a `_ms` key may name: 100 years, far below where millisecond
/// arithmetic on `i64` timestamps could overflow.
pub const MAX_DURATION_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// The default of every device listener's `max_connections_per_address`: room for a depot's
/// fleet behind one NAT router, not for one peer to take a listener's every slot.
pub const PER_ADDRESS: usize = 1000;

/// Reads `[[list]]` entries one at a time, so that a mistake in one (a key it does not know, a
/// value of the wrong type) names the entry and its name: `rules[1] ("hot"): unknown field
/// `colour``. Read as one array, TOML's error would point at the line only.
pub fn named_entries<'de, D, T>(d: D, list: &str) -> Result<Vec<T>, D::Error>
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

/// An address, `""` for none, or the default when the key is absent.
pub fn optional_addr(
    key: &'static str,
    value: Option<String>,
    default: Option<&str>,
) -> Result<Option<SocketAddr>, ConfigError> {
    match value.as_deref().or(default) {
        None | Some("") => Ok(None),
        Some(text) => socket_addr(key, Some(text.to_owned()), text).map(Some),
    }
}

/// An address, or the default when the key is absent.
pub fn socket_addr(
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

/// A count of at least 1, or the default when the key is absent.
pub fn non_zero(
    key: &'static str,
    value: Option<usize>,
    default: usize,
) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::new(value.unwrap_or(default)).ok_or_else(|| invalid(key, "must be at least 1"))
}

/// A timeout in milliseconds from 1 to [`MAX_DURATION_MS`], or the default when absent.
pub fn timeout_ms(
    key: &'static str,
    value: Option<u64>,
    default: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(ms) if (1..=MAX_DURATION_MS).contains(&ms) => Ok(std::time::Duration::from_millis(ms)),
        Some(_) => Err(invalid(
            key,
            format!("must be from 1 to {MAX_DURATION_MS} (100 years)"),
        )),
    }
}
