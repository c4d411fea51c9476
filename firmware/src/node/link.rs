//! How the node proves who it is to the gateway: TLS (trusting the CA that signed the
//! gateway's certificate), its password, and this boot's session id.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::NodeError;

/// TLS to the gateway.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    /// The name the gateway's certificate must carry (its IP, or `tls_server_name`).
    pub server_name: ServerName<'static>,
}

/// What the node presents on every connection.
#[derive(Clone, Default)]
pub struct Credentials {
    pub password: Option<String>,
    /// This boot's session id, sent with every event.
    pub boot: Option<u64>,
    pub tls: Option<Tls>,
    /// Take commands from the gateway.
    pub commands: bool,
}

/// A TLS client configuration trusting the CA certificates in `ca` (PEM), checking `name`.
pub fn tls(ca: &Path, name: &str) -> Result<Tls, NodeError> {
    let bad = |problem: String| NodeError::Config {
        key: "tls_ca".into(),
        problem,
    };
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(format!("{}: {e}", ca.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("{}: no certificate in it", ca.display())));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("{}: {e}", ca.display())))?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| NodeError::Config {
        key: "tls_server_name".into(),
        problem: format!("{name:?}: {e}"),
    })?;
    Ok(Tls {
        config: Arc::new(config),
        server_name,
    })
}
