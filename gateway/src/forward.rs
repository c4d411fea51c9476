//! Forwarding: reading the spool in order and delivering each record to its destination.
//!
//! Two sinks: [`kafka`] (rdkafka, idempotent producer) and [`file`] (JSON lines per topic,
//! when no brokers are configured). Both follow the same rule: a spool row is acknowledged
//! (deleted) only after the destination confirmed it. On stop, a sink keeps draining until the
//! spool is empty or `deadline` passes; what is left stays in the spool for the next start.

pub mod cursor;
pub mod file;
pub mod kafka;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// When a forwarder should stop: after `stop`, once drained or at `grace` after it.
#[derive(Clone)]
pub struct Drain {
    pub stop: CancellationToken,
    pub grace: Duration,
}

impl Drain {
    /// The moment draining must end, once `stop` has fired.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.grace
    }
}

/// Forwarding failures that stop the forwarder (configuration, not transient errors).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot create the Kafka producer: {0}")]
    Producer(String),
    #[error("file sink: cannot write {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Exponential backoff for transient failures: 100 ms doubling to 30 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        d
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
