//! Certificates made for the tests with rcgen: a CA, the gateway's server certificate, device
//! certificates (valid, expired, revoked) and a CRL, written as PEM files into a directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};

/// A test CA and the files made with it.
pub struct Pki {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    revoked: Vec<SerialNumber>,
    next_serial: u64,
}

/// A certificate and key, as files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Its serial number, to revoke it later ([`Pki::revoke`]).
    pub serial: u64,
}

impl Pki {
    /// A new CA, written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Tributary test CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("CA certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
        Self {
            dir: dir.to_owned(),
            ca,
            revoked: Vec::new(),
            next_serial: 100,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The gateway's certificate for `localhost` and 127.0.0.1.
    pub fn server(&mut self) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        // Both a DNS name "127.0.0.1" (what mosquitto's host check compares) and an IP SAN.
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().expect("ia5")),
            SanType::DnsName("127.0.0.1".try_into().expect("ia5")),
            SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, "gateway");
        self.issue("server", params)
    }

    /// A device certificate with subject CN `device_id`.
    pub fn device(&mut self, device_id: &str) -> Pair {
        self.issue(device_id, device_params(device_id))
    }

    /// A device certificate that expired in 2001.
    pub fn expired_device(&mut self, device_id: &str) -> Pair {
        let mut params = device_params(device_id);
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
        self.issue(device_id, params)
    }

    /// A device certificate valid until `not_after` (an expiry during a session).
    pub fn device_until(&mut self, device_id: &str, not_after: std::time::SystemTime) -> Pair {
        let mut params = device_params(device_id);
        params.not_after = time::OffsetDateTime::from(not_after);
        self.issue(device_id, params)
    }

    /// Lists `pair` in the CRL from the next [`Pki::write_crl`] on.
    pub fn revoke(&mut self, pair: &Pair) {
        self.revoked.push(SerialNumber::from(pair.serial));
    }

    /// A device certificate listed in the CRL ([`Pki::write_crl`]).
    pub fn revoked_device(&mut self, device_id: &str) -> Pair {
        let serial = SerialNumber::from(self.next_serial);
        self.revoked.push(serial);
        self.issue(device_id, device_params(device_id))
    }

    /// Writes the CRL of every revoked certificate to `dir/crl.pem`.
    pub fn write_crl(&self) -> PathBuf {
        self.write_crl_until(2099)
    }

    /// [`Pki::write_crl`] with a next update on 1 January of `year` (a past year: a stale CRL).
    pub fn write_crl_until(&self, year: i32) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2019, 1, 1),
            next_update: date_time_ymd(year, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: self
                .revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial.clone(),
                    revocation_time: date_time_ymd(2019, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.ca).expect("CRL");
        let path = self.dir.join("crl.pem");
        std::fs::write(&path, crl.pem().expect("CRL PEM")).expect("write CRL");
        path
    }

    /// A rustls client config that trusts this CA (for rumqttc and the TCP client).
    pub fn client_config(&self, identity: Option<&Pair>) -> Arc<rustls::ClientConfig> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .expect("CA root");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(pair) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(&pair.cert).expect("cert")],
                    PrivateKeyDer::from_pem_file(&pair.key).expect("key"),
                )
                .expect("client cert"),
        };
        Arc::new(config)
    }

    fn issue(&mut self, name: &str, mut params: CertificateParams) -> Pair {
        let serial = self.next_serial;
        params.serial_number = Some(SerialNumber::from(serial));
        self.next_serial += 1;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let pair = Pair {
            cert: self.dir.join(format!("{name}-{}.crt", self.next_serial)),
            key: self.dir.join(format!("{name}-{}.key", self.next_serial)),
            serial,
        };
        std::fs::write(&pair.cert, cert.pem()).expect("write cert");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
        pair
    }
}

fn device_params(device_id: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, device_id);
    params
}
