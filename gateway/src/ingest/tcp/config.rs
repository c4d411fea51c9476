//! The `[tcp]` section: the compact TCP protocol's listeners (plain and TLS) and their limits.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use tributary_common::validate::{
    invalid, non_zero, optional_addr, timeout_ms, ConfigError, PER_ADDRESS,
};

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

/// Validates `[tcp]`; `None` when TCP ingest is disabled.
pub fn validate(raw: RawTcp) -> Result<Option<TcpConfig>, ConfigError> {
    if raw.token.is_some() {
        return Err(invalid(
            "tcp.token",
            "the shared token was replaced by per-device passwords: remove it, add devices \
             with `tributary devices add`, and set auth.credentials",
        ));
    }
    if !raw.enabled.unwrap_or(true) {
        return Ok(None);
    }
    Ok(Some(TcpConfig {
        listen: optional_addr("tcp.listen", raw.listen, Some("127.0.0.1:7878"))?,
        tls_listen: optional_addr("tcp.tls_listen", raw.tls_listen, None)?,
        max_frame_bytes: non_zero(
            "tcp.max_frame_bytes",
            raw.max_frame_bytes,
            tributary_protocol::DEFAULT_MAX_FRAME_BYTES,
        )?,
        max_connections: non_zero("tcp.max_connections", raw.max_connections, 20_000)?,
        max_connections_per_address: non_zero(
            "tcp.max_connections_per_address",
            raw.max_connections_per_address,
            PER_ADDRESS,
        )?,
        idle_timeout: timeout_ms(
            "tcp.idle_timeout_ms",
            raw.idle_timeout_ms,
            Duration::from_secs(600),
        )?,
    }))
}
