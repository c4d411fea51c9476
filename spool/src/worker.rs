//! A thread of the spool's that owns one SQLite connection and serves requests from a channel:
//! the writer and the reader both run on one. Replies come back on oneshot channels, so async
//! callers never block a runtime worker on SQLite.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::SpoolError;

/// Where a thread sends a request's result.
pub(super) type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

/// The handle to a spool thread taking requests of type `C`; cheap to clone.
pub(super) struct Worker<C> {
    tx: mpsc::Sender<C>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl<C> Clone for Worker<C> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            thread: self.thread.clone(),
        }
    }
}

impl<C: Send + 'static> Worker<C> {
    /// Starts thread `name` running `serve` over the requests sent to the returned handle; it
    /// ends when every handle is gone. `path` names the spool in the error if it cannot start.
    pub(super) fn start(
        name: &str,
        path: &Path,
        serve: impl FnOnce(mpsc::Receiver<C>) + Send + 'static,
    ) -> Result<Self, SpoolError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(rx))
            .map_err(|e| SpoolError::Dir {
                path: path.to_owned(),
                source: e.into(),
            })?;
        Ok(Self {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Sends the request `make` builds around its reply channel, and waits for the reply.
    pub(super) async fn request<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> C,
    ) -> Result<T, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Lets the thread finish what it was asked, and waits for it.
    pub(super) async fn close(self) {
        let Worker { tx, thread } = self;
        drop(tx);
        let handle = thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            // Other clones of the sender may still exist (a straggling task); the thread ends
            // when the last one goes. Joining happens off the async workers either way.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}
