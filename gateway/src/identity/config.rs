//! The `[tls]` and `[auth]` sections, and the start-up rule that no listener on the network
//! accepts anonymous devices unless the config says so.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::acl::{Acl, Filter, Rule};
use tributary_common::validate::names::device_glob;
use tributary_common::validate::{invalid, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    pub require_client_cert: Option<bool>,
    pub identity_from: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub credentials: Option<PathBuf>,
    pub anonymous: Option<String>,
    pub cleartext_passwords: Option<bool>,
    pub on_deny: Option<String>,
    #[serde(default)]
    pub acl: Vec<RawAclRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAclRule {
    pub devices: Option<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Certificates for the TLS listeners.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// CA whose client certificates identify devices; `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) checked against client certificates.
    pub crl: Vec<PathBuf>,
    /// Refuse TLS clients without a certificate (else they may log in with a password).
    pub require_client_cert: bool,
    pub identity_from: IdentityFrom,
}

/// Which part of a client certificate is the device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityFrom {
    Cn,
    SanDns,
    SanUri,
}

impl IdentityFrom {
    pub fn describe(self) -> &'static str {
        match self {
            IdentityFrom::Cn => "subject CN",
            IdentityFrom::SanDns => "DNS subject alternative name",
            IdentityFrom::SanUri => "URI subject alternative name",
        }
    }
}

/// Who may connect without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anonymous {
    /// Nobody.
    Never,
    /// Connections to listeners bound to a loopback address (the default).
    Loopback,
    /// Anyone who can reach a listener (warned about at every start).
    Network,
}

/// What the MQTT listener does with a QoS 1/2 publish the ACL denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeny {
    /// PUBACK it (so the device does not resend it forever), store it only as a dead letter.
    Acknowledge,
    /// Close the connection without acknowledging (the device will resend after reconnecting).
    Disconnect,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The credentials file (`device_id:argon2id-hash` lines).
    pub credentials: Option<PathBuf>,
    pub anonymous: Anonymous,
    /// Passwords may cross the network in clear text: plain listeners beyond loopback while
    /// devices have passwords (`auth.cleartext_passwords`; warned about at every start).
    pub cleartext_passwords: bool,
    pub on_deny: OnDeny,
    pub acl: Acl,
}

pub fn tls(raw: RawTls, needed: bool) -> Result<Option<TlsConfig>, ConfigError> {
    let any = raw.cert.is_some()
        || raw.key.is_some()
        || raw.client_ca.is_some()
        || !raw.crl.is_empty()
        || raw.require_client_cert.is_some()
        || raw.identity_from.is_some();
    if !any {
        if needed {
            return Err(invalid(
                "tls.cert",
                "a TLS listener (tcp.tls_listen or mqtt.tls_listen) needs tls.cert and tls.key",
            ));
        }
        return Ok(None);
    }
    let cert = raw
        .cert
        .ok_or_else(|| invalid("tls.cert", "is required when [tls] is configured"))?;
    let key = raw
        .key
        .ok_or_else(|| invalid("tls.key", "is required when [tls] is configured"))?;
    if !raw.crl.is_empty() && raw.client_ca.is_none() {
        return Err(invalid(
            "tls.crl",
            "revocation lists apply to client certificates: set tls.client_ca too",
        ));
    }
    let require_client_cert = raw.require_client_cert.unwrap_or(false);
    if require_client_cert && raw.client_ca.is_none() {
        return Err(invalid(
            "tls.require_client_cert",
            "needs tls.client_ca, the CA that signs device certificates",
        ));
    }
    let identity_from = match raw.identity_from.as_deref() {
        None | Some("cn") => IdentityFrom::Cn,
        Some("san_dns") => IdentityFrom::SanDns,
        Some("san_uri") => IdentityFrom::SanUri,
        Some(other) => {
            return Err(invalid(
                "tls.identity_from",
                format!("{other:?} is not \"cn\", \"san_dns\" or \"san_uri\""),
            ))
        }
    };
    Ok(Some(TlsConfig {
        cert,
        key,
        client_ca: raw.client_ca,
        crl: raw.crl,
        require_client_cert,
        identity_from,
    }))
}

