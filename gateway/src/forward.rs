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

use crate::stats::Stats;

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

/// Runs the sink's forwarder and restarts it when it fails, until it ends after `drain.stop`.
///
/// A forwarder only returns an error for something it cannot get past by retrying inside (the
/// producer cannot be created, the sink directory cannot be written), or it panics. Either way
/// the failure is logged at error level with its cause, counted
/// (`tributary_forwarder_restarts_total`), shown by `/readyz?verbose` and `/api/status`, and the
/// forwarder starts again after a backoff of 1 s doubling to 60 s. It never dies unseen.
pub async fn supervise(
    sink: crate::config::SinkConfig,
    spool: crate::spool::Spool,
    stats: Stats,
    drain: Drain,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        stats.set_forwarder_running(true);
        let task = match sink.clone() {
            crate::config::SinkConfig::Kafka(kafka) => tokio::spawn(kafka::run(
                kafka,
                spool.clone(),
                stats.clone(),
                drain.clone(),
            )),
            crate::config::SinkConfig::File { dir } => {
                tokio::spawn(file::run(dir, spool.clone(), stats.clone(), drain.clone()))
            }
        };
        let result = task.await;
        stats.set_forwarder_running(false);
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the forwarder task failed: {e}"),
        };
        stats.forward_failed(error.clone(), crate::record::now_ms());
        if drain.stop.is_cancelled() {
            tracing::error!(message = "The forwarder failed while stopping; unforwarded events stay in the spool.", %error);
            return;
        }
        stats.instruments.forwarder_restarts.inc();
        tracing::error!(message = "The forwarder failed; restarting it.", %error, delay_s = delay.as_secs());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = drain.stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
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

/// Records a confirmed delivery: spool commit to the destination's confirmation, and event time to it.
pub fn record_delivery(stats: &Stats, now_ms: i64, received_ms: i64, event_ms: i64) {
    let seconds = |from: i64| (now_ms.saturating_sub(from)).max(0) as f64 / 1000.0;
    stats
        .instruments
        .delivery_seconds
        .observe(seconds(received_ms));
    stats
        .instruments
        .event_lag_seconds
        .observe(seconds(event_ms));
    stats.delivered(now_ms);
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
