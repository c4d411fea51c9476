//! SIGHUP: reload credentials, ACL and certificates without dropping connected devices.
//!
//! The config file is read and validated again; its `[tls]` and `[auth]` sections, the
//! credentials file and the certificate files they name replace the ones in force
//! ([`Authority::reload`]). New connections and new publishes use them. Connected devices stay
//! connected, except those the new state no longer lets in: a device removed from the
//! credentials file or given a new password, or whose certificate is now revoked, is
//! disconnected at once. A file that does not load is refused with a log line naming the
//! problem, and the old state stays in force. Other settings take effect at the next start.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::identity::Authority;

/// Reloads `authority` from `config_path` at every SIGHUP, for the life of the runtime.
/// Installing the handler also stops SIGHUP's default action, which would end the process.
pub fn reload_on_hangup(config_path: PathBuf, authority: Arc<Authority>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(message = "Cannot listen for SIGHUP; reload needs a restart.", %error);
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                reload(&config_path, &authority);
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (config_path, authority);
}

/// One reload; logs what happened.
pub fn reload(config_path: &std::path::Path, authority: &Authority) {
    let result = Config::load(config_path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            authority
                .reload(config.identity())
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(revoked) => tracing::info!(
            message = "Reloaded credentials, ACL and certificates (SIGHUP).",
            config = %config_path.display(),
            sessions_revoked = revoked
        ),
        Err(error) => tracing::error!(
            message = "Reload refused; the previous credentials, ACL and certificates stay in force.",
            config = %config_path.display(),
            %error
        ),
    }
}
