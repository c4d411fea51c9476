//! How simulated devices prove who they are, as firmware would: TLS to the gateway (trusting a
//! CA file), a password per device, and a boot session.
//!
//! - `--tls-ca FILE`: connect over TLS, verifying the gateway's certificate against FILE; the
//!   name checked is the address's IP (the gateway's certificate needs an IP SAN for it).
//! - `--password TEMPLATE`: each device logs in with TEMPLATE, `{device}` replaced by its id
//!   (MQTT: username = client id = device id; TCP: in HELLO). `tributary devices import` takes
//!   the same `device password` lines.
//! - `--sessions`: each device draws a random boot session at start and sends it (TCP HELLO,
//!   the JSON event's `session`); event ids then read `device:session:seq`.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// What every device of a run presents to the gateway.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Connect over TLS with this configuration.
    pub tls: Option<Arc<ClientConfig>>,
    /// The password template (`{device}` is the device id).
    pub password: Option<String>,
    /// Send a random boot session per device.
    pub sessions: bool,
}

/// Equal when they present the same: the same password template and sessions, and the very
/// same TLS configuration (rustls configurations cannot be compared by value).
impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_tls && self.password == other.password && self.sessions == other.sessions
    }
}

impl Credentials {
    /// The password `device` logs in with, if any.
    pub fn password_for(&self, device: &str) -> Option<String> {
        self.password
            .as_ref()
            .map(|t| t.replace("{device}", device))
    }
}

/// A TLS client configuration trusting the CA certificates in `path` (PEM).
pub fn tls_client(path: &Path) -> Result<Arc<ClientConfig>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("--tls-ca {}: no certificate in it", path.display()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_password_template_names_each_device() {
        let c = super::Credentials {
            password: Some("pw-{device}".into()),
            ..Default::default()
        };
        assert_eq!(c.password_for("env-1").as_deref(), Some("pw-env-1"));
        assert_eq!(super::Credentials::default().password_for("env-1"), None);
    }
}