pub fn auth(raw: RawAuth) -> Result<AuthConfig, ConfigError> {
    let anonymous = match raw.anonymous.as_deref() {
        None | Some("loopback") => Anonymous::Loopback,
        Some("never") => Anonymous::Never,
        Some("network") => Anonymous::Network,
        Some(other) => {
            return Err(invalid(
                "auth.anonymous",
                format!("{other:?} is not \"loopback\", \"never\" or \"network\""),
            ))
        }
    };
    let on_deny = match raw.on_deny.as_deref() {
        None | Some("acknowledge") => OnDeny::Acknowledge,
        Some("disconnect") => OnDeny::Disconnect,
        Some(other) => {
            return Err(invalid(
                "auth.on_deny",
                format!("{other:?} is not \"acknowledge\" or \"disconnect\""),
            ))
        }
    };
    let mut rules = Vec::with_capacity(raw.acl.len());
    for (i, r) in raw.acl.into_iter().enumerate() {
        let bad = |field: &str, problem: String| ConfigError::Rule {
            key: format!("auth.acl[{i}].{field}"),
            problem,
        };
        let devices = r.devices.unwrap_or_else(|| "*".into());
        device_glob(&devices).map_err(|p| bad("devices", p))?;
        if r.allow.is_empty() && r.deny.is_empty() {
            return Err(bad("allow", "the rule has neither allow nor deny".into()));
        }
        let compile = |field: &str, filters: Vec<String>| {
            filters
                .iter()
                .map(|f| Filter::parse(f).map_err(|p| bad(field, p)))
                .collect::<Result<Vec<_>, _>>()
        };
        rules.push(Rule {
            devices,
            allow: compile("allow", r.allow)?,
            deny: compile("deny", r.deny)?,
        });
    }
    Ok(AuthConfig {
        credentials: raw.credentials,
        anonymous,
        cleartext_passwords: raw.cleartext_passwords.unwrap_or(false),
        on_deny,
        acl: Acl::new(rules),
    })
}

/// Plain (not TLS) listeners beyond loopback while devices have passwords: where passwords would
/// cross the network in clear text. `listeners` are `(key, address, is_tls)`.
pub fn cleartext_listeners(
    listeners: &[(&'static str, SocketAddr, bool)],
    auth: &AuthConfig,
) -> Vec<(&'static str, SocketAddr)> {
    if auth.credentials.is_none() {
        return Vec::new();
    }
    listeners
        .iter()
        .filter(|(_, addr, is_tls)| !is_tls && !addr.ip().is_loopback())
        .map(|&(key, addr, _)| (key, addr))
        .collect()
}

/// Refuses, at start, a listener that anyone on the network could write to as any device, and
/// an embedded subscriber broker (which has no authentication) beyond loopback, unless
/// `auth.anonymous = "network"` says so. `listeners` are `(key, address, is_tls)`.
pub fn check_exposure(
    listeners: &[(&'static str, SocketAddr, bool)],
    broker: Option<SocketAddr>,
    auth: &AuthConfig,
    tls: Option<&TlsConfig>,
) -> Result<(), ConfigError> {
    if let Some(addr) = broker.filter(|a| !a.ip().is_loopback()) {
        if auth.anonymous != Anonymous::Network {
            return Err(invalid(
                "mqtt.broker_listen",
                format!(
                    "listens on {addr}, beyond this machine, but the embedded broker for \
                     subscribers has no authentication: anyone could read every device's data. \
                     Bind it to 127.0.0.1, or accept that with auth.anonymous = \"network\""
                ),
            ));
        }
    }
    for (key, addr) in cleartext_listeners(listeners, auth) {
        if !auth.cleartext_passwords {
            return Err(invalid(
                key,
                format!(
                    "listens on {addr} without TLS, beyond this machine, while devices \
                     authenticate with passwords: they would cross the network in clear text. \
                     Use a TLS listener (tcp.tls_listen, mqtt.tls_listen), bind to 127.0.0.1, or \
                     accept that with auth.cleartext_passwords = true"
                ),
            ));
        }
    }
    for &(key, addr, is_tls) in listeners {
        if addr.ip().is_loopback() || auth.anonymous == Anonymous::Network {
            continue;
        }
        let certificates = is_tls && tls.is_some_and(|t| t.client_ca.is_some());
        if auth.credentials.is_none() && !certificates {
            return Err(invalid(
                key,
                format!(
                    "listens on {addr}, beyond this machine, but devices cannot authenticate: \
                     add device passwords (auth.credentials; see `tributary devices add`) or \
                     client certificates (tls.client_ca, on a TLS listener), bind to 127.0.0.1, \
                     or accept anonymous devices from the network with auth.anonymous = \"network\""
                ),
            ));
        }
    }
    Ok(())
}
