//! The connector sections: `[teltonika]`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, non_zero, socket_addr, ConfigError, MAX_DURATION_MS};
use crate::ingest::teltonika::TeltonikaConfig;

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
