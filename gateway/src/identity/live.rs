//! The authenticated sessions now open, so that revoking a credential reaches them.
//!
//! A session registers after it is authenticated ([`Live::watch`]) and holds the [`Watch`] for
//! as long as it lives; dropping it deregisters. Each entry keeps what the device proved:
//! the stored hash its password was checked against, or its certificate chain. After a reload
//! ([`Live::sweep`]) every entry is judged against the new state: a device whose password entry
//! is gone or changed, or whose certificate the new trust anchors and CRLs refuse, has its
//! watch fire, and the session closes (counted as `revoked`). A certificate's end of validity
//! fires the watch by itself (`certificate_expired`), without waiting for a reload.
//!
//! Invariant: **no session outlives the credential it was opened with by more than the moment a
//! reload takes.** Events a session already had acknowledged stay stored; nothing after the
//! watch fired is accepted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

/// What a session's device proved when it was let in.
#[derive(Debug, Clone)]
pub enum Proof {
    /// The stored PHC string its password matched.
    Password { stored: String },
    /// Its certificate chain, leaf first.
    Certificate {
        chain: Arc<[CertificateDer<'static>]>,
    },
}

struct Entry {
    device: String,
    proof: Proof,
    revoke: CancellationToken,
    why: Arc<OnceLock<&'static str>>,
}

/// The registry; one per [`super::Authority`].
#[derive(Default)]
pub struct Live {
    next: AtomicU64,
    sessions: Arc<Mutex<HashMap<u64, Entry>>>,
}

/// A session's registration. [`Watch::ended`] resolves when the session must close.
pub struct Watch {
    key: u64,
    sessions: Arc<Mutex<HashMap<u64, Entry>>>,
    revoke: CancellationToken,
    why: Arc<OnceLock<&'static str>>,
    /// When the certificate stops being valid.
    expires: Option<tokio::time::Instant>,
}

impl Live {
    /// Registers a session of `device` let in by `proof`; `expires` is its certificate's end.
    pub fn watch(
        &self,
        device: &str,
        proof: Proof,
        expires: Option<tokio::time::Instant>,
    ) -> Watch {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let revoke = CancellationToken::new();
        let why = Arc::new(OnceLock::new());
        self.lock().insert(
            key,
            Entry {
                device: device.to_owned(),
                proof,
                revoke: revoke.clone(),
                why: why.clone(),
            },
        );
        Watch {
            key,
            sessions: self.sessions.clone(),
            revoke,
            why,
            expires,
        }
    }

    /// Judges every open session with `verdict` (`Some(reason)`: close it); returns how many
    /// were revoked.
    pub fn sweep(&self, verdict: impl Fn(&str, &Proof) -> Option<&'static str>) -> usize {
        let mut revoked = 0;
        for entry in self.lock().values() {
            if entry.revoke.is_cancelled() {
                continue;
            }
            if let Some(reason) = verdict(&entry.device, &entry.proof) {
                let _ = entry.why.set(reason);
                entry.revoke.cancel();
                revoked += 1;
            }
        }
        revoked
    }

    /// Sessions open now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Watch {
    /// Resolves with the counter label once the session must close: `revoked` (a reload
    /// removed or changed its credential), `certificate_revoked`, `certificate_refused`, or
    /// `certificate_expired`.
    pub async fn ended(&self) -> &'static str {
        let expiry = async {
            match self.expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.revoke.cancelled() => self.why.get().copied().unwrap_or("revoked"),
            _ = expiry => "certificate_expired",
        }
    }
}

/// What a device is told for a `reason` [`Watch::ended`] gave.
pub fn describe(reason: &str) -> &'static str {
    match reason {
        "certificate_expired" => "the client certificate expired",
        "certificate_revoked" => "the client certificate was revoked",
        "certificate_refused" => "the client certificate is no longer trusted",
        _ => "the device's credential was revoked",
    }
}

/// [`Watch::ended`] for a session that may have no watch (anonymous): never, then.
pub async fn ended(watch: Option<&Watch>) -> &'static str {
    match watch {
        Some(w) => w.ended().await,
        None => std::future::pending().await,
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sweep_fires_only_the_watches_it_condemns_and_a_dropped_watch_leaves() {
        let live = Live::default();
        let a = live.watch(
            "a",
            Proof::Password {
                stored: "h1".into(),
            },
            None,
        );
        let b = live.watch(
            "b",
            Proof::Password {
                stored: "h2".into(),
            },
            None,
        );
        assert_eq!(live.len(), 2);
        let n = live.sweep(|device, _| (device == "a").then_some("revoked"));
        assert_eq!(n, 1);
        assert_eq!(a.ended().await, "revoked");
        let b_ended = tokio::time::timeout(std::time::Duration::from_millis(20), b.ended()).await;
        assert!(b_ended.is_err(), "b is not revoked");
        drop(a);
        assert_eq!(live.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_certificate_ends_its_session_when_it_expires() {
        let live = Live::default();
        let at = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let w = live.watch(
            "c",
            Proof::Certificate {
                chain: Arc::from(Vec::new()),
            },
            Some(at),
        );
        assert_eq!(w.ended().await, "certificate_expired");
        assert!(tokio::time::Instant::now() >= at);
    }
}
