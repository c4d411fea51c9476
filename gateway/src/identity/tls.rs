//! TLS for the device listeners: rustls with the `ring` provider, PEM files loaded with
//! `rustls-pki-types`.
//!
//! With `tls.client_ca`, client certificates signed by that CA are verified (and checked against
//! `tls.crl`, if given); the device id is then the certificate's subject CN, its first DNS SAN,
//! or the last `/` or `:` segment of its first URI SAN (`tls.identity_from`).
//! Unless `tls.require_client_cert`, a client without a certificate may still connect and log
//! in with a password, so certificate and password devices share a port. An expired, revoked or unknown certificate fails the handshake: the device sees
//! a TLS alert, and the gateway counts the failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::config::{IdentityFrom, TlsConfig};

/// Why the TLS set-up could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {problem}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("{key}: {path} holds no {what}")]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("tls: {0}")]
    Rustls(String),
}

/// The server configuration, and the verifier of client certificates (kept to judge open
/// sessions' certificates again after a reload).
pub struct Built {
    pub server: Arc<ServerConfig>,
    pub clients: Option<Arc<dyn ClientCertVerifier>>,
}

/// Builds the server configuration from the files `config` names.
pub fn server_config(config: &TlsConfig) -> Result<Built, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs("tls.cert", &config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| TlsError::Pem {
        key: "tls.key",
        path: config.key.clone(),
        problem: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut clients = None;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs("tls.client_ca", ca)? {
                roots.add(cert).map_err(|e| {
                    TlsError::Rustls(format!("tls.client_ca {}: {e}", ca.display()))
                })?;
            }
            let mut crls = Vec::new();
            for path in &config.crl {
                let found = CertificateRevocationListDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| TlsError::Pem {
                        key: "tls.crl",
                        path: path.clone(),
                        problem: e.to_string(),
                    })?;
                if found.is_empty() {
                    return Err(TlsError::Empty {
                        key: "tls.crl",
                        path: path.clone(),
                        what: "CRL",
                    });
                }
                warn_if_stale(path, &found);
                crls.extend(found);
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .with_crls(crls);
            let verifier = if config.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(format!("client verifier: {e}")))?;
            clients = Some(verifier.clone());
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("tls.cert and tls.key: {e}")))?;
    Ok(Built {
        server: Arc::new(server),
        clients,
    })
}

/// Warns about a CRL past its next-update date: its issuer has published a newer one, which
/// may revoke certificates this one does not. Said at start and at every reload.
fn warn_if_stale(path: &Path, crls: &[CertificateRevocationListDer<'_>]) {
    let now = x509_parser::time::ASN1Time::now();
    for crl in crls {
        let Ok((_, parsed)) = x509_parser::parse_x509_crl(crl.as_ref()) else {
            continue; // rustls refuses it with its own words
        };
        if let Some(next) = parsed.next_update().filter(|next| *next < now) {
            tracing::warn!(
                message = "A CRL is past its next-update date: fetch the current one, or certificates revoked since are still let in.",
                key = "tls.crl",
                path = %path.display(),
                next_update = %next,
            );
        }
    }
}

/// The time `cert` stops being valid, as seconds since the Unix epoch; `None` if it does not
/// parse (the handshake already verified it).
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let found = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            key,
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
    if found.is_empty() {
        return Err(TlsError::Empty {
            key,
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(found)
}

/// The device id a verified client certificate names, or why it names none.
pub fn identity_of(cert: &CertificateDer<'_>, from: IdentityFrom) -> Result<String, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    let id = match from {
        IdentityFrom::Cn => parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        IdentityFrom::SanDns | IdentityFrom::SanUri => parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value
                    .general_names
                    .iter()
                    .find_map(|n| match (n, from) {
                        (GeneralName::DNSName(s), IdentityFrom::SanDns) => Some((*s).to_owned()),
                        // `spiffe://fleet/device/env-1` or `urn:dev:env-1`: the last segment.
                        (GeneralName::URI(s), IdentityFrom::SanUri) => {
                            s.rsplit(['/', ':']).next().map(str::to_owned)
                        }
                        _ => None,
                    })
            }),
    };
    let id = id.ok_or_else(|| format!("client certificate has no {}", from.describe()))?;
    tributary_protocol::validate_device_id(&id)
        .map_err(|e| format!("client certificate {} {id:?}: {e}", from.describe()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_device_id_comes_from_the_cn_or_the_configured_san() {
        let c = cert(
            Some("env-1"),
            vec![
                SanType::DnsName("env-2.devices".try_into().unwrap()),
                SanType::URI("spiffe://fleet/device/env-3".try_into().unwrap()),
            ],
        );
        assert_eq!(identity_of(&c, IdentityFrom::Cn).unwrap(), "env-1");
        assert_eq!(
            identity_of(&c, IdentityFrom::SanDns).unwrap(),
            "env-2.devices"
        );
        assert_eq!(identity_of(&c, IdentityFrom::SanUri).unwrap(), "env-3");
    }

    #[test]
    fn a_certificate_without_a_usable_id_says_why() {
        let none = cert(None, Vec::new());
        assert!(identity_of(&none, IdentityFrom::Cn)
            .unwrap_err()
            .contains("no subject CN"));
        let bad = cert(Some("env 1/x"), Vec::new());
        assert!(identity_of(&bad, IdentityFrom::Cn)
            .unwrap_err()
            .contains("\"env 1/x\""));
    }
}
