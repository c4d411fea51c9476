//! Device identity: who a connection is, and what it may publish.
//!
//! # Where identity is decided
//! Once per connection, at CONNECT (MQTT) or HELLO (TCP), by [`Authority::authenticate`]:
//! 1. A verified TLS client certificate names the device ([`tls::identity_of`]). The MQTT client
//!    id or HELLO device id must be that name.
//! 2. Otherwise a password: the MQTT username (which must equal the client id) or the HELLO
//!    device id, checked against the credentials file ([`credentials`]), with bounded
//!    concurrency, a cache of recent successes, and a growing wait for addresses that keep
//!    failing ([`throttle`]).
//! 3. Otherwise the connection is anonymous, which only a listener that allows it accepts:
//!    by default, listeners bound to a loopback address (`auth.anonymous = "loopback"`).
//!
//! # Invariant
//! **An authenticated connection's events carry its authenticated identity.** Every publish is
//! checked against the [`acl`] before anything is spooled: by default a device publishes only
//! under `devices/{its id}/...`, so the topic's device id, a JSON payload's `device_id` (which
//! must match the topic) and each TCP event's device id are the authenticated one, and the Kafka
//! key follows from them. Configured ACL rules may let a device publish for others (a tracker
//! for the trailers it tows); nothing else can. A denied publish is never stored as an event:
//! it is counted, logged (rate-limited) and kept as a dead letter with the reason.
//!
//! # Reload
//! [`Authority::reload`] (SIGHUP) re-reads the credentials file, the ACL and the certificates.
//! The new state is swapped in whole, for new connections and new publishes. Open sessions are
//! judged again ([`live`]): a device whose password entry was removed or changed, or whose
//! certificate the new CA or CRL refuses, is disconnected; the others stay connected. A
//! certificate that expires during a session ends it. A file that does not load leaves the
//! old state in force.

pub mod acl;
pub mod admission;
pub mod config;
pub mod credentials;
pub mod live;
pub mod throttle;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

pub use acl::Acl;
pub use credentials::{Credentials, PasswordRefusal, Verifier};
use throttle::Throttle;

pub use config::{
    cleartext_listeners, Anonymous, AuthConfig, IdentityFrom, OnDeny, RawAuth, RawTls, TlsConfig,
};

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Proven by a client certificate or a password.
    Device { id: String, by: Method },
    /// No credentials, on a listener that accepts that. Not subject to the ACL.
    Anonymous,
}

impl Identity {
    /// The authenticated device id, if any.
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Identity::Device { id, .. } => Some(id),
            Identity::Anonymous => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Certificate,
    Password,
}

/// Why a connection was not let in. [`Refusal::reason`] is the counter label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no credentials: this listener requires a client certificate or a password")]
    NoCredentials,
    #[error("unknown device {0:?}")]
    UnknownDevice(String),
    #[error("wrong password for device {0:?}")]
    WrongPassword(String),
    #[error("device id {claimed:?} is not the authenticated identity {proven:?}")]
    IdMismatch { claimed: String, proven: String },
    #[error("{0}")]
    UnusableCertificate(String),
    #[error("busy checking passwords; retry later")]
    Busy,
}

impl Refusal {
    /// What the device is told: an unknown device and a wrong password get the same words, so
    /// a refusal does not tell which device ids exist (the log and the counters keep which).
    pub fn to_device(&self) -> String {
        match self {
            Refusal::UnknownDevice(_) | Refusal::WrongPassword(_) => {
                "bad device id or password".into()
            }
            other => other.to_string(),
        }
    }

    /// Logs the refusal of a device claiming `device` from `peer` at `at` (`CONNECT`, `HELLO`),
    /// rate-limited: a busy answer at info (the device retries), the rest as a warning.
    pub fn log(&self, at: &'static str, device: &str, peer: SocketAddr) {
        let reason = self.reason();
        let Some(suppressed) = tributary_common::ratelog::allow(reason) else {
            return;
        };
        // What a peer claimed, cut to a bounded length before it reaches the log.
        let device = crate::logline::clip(device);
        if *self == Refusal::Busy {
            tracing::info!(message = "Device told to retry: too many password checks are waiting.", device_id = ?device, %peer, at, suppressed);
        } else {
            let refusal = self.to_string();
            let refusal = crate::logline::clip(&refusal);
            tracing::warn!(message = "Device refused.", device_id = ?device, %peer, at, reason, %refusal, suppressed);
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCredentials => "auth_missing",
            Refusal::UnknownDevice(_) => "auth_unknown_device",
            Refusal::WrongPassword(_) => "auth_wrong_password",
            Refusal::IdMismatch { .. } => "auth_id_mismatch",
            Refusal::UnusableCertificate(_) => "auth_bad_certificate",
            Refusal::Busy => "auth_busy",
        }
    }
}

