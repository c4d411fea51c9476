//! Graceful shutdown: one [`CancellationToken`] says "stop", a [`TaskTracker`] waits for tasks.
//!
//! Order on SIGINT or SIGTERM: ingest stops accepting and finishes what it received (committed
//! to the spool and acknowledged); the forwarder drains what it can within the grace period and
//! waits for outstanding deliveries; the spool closes. Nothing unforwarded is lost when the grace
//! period runs out: it stays in the spool for the next start.

use tokio_util::sync::CancellationToken;

/// Resolves on SIGINT or SIGTERM (or Ctrl-C where there are no signals).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(message = "Cannot listen for SIGTERM; only SIGINT stops the gateway.", %error);
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Cancels `token` when a stop signal arrives.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        signal().await;
        tracing::info!(message = "Stop signal received; draining.");
        token.cancel();
    });
}
