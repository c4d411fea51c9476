//! The spool: a durable queue on local disk between ingest and forwarding.
//!
//! # Design
//! One SQLite database in WAL mode. One thread, the writer, owns the connection; everything
//! else talks to it through [`Spool`], a cheap cloneable handle. The writer commits whatever
//! queued while its previous commit ran (up to `group_commit_max_events`) in one transaction
//! (group commit). A commit's replies wait for an fdatasync of the WAL, the sync
//! `synchronous=FULL` would make inside the commit: on the writer when nothing else is queued,
//! else on the syncer thread, which syncs once for every commit handed to it while the writer
//! goes on to the next group ([`sync`]). The forwarder's reads run on a second, read-only
//! connection on the reader thread; offline tools read through their own. WAL readers never
//! block the writer.
//! Checkpoints (copying the WAL back into the database file) run on a third connection, the
//! checkpointer thread, so commits do not pay for them ([`checkpoint`]).
//!
//! The spool stands below everything that uses it: whatever must write in a group's
//! transaction (the rules' states and derived records) is a [`hook::CommitHook`] handed to
//! [`Spool::open_with`], and what the spool says of its work goes to an [`Observer`]. It names
//! nothing of rules, routes, config or stats (`tests/imports/check` holds it to that).
//!
//! # Schema ([`schema`], `PRAGMA user_version`)
//! - `records(id INTEGER PRIMARY KEY, topic, key, value, timestamp_ms, headers, device_id, seq,
//!   received_ms, session)`: one row per message still to be forwarded; `id` is the queue
//!   order, assigned by the writer so it never repeats while the gateway runs ([`rows`]).
//!   `headers` is a compact binary list ([`headers`]; JSON text in rows from before schema 8).
//! - `sessions(device_id, session, max_seq, max_time_ms, last_seen_ms, regressions)`: the
//!   sequence state per device boot ([`seqs`]).
//! - `counters(topic, reason, count)`: rows the spool deleted unforwarded, and why.
//! - `spool_meta(key, value)`: the file's `instance` number and `id_floor`, the highest row id
//!   ever committed: ids never repeat in one instance ([`rows`]).
//! - `device_rule_state(device_id, states)`: the commit hook's state, one blob per device
//!   ([`hook::Store`]; the gateway's rules keep their states there).
//!
//! # Invariants
//! - An [`Appended::Stored`] reply means the row's transaction committed and an fdatasync of
//!   the WAL begun after it returned: it survives a crash or power cut. Ingest acknowledges only
//!   then, and [`Spool::fetch`] returns only rows so synced. After a failed sync every reply is
//!   [`SpoolError::Sync`] until the gateway restarts ([`sync`] says why).
//! - A row is deleted only by [`Spool::ack`], which sinks call after the destination (Kafka's
//!   delivery report, or the file sink's fsync) confirmed it; or by an explicit policy the
//!   operator chose: `drop_oldest` when full, or `max_age`. Those deletions are counted per
//!   topic in `counters` and logged.
//! - Sequence numbers are strictly increasing per device session. An event at or below its
//!   session's `max_seq` and not newer than its latest stored event is a retransmission: it is
//!   reported [`Appended::Duplicate`] (and acknowledged again by ingest) and not stored. One
//!   that is newer is a counter reset, stored and counted ([`seqs`]). `sessions` outlives the
//!   rows, so this holds after forwarding and across restarts, until a session has been idle
//!   for `forget_devices_after_ms`.
//! - One gateway at a time: [`Spool::open`] holds an exclusive lock on `<spool>.lock`, and the
//!   offline tools that write (`tributary spool devices --reset`) refuse while it is held.
//! - Rows are read in `id` order, which for one device is seq order; a restart resends what was
//!   not acknowledged, in that order. A consumer may therefore see an event twice (sent, but
//!   the gateway stopped before the delivery report); the `event-id` header identifies it.
//!
//! # Crash recovery
//! SQLite's WAL replays committed transactions on open; an uncommitted group was never
//! acknowledged to anyone. Forwarding restarts from the lowest remaining id. At every start
//! `PRAGMA quick_check` runs; a corrupt file is moved aside (never deleted) and its readable
//! rows are salvaged into a fresh spool ([`recover`]).
//!
//! # Full disk ([`limits`])
//! Bounded by `max_bytes` and by `min_free_bytes` on the filesystem. When an append does not
//! fit, the `block` policy refuses it ("busy, retry later" to devices) and the `drop_oldest`
//! policy deletes the oldest unforwarded rows. A real ENOSPC is the same "busy" refusal. Deletes
//! of forwarded rows still commit, so the spool recovers by itself as space frees; it never
//! exits or crash-loops on a full disk.