/// What the connection layer learned before the protocol's first message.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The listener is bound to a loopback address.
    pub loopback_listener: bool,
    /// The device id a verified client certificate names, or why it names none; `None` without
    /// a certificate.
    pub certificate: Option<Result<String, String>>,
    /// The verified certificate chain, leaf first (judged again at a reload).
    pub chain: Option<Arc<[rustls_pki_types::CertificateDer<'static>]>>,
}

/// What a device claims in CONNECT or HELLO.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The MQTT client id, or the HELLO device id.
    pub device_id: &'a str,
    /// The MQTT username (TCP has none: the device id is the username).
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

/// The state a reload replaces as a whole.
struct State {
    credentials: Option<Credentials>,
    acl: Acl,
    anonymous: Anonymous,
    on_deny: OnDeny,
    identity_from: IdentityFrom,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The verifier of client certificates, when `tls.client_ca` is set.
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    /// Device ids of Teltonika trackers (`teltonika.names`): no certificate may claim one.
    tracker_ids: std::collections::HashSet<String>,
}

/// Why the identity configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(
        "config key `teltonika.names`: IMEI {imei} is mapped to {device:?}, a device that logs in \
         with a password (auth.credentials): anyone who read the tracker's label could write as \
         it. Map the IMEI to an id of its own"
    )]
    ImeiShadowsDevice { imei: String, device: String },
}

/// Decides identities; shared by every listener.
pub struct Authority {
    state: RwLock<Arc<State>>,
    verifier: Verifier,
    throttle: Throttle,
    admission: admission::Admission,
    live: live::Live,
}

/// What the identity of devices is decided from: `[auth]`, `[tls]`, and the trackers
/// `[teltonika]` names (IMEI to device id), which may never pass for a device that logs in.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub auth: &'a AuthConfig,
    pub tls: Option<&'a TlsConfig>,
    pub trackers: Option<&'a std::collections::BTreeMap<String, String>>,
}

impl Authority {
    /// Loads the credentials file and the certificates the config names.
    pub fn load(config: Sources<'_>) -> Result<Self, IdentityError> {
        Ok(Self {
            state: RwLock::new(Arc::new(State::load(config)?)),
            verifier: Verifier::default(),
            throttle: Throttle::default(),
            admission: admission::Admission::new(Verifier::threads()),
            live: live::Live::default(),
        })
    }

    /// Replaces credentials, ACL and certificates with those `config` names, then closes the
    /// open sessions the new state no longer lets in; returns how many. On error the old state
    /// stays in force and no session is touched.
    pub fn reload(&self, config: Sources<'_>) -> Result<usize, IdentityError> {
        let next = Arc::new(State::load(config)?);
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        Ok(self
            .live
            .sweep(|device, proof| next.still_lets_in(device, proof)))
    }

