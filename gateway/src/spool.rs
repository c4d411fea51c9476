//! The spool: a durable queue on local disk between ingest and forwarding.
//!
//! # Design
//! One SQLite database in WAL mode with `synchronous=FULL`. One thread, the writer, owns the
//! connection; everything else talks to it through [`Spool`], a cheap cloneable handle. The
//! writer batches what arrives within `group_commit_wait` (up to `group_commit_max_events`) into
//! one transaction, so one fsync covers many events from many connections (group commit).
//!
//! # Schema (version 1, `PRAGMA user_version = 1`)
//! - `records(id INTEGER PRIMARY KEY AUTOINCREMENT, topic, key, value, timestamp_ms, headers,
//!   device_id, seq, received_ms)`: one row per message still to be forwarded; `id` is the
//!   queue order. `headers` is a JSON array of `[name, value]` pairs.
//! - `devices(device_id PRIMARY KEY, max_seq)`: the highest seq stored per device.
//!
//! # Invariants
//! - An [`Appended::Stored`] reply means the row's transaction committed with
//!   `synchronous=FULL`: it survives a crash or power cut. Ingest acknowledges only then.
//! - A row is deleted only by [`Spool::ack`], which sinks call only after the destination
//!   (Kafka's delivery report, or the file sink's fsync) confirmed it.
//! - Sequence numbers are strictly increasing per device. An event whose seq is at or below
//!   its device's `max_seq` is a retransmission: it is reported [`Appended::Duplicate`] (and
//!   acknowledged again by ingest) and not stored. `devices` is kept after the events are
//!   forwarded, so this holds across forwarding and restarts.
//! - Rows are read in `id` order, which for one device is seq order; a restart resends what was
//!   not acknowledged, in that order. A consumer may therefore see an event twice (sent, but
//!   the gateway stopped before the delivery report); the `event-id` header identifies it.
//!
//! # Crash recovery
//! SQLite's WAL replays committed transactions on open; an uncommitted group was never
//! acknowledged to anyone. Forwarding restarts from the lowest remaining id.
//!
//! # Errors
//! A failed commit (disk full, I/O error) fails every request in the group with a
//! [`SpoolError`]; ingest turns that into "busy, retry later", and nothing is acknowledged.

mod db;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use db::{SpoolDb, SpoolStats, TopicStats};

use crate::config::SpoolConfig;
use crate::record::Record;

/// What happened to one appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Committed durably; `id` is its queue position.
    Stored { id: i64 },
    /// A retransmission of an event already stored (or already forwarded).
    Duplicate,
}

/// A record read back from the spool, with its queue id.
#[derive(Debug, Clone, PartialEq)]
pub struct Spooled {
    pub id: i64,
    pub record: Record,
}

/// Spool failures. Cloneable: one failed group commit fails every request in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {op} failed: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    #[error("cannot create spool directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("spool schema version {found} is newer than this gateway's ({supported})")]
    TooNew { found: i64, supported: i64 },
    #[error("spool row {id} is unreadable: {reason}")]
    BadRow { id: i64, reason: String },
    #[error("the spool is closed")]
    Closed,
}

impl SpoolError {
    pub(crate) fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |e| SpoolError::Sqlite {
            op,
            source: Arc::new(e),
        }
    }
}

/// A handle to the spool's writer thread. Clone it freely; the thread ends when
/// [`Spool::close`] is called or every handle is dropped.
#[derive(Clone)]
pub struct Spool {
    inner: writer::Handle,
}

impl Spool {
    /// Opens (or creates) the spool and starts its writer thread.
    pub fn open(config: &SpoolConfig) -> Result<Self, SpoolError> {
        let db = SpoolDb::open(&config.path)?;
        Ok(Self {
            inner: writer::start(db, config)?,
        })
    }

    /// Stores records durably; one outcome per record, in order.
    pub async fn append(&self, records: Vec<Record>) -> Result<Vec<Appended>, SpoolError> {
        self.inner
            .request(|reply| writer::Command::Append { records, reply })
            .await
    }

    /// Up to `limit` records with ids above `after`, in id order.
    pub async fn fetch(&self, after: i64, limit: usize) -> Result<Vec<Spooled>, SpoolError> {
        self.inner
            .request(|reply| {
                writer::Command::Read(writer::Read::Fetch {
                    after,
                    limit,
                    reply,
                })
            })
            .await
    }

    /// Deletes rows whose destination confirmed them.
    pub async fn ack(&self, ids: Vec<i64>) -> Result<(), SpoolError> {
        self.inner
            .request(|reply| writer::Command::Ack { ids, reply })
            .await
    }

    pub async fn stats(&self) -> Result<SpoolStats, SpoolError> {
        self.inner
            .request(|reply| writer::Command::Read(writer::Read::Stats { reply }))
            .await
    }

    /// Resolves when new rows were committed since the last call (or at once, if some were).
    pub async fn appended(&self) {
        self.inner.appended.notified().await
    }

    /// Stops the writer after it has finished what it was asked, and waits for it.
    pub async fn close(self) {
        self.inner.close().await
    }
}
