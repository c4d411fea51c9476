//! `[admin]`: where the operators' HTTP listener binds and who may read it, validated once.
//!
//! The admin listener shows what an attacker would like to know (vehicles' positions, peers'
//! addresses, refusals), so it is held to the same rule as the device listeners: beyond loopback
//! it needs a credential (`token_file`) or the explicit opt-in `auth.anonymous = "network"`, and
//! start-up says so. Host names it answers to are the listener's own IP literals, `localhost`,
//! and the names in `hosts` (DNS rebinding: a web page on another name is refused).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use tributary_common::validate::ConfigError;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    /// A file holding the bearer token (its first line).
    pub token_file: Option<PathBuf>,
    /// Host names (without port) the listener answers to, besides IP literals and `localhost`.
    pub hosts: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub header_timeout_ms: Option<u64>,
}

/// The validated `[admin]`.
#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Requests other than `/livez` and `/readyz` must carry it (`Authorization: Bearer`, or
    /// HTTP Basic with it as the password, for a browser); `None`: no credential asked.
    pub token: Option<String>,
    /// Lower-case names the `Host` header may carry, besides IP literals and `localhost`.
    pub hosts: Vec<String>,
    /// Connections beyond this are answered 503 and closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this, and an idle connection is closed after it.
    pub header_timeout: Duration,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("hosts", &self.hosts)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .finish()
    }
}

/// The shortest token accepted: 16 characters (a guessable token is no credential).
const MIN_TOKEN_CHARS: usize = 16;

/// Validates `[admin]`; `None` when disabled (`listen = ""`). `network_opt_in` is
/// `auth.anonymous = "network"`, which also lets the listener go beyond loopback without a token.
pub fn admin(raw: RawAdmin, network_opt_in: bool) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(listen) = tributary_common::validate::optional_addr(
        "admin.listen",
        raw.listen,
        Some("127.0.0.1:9880"),
    )?
    else {
        return Ok(None);
    };
    let token = match &raw.token_file {
        None => None,
        Some(path) => Some(read_token(path)?),
    };
    if token.is_none() && !listen.ip().is_loopback() && !network_opt_in {
        return Err(ConfigError::invalid(
            "admin.listen",
            format!(
                "listens on {listen}, beyond this machine, but has no credential: anyone on the \
                 network could read devices' positions and peers' addresses. Set \
                 admin.token_file, bind to 127.0.0.1, or accept that with auth.anonymous = \"network\""
            ),
        ));
    }
    let mut hosts = Vec::new();
    for name in raw.hosts.unwrap_or_default() {
        let lower = name.to_ascii_lowercase();
        let legal = !lower.is_empty()
            && lower.len() <= 253
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !legal {
            return Err(ConfigError::invalid(
                "admin.hosts",
                format!("{name:?} is not a host name (letters, digits, '-' and '.', no port)"),
            ));
        }
        hosts.push(lower);
    }
    let max_connections = match raw.max_connections {
        None => 32,
        Some(n) if (1..=4096).contains(&n) => n,
        Some(_) => {
            return Err(ConfigError::invalid(
                "admin.max_connections",
                "must be from 1 to 4096",
            ))
        }
    };
    let header_timeout = match raw.header_timeout_ms {
        None => Duration::from_secs(10),
        Some(ms) if (100..=600_000).contains(&ms) => Duration::from_millis(ms),
        Some(_) => {
            return Err(ConfigError::invalid(
                "admin.header_timeout_ms",
                "must be from 100 to 600000",
            ))
        }
    };
    Ok(Some(AdminConfig {
        listen,
        token,
        hosts,
        max_connections,
        header_timeout,
    }))
}

/// The token: the file's first line, trimmed. Its text never reaches an error message.
fn read_token(path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::invalid(
            "admin.token_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(ConfigError::invalid(
            "admin.token_file",
            format!(
                "{}: the token's first line must be at least {MIN_TOKEN_CHARS} characters \
                 (e.g. `openssl rand -hex 24`)",
                path.display()
            ),
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::invalid(
            "admin.token_file",
            format!(
                "{}: the token must be printable ASCII without spaces",
                path.display()
            ),
        ));
    }
    Ok(token.to_owned())
}
