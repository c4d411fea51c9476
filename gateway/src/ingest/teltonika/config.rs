//! `[teltonika]`: the Codec 8 tracker listener, off unless `listen` is set.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use tributary_common::validate::{
    invalid, non_zero, socket_addr, timeout_ms, ConfigError, PER_ADDRESS,
};

/// `[teltonika]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TeltonikaConfig {
    pub listen: std::net::SocketAddr,
    pub max_connections: std::num::NonZeroUsize,
    /// Connections one address may hold when the listener is not on loopback.
    pub max_connections_per_address: std::num::NonZeroUsize,
    pub idle_timeout: Duration,
    /// IMEI to device id.
    pub names: BTreeMap<String, String>,
    /// Take IMEIs not in `names`, as themselves.
    pub accept_unknown: bool,
    /// With `accept_unknown`: the most IMEIs not in `names` taken while the gateway runs.
    pub accept_unknown_max: usize,
    /// With `accept_unknown`: the most IMEIs not seen before taken in a minute.
    pub accept_unknown_per_minute: u32,
}

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
pub fn validate(
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
            PER_ADDRESS,
        )?,
        idle_timeout: timeout_ms(
            "teltonika.idle_timeout_ms",
            raw.idle_timeout_ms,
            Duration::from_secs(600),
        )?,
        names: raw.names,
        accept_unknown,
        accept_unknown_max,
        accept_unknown_per_minute,
    }))
}
