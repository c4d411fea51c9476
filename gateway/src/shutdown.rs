//! Graceful shutdown, bounded by `gateway.shutdown_grace_ms` overall, whatever the peers do.
//!
//! On SIGINT or SIGTERM one deadline is set, grace from now, and everything stops by it:
//! 1. Ingest stops accepting. Each session finishes the frame or packet it is handling (committed
//!    to the spool and answered) and closes; a half-received frame is abandoned.
//! 2. At the deadline, sessions still busy (a peer that stopped reading its answers, a commit
//!    that has not returned) are dropped where they stand ([`Scope::abort`]). Nothing
//!    acknowledged is lost by that: an answer not yet sent means the device resends, and the
//!    spool recognises the retransmission.
//! 3. The forwarder drains the spool until it is empty or the same deadline passes, and waits for
//!    outstanding deliveries until then; the spool closes. What is not forwarded stays in the
//!    spool for the next start.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a listener and its sessions run under.
#[derive(Clone, Default)]
pub struct Scope {
    /// Stop accepting; sessions finish what they are handling and close.
    pub stop: CancellationToken,
    /// The grace period is over: drop every session where it stands.
    pub abort: CancellationToken,
    /// Tracks the listener's tasks and its sessions', so shutdown can wait for them.
    pub tasks: TaskTracker,
}

/// The moment shutdown must be complete by, shared by everything that stops.
#[derive(Clone, Debug)]
pub struct Deadline {
    grace: Duration,
    at: Arc<OnceLock<Instant>>,
}

impl Deadline {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            at: Arc::new(OnceLock::new()),
        }
    }

    /// The deadline: grace from the first time it is asked for (when the stop began); every
    /// later call returns the same moment.
    pub fn at(&self) -> Instant {
        *self.at.get_or_init(|| Instant::now() + self.grace)
    }
}

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