mod checkpoint;
pub mod commands;
pub mod config;
mod db;
pub mod headers;
pub mod hook;
pub mod limits;
pub mod observe;
mod reader;
pub mod record;
pub mod recover;
mod report;
mod rows;
pub mod schema;
pub mod seqs;
mod sessions;
mod sources;
mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tools;
mod worker;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use db::{GroupOutcome, SpoolDb, DROPPED_FULL, EXPIRED, QUARANTINED};
pub use limits::{FullPolicy, Limits};
pub use recover::Recovery;
pub use report::{SpoolStats, TopicStats};
pub use rows::payload_size;
pub use sources::SourceState;

pub use config::{RawSpool, SpoolConfig};
pub use observe::{Anomaly, Discarded, Observer};
pub use record::{EventId, Record};

/// What happened to one appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Committed durably; `id` is its queue position.
    Stored { id: i64 },
    /// A retransmission of an event already stored (or already forwarded).
    Duplicate,
    /// Committed durably, but not queued itself: a rule with `replace_raw` stored what it
    /// derived instead (the gateway's rules, through the commit hook).
    Replaced,
}

/// A record read back from the spool, with its queue id.
#[derive(Debug, Clone, PartialEq)]
pub struct Spooled {
    pub id: i64,
    pub record: Record,
    /// When the spool committed it (ms since the Unix epoch, gateway clock).
    pub received_ms: i64,
}

/// The spool's size at a glance, cheap enough to read on every scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Gauges {
    pub rows: u64,
    /// Keys plus values of the queued rows (what `max_bytes` bounds).
    pub bytes: u64,
    pub max_bytes: u64,
    /// When the oldest queued row was committed (ms since the Unix epoch).
    pub oldest_received_ms: Option<i64>,
    /// Free bytes on the spool's filesystem, and what `min_free_bytes` keeps free.
    pub disk_free_bytes: u64,
    pub min_free_bytes: u64,
}

/// Spool failures. Cloneable: one failed group commit fails every request in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// No room: the spool's bounds, or the disk itself. Retry later.
    #[error("spool full: {reason}")]
    Full { reason: String },
    #[error("spool {op} failed: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    #[error("cannot use spool path {path}: {source}")]
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
    /// An fdatasync of the WAL failed; from then on nothing is acknowledged ([`sync`]).
    #[error("syncing the spool's WAL failed: {source}; nothing is acknowledged until the gateway restarts")]
    Sync {
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("spool {path} is in use by another process (a running gateway holds {path}.lock); stop it first")]
    Locked { path: std::path::PathBuf },
}

/// Takes the exclusive lock on `<path>.lock`, creating the directory and file if needed.
pub(crate) fn lock(path: &std::path::Path) -> Result<std::fs::File, SpoolError> {
    let lock_path = path.with_extension("db.lock");
    let dir_error = |e: std::io::Error| SpoolError::Dir {
        path: lock_path.clone(),
        source: e.into(),
    };
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(dir_error)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(dir_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SpoolError::Locked {
            path: path.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(dir_error(e)),
    }
}

impl SpoolError {
    /// Wraps an SQLite error from `op`; a full disk becomes [`SpoolError::Full`].
    pub(crate) fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |e| {
            if db::is_full(&e) {
                SpoolError::Full {
                    reason: format!("disk full during {op}: {e}"),
                }
            } else {
                SpoolError::Sqlite {
                    op,
                    source: Arc::new(e),
                }
            }
        }
    }
}