    /// Whether the identity configuration names `device`: the credentials file lists it, or a
    /// Teltonika tracker is mapped to it. (A device with a certificate is not named anywhere
    /// until it connects.)
    pub fn names(&self, device: &str) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        state.tracker_ids.contains(device)
            || state
                .credentials
                .as_ref()
                .is_some_and(|c| c.contains(device))
    }

    /// Registers an authenticated session, so that a reload revoking its credential, or its
    /// certificate's expiry, ends it; `None` for an anonymous one (nothing to revoke).
    pub fn watch(&self, identity: &Identity, peer: &Peer) -> Option<live::Watch> {
        let Identity::Device { id, by } = identity else {
            return None;
        };
        let (proof, expires) = match (by, &peer.chain) {
            (Method::Certificate, Some(chain)) => {
                let expires = chain.first().and_then(tls::not_after).map(|t| {
                    let left = t
                        .saturating_sub(tributary_common::clock::now_ms() / 1000)
                        .max(0);
                    tokio::time::Instant::now()
                        + std::time::Duration::from_secs(u64::try_from(left).unwrap_or(0))
                });
                let proof = live::Proof::Certificate {
                    chain: chain.clone(),
                };
                (proof, expires)
            }
            _ => {
                let stored = self
                    .current()
                    .credentials
                    .as_ref()
                    .and_then(|c| c.hash_of(id))
                    .unwrap_or_default()
                    .to_owned();
                (live::Proof::Password { stored }, None)
            }
        };
        Some(self.live.watch(id, proof, expires))
    }

    fn current(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The TLS acceptor for new connections, if TLS is configured.
    pub fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.current()
            .tls
            .clone()
            .map(tokio_rustls::TlsAcceptor::from)
    }

    /// Where a client certificate's device id comes from.
    pub fn identity_from(&self) -> IdentityFrom {
        self.current().identity_from
    }

    /// What to do with a publish the ACL denies (MQTT 3.1.1 has no way to say "refused").
    pub fn on_deny(&self) -> OnDeny {
        self.current().on_deny
    }

    /// Decides who a connection is, or refuses it. See the module doc for the order.
    pub async fn authenticate(&self, peer: &Peer, claim: Claim<'_>) -> Result<Identity, Refusal> {
        let state = self.current();
        if let Some(cert) = &peer.certificate {
            let proven = cert.clone().map_err(Refusal::UnusableCertificate)?;
            if state.tracker_ids.contains(&proven) {
                return Err(Refusal::UnusableCertificate(format!(
                    "client certificate names {proven:?}, a Teltonika tracker's id (teltonika.names)"
                )));
            }
            if claim.device_id != proven {
                return Err(Refusal::IdMismatch {
                    claimed: claim.device_id.to_owned(),
                    proven,
                });
            }
            return Ok(Identity::Device {
                id: proven,
                by: Method::Certificate,
            });
        }
        if let Some(password) = claim.password {
            let user = claim.username.unwrap_or(claim.device_id);
            if user != claim.device_id {
                return Err(Refusal::IdMismatch {
                    claimed: claim.device_id.to_owned(),
                    proven: user.to_owned(),
                });
            }
            let ip = peer.addr.ip();
            // Verified recently: no check, no queue, no wait.
            let remembered = state
                .credentials
                .as_ref()
                .is_some_and(|c| self.verifier.remembered(c, user, password));
            let verdict = if remembered {
                Ok(())
            } else {
                let ticket = self.admission.enter(ip).ok_or(Refusal::Busy)?;
                let checked = tokio::time::timeout(admission::AUTH_BUDGET, async {
                    let wait = self.throttle.delay(ip);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    let _turn = ticket.turn().await;
                    match &state.credentials {
                        Some(creds) => self.verifier.verify(creds, user, password).await,
                        None => Err(PasswordRefusal::UnknownDevice),
                    }
                })
                .await;
                checked.map_err(|_| Refusal::Busy)?
            };
            return match verdict {
                Ok(()) => Ok(Identity::Device {
                    id: user.to_owned(),
                    by: Method::Password,
                }),
                Err(refusal) => {
                    self.throttle.failed(ip);
                    Err(match refusal {
                        PasswordRefusal::UnknownDevice => Refusal::UnknownDevice(user.to_owned()),
                        PasswordRefusal::WrongPassword => Refusal::WrongPassword(user.to_owned()),
                    })
                }
            };
        }
        let anonymous_ok = match state.anonymous {
            Anonymous::Never => false,
            Anonymous::Loopback => peer.loopback_listener,
            Anonymous::Network => true,
        };
        if anonymous_ok {
            Ok(Identity::Anonymous)
        } else {
            Err(Refusal::NoCredentials)
        }
    }

    /// Whether `identity` may publish on `topic` (always, for anonymous connections).
    pub fn may_publish(&self, identity: &Identity, topic: &str) -> bool {
        match identity {
            Identity::Anonymous => true,
            Identity::Device { id, .. } => self.current().acl.may_publish(id, topic),
        }
    }
}

impl State {
    /// `None` if a session of `device` let in by `proof` may stay; else the counter label.
    fn still_lets_in(&self, device: &str, proof: &live::Proof) -> Option<&'static str> {
        match proof {
            live::Proof::Password { stored } => {
                let now = self.credentials.as_ref().and_then(|c| c.hash_of(device));
                (now != Some(stored.as_str())).then_some("revoked")
            }
            live::Proof::Certificate { chain } => {
                let (Some(clients), Some((leaf, intermediates))) =
                    (&self.clients, chain.split_first())
                else {
                    return Some("certificate_refused");
                };
                let now = rustls_pki_types::UnixTime::now();
                match clients.verify_client_cert(leaf, intermediates, now) {
                    Ok(_) => None,
                    Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
                        Some("certificate_revoked")
                    }
                    Err(_) => Some("certificate_refused"),
                }
            }
        }
    }

    fn load(config: Sources<'_>) -> Result<Self, IdentityError> {
        let (auth, tls) = (config.auth, config.tls);
        let built = tls.map(tls::server_config).transpose()?;
        let credentials = auth
            .credentials
            .as_deref()
            .map(Credentials::load)
            .transpose()?;
        // A tracker proves only its IMEI: it must never pass for a device that logs in.
        if let (Some(trackers), Some(creds)) = (config.trackers, &credentials) {
            if let Some((imei, device)) = trackers.iter().find(|(_, d)| creds.hash_of(d).is_some())
            {
                return Err(IdentityError::ImeiShadowsDevice {
                    imei: imei.clone(),
                    device: device.clone(),
                });
            }
        }
        Ok(Self {
            tracker_ids: config
                .trackers
                .iter()
                .flat_map(|t| t.values().cloned())
                .collect(),
            credentials,
            acl: auth.acl.clone(),
            anonymous: auth.anonymous,
            on_deny: auth.on_deny,
            identity_from: tls.map_or(IdentityFrom::Cn, |t| t.identity_from),
            clients: built.as_ref().and_then(|b| b.clients.clone()),
            tls: built.map(|b| b.server),
        })
    }
}