/// A handle to the spool's writer thread. Clone it freely; the thread ends when
/// [`Spool::close`] is called or every handle is dropped.
#[derive(Clone)]
pub struct Spool {
    inner: writer::Handle,
    /// Forwarding's reads, beside the writer.
    reader: worker::Worker<reader::Query>,
    /// Held while any handle lives: one gateway per spool.
    _lock: Arc<std::fs::File>,
    /// This spool file's instance number ([`schema`], v10).
    instance: i64,
}

impl Spool {
    /// Opens (or creates) the spool, recovering a corrupt file first, and starts its writer
    /// thread. Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(
        config: &SpoolConfig,
        observer: impl Observer,
    ) -> Result<(Self, Option<Recovery>), SpoolError> {
        Self::open_with(config, observer, Box::new(hook::Inert))
    }

    /// [`Spool::open`] with `hook` run in the transaction of every group ([`hook`]).
    pub fn open_with(
        config: &SpoolConfig,
        observer: impl Observer,
        hook: Box<dyn hook::CommitHook>,
    ) -> Result<(Self, Option<Recovery>), SpoolError> {
        Self::open_syncing(config, observer, hook, sync::fdatasync)
    }

    /// [`Spool::open`] with the WAL synced by `sync` (tests inject failures and delays).
    fn open_syncing(
        config: &SpoolConfig,
        observer: impl Observer,
        hook: Box<dyn hook::CommitHook>,
        sync: sync::SyncFn,
    ) -> Result<(Self, Option<Recovery>), SpoolError> {
        let lock = lock(&config.path)?;
        let (db, recovery) = recover::open_checked(&config.path, config.limits)?;
        let instance = db.instance()?;
        let inner = writer::start(db, config, Arc::new(observer), hook, sync)?;
        let reader = reader::start(&config.path)?;
        Ok((
            Self {
                inner,
                reader,
                _lock: Arc::new(lock),
                instance,
            },
            recovery,
        ))
    }

    /// The number naming this spool file, random when it was made: a marker of progress kept
    /// elsewhere (the exactly-once forwarder's, in Kafka) says which spool its row ids count
    /// in. Row ids never repeat within one instance ([`rows`]).
    pub fn instance(&self) -> i64 {
        self.instance
    }

    /// Stores records durably; one outcome per record, in order.
    pub async fn append(&self, records: Vec<Record>) -> Result<Vec<Appended>, SpoolError> {
        self.inner
            .worker
            .request(|reply| writer::Command::Append {
                records,
                sources: Vec::new(),
                reply,
            })
            .await
            .map(writer::Stored::into_outcomes)
    }

    /// Stores records durably together with how far their sources have been read: all commit,
    /// or nothing does. `Err` leaves the saved states as they were.
    pub async fn append_from(
        &self,
        records: Vec<Record>,
        sources: Vec<SourceState>,
    ) -> Result<Vec<Appended>, SpoolError> {
        self.inner
            .worker
            .request(|reply| writer::Command::Append {
                records,
                sources,
                reply,
            })
            .await
            .map(writer::Stored::into_outcomes)
    }

    /// Changes the command queue ([`commands`]) and saves `sources` with it, in one group
    /// commit: all commit, or nothing does. Returns what each op did, once synced.
    pub async fn queue(
        &self,
        ops: Vec<commands::Op>,
        sources: Vec<SourceState>,
    ) -> Result<Vec<commands::Done>, SpoolError> {
        self.inner
            .worker
            .request(|reply| writer::Command::Queue {
                ops,
                sources,
                reply,
            })
            .await
    }

    /// Up to `limit` commands queued for `device` after queue row `after`, in queue order;
    /// with `undelivered_only`, only those no device acknowledged yet.
    pub async fn commands(
        &self,
        device: &str,
        after: i64,
        undelivered_only: bool,
        limit: usize,
    ) -> Result<Vec<commands::Queued>, SpoolError> {
        let device = device.to_owned();
        self.reader
            .request(|reply| reader::Query::Commands {
                device,
                after,
                undelivered_only,
                limit,
                reply,
            })
            .await
    }

    /// Up to `limit` queued commands whose expiry is at or before `now_ms`.
    pub async fn due_commands(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<commands::Queued>, SpoolError> {
        self.reader
            .request(|reply| reader::Query::DueCommands {
                now_ms,
                limit,
                reply,
            })
            .await
    }

    /// Whether `device` sent events here (the spool keeps its sequence state).
    pub async fn device_seen(&self, device: &str) -> Result<bool, SpoolError> {
        let device = device.to_owned();
        self.reader
            .request(|reply| reader::Query::Seen { device, reply })
            .await
    }

    /// Per device with queued commands: how many, and how many of them were delivered.
    pub async fn command_counts(&self) -> Result<Vec<(String, u64, u64)>, SpoolError> {
        self.reader
            .request(|reply| reader::Query::CommandCounts { reply })
            .await
    }

    /// The saved states of the sources whose names start with `prefix`.
    pub async fn sources(&self, prefix: &str) -> Result<Vec<SourceState>, SpoolError> {
        let prefix = prefix.to_owned();
        self.inner
            .worker
            .request(|reply| writer::Command::Read(writer::Read::Sources { prefix, reply }))
            .await
    }

    /// Up to `limit` records with ids above `after`, in id order.
    pub async fn fetch(&self, after: i64, limit: usize) -> Result<Vec<Spooled>, SpoolError> {
        self.fetch_range(after, i64::MAX, limit).await
    }

    /// Up to `limit` records with ids in `(after, until]`, in id order.
    pub async fn fetch_range(
        &self,
        after: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<Spooled>, SpoolError> {
        // Only synced rows: nothing a power cut could still take back goes downstream.
        let until = until.min(self.inner.durable.through());
        if until <= after {
            return Ok(Vec::new());
        }
        self.reader
            .request(|reply| reader::Query::Fetch {
                after,
                until,
                limit,
                reply,
            })
            .await
    }

    /// The highest synced id queued, or 0 when the spool is empty.
    pub async fn last_id(&self) -> Result<i64, SpoolError> {
        let last = self
            .reader
            .request(|reply| reader::Query::LastId { reply })
            .await?;
        Ok(last.min(self.inner.durable.through()))
    }

    /// Moves a row the destination refused for good out of the queue, with the reason; returns
    /// its topic (`None` if it was not queued).
    pub async fn quarantine(&self, id: i64, reason: String) -> Result<Option<String>, SpoolError> {
        self.inner
            .worker
            .request(|reply| writer::Command::Quarantine { id, reason, reply })
            .await
    }

    /// Deletes rows whose destination confirmed them.
    pub async fn ack(&self, ids: Vec<i64>) -> Result<(), SpoolError> {
        self.inner
            .worker
            .request(|reply| writer::Command::Ack { ids, reply })
            .await
    }

    /// Rows, bytes, bound, oldest row and free disk: cheap, for metrics and health.
    pub async fn gauges(&self) -> Result<Gauges, SpoolError> {
        self.inner
            .worker
            .request(|reply| writer::Command::Read(writer::Read::Gauges { reply }))
            .await
    }

    pub async fn stats(&self) -> Result<SpoolStats, SpoolError> {
        self.inner
            .worker
            .request(|reply| writer::Command::Read(writer::Read::Stats { reply }))
            .await
    }

    /// Resolves when new rows were committed and synced since the last call (or at once, if
    /// some were): rows [`Spool::fetch`] can now return.
    pub async fn appended(&self) {
        self.inner.appended.notified().await
    }

    /// How full the spool is, as of its last commit: queued bytes over `max_bytes` (past 1 when
    /// over the bound). Cheap: for answers that depend on the room left.
    pub fn fill(&self) -> f64 {
        let queued = self
            .inner
            .queued_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        queued as f64 / self.inner.max_bytes.max(1) as f64
    }

    /// Group commits so far: one transaction each.
    pub fn commits(&self) -> u64 {
        self.inner
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why a sync of the WAL failed, once one did: nothing is acknowledged since, until a
    /// restart ([`sync`]). Readiness reports it.
    pub fn sync_failed(&self) -> Option<Arc<std::io::Error>> {
        self.inner.durable.failed().cloned()
    }

    /// Syncs of the WAL so far: each made every commit before it durable ([`sync`]).
    pub fn syncs(&self) -> u64 {
        self.inner.durable.syncs()
    }

    /// Stops the writer after it has finished what it was asked, and waits for it.
    pub async fn close(self) {
        self.reader.close().await;
        self.inner.worker.close().await
    }
}
